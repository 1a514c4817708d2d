//! `#[derive(Synced)]`: the derive half of [diesel-sync](https://docs.rs/diesel-sync).
//!
//! Depend on `diesel-sync`, which re-exports this macro. The macro runs in stages, as serde's:
//! `ast` reads the item and `attr` its attributes (errors are collected in `ctxt`, not returned
//! one by one), `check` decides what the model is, and `expand` writes the impls, with
//! `fallback` stand-ins when the derive reported an error. `expand`'s tests hold snapshots of
//! what it writes, in `snapshots/`.

mod ast;
mod attr;
mod check;
mod ctxt;
mod expand;
mod fallback;
mod suggest;

use proc_macro::TokenStream;

/// Implements `Synced` for a Diesel model, so that writes to its table are synced after commit.
///
/// A model is one of two kinds:
///
/// - a **target**: its rows are what handlers receive. The derive implements `Synced` and
///   `SyncTarget`: the id is the primary key field, batches are grouped by the `store` field.
/// - a **reference model**, with `#[synced(target = …, key = …)]`: a change to one of its rows
///   syncs the target row whose id is in its `key` field (a price record syncs its product).
///
/// Either way the derive also links the table to the model, so `diesel_sync::insert_into`,
/// `update` and `delete` on the table know what to sync.
///
/// The derive reads the Diesel attributes the model already has; `#[synced(…)]` adds only what
/// is new. It goes on a struct with named fields, next to the model's Diesel derives
/// (`Queryable` and `Selectable` for a target, whose rows are loaded after commit; `Insertable`
/// as needed), and must be `'static`: a struct with lifetime or type parameters is rejected.
///
/// # Attributes
///
/// ## Diesel's container attributes
///
/// * `#[diesel(table_name = path::to::table)]`: the table the model maps to, a path relative
///   to the current module, as for Diesel's derives. By default, the struct's name in
///   `snake_case` with an `s` added, as Diesel infers it (`PriceRecord` → `price_records`).
///   Where Diesel's derives cannot infer a name, neither does this one, and it asks for
///   `table_name`: a raw identifier (`r#Match`), a name that starts with a non-ASCII letter,
///   or a name whose inferred table is a keyword (`A` → `as`). A synced model has one table:
///   `table_name` may be given once.
/// * `#[diesel(primary_key(column))]`: a target's id column. By default `id`, as for Diesel's
///   `Identifiable`. A target needs a single-column key, since ids are collected and loaded by
///   one column. A reference model's primary key is not used.
///
/// ## Diesel's field attributes
///
/// * `#[diesel(column_name = column)]` (or `= "column"` for a column named like a Rust
///   keyword): the column a field maps to. By default, the field's name. The derive uses it to
///   match `primary_key` to a field and to name the key column of `key`.
/// * `#[diesel(skip_insertion)]` on the key field (a target's id, a reference model's `key`):
///   the database writes the key on insert, so the rows do not hold it. The model then does
///   not implement `KeyInRow`, and inserts that read keys from the rows (`keys_from_rows`, and
///   every insert on MySQL) do not compile for it.
///
/// ## `#[synced]` container attributes
///
/// Options may be split over several `#[synced]` attributes; each may be given once.
///
/// * `#[synced(store = field)]`, on a target: the field batches are grouped by, one handler
///   call in flight per store (a shop, a tenant, a marketplace account). Its type must be
///   `Clone + Eq + Hash + Debug + Send + Sync`. By default, none: every batch belongs to the
///   one store `()`.
/// * `#[synced(store = Store)]`, on a target with `#[diesel(belongs_to(Store))]`: names the
///   store model. Batches are grouped by the relation's foreign key field (`store_id`, or its
///   `foreign_key`), and the resolve query left-joins the store's table, so each batch carries
///   the store's row (`Batch::store_row`), which `RegistryBuilder::when` can filter by. `Store`
///   must be `Queryable`, `Selectable` and `Identifiable`, its key of the foreign key's type.
/// * `#[synced(target = Model, key = field)]`: makes this a reference model. `target` is the
///   path of the target model, which derives `Synced` without `target`; `key` is the field
///   holding the target's id, of the target's id type. Both are required together, and a
///   reference model takes no `store`: batches are grouped by the target's. By default, none:
///   the model is a target.
/// * `#[synced(crate = "path")]`: the path the generated code names diesel-sync by. By
///   default `::diesel_sync`. Set it when the crate depends on `diesel-sync` under another
///   name (`my_sync = { package = "diesel-sync", … }`), or reaches it through a re-export.
///
/// # Examples
///
/// A target, grouped by store:
///
/// ```ignore
/// #[derive(Debug, Clone, Queryable, Selectable, Insertable, Synced)]
/// #[diesel(table_name = products)]
/// #[synced(store = store_id)]
/// pub struct Product {
///     pub id: i64,
///     pub store_id: i64,
///     pub name: String,
/// }
/// ```
///
/// A reference model: inserting, updating or deleting a price record syncs the product whose
/// id is in `object_id`:
///
/// ```ignore
/// #[derive(Debug, Clone, Insertable, Synced)]
/// #[diesel(table_name = price_records)]
/// #[synced(target = Product, key = object_id)]
/// pub struct PriceRecord {
///     pub object_id: i64,
///     pub amount_cents: i64,
/// }
/// ```
///
/// A target whose primary key is not `id`:
///
/// ```ignore
/// #[derive(Debug, Clone, Queryable, Selectable, Insertable, Synced)]
/// #[diesel(table_name = products, primary_key(sku))]
/// pub struct Product {
///     pub sku: String,
///     pub price_cents: i64,
/// }
/// ```
///
/// Fields named unlike their columns: `#[synced]` names fields, Diesel's attributes name
/// columns:
///
/// ```ignore
/// #[derive(Debug, Clone, Queryable, Selectable, Insertable, Synced)]
/// #[diesel(table_name = products)]
/// #[synced(store = shop)]
/// pub struct Product {
///     #[diesel(column_name = id)]
///     pub code: i64,
///     #[diesel(column_name = store_id)]
///     pub shop: i64,
///     #[diesel(column_name = "type")]
///     pub kind: String,
/// }
/// ```
///
/// A crate that depends on diesel-sync as `my_sync`:
///
/// ```ignore
/// #[derive(Debug, Clone, Queryable, Selectable, my_sync::Synced)]
/// #[diesel(table_name = products)]
/// #[synced(crate = "my_sync")]
/// pub struct Product {
///     pub id: i64,
///     pub name: String,
/// }
/// ```
///
/// These examples compile in diesel-sync's `tests/ui/pass`.
///
/// # Errors
///
/// Every mistake in the item is reported at once, at the token to change, with what to write
/// instead: the derive on an enum, union, tuple or unit struct or a generic struct; an unknown,
/// repeated or malformed option; a `store`, `key` or primary key that names no field; a missing
/// or composite primary key; conflicting options. When the derive reports an error it still
/// implements the traits, with stand-ins, so code that uses the model elsewhere reports nothing
/// more. Mistakes only the compiler can see are reported once, at the user's tokens too: a
/// target that does not derive `Synced` (at `target = …`), a key whose type is not the
/// target's id type (at the key field's type), an id or store type that is not `Eq + Hash` (at
/// the field's type), a target that is not `Debug` or a model that is not `Send` (at the
/// struct's name). A malformed `#[diesel(…)]` attribute is left to Diesel's derives to report.
#[proc_macro_derive(Synced, attributes(synced))]
pub fn derive_synced(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    expand::derive(&input).into()
}
