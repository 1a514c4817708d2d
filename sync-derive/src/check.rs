//! Turns the [`Container`] into the [`Model`] the impls are written from: which table, which
//! key, which store. Checks that look at the whole item live here; each records its error and
//! leaves the part it could not tell as `None`, so the expansion can still write a fallback.

use quote::ToTokens as _;
use syn::ext::IdentExt as _;
use syn::{Generics, Ident, Path, Type};

use crate::ast::{Container, Field};
use crate::attr::{self, Opt};
use crate::ctxt::Ctxt;
use crate::suggest;

/// What the impls are written from. A part is `None` when the derive reported why it could not
/// tell it.
pub(crate) struct Model<'a> {
    pub(crate) ident: &'a Ident,
    pub(crate) generics: &'a Generics,
    /// The path the generated code names the runtime by.
    pub(crate) krate: Path,
    /// The module `table!` generated (`products`, or `schema::products`).
    pub(crate) table: Option<Path>,
    pub(crate) role: Role,
}

/// What the model is to the sync: sent itself, or pointing at what is sent.
#[allow(clippy::large_enum_variant)] // one per derive
pub(crate) enum Role {
    /// Rows of this model are sent to handlers.
    Target {
        id: Option<MappedField>,
        store: Option<MappedField>,
        /// The store model, when `store` names a `belongs_to` parent: the parent's path as
        /// `belongs_to` wrote it, spanned at the `store = …` value.
        store_model: Option<Path>,
    },
    /// A change to this model syncs the `target` row whose id is in `key`.
    Reference {
        target: Option<Path>,
        key: Option<MappedField>,
    },
    /// Not a struct with named fields.
    Unknown,
}

/// A field and the column it maps to.
#[derive(Clone)]
pub(crate) struct MappedField {
    pub(crate) field: Ident,
    pub(crate) column: Ident,
    pub(crate) ty: Type,
    /// The database, not the row, supplies this column on insert.
    pub(crate) skip_insertion: bool,
}

impl Model<'_> {
    /// Whether every part is known: then the impls are the real ones.
    pub(crate) fn is_complete(&self) -> bool {
        let role = match &self.role {
            Role::Target { id, .. } => id.is_some(),
            Role::Reference { target, key } => target.is_some() && key.is_some(),
            Role::Unknown => false,
        };
        role && self.table.is_some() && self.generics.params.is_empty()
    }
}

pub(crate) fn model<'a>(cx: &mut Ctxt, container: &Container<'a>) -> Model<'a> {
    let input = container.input;
    if !input.generics.params.is_empty() {
        cx.error_spanned_by(
            &input.generics,
            format!(
                "`Synced` cannot be derived for a struct with generic parameters\n\
                 help: a synced model is loaded and sent to handlers after the commit, so it owns \
                 its data (`String`, not `&'a str`) and has one row type; remove `{}` from `{}`",
                input
                    .generics
                    .to_token_stream()
                    .to_string()
                    .replace(' ', ""),
                input.ident
            ),
        );
    }
    let krate = container.synced.krate.as_ref().map_or_else(
        || syn::parse_quote!(::diesel_sync),
        |krate| krate.value.clone(),
    );
    let table = table(cx, container);
    let role = match &container.fields {
        Some(fields) => role(cx, container, fields),
        None => Role::Unknown,
    };
    Model {
        ident: container.ident(),
        generics: &input.generics,
        krate,
        table,
        role,
    }
}

fn role(cx: &mut Ctxt, container: &Container<'_>, fields: &[Field<'_>]) -> Role {
    let synced = &container.synced;
    let ident = container.ident();
    if !synced.given("target") && !synced.given("key") {
        let (store, store_model) = match &synced.store {
            Some(store) => store_field(cx, container, fields, store),
            None => (None, None),
        };
        let id = primary_key(cx, container, fields);
        return Role::Target {
            id,
            store,
            store_model,
        };
    }

    if let Some(store) = &synced.store {
        let target = synced.target.as_ref().map_or_else(
            || "its target".to_owned(),
            |t| format!("`{}`", attr::path_to_string(&t.value)),
        );
        cx.error_spanned_by(
            store.tokens(),
            format!(
                "`store` cannot be set on a reference model\n\
                 help: the rows sent are those of {target}, grouped by its own `store`; \
                 remove `store` here and set it on {target}"
            ),
        );
    }
    let target = synced.target.as_ref().and_then(|target| {
        let own = target.value.is_ident("Self") || target.value.is_ident(ident);
        if own {
            cx.error_spanned_by(
                &target.value,
                format!(
                    "`{ident}` cannot be its own target\n\
                     help: a model whose own rows are sent is a target: remove `target` and `key`"
                ),
            );
        }
        (!own).then(|| target.value.clone())
    });
    let key = match (&synced.target, &synced.key) {
        // A malformed `target` or `key` was reported where it was written.
        (_, None) if synced.given("key") => None,
        (None, Some(key)) if synced.given("target") => {
            field(cx, ident, fields, key, "key", "holds the id of the target")
        }
        (Some(target), None) => {
            let target = attr::path_to_string(&target.value);
            let guess = format!(
                "{}_id",
                snake_case(target.rsplit("::").next().unwrap_or(&target))
            );
            let key = fields
                .iter()
                .find(|f| f.name() == guess)
                .map_or("product_id", |_| guess.as_str());
            cx.error_spanned_by(
                synced.target.as_ref().map(Opt::tokens),
                format!(
                    "`target` needs a `key`: the field that holds the id of the `{target}` to sync\n\
                     help: name it, like `#[synced(target = {target}, key = {key})]`"
                ),
            );
            None
        }
        (None, Some(key)) => {
            cx.error_spanned_by(
                key.tokens(),
                format!(
                    "`key` needs a `target`: the model whose id `{}` holds\n\
                     help: name it, like `#[synced(target = Product, key = {})]`",
                    key.value, key.value
                ),
            );
            None
        }
        (Some(target), Some(key)) => {
            let what = format!("holds the id of `{}`", attr::path_to_string(&target.value));
            field(cx, ident, fields, key, "key", &what)
        }
        (None, None) => None,
    };
    Role::Reference { target, key }
}

/// What `store = …` names: a field to group by, or a store model, the parent of a `belongs_to`
/// relation, whose foreign key field batches are grouped by.
fn store_field(
    cx: &mut Ctxt,
    container: &Container<'_>,
    fields: &[Field<'_>],
    store: &Opt<Ident>,
) -> (Option<MappedField>, Option<Path>) {
    let ident = container.ident();
    let wanted = store.value.unraw().to_string();
    let relation = container
        .diesel
        .belongs_to
        .iter()
        .find(|relation| relation.parent_name() == wanted);
    let Some(relation) = relation.filter(|_| fields.iter().all(|f| f.name() != wanted)) else {
        let field = field(cx, ident, fields, store, "store", "batches are grouped by");
        return (field, None);
    };
    let key = relation.foreign_key();
    let found = fields
        .iter()
        .find(|f| f.name() == key)
        .or_else(|| fields.iter().find(|f| f.column_name() == key));
    if found.is_none() {
        cx.error_spanned_by(
            &store.value,
            format!(
                "`{ident}` belongs to `{wanted}` through column `{key}`, but has no field for it\n\
                 help: batches are grouped by the foreign key of the store model; add the field, \
                 or name it in `#[diesel(belongs_to({wanted}, foreign_key = …))]`"
            ),
        );
    }
    let mut parent = relation.parent.clone();
    for segment in &mut parent.segments {
        segment.ident.set_span(store.value.span());
    }
    (found.map(MappedField::new), found.map(|_| parent))
}

/// The field named by `store = …` or `key = …`.
fn field(
    cx: &mut Ctxt,
    ident: &Ident,
    fields: &[Field<'_>],
    option: &Opt<Ident>,
    name: &str,
    what: &str,
) -> Option<MappedField> {
    let wanted = option.value.unraw().to_string();
    if let Some(found) = fields.iter().find(|f| f.name() == wanted) {
        return Some(MappedField::new(found));
    }
    let mut message = format!(
        "`{ident}` has no field `{wanted}`\n\
         help: `{name}` names the field that {what}; the fields are {}",
        suggest::list(fields.iter().map(|f| format!("`{}`", f.name())))
    );
    if let Some(by_column) = fields.iter().find(|f| f.column_name() == wanted) {
        message = format!(
            "`{ident}` has no field `{wanted}`; it is the column of field `{}`\n\
             help: `{name}` names a field, not a column: write `{name} = {}`",
            by_column.name(),
            by_column.name()
        );
    } else if let Some(close) =
        suggest::closest(&wanted, &fields.iter().map(Field::name).collect::<Vec<_>>())
    {
        suggest::push(&mut message, format_args!("; did you mean `{close}`?"));
    } else if name == "store" && wanted.starts_with(char::is_uppercase) {
        message = format!(
            "`{ident}` has no field `{wanted}` and does not belong to a `{wanted}`\n\
             help: to load each batch's store row, name the store model through Diesel's \
             relation: `#[diesel(belongs_to({wanted}))]` next to `#[synced(store = {wanted})]`; \
             to group by a field, name the field"
        );
    }
    cx.error_spanned_by(&option.value, message);
    None
}

/// The primary key field: `#[diesel(primary_key(…))]`, else `id`, as Diesel's `Identifiable`.
fn primary_key(
    cx: &mut Ctxt,
    container: &Container<'_>,
    fields: &[Field<'_>],
) -> Option<MappedField> {
    let ident = container.ident();
    let by_column = |name: &str| fields.iter().find(|f| f.column_name() == name);
    match &container.diesel.primary_key {
        Some((_, columns)) if columns.len() == 1 => {
            let column = &columns[0];
            let wanted = column.unraw().to_string();
            let found = by_column(&wanted);
            if found.is_none() {
                let mut message = format!(
                    "`{ident}` has no field for its primary key column `{wanted}`\n\
                     help: the columns of its fields are {}; a field named unlike its column \
                     needs `#[diesel(column_name = {wanted})]`",
                    suggest::list(fields.iter().map(|f| format!("`{}`", f.column_name())))
                );
                let columns: Vec<String> = fields.iter().map(Field::column_name).collect();
                if let Some(close) = suggest::closest(&wanted, &columns) {
                    suggest::push(&mut message, format_args!("; did you mean `{close}`?"));
                }
                cx.error_spanned_by(column, message);
            }
            found.map(MappedField::new)
        }
        Some((tokens, columns)) => {
            let shown = suggest::list(columns.iter().map(|c| format!("`{}`", c.unraw())));
            let has = if columns.is_empty() {
                "names no column".to_owned()
            } else {
                format!("has {} columns, {shown}", columns.len())
            };
            cx.error_spanned_by(
                tokens,
                format!(
                    "a synced target needs a single-column primary key, but the key of `{ident}` {has}\n\
                     help: ids are collected and loaded by one column; give the table a \
                     single-column key, or make this a reference model whose `key` field holds \
                     the id of a target: `#[synced(target = Parent, key = parent_id)]`"
                ),
            );
            None
        }
        None => {
            let found = by_column("id");
            if found.is_none() {
                let example = fields
                    .first()
                    .map_or_else(|| "code".to_owned(), Field::column_name);
                cx.error_spanned_by(
                    ident,
                    format!(
                        "`{ident}` has no `id` field, the primary key Diesel assumes\n\
                         help: name the primary key column, like \
                         `#[diesel(primary_key({example}))]` above the struct"
                    ),
                );
            }
            found.map(MappedField::new)
        }
    }
}

/// `#[diesel(table_name = …)]`, else the name Diesel's derives infer.
fn table(cx: &mut Ctxt, container: &Container<'_>) -> Option<Path> {
    let ident = container.ident();
    let names = &container.diesel.table_names;
    if let [first, second, ..] = names.as_slice() {
        cx.error_spanned_by(
            second,
            format!(
                "`Synced` needs one table, but `{ident}` names {}: `{}` and `{}`\n\
                 help: the writes to a table sync one model; keep one `table_name`, and derive \
                 `Synced` on a separate struct for the other table",
                if names.len() == 2 { "two" } else { "several" },
                attr::path_to_string(first),
                attr::path_to_string(second),
            ),
        );
    }
    if let Some(first) = names.first() {
        return Some(first.clone());
    }
    match inferred_table(ident) {
        Ok(table) => Some(table.into()),
        Err(reason) => {
            cx.error_spanned_by(
                ident,
                format!(
                    "cannot infer the table of `{ident}`: {reason}\n\
                     help: name the `table!` this struct maps to, like \
                     `#[diesel(table_name = {})]` above the struct",
                    Some(snake_case(&ident.unraw().to_string()) + "s")
                        .filter(|t| syn::parse_str::<Ident>(t).is_ok())
                        .unwrap_or_else(|| "my_table".to_owned())
                ),
            );
            None
        }
    }
}

/// The table name Diesel's derives infer: `ProductVariant` → `product_variants`. Diesel
/// cannot infer one from a raw identifier, a name that starts with a non-ASCII character, or
/// when the result is a keyword (`A` → `as`).
fn inferred_table(ident: &Ident) -> Result<Ident, String> {
    let name = ident.to_string();
    if name.starts_with("r#") {
        return Err("Diesel infers table names only from plain identifiers, not raw ones".into());
    }
    let snake = snake_plural(&name).ok_or_else(|| {
        "Diesel infers table names only from names that start with an ASCII character".to_owned()
    })?;
    let mut table = syn::parse_str::<Ident>(&snake)
        .map_err(|_| format!("the name Diesel infers, `{snake}`, is a Rust keyword"))?;
    table.set_span(ident.span());
    Ok(table)
}

/// Diesel's `camel_to_snake` plus `s`; `None` where Diesel's derives cannot infer a name.
fn snake_plural(name: &str) -> Option<String> {
    name.starts_with(|c: char| c.is_ascii())
        .then(|| snake_case(name) + "s")
}

fn snake_case(name: &str) -> String {
    let mut snake = String::with_capacity(name.len() + 4);
    for (i, ch) in name.chars().enumerate() {
        if ch.is_uppercase() && i > 0 {
            snake.push('_');
        }
        snake.extend(ch.to_lowercase());
    }
    snake
}

impl MappedField {
    fn new(field: &Field<'_>) -> Self {
        MappedField {
            field: field.ident.clone(),
            column: field.column.clone(),
            ty: field.ty.clone(),
            skip_insertion: field.skip_insertion,
        }
    }
}

#[cfg(test)]
mod tests {
    use proc_macro2::Span;
    use syn::Ident;

    #[test]
    fn infers_table_names_as_diesel_does() {
        let infer = |name: &str| super::inferred_table(&Ident::new(name, Span::call_site()));
        assert_eq!(infer("Product").unwrap(), "products");
        assert_eq!(infer("ProductVariant").unwrap(), "product_variants");
        assert_eq!(infer("HTTPLog").unwrap(), "h_t_t_p_logs");
        assert_eq!(infer("PriceRecord2").unwrap(), "price_record2s");
        assert!(infer("A").unwrap_err().contains("`as`, is a Rust keyword"));
        assert!(infer("Übung").unwrap_err().contains("ASCII"));
        let raw = super::inferred_table(&Ident::new_raw("Match", Span::call_site()));
        assert!(raw.unwrap_err().contains("raw"));
    }
}
