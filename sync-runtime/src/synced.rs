//! The traits `#[derive(Synced)]` implements: what a model syncs, and how its table finds it.

use std::fmt::Debug;
use std::hash::Hash;

use diesel::associations::HasTable;
use diesel::{Column, Identifiable, SelectableExpression, Table};

/// A Diesel model whose writes are synced after commit.
///
/// Implemented by `#[derive(Synced)]`. A model either syncs itself (a *target*, which also
/// implements [`SyncTarget`]) or references a target through a key column (a *reference model*:
/// a `PriceRecord` whose `object_id` names the `Product` to sync).
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not derive `Synced`",
    label = "not a synced model",
    note = "add `#[derive(Synced)]` to `{Self}`, next to its Diesel derives"
)]
pub trait Synced: Sized + Send + 'static {
    /// The table the model is written to.
    type Table: Table + Default + Send + 'static;
    /// The model sent to handlers when this one changes (`Self` for a target).
    type Target: SyncTarget;
    /// The column of [`Self::Table`] holding the target's id: the primary key of a target,
    /// the key column of a reference model.
    type KeyColumn: Column<Table = Self::Table>
        + SelectableExpression<Self::Table>
        + Default
        + Copy
        + Send
        + 'static;

    /// The id of the target this row syncs.
    fn sync_key(&self) -> TargetId<Self>;
}

/// A model whose rows hold the key they sync when they are inserted, so an insert can read the
/// keys from its rows (MySQL always does; other backends with
/// [`keys_from_rows`](crate::SyncedInsert::keys_from_rows)).
///
/// `#[derive(Synced)]` implements it unless the key field is `#[diesel(skip_insertion)]`: then
/// the database writes the key, and only `RETURNING` can tell it.
#[diagnostic::on_unimplemented(
    message = "the rows of `{Self}` do not hold the key they sync when inserted",
    label = "its key field is `#[diesel(skip_insertion)]`: the database writes it",
    note = "on PostgreSQL and SQLite, leave out `keys_from_rows` and the statement returns the keys; on MySQL, insert with Diesel and call `mark_changed` with the new ids"
)]
pub trait KeyInRow: Synced {}

/// A model handed to handlers: it has an id to deduplicate by and a store key to group by.
///
/// A model that derives `Synced` without `#[synced(target = …, key = …)]` is a target.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a synced target model",
    label = "not a target model",
    note = "if handlers should receive rows of `{Self}`, add `#[derive(Synced)]` to it, without `#[synced(target = …)]`",
    note = "if `{Self}` is a reference model (it has `#[synced(target = …, key = …)]`), it is never sent itself: name the model it references instead"
)]
pub trait SyncTarget: Synced<Target = Self> + Debug + Sync {
    /// The primary key type.
    type Id: Clone + Eq + Hash + Debug + Send + Sync + 'static;
    /// The value batches are grouped by (`()` when the model has no store column).
    type StoreKey: Clone + Eq + Hash + Debug + Send + Sync + 'static;

    /// The store model loaded with each batch: the parent named by `#[synced(store = Store)]`
    /// through a `belongs_to(Store)` relation, or [`NoStore`].
    type Store: Debug + Send + Sync + 'static;

    /// How the rows load: [`LoadsAlone`], or [`LoadsWithStore`] joined with [`Self::Store`].
    #[doc(hidden)]
    type Loads: Send + 'static;

    /// `table.filter(key.eq_any(ids))`, spelled out by the derive with the concrete table; with
    /// a store model, `table.left_join(stores.on(store_column.eq(stores_key)))` filtered so.
    type ByIds: Send + 'static;

    /// `stores.filter(key.eq_any(keys))`: the stores of batches that only remove rows, which no
    /// target row brings along. `()` without a store model.
    type StoresByKeys: Send + 'static;

    /// The store this row belongs to.
    fn store_key(&self) -> Self::StoreKey;

    /// The query selecting the rows of `ids`.
    fn by_ids(ids: Vec<Self::Id>) -> Self::ByIds;

    /// The query selecting the store rows of `keys`.
    fn stores_by_keys(keys: Vec<Self::StoreKey>) -> Self::StoresByKeys;

    /// The key of a store row: its primary key, which the store column holds.
    fn key_of_store(store: &Self::Store) -> Self::StoreKey;
}

/// The [`SyncTarget::Loads`] of a target with no store model: one table's rows.
#[doc(hidden)]
#[derive(Debug)]
pub enum LoadsAlone {}

/// The [`SyncTarget::Loads`] of a target with a store model: its rows joined with their stores.
#[doc(hidden)]
#[derive(Debug)]
pub enum LoadsWithStore {}

/// The [`SyncTarget::Store`] of a target that names no store model: batches carry no store row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoStore {}

/// A store model: the Diesel model of the table a target's store column points at, loaded with
/// each batch and handed to [`RegistryBuilder::when`](crate::RegistryBuilder::when).
///
/// Implemented for every `Identifiable` model whose primary key has the target's store key
/// type `Key`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the store model of a target grouped by a `{Key}` column",
    label = "not a store model",
    note = "a store model derives `Queryable`, `Selectable` and `Identifiable`, and its primary key has the type of the target's store column, `{Key}`"
)]
pub trait StoreModel<Key>: HasTable + Debug + Send + Sync + 'static {
    /// The store's key: its primary key, which the target's store column holds.
    fn store_key(&self) -> Key;
}

#[diagnostic::do_not_recommend]
impl<S, Key> StoreModel<Key> for S
where
    S: HasTable + Debug + Send + Sync + 'static,
    for<'a> &'a S: Identifiable<Id = &'a Key>,
    Key: Clone,
{
    fn store_key(&self) -> Key {
        self.id().clone()
    }
}

/// Maps a table to the one model that is synced when the table is written.
///
/// Implemented by `#[derive(Synced)]` as `impl SyncedTable<Model> for table {}`;
/// statement-level writes ([`crate::update`], [`crate::delete`], [`crate::insert_into`]) infer
/// the model from the table through it. The model is a parameter, not an associated type, so a
/// private model of a public `table!` does not leak.
#[diagnostic::on_unimplemented(
    message = "no model of table `{Self}` derives `Synced`",
    label = "writes to this table cannot be synced",
    note = "add `#[derive(Synced)]` to the Diesel model of this table"
)]
pub trait SyncedTable<M: Synced<Table = Self>>: Table {}

/// The id type of the target a model syncs.
pub type TargetId<M> = <<M as Synced>::Target as SyncTarget>::Id;

// What follows is for the code `#[derive(Synced)]` writes, reached through `__private`. The
// derive states each requirement on the user's types twice: as a bound on its impls, under
// `for<'a>` so that the impls themselves always compile, and as a call to one of the `assert_*`
// functions, spanned at the user's tokens, whose trait says what is wrong and how to fix it.
// The user sees one error, at their field or path, and none from the impls.

/// The bounds on [`SyncTarget::Id`] and [`SyncTarget::StoreKey`], as one trait to put on an impl.
#[doc(hidden)]
pub trait KeyBounds: Clone + Eq + Hash + Debug + Send + Sync + 'static {}

impl<T: Clone + Eq + Hash + Debug + Send + Sync + 'static> KeyBounds for T {}

/// Asserts that a field's type can be a target's id.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the id of a synced model",
    label = "ids are deduplicated in a hash set, so this type must be `Clone + Eq + Hash + Debug + Send + Sync + 'static`",
    note = "use an integer, `String` or `Uuid` primary key, or wrap this one in a type that implements `Clone`, `Eq`, `Hash` and `Debug`"
)]
pub trait SyncId {}

#[diagnostic::do_not_recommend]
impl<T: KeyBounds> SyncId for T {}

/// Asserts that a field's type can be a store key.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the store key of a synced model",
    label = "batches are grouped by store in a hash map, so this type must be `Clone + Eq + Hash + Debug + Send + Sync + 'static`",
    note = "group by an integer, `String` or `Uuid` column, or wrap this one in a type that implements `Clone`, `Eq`, `Hash` and `Debug`"
)]
pub trait SyncStoreKey {}

#[diagnostic::do_not_recommend]
impl<T: KeyBounds> SyncStoreKey for T {}

/// Asserts that a reference model's key field has its target's id type: `K: KeyOfType<Id>`
/// holds for `K = Id` only.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "the key field has type `{Self}`, but the id of the target has type `{Id}`",
    label = "this field holds the id of a target row, so it must be `{Id}`",
    note = "give the key field the type of the target's primary key field, `{Id}`"
)]
pub trait KeyOfType<Id> {}

impl<T> KeyOfType<T> for T {}

/// Fails to compile, with [`SyncId`]'s message, unless `T` can be an id.
#[doc(hidden)]
pub const fn assert_id<T: SyncId>() {}

/// Fails to compile, with [`SyncStoreKey`]'s message, unless `T` can be a store key.
#[doc(hidden)]
pub const fn assert_store_key<T: SyncStoreKey>() {}

/// Fails to compile, with [`StoreModel`]'s message, unless `S` can be the store model of a
/// target whose store key is `Key`.
#[doc(hidden)]
pub const fn assert_store_model<S: StoreModel<Key>, Key>() {}

/// Fails to compile unless `T` can be a target model: handlers receive its rows on other
/// threads, and logs and dead letters print them.
#[doc(hidden)]
pub const fn assert_target_model<T: Debug + Send + Sync + 'static>() {}

/// Fails to compile unless `T` can be a synced model: its writes are collected on any thread.
#[doc(hidden)]
pub const fn assert_model<T: Send + 'static>() {}

/// Fails to compile unless `T` is a target model whose id type is `K`.
#[doc(hidden)]
pub const fn assert_target<T: SyncTarget, K: KeyOfType<T::Id>>() {}

/// A target model for unit tests without a database: every row has key 7, and a value that
/// tells its versions apart.
#[cfg(test)]
#[derive(Debug, Clone)]
pub(crate) struct TestRow(pub(crate) i64);

#[cfg(test)]
impl Synced for TestRow {
    type Table = crate::__private::fallback::fallback::table;
    type Target = Self;
    type KeyColumn = crate::__private::fallback::fallback::id;
    fn sync_key(&self) -> i64 {
        7
    }
}

#[cfg(test)]
impl SyncTarget for TestRow {
    type Id = i64;
    type StoreKey = ();
    type Store = NoStore;
    type Loads = LoadsAlone;
    type ByIds = ();
    type StoresByKeys = ();
    fn store_key(&self) {}
    fn by_ids(_: Vec<i64>) {}
    fn stores_by_keys(_: Vec<()>) {}
    fn key_of_store(store: &NoStore) {
        match *store {}
    }
}

/// A store row for tests: its key, and its switch.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct TestStore {
    pub(crate) id: i64,
    pub(crate) on: bool,
}

/// A target with a store model for tests: its id, and its store's.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct StoredRow(pub(crate) i64, pub(crate) i64);

#[cfg(test)]
impl Synced for StoredRow {
    type Table = crate::__private::fallback::fallback::table;
    type Target = Self;
    type KeyColumn = crate::__private::fallback::fallback::id;
    fn sync_key(&self) -> i64 {
        self.0
    }
}

#[cfg(test)]
impl SyncTarget for StoredRow {
    type Id = i64;
    type StoreKey = i64;
    type Store = TestStore;
    type Loads = LoadsWithStore;
    type ByIds = ();
    type StoresByKeys = ();
    fn store_key(&self) -> i64 {
        self.1
    }
    fn by_ids(_: Vec<i64>) {}
    fn stores_by_keys(_: Vec<i64>) {}
    fn key_of_store(store: &TestStore) -> i64 {
        store.id
    }
}
