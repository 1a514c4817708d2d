//! The derive's model of the annotated struct: which table, which key, which store; each part
//! keeps the user's tokens so errors point at them.

use proc_macro2::Span;
use syn::{Data, DeriveInput, Field, Fields, Ident, Path, Type};

use crate::attr::{DieselAttrs, SyncedAttrs};
use crate::ctxt::Ctxt;

/// A struct deriving `Synced`, read and checked.
pub(crate) struct Model<'a> {
    pub(crate) ident: &'a Ident,
    /// The path the generated code names the runtime by.
    pub(crate) krate: Path,
    /// The module `table!` generated (`products`, or `schema::products`).
    pub(crate) table: Path,
    pub(crate) role: Role<'a>,
}

/// What the model is to the sync: sent itself, or pointing at what is sent.
pub(crate) enum Role<'a> {
    /// Rows of this model are sent to handlers.
    Target {
        id: Column<'a>,
        store: Option<Column<'a>>,
    },
    /// A change to this model syncs the `target` row whose id is in `key`.
    Reference { target: Path, key: Column<'a> },
}

/// A field and the column it maps to.
#[allow(clippy::struct_field_names)] // `column` is the column's name, as Diesel calls it
pub(crate) struct Column<'a> {
    pub(crate) field: &'a Ident,
    pub(crate) column: Ident,
    pub(crate) ty: &'a Type,
}

impl<'a> Model<'a> {
    pub(crate) fn from_input(cx: &mut Ctxt, input: &'a DeriveInput) -> Option<Self> {
        let fields = struct_fields(cx, input);
        if input.generics.lt_token.is_some() {
            cx.error_spanned_by(
                &input.generics,
                "`Synced` cannot be derived for a generic struct: a Diesel table has one row type",
            );
        }
        let diesel = DieselAttrs::from_attrs(cx, &input.attrs);
        let synced = SyncedAttrs::from_attrs(cx, &input.attrs);
        let fields = fields?;
        let find = |cx: &mut Ctxt, name: &Ident, what: &str| {
            let found = fields.iter().find(|f| f.ident.as_ref() == Some(name));
            if found.is_none() {
                cx.error_spanned_by(
                    name,
                    format!(
                        "`{}` has no field `{name}` to use as the {what}",
                        input.ident
                    ),
                );
            }
            found.map(Column::new)
        };

        let role = match (synced.target, synced.key) {
            (Some(target), Some(key)) => {
                if let Some(store) = &synced.store {
                    cx.error_spanned_by(store, "`store` cannot be set on a reference model: batches are grouped by the store of its target; set `store` on the target model");
                }
                find(cx, &key, "key").map(|key| Role::Reference { target, key })
            }
            (Some(target), None) => {
                cx.error_spanned_by(&target, "`target` needs a `key`: the field that holds the target's id, like `#[synced(target = Product, key = product_id)]`");
                None
            }
            (None, Some(key)) => {
                cx.error_spanned_by(&key, "`key` needs a `target`: the model whose id the key holds, like `#[synced(target = Product, key = product_id)]`");
                None
            }
            (None, None) => {
                let store = synced
                    .store
                    .as_ref()
                    .and_then(|store| find(cx, store, "store key"));
                primary_key(cx, input, &diesel, fields).map(|id| Role::Target { id, store })
            }
        };

        let table = diesel
            .table_name
            .unwrap_or_else(|| inferred_table(&input.ident));
        let krate = synced
            .krate
            .unwrap_or_else(|| syn::parse_quote!(::diesel_sync));
        role.map(|role| Model {
            ident: &input.ident,
            krate,
            table,
            role,
        })
    }
}

impl<'a> Column<'a> {
    fn new(field: &'a Field) -> Self {
        let ident = field.ident.as_ref().expect("named fields only");
        Column {
            field: ident,
            column: column_name(field).unwrap_or_else(|| ident.clone()),
            ty: &field.ty,
        }
    }
}

fn struct_fields<'a>(
    cx: &mut Ctxt,
    input: &'a DeriveInput,
) -> Option<&'a syn::punctuated::Punctuated<Field, syn::Token![,]>> {
    match &input.data {
        Data::Struct(data) => {
            match &data.fields {
                Fields::Named(named) => Some(&named.named),
                Fields::Unnamed(unnamed) => {
                    cx.error_spanned_by(unnamed, "`Synced` needs named fields: the key and store are named after their columns");
                    None
                }
                Fields::Unit => {
                    cx.error_spanned_by(
                        &input.ident,
                        "`Synced` needs a struct with fields: a unit struct has no key to sync",
                    );
                    None
                }
            }
        }
        Data::Enum(data) => {
            cx.error_spanned_by(data.enum_token, "`Synced` can only be derived for a struct, the Diesel model of a table; not for an enum");
            None
        }
        Data::Union(data) => {
            cx.error_spanned_by(data.union_token, "`Synced` can only be derived for a struct, the Diesel model of a table; not for a union");
            None
        }
    }
}

/// The primary key field: `#[diesel(primary_key(…))]`, else `id`, as Diesel's `Identifiable`.
fn primary_key<'a>(
    cx: &mut Ctxt,
    input: &'a DeriveInput,
    diesel: &DieselAttrs,
    fields: &'a syn::punctuated::Punctuated<Field, syn::Token![,]>,
) -> Option<Column<'a>> {
    let by_column = |name: &Ident| fields.iter().map(Column::new).find(|c| c.column == *name);
    match diesel.primary_key.as_deref() {
        Some([column]) => {
            let found = by_column(column);
            if found.is_none() {
                cx.error_spanned_by(
                    column,
                    format!(
                        "`{}` has no field for the primary key column `{column}`",
                        input.ident
                    ),
                );
            }
            found
        }
        Some(columns) => {
            let first = columns.first().map(|c| c as &dyn quote::ToTokens);
            let message = "a synced target needs a single-column primary key: composite keys cannot be collected and resolved as one id";
            match first {
                Some(first) => cx.error_spanned_by(first, message),
                None => cx.error_spanned_by(&input.ident, message),
            }
            None
        }
        None => {
            let found = by_column(&Ident::new("id", Span::call_site()));
            if found.is_none() {
                cx.error_spanned_by(&input.ident, format!("`{}` has no `id` field; name its primary key with `#[diesel(primary_key(your_key))]`", input.ident));
            }
            found
        }
    }
}

/// `#[diesel(column_name = …)]` on a field.
fn column_name(field: &Field) -> Option<Ident> {
    let mut name = None;
    for attr in field.attrs.iter().filter(|a| a.path().is_ident("diesel")) {
        let _ = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("column_name") {
                name = Some(meta.value()?.parse::<Ident>()?);
            } else if meta.input.peek(syn::Token![=]) {
                meta.value()?.parse::<syn::Expr>()?;
            }
            Ok(())
        });
    }
    name
}

/// Diesel's default: `ProductVariant` → `product_variants`.
fn inferred_table(ident: &Ident) -> Path {
    let mut snake = String::new();
    for (i, ch) in ident.to_string().chars().enumerate() {
        if ch.is_uppercase() {
            if i > 0 {
                snake.push('_');
            }
            snake.extend(ch.to_lowercase());
        } else {
            snake.push(ch);
        }
    }
    snake.push('s');
    let table = Ident::new(&snake, ident.span());
    syn::parse_quote!(#table)
}
