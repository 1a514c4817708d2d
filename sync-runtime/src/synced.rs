//! The traits `#[derive(Synced)]` implements: what a model syncs, and how its table finds it.

use std::fmt::Debug;
use std::hash::Hash;

use diesel::{Column, SelectableExpression, Table};

/// A Diesel model whose writes are synced after commit.
///
/// Implemented by `#[derive(Synced)]`. A model either syncs itself (a *target*, which also
/// implements [`SyncTarget`]) or references a target through a key column (a *reference model*:
/// a `PriceRecord` whose `object_id` names the `Product` to sync).
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
/// Implemented by `#[derive(Synced)]`; statement-level writes ([`crate::update`],
/// [`crate::delete`], [`crate::insert_into`]) find the model through it.
#[diagnostic::on_unimplemented(
    message = "no model of table `{Self}` derives `Synced`",
    label = "writes to this table cannot be synced",
    note = "add `#[derive(Synced)]` to the Diesel model of this table"
)]
pub trait SyncedTable: Table {
    /// The synced model of this table.
    type Model: Synced<Table = Self>;
}

/// The id type of the target a model syncs.
pub type TargetId<M> = <<M as Synced>::Target as SyncTarget>::Id;
/// The target model that a write to table `T` syncs.
pub(crate) type TargetOf<T> = <<T as SyncedTable>::Model as Synced>::Target;
/// The key column of table `T`'s synced model.
pub(crate) type KeyOf<T> = <<T as SyncedTable>::Model as Synced>::KeyColumn;
/// The target id type of a write to table `T`.
pub(crate) type IdOf<T> = TargetId<<T as SyncedTable>::Model>;
