//! The runtime of [diesel-sync](https://docs.rs/diesel-sync): what `#[derive(Synced)]` plugs
//! into. Depend on the `diesel-sync` crate, which re-exports this one with the derive.
//!
//! Data goes one way:
//!
//! 1. **statement**: the application writes with plain Diesel (or raw SQL) through a
//!    [`SyncedConnection`];
//! 2. **capture**: the connection plans each statement once per statement type (`capture`,
//!    with `classify` parsing the SQL and `catalog` naming the tables `#[derive(Synced)]`
//!    registered): a write to a synced table runs with its key column returned (or, where the
//!    connection cannot read returned rows, after a `SELECT … FOR UPDATE` of its keys, or with
//!    the keys its INSERT binds), one it cannot read exactly is refused with [`CaptureRefused`]
//!    before it runs, anything else passes through. The typed writes ([`insert_into`],
//!    [`update`], [`delete`]), `save_changes` and [`SyncedConnection::mark_changed`] register
//!    their ids directly;
//! 3. **collector**: the ids go to the innermost transaction's frame, deduplicated per target
//!    model;
//! 4. **commit**: a released savepoint merges into its parent, a rollback drops its frame, and
//!    the outermost COMMIT hands its frame on once the database accepted it; a transaction left
//!    open by a `transaction()` that never finished is rolled back before the next one. A
//!    [durable](RegistryBuilder::durable) registry's COMMIT first writes the frame to the
//!    outbox table in the same transaction (`outbox`), and its worker (`worker`) claims the
//!    rows and runs the next steps on a connection of its own, deleting a row once delivered;
//! 5. **resolve**: each target model's ids are loaded over the connection, as the
//!    [`Registry`] built for its type knows how (when the registry serves a pool, over a
//!    connection of its own, off the caller's path: `offload` queues the committed frame,
//!    and frames queued during one round merge into the next), in one prepared query per chunk, left-joined
//!    with the store model's table when the target names one ([`SyncTarget::Store`]); a deleted
//!    row that did not load is a removal from the store the capture read with its key, other
//!    ids without a row are skipped as stale; rows and removals are grouped by store key, each
//!    group with its store's row; ids a dropped flush did not hand on are dead-lettered;
//! 6. **dispatch**: each store's batch is asked of the model's store filter
//!    ([`RegistryBuilder::when`]), then queued on the [`Registry`], one call in flight per
//!    store, retried by [`RetryPolicy`], dead-lettered when retries run out; a store whose
//!    runtime shuts down mid-call continues on the registry's own;
//! 7. **handler**: the [`Handler`] registered for the model delivers the [`Batch`].
//!
//! The same pipeline runs over synchronous Diesel connections and r2d2 pools: see [`blocking`].
#![forbid(unsafe_code)]

// In pipeline order: the models, statement → capture → collector → commit (the connections)
// → resolve → dispatch → handler, then what the typed writes and errors share.
mod synced;

mod catalog;
mod classify;

mod capture;

mod collector;

mod connection;
#[cfg(any(feature = "deadpool", feature = "bb8"))]
mod pool;

pub mod blocking;

mod offload;
mod registry;
mod resolve;

mod dispatch;
mod dispatcher;
mod retry;

mod dead_letter;
mod handler;
mod metrics;

mod outbox;
mod worker;

mod backend;
mod error;
mod write;

pub use backend::{KeyQuery, SyncBackend, WriteIds};
pub use capture::CaptureBackend;
pub use catalog::CaptureKey;
pub use connection::{
    AsSynced, CaptureConnection, CapturedCount, CapturedLoad, HeldRows, SyncedConnection,
    SyncedLoad, SyncedTransactionManager,
};
pub use dead_letter::{DeadLetter, DeadLetterSink, DeadLetters};
pub use dispatcher::ShutdownReport;
pub use error::{CaptureRefused, HandlerError};
pub use handler::{Batch, Handler};
pub use metrics::Metrics;
pub use outbox::{migrations, DeadRow, Durable, OutboxBackend};
pub use registry::{
    DurableConnection, Mismatch, Registry, RegistryBuilder, Resolves, WithStoreModel,
};
pub use resolve::{Loaded, Resolve};
pub use retry::RetryPolicy;
pub use synced::{KeyInRow, NoStore, StoreModel, SyncTarget, Synced, SyncedTable, TargetId};
pub use write::{
    delete, insert_into, update, DecorateInsert, InsertBuilder, InsertRows, KeysFromRows, Plain,
    SyncedDelete, SyncedInsert, SyncedRows, SyncedUpdate, SyncedWrite, UpdateBuilder, Upsert,
};

/// Items the derive's generated code names. Not public API: no stability guarantees.
#[doc(hidden)]
pub mod __private {
    pub use crate::capture::{OwnedBinds, OwnedStatement};
    pub use crate::catalog::{
        CaptureStore, Deletes, DynKey, KeyCodec, KeyKind, KeyProbe, ModelFacts, ModelProbe,
        NamedTable, OpaqueKey, OpaqueStore, ReadableKey, ReadableStore, Registered, StoreProbe,
        SyncedModel, TableProbe, UnnamedTable, Unregistered,
    };
    pub use crate::classify::{Dialect, InsertedKey};
    pub use crate::outbox::{Claim, DeadEntry, Entry, NewEntry};
    pub use crate::registry::DurableSetup;
    pub use crate::synced::{
        assert_id, assert_model, assert_store_key, assert_store_model, assert_target,
        assert_target_model, KeyBounds, KeyInRow, LoadsAlone, LoadsWithStore, NoStore, StoreModel,
        SyncTarget, Synced, SyncedTable, TargetId,
    };
    pub use crate::write::SyncedRows;
    pub use diesel;
    pub use inventory;

    /// A copy of a field's value. Spelled as a function so that a field of a `Copy` type does
    /// not trip `clippy::clone_on_copy` in the user's crate.
    #[inline]
    pub fn field<T: Clone>(value: &T) -> T {
        value.clone()
    }

    /// What the derive implements the traits with when it reported an error and does not know
    /// the table or the key: the impls exist, so code that uses the model reports nothing more.
    pub mod fallback {
        diesel::table! {
            /// Stands in for the table of a model whose derive failed; never queried.
            fallback (id) {
                id -> Integer,
            }
        }

        /// Stands in for the id type of a model whose derive failed.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub struct Id;
    }
}
