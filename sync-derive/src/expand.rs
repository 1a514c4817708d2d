//! Writes the impls: `Synced` for every model, `SyncTarget` for targets, and `SyncedTable` for
//! the table, all in one `const _` block that names the runtime through its hidden module.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::DeriveInput;

use crate::ast::{Model, Role};
use crate::ctxt::Ctxt;

pub(crate) fn derive(input: &DeriveInput) -> TokenStream {
    let mut cx = Ctxt::default();
    let model = Model::from_input(&mut cx, input);
    match (cx.check(), model) {
        (Ok(()), Some(model)) => expand(&model),
        (Err(errors), _) => errors,
        (Ok(()), None) => unreachable!("a model that failed to parse recorded an error"),
    }
}

fn expand(model: &Model<'_>) -> TokenStream {
    let ident = model.ident;
    let krate = &model.krate;
    let table = &model.table;
    let rt = quote!(__diesel_sync);

    let (target, key) = match &model.role {
        Role::Target { id, .. } => (quote!(Self), id),
        Role::Reference { target, key } => (quote!(#target), key),
    };
    let key_field = key.field;
    let key_column = &key.column;
    // Spanned at the user's field, so a key whose type differs from the target's id is
    // reported there.
    let sync_key = quote_spanned! {key.ty.span()=>
        fn sync_key(&self) -> #rt::TargetId<Self> {
            ::core::clone::Clone::clone(&self.#key_field)
        }
    };
    let target_ty = match &model.role {
        Role::Target { .. } => quote!(Self),
        Role::Reference { target, .. } => quote_spanned!(target.span()=> #target),
    };

    let sync_target = match &model.role {
        Role::Reference { .. } => quote!(),
        Role::Target { id, store } => {
            let id_ty = id.ty;
            let id_column = &id.column;
            let (store_ty, store_key) = match store {
                Some(store) => {
                    let ty = store.ty;
                    let field = store.field;
                    (
                        quote_spanned!(ty.span()=> #ty),
                        quote!(::core::clone::Clone::clone(&self.#field)),
                    )
                }
                None => (quote!(()), quote!(())),
            };
            let id_ty_spanned = quote_spanned!(id_ty.span()=> #id_ty);
            quote! {
                #[automatically_derived]
                impl #rt::SyncTarget for #ident {
                    type Id = #id_ty_spanned;
                    type StoreKey = #store_ty;
                    type ByIds = #rt::diesel::dsl::Filter<
                        #table::table,
                        #rt::diesel::dsl::EqAny<#table::#id_column, ::std::vec::Vec<#id_ty>>,
                    >;

                    fn store_key(&self) -> Self::StoreKey {
                        #store_key
                    }

                    fn by_ids(ids: ::std::vec::Vec<Self::Id>) -> Self::ByIds {
                        use #rt::diesel::{ExpressionMethods as _, QueryDsl as _};
                        #table::table.filter(#table::#id_column.eq_any(ids))
                    }
                }
            }
        }
    };
    let _ = target;

    quote! {
        #[doc(hidden)]
        #[allow(non_upper_case_globals, unused_qualifications, clippy::all, clippy::pedantic)]
        const _: () = {
            use #krate::__private as #rt;

            #[automatically_derived]
            impl #rt::Synced for #ident {
                type Table = #table::table;
                type Target = #target_ty;
                type KeyColumn = #table::#key_column;

                #sync_key
            }

            #sync_target

            #[automatically_derived]
            impl #rt::SyncedTable<#ident> for #table::table {}

            #[automatically_derived]
            impl #rt::SyncedRows<#target_ty> for #ident {
                fn sync_keys(&self) -> ::std::vec::Vec<#rt::TargetId<Self>> {
                    ::std::vec![#rt::Synced::sync_key(self)]
                }
            }
        };
    }
}
