//! The traits `#[derive(Synced)]` implements: what a model syncs, and how its table finds it.

use std::fmt::Debug;
use std::hash::Hash;

use diesel::{Column, SelectableExpression, Table};

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

/// A model handed to handlers: it has an id to deduplicate by and a store key to group by.
///
/// A model that derives `Synced` without `#[synced(target = …, key = …)]` is a target.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a synced target model",
    label = "handlers receive rows of a target model",
    note = "a target derives `Synced` without `#[synced(target = …)]`: `#[derive(Synced)] struct Product {{ id: i64, … }}`",
    note = "a reference model (one with `#[synced(target = …, key = …)]`) is never sent itself; name its target instead"
)]
pub trait SyncTarget: Synced<Target = Self> + Debug + Sync {
    /// The primary key type.
    type Id: Clone + Eq + Hash + Debug + Send + Sync + 'static;
    /// The value batches are grouped by (`()` when the model has no store column).
    type StoreKey: Clone + Eq + Hash + Debug + Send + Sync + 'static;

    /// `table.filter(key.eq_any(ids))`, spelled out by the derive with the concrete table.
    type ByIds: Send + 'static;

    /// The store this row belongs to.
    fn store_key(&self) -> Self::StoreKey;

    /// The query selecting the rows of `ids`.
    fn by_ids(ids: Vec<Self::Id>) -> Self::ByIds;
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

// What follows is for the code `#[derive(Synced)]` writes, reached through `__private`: checks
// that turn a type error in the user's model into a message that says what to change.

/// Checks that a field's type can be a target's id; `<T as SyncId>::Id` is `T`.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the id of a synced model",
    label = "ids are deduplicated in a hash set, so this type must be `Clone + Eq + Hash + Debug + Send + Sync + 'static`",
    note = "use an integer, a `String` or a `Uuid` primary key, or a newtype that derives `Clone, PartialEq, Eq, Hash, Debug`"
)]
pub trait SyncId {
    /// The id type itself.
    type Id: Clone + Eq + Hash + Debug + Send + Sync + 'static;
}

#[diagnostic::do_not_recommend]
impl<T: Clone + Eq + Hash + Debug + Send + Sync + 'static> SyncId for T {
    type Id = T;
}

/// Checks that a field's type can be a store key; `<T as SyncStoreKey>::Key` is `T`.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the store key of a synced model",
    label = "batches are grouped by store in a hash map, so this type must be `Clone + Eq + Hash + Debug + Send + Sync + 'static`",
    note = "group by a column of an integer, `String` or `Uuid` type, or by a newtype that derives `Clone, PartialEq, Eq, Hash, Debug`"
)]
pub trait SyncStoreKey {
    /// The store key type itself.
    type Key: Clone + Eq + Hash + Debug + Send + Sync + 'static;
}

#[diagnostic::do_not_recommend]
impl<T: Clone + Eq + Hash + Debug + Send + Sync + 'static> SyncStoreKey for T {
    type Key = T;
}

/// Checks that a reference model's key field holds its target's id: implemented for a target
/// `T` and `K = T::Id` only.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "the key field has type `{K}`, which is not the id type of `{Self}`",
    label = "this field holds the id of a `{Self}`, so it must have the type of `{Self}`'s primary key",
    note = "give the key field the type of the primary key field of `{Self}`"
)]
pub trait IdOfType<K>: SyncTarget {
    /// The key, as the target's id.
    fn id_from_key(key: K) -> Self::Id;
}

impl<T: SyncTarget> IdOfType<T::Id> for T {
    fn id_from_key(key: T::Id) -> T::Id {
        key
    }
}
