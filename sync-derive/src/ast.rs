//! The derive's view of the annotated item: its fields and attributes, read from syn. Each part
//! keeps the user's tokens so that errors point at them.

use syn::ext::IdentExt as _;
use syn::{Data, DeriveInput, Fields, Ident, Type};

use crate::attr::{self, DieselAttrs, SyncedAttrs};
use crate::ctxt::Ctxt;

/// The item `#[derive(Synced)]` is on.
pub(crate) struct Container<'a> {
    pub(crate) input: &'a DeriveInput,
    /// The named fields; `None` when the item is not a struct with named fields, which has
    /// been reported.
    pub(crate) fields: Option<Vec<Field<'a>>>,
    pub(crate) synced: SyncedAttrs,
    pub(crate) diesel: DieselAttrs,
}

/// A named field and the column Diesel maps it to.
pub(crate) struct Field<'a> {
    pub(crate) ident: &'a Ident,
    pub(crate) ty: &'a Type,
    /// `#[diesel(column_name = …)]`, else the field's name.
    pub(crate) column: Ident,
    /// `#[diesel(skip_insertion)]`: the database writes this column on insert.
    pub(crate) skip_insertion: bool,
}

impl<'a> Container<'a> {
    pub(crate) fn from_input(cx: &mut Ctxt, input: &'a DeriveInput) -> Self {
        let synced = SyncedAttrs::from_attrs(cx, &input.attrs);
        let mut diesel = DieselAttrs::from_attrs(&input.attrs);
        let fields = fields(cx, input, &mut diesel);
        Container {
            input,
            fields,
            synced,
            diesel,
        }
    }

    pub(crate) fn ident(&self) -> &'a Ident {
        &self.input.ident
    }
}

impl Field<'_> {
    /// The field's name as written, without `r#`.
    pub(crate) fn name(&self) -> String {
        self.ident.unraw().to_string()
    }

    /// The column's name, without `r#`.
    pub(crate) fn column_name(&self) -> String {
        self.column.unraw().to_string()
    }
}

fn fields<'a>(
    cx: &mut Ctxt,
    input: &'a DeriveInput,
    diesel: &mut DieselAttrs,
) -> Option<Vec<Field<'a>>> {
    let ident = &input.ident;
    let help = "help: `Synced` goes on the struct Diesel maps a table's rows to, \
                like `#[derive(Queryable, Selectable, Synced)] struct Product { id: i64, … }`";
    match &input.data {
        Data::Struct(data) => match &data.fields {
            Fields::Named(named) => Some(
                named
                    .named
                    .iter()
                    .map(|field| {
                        attr::misplaced_synced(cx, &field.attrs, "a field");
                        let ident = field.ident.as_ref().expect("a named field has a name");
                        let options = attr::field_options(&field.attrs).unwrap_or_else(|error| {
                            diesel.malformed.get_or_insert(error);
                            attr::FieldOptions::default()
                        });
                        Field {
                            ident,
                            ty: &field.ty,
                            column: options.column_name.unwrap_or_else(|| ident.clone()),
                            skip_insertion: options.skip_insertion,
                        }
                    })
                    .collect(),
            ),
            Fields::Unnamed(unnamed) => {
                cx.error_spanned_by(
                    unnamed,
                    format!(
                        "`Synced` cannot be derived for a tuple struct: `{ident}` has no field names \
                         for `#[synced]` to name\n\
                         help: give the fields names, like `struct {ident} {{ id: i64, … }}`"
                    ),
                );
                None
            }
            Fields::Unit => {
                cx.error_spanned_by(
                    ident,
                    format!(
                        "`Synced` cannot be derived for a unit struct: `{ident}` has no primary key \
                         field to sync\n{help}"
                    ),
                );
                None
            }
        },
        Data::Enum(data) => {
            for variant in &data.variants {
                attr::misplaced_synced(cx, &variant.attrs, "a variant");
            }
            cx.error_spanned_by(
                data.enum_token,
                format!(
                    "`Synced` cannot be derived for an enum: it syncs the rows of a table\n{help}"
                ),
            );
            None
        }
        Data::Union(data) => {
            cx.error_spanned_by(
                data.union_token,
                format!(
                    "`Synced` cannot be derived for a union: it syncs the rows of a table\n{help}"
                ),
            );
            None
        }
    }
}
