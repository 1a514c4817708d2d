//! Writes the impls: `Synced` for every model, `SyncTarget` for targets, `SyncedTable` for the
//! table and `SyncedRows` for inserts of one row, in one `const _` block that names the runtime
//! only through its hidden `__private` module.
//!
//! When the derive reported an error, it still writes the impls, next to the `compile_error!`,
//! with stand-ins (see [`crate::fallback`]) for the parts it could not tell. Code that uses the
//! model elsewhere (`Batch<Product>`, `handler::<Product>`) then compiles, so the user sees the
//! derive's error and nothing that follows from it.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{quote, ToTokens};
use syn::spanned::Spanned as _;
use syn::{DeriveInput, Path};

use crate::ast::Container;
use crate::check::{self, MappedField, Model, Role};
use crate::ctxt::Ctxt;
use crate::fallback;

/// The derive: the impls, or the errors and the fallback impls.
pub(crate) fn derive(input: &DeriveInput) -> TokenStream {
    let mut cx = Ctxt::default();
    let mut container = Container::from_input(&mut cx, input);
    let model = check::model(&mut cx, &container);
    if !model.is_complete() && cx.is_empty() {
        // Only a `#[diesel]` attribute this derive could not read explains the gap. Diesel's
        // derives report it as well, but the output must never compile with stand-in impls.
        cx.push(container.diesel.malformed.take().unwrap_or_else(|| {
            syn::Error::new(Span::call_site(), "`Synced` could not read this model")
        }));
    }
    let impls = expand(&model);
    match cx.check() {
        Ok(()) => impls,
        Err(errors) => quote!(#errors #impls),
    }
}

/// Who receives this model's changes.
enum Target<'a> {
    /// The model itself. `standin` when it is not a real target (an enum, a reference model
    /// whose target is unknown, a generic struct) and only stands in for one after an error.
    Own {
        id: Option<&'a MappedField>,
        store: Option<&'a MappedField>,
        /// The store model loaded with each batch, when `store` names one.
        store_model: Option<&'a Path>,
        standin: bool,
    },
    /// A reference model's target, and the field holding its id.
    Other {
        path: &'a Path,
        key: &'a MappedField,
    },
}

impl<'a> Target<'a> {
    fn of(model: &'a Model<'_>) -> Self {
        match &model.role {
            Role::Target {
                id,
                store,
                store_model,
            } if model.generics.params.is_empty() => Target::Own {
                id: id.as_ref(),
                store: store.as_ref(),
                store_model: store_model.as_ref(),
                standin: false,
            },
            Role::Reference {
                target: Some(path),
                key: Some(key),
            } if model.generics.params.is_empty() => Target::Other { path, key },
            _ => Target::Own {
                id: None,
                store: None,
                store_model: None,
                standin: true,
            },
        }
    }

    fn is_standin(&self) -> bool {
        matches!(self, Target::Own { standin: true, .. })
    }

    /// The field whose column `KeyColumn` is.
    fn key(&self) -> Option<&'a MappedField> {
        match self {
            Target::Own { id, .. } => *id,
            Target::Other { key, .. } => Some(key),
        }
    }
}

/// What every impl needs: the names, the table with its key column when both are known, and
/// the where clause that keeps the impls compiling whatever the user's types are.
struct Cx<'a> {
    rt: TokenStream,
    model: &'a Model<'a>,
    target: Target<'a>,
    /// `impl<…>`, `Model<…>` and `where …` with the guards, for every impl header.
    header: (TokenStream, TokenStream, TokenStream),
    table_and_key: Option<(&'a Path, &'a MappedField)>,
}

fn expand(model: &Model<'_>) -> TokenStream {
    let rt = quote!(__diesel_sync);
    let target = Target::of(model);
    let ident = model.ident;
    let (impl_generics, ty_generics, where_clause) = model.generics.split_for_impl();
    let guards = guards(&rt, &target, &quote!(#ident #ty_generics));
    let mut predicates: Vec<TokenStream> = where_clause
        .map(|w| w.predicates.iter().map(ToTokens::to_token_stream).collect())
        .unwrap_or_default();
    for guard in guards {
        // A model whose id and store have one type needs the bound once.
        if !predicates
            .iter()
            .any(|p| p.to_string() == guard.to_string())
        {
            predicates.push(guard);
        }
    }
    let where_clause = (!predicates.is_empty()).then(|| quote!(where #(#predicates,)*));
    let table_and_key = model
        .table
        .as_ref()
        .zip(target.key())
        .filter(|_| !target.is_standin());
    let cx = Cx {
        header: (
            quote!(#impl_generics),
            quote!(#ident #ty_generics),
            quote!(#where_clause),
        ),
        rt,
        model,
        table_and_key,
        target,
    };

    let krate = &model.krate;
    let rt = &cx.rt;
    let synced = synced_impl(&cx);
    let sync_target = sync_target_impl(&cx);
    let synced_table = synced_table_impl(&cx);
    let synced_rows = synced_rows_impl(&cx);
    let registration = registration(&cx);
    let assertions = assertions(&cx);
    quote! {
        #[doc(hidden)]
        const _: () = {
            use #krate::__private as #rt;

            #synced

            #sync_target

            #synced_table

            #synced_rows

            #registration

            #assertions
        };
    }
}

/// The requirements on the user's types, as bounds on the impls. Under `for<'a>` they are not
/// checked where the impls are written (a bound such as `f64: Hash`, which no impl could meet,
/// would be an error there, and another in each impl): an impl whose bound fails does not
/// apply, and [`assertions`] reports why, once, at the user's tokens.
fn guards(rt: &TokenStream, target: &Target<'_>, ty: &TokenStream) -> Vec<TokenStream> {
    let hrtb = quote!(for<'__diesel_sync>);
    match target {
        Target::Own {
            id,
            store,
            store_model,
            ..
        } => {
            let own = quote! {
                #hrtb #ty: ::core::fmt::Debug
                    + ::core::marker::Send
                    + ::core::marker::Sync
                    + 'static
            };
            let keys = id.iter().chain(store).map(|field| {
                let ty = &field.ty;
                quote!(#hrtb #ty: #rt::KeyBounds)
            });
            let store_model = store.zip(*store_model).map(|(store, model)| {
                let key = &store.ty;
                quote!(#hrtb #model: #rt::StoreModel<#key>)
            });
            std::iter::once(own)
                .chain(keys)
                .chain(store_model)
                .collect()
        }
        Target::Other { path, key } => {
            let key_ty = &key.ty;
            vec![
                quote!(#hrtb #ty: ::core::marker::Send + 'static),
                quote!(#hrtb #path: #rt::SyncTarget<Id = #key_ty>),
            ]
        }
    }
}

/// Calls that fail to compile, at the user's tokens and with a message that says what to
/// change, when a guard of the impls does not hold. A stand-in asserts nothing: the derive
/// reported what is wrong with it.
fn assertions(cx: &Cx<'_>) -> TokenStream {
    let rt = &cx.rt;
    let ident = cx.model.ident;
    match &cx.target {
        Target::Own { standin: true, .. } => quote!(),
        Target::Own {
            id,
            store,
            store_model,
            ..
        } => {
            let own = respan(quote!(#rt::assert_target_model::<#ident>();), ident.span());
            let id = id.map(|id| {
                let ty = &id.ty;
                respan(quote!(#rt::assert_id::<#ty>();), ty.span())
            });
            let key = store.map(|store| {
                let ty = &store.ty;
                respan(quote!(#rt::assert_store_key::<#ty>();), ty.span())
            });
            // At the `store = …` value, where "not a store model" is reported.
            let model = store.zip(*store_model).map(|(store, model)| {
                let span = model.span();
                let call = respan(quote!(#rt::assert_store_model::<), span);
                let key_ty = &store.ty;
                let end = respan(quote!(>();), span);
                quote!(#call #model, #key_ty #end)
            });
            quote!(#own #id #key #model)
        }
        Target::Other { path, key } => {
            let own = respan(quote!(#rt::assert_model::<#ident>();), ident.span());
            // At the `target = …` path, where "not a target" is reported; the key's type keeps
            // its own span, where a type that is not the target's id is reported.
            let span = path.span();
            let path = respan(path.to_token_stream(), span);
            let key_ty = &key.ty;
            let call = respan(quote!(#rt::assert_target::<#path, ), span);
            let end = respan(quote!(>();), span);
            quote!(#own #call #key_ty #end)
        }
    }
}

fn synced_impl(cx: &Cx<'_>) -> TokenStream {
    let Cx {
        rt,
        header: (generics, ty, bounds),
        ..
    } = cx;
    let (table, key_column) = match cx.table_and_key {
        Some((table, key)) => {
            let column = &key.column;
            (quote!(#table::table), quote!(#table::#column))
        }
        None => fallback::table_and_key(rt),
    };
    let (target, sync_key) = match &cx.target {
        Target::Own { id: Some(id), .. } => {
            let field = &id.field;
            (quote!(Self), quote!(#rt::field(&self.#field)))
        }
        Target::Own { id: None, .. } => (quote!(Self), fallback::id(rt)),
        Target::Other { path, key } => {
            let field = &key.field;
            (quote!(#path), quote!(#rt::field(&self.#field)))
        }
    };
    quote! {
        #[automatically_derived]
        impl #generics #rt::Synced for #ty #bounds {
            type Table = #table;
            type Target = #target;
            type KeyColumn = #key_column;

            fn sync_key(&self) -> #rt::TargetId<Self> {
                #sync_key
            }
        }
    }
}

fn sync_target_impl(cx: &Cx<'_>) -> TokenStream {
    let Cx {
        rt,
        header: (generics, ty, bounds),
        ..
    } = cx;
    let Target::Own {
        id,
        store,
        store_model,
        ..
    } = &cx.target
    else {
        return quote!();
    };
    let diesel = quote!(#rt::diesel);
    let id_ty = match id {
        Some(id) => id.ty.to_token_stream(),
        None => fallback::id_ty(rt),
    };
    let (store_ty, store_key) = match store {
        Some(store) => {
            let (field, ty) = (&store.field, &store.ty);
            (quote!(#ty), quote!(#rt::field(&self.#field)))
        }
        None => (quote!(()), quote!()),
    };
    let known = id.zip(cx.model.table.as_ref());
    let (by_ids_ty, by_ids) = match known {
        Some((id, table)) => by_ids_query(cx, table, id, store.zip(*store_model)),
        None => fallback::by_ids(),
    };
    let store_model = store_model.filter(|_| known.is_some() && store.is_some());
    let store_items = match store_model {
        Some(model) => {
            let stores = quote!(<#model as #diesel::associations::HasTable>::Table);
            quote! {
                type Store = #model;
                type Loads = #rt::LoadsWithStore;
                type StoresByKeys = #diesel::dsl::Filter<
                    #stores,
                    #diesel::dsl::EqAny<
                        <#stores as #diesel::Table>::PrimaryKey,
                        ::std::vec::Vec<#store_ty>,
                    >,
                >;

                fn stores_by_keys(keys: ::std::vec::Vec<#store_ty>) -> Self::StoresByKeys {
                    use #diesel::{ExpressionMethods as _, QueryDsl as _};
                    let stores = <#model as #diesel::associations::HasTable>::table();
                    stores.filter(#diesel::Table::primary_key(&stores).eq_any(keys))
                }

                fn key_of_store(store: &#model) -> #store_ty {
                    <#model as #rt::StoreModel<#store_ty>>::store_key(store)
                }
            }
        }
        None => quote! {
            type Store = #rt::NoStore;
            type Loads = #rt::LoadsAlone;
            type StoresByKeys = ();

            fn stores_by_keys(_: ::std::vec::Vec<#store_ty>) {}

            fn key_of_store(store: &#rt::NoStore) -> #store_ty {
                match *store {}
            }
        },
    };
    quote! {
        #[automatically_derived]
        impl #generics #rt::SyncTarget for #ty #bounds {
            type Id = #id_ty;
            type StoreKey = #store_ty;
            type ByIds = #by_ids_ty;
            #store_items

            fn store_key(&self) -> Self::StoreKey {
                #store_key
            }

            fn by_ids(ids: ::std::vec::Vec<Self::Id>) -> Self::ByIds {
                #by_ids
            }
        }
    }
}

/// `table.filter(id.eq_any(ids))` and its type; with a store model, the table left-joined with
/// the store model's on the store column.
fn by_ids_query(
    cx: &Cx<'_>,
    table: &Path,
    id: &MappedField,
    store: Option<(&MappedField, &Path)>,
) -> (TokenStream, TokenStream) {
    let rt = &cx.rt;
    let diesel = quote!(#rt::diesel);
    let id_ty = &id.ty;
    let column = &id.column;
    let source = quote!(#table::table);
    let (source_ty, source) = match store {
        // A left join: a row whose store row is missing still loads.
        Some((store, model)) => {
            let store_column = &store.column;
            let stores = quote!(<#model as #diesel::associations::HasTable>::Table);
            let on = quote! {
                #diesel::dsl::Eq<
                    #table::#store_column,
                    <#stores as #diesel::Table>::PrimaryKey,
                >
            };
            (
                quote!(#diesel::dsl::LeftJoinOn<#table::table, #stores, #on>),
                quote! {
                    #source.left_join(
                        <#model as #diesel::associations::HasTable>::table().on(
                            #table::#store_column.eq(#diesel::Table::primary_key(
                                &<#model as #diesel::associations::HasTable>::table(),
                            )),
                        ),
                    )
                },
            )
        }
        None => (quote!(#table::table), source),
    };
    (
        quote! {
            #diesel::dsl::Filter<
                #source_ty,
                #diesel::dsl::EqAny<#table::#column, ::std::vec::Vec<#id_ty>>,
            >
        },
        quote! {
            use #diesel::{ExpressionMethods as _, JoinOnDsl as _, QueryDsl as _};
            #source.filter(#table::#column.eq_any(ids))
        },
    )
}

/// The table's link to its model, through which statement-level writes infer the model. Only
/// written when the table and key are known: a stand-in has no table.
fn synced_table_impl(cx: &Cx<'_>) -> TokenStream {
    let Some((table, _)) = cx.table_and_key else {
        return quote!();
    };
    let Cx {
        rt,
        header: (generics, ty, bounds),
        ..
    } = cx;
    quote! {
        #[automatically_derived]
        impl #generics #rt::SyncedTable<#ty> for #table::table #bounds {}
    }
}

/// `KeyInRow`, and one owned row as insert values, for inserts that read the keys from the
/// rows. Neither when the key field is `#[diesel(skip_insertion)]`: the database writes it.
fn synced_rows_impl(cx: &Cx<'_>) -> TokenStream {
    let Cx {
        rt,
        header: (generics, ty, bounds),
        ..
    } = cx;
    if cx.target.key().is_some_and(|key| key.skip_insertion) {
        return TokenStream::new();
    }
    let target = match &cx.target {
        Target::Own { .. } => quote!(Self),
        Target::Other { path, .. } => quote!(#path),
    };
    quote! {
        #[automatically_derived]
        impl #generics #rt::KeyInRow for #ty #bounds {}

        #[automatically_derived]
        impl #generics #rt::SyncedRows<#target> for #ty #bounds {
            fn sync_keys(&self) -> ::std::vec::Vec<#rt::TargetId<Self>> {
                ::std::vec![#rt::Synced::sync_key(self)]
            }
        }
    }
}

/// The model's entry in the runtime's catalog, through which a synced connection learns which
/// tables to capture. Only for a real, non-generic model whose table and key are known.
fn registration(cx: &Cx<'_>) -> TokenStream {
    let Some((table, _)) = cx.table_and_key else {
        return quote!();
    };
    if !cx.model.generics.params.is_empty() {
        return quote!();
    }
    let rt = &cx.rt;
    let ty = &cx.header.1;
    let name = table
        .segments
        .last()
        .map(|segment| segment.ident.to_string())
        .unwrap_or_default();
    // A deleted target row is a removal from its store; a deleted reference row changes its
    // target.
    let deletes = match &cx.target {
        Target::Own { store, .. } => {
            let column = match store {
                Some(store) => {
                    let column = &store.column;
                    quote! {
                        ::core::option::Option::Some(
                            <#table::#column as #rt::diesel::Column>::NAME
                        )
                    }
                }
                None => quote!(::core::option::Option::None),
            };
            quote!((&&#rt::StoreProbe::<#ty>::new()).deletes(#column))
        }
        Target::Other { .. } => quote!(#rt::Deletes::change()),
    };
    quote! {
        #rt::inventory::submit! {
            #rt::SyncedModel::new(|| {
                use #rt::{
                    NamedTable as _, OpaqueKey as _, OpaqueStore as _, ReadableKey as _,
                    ReadableStore as _, Registered as _, UnnamedTable as _, Unregistered as _,
                };
                let key = (&&#rt::KeyProbe::<#ty>::new()).codec();
                let deletes = #deletes;
                let table = (&&#rt::TableProbe::<#table::table>::new()).sql_name();
                (&&#rt::ModelProbe::<#ty>::new()).facts(table.unwrap_or(#name), key, deletes)
            })
        }
    }
}

/// `tokens`, every one of them spanned at `span`.
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut token| {
            if let TokenTree::Group(group) = &token {
                let mut respanned =
                    proc_macro2::Group::new(group.delimiter(), respan(group.stream(), span));
                respanned.set_span(span);
                token = TokenTree::Group(respanned);
            } else {
                token.set_span(span);
            }
            token
        })
        .collect()
}

/// What the derive writes for representative models, pretty-printed and compared with the files
/// in `snapshots/`. After a deliberate change, `UPDATE_EXPECT=1 cargo test -p
/// diesel-sync-derive` rewrites them; review the diff.
#[cfg(test)]
mod tests {
    use expect_test::{expect_file, ExpectFile};
    use syn::DeriveInput;

    /// The model, as a comment, then what the derive writes for it.
    fn check(input: &DeriveInput, snapshot: &ExpectFile) {
        let model: syn::File = syn::parse_quote!(#input);
        let model: String = prettyplease::unparse(&model)
            .lines()
            .map(|line| format!("// {line}\n").replace("// \n", "//\n"))
            .collect();
        let expansion: syn::File = syn::parse2(super::derive(input)).expect("the expansion parses");
        snapshot.assert_eq(&format!(
            "// What `#[derive(Synced)]` writes for this model (see `src/expand.rs`, `mod tests`):\n\
             //\n{model}\n{}",
            prettyplease::unparse(&expansion)
        ));
    }

    #[test]
    fn target_with_store() {
        check(
            &syn::parse_quote! {
                #[derive(Debug, Clone, Queryable, Selectable, Insertable, Synced)]
                #[diesel(table_name = products)]
                #[synced(store = store_id)]
                pub struct Product {
                    pub id: i64,
                    pub store_id: i64,
                    pub name: String,
                }
            },
            &expect_file!["../snapshots/target_with_store.rs"],
        );
    }

    #[test]
    fn target_with_store_model() {
        check(
            &syn::parse_quote! {
                #[derive(Debug, Clone, Queryable, Selectable, Identifiable, Associations, Synced)]
                #[diesel(table_name = products, belongs_to(Store))]
                #[synced(store = Store)]
                pub struct Product {
                    pub id: i64,
                    pub store_id: i64,
                    pub name: String,
                }
            },
            &expect_file!["../snapshots/target_with_store_model.rs"],
        );
    }

    #[test]
    fn reference_model() {
        check(
            &syn::parse_quote! {
                #[derive(Debug, Clone, Insertable, Synced)]
                #[diesel(table_name = price_records)]
                #[synced(target = Product, key = object_id)]
                pub struct PriceRecord {
                    pub object_id: i64,
                    pub amount_cents: i64,
                }
            },
            &expect_file!["../snapshots/reference_model.rs"],
        );
    }

    #[test]
    fn renamed_crate_and_columns() {
        check(
            &syn::parse_quote! {
                #[derive(Debug, Clone, Queryable, Selectable, my_sync::Synced)]
                #[diesel(table_name = schema::products, primary_key(sku))]
                #[synced(crate = "my_sync", store = shop)]
                pub struct Product {
                    pub sku: String,
                    #[diesel(column_name = store_id)]
                    pub shop: i64,
                }
            },
            &expect_file!["../snapshots/renamed_crate_and_columns.rs"],
        );
    }

    #[test]
    fn failed_derive_writes_stand_ins() {
        check(
            &syn::parse_quote! {
                #[derive(Debug, Synced)]
                #[synced(stor = store_id)]
                pub enum Product {
                    Book { id: i64 },
                }
            },
            &expect_file!["../snapshots/failed_derive.rs"],
        );
    }
}
