//! What a handler receives and the trait it implements.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use crate::error::HandlerError;
use crate::synced::SyncTarget;

/// The committed changes of one store, handed to a [`Handler`] in one call: the rows written,
/// as committed, and the ids of the rows deleted.
///
/// Rows are shared, so a retry re-sends the same batch without cloning the models.
pub struct Batch<T: SyncTarget> {
    store: T::StoreKey,
    store_row: Option<Arc<T::Store>>,
    rows: Arc<[T]>,
    removed: Arc<[T::Id]>,
    attempt: u32,
}

/// One store's changes on their way to a batch: rows to send, ids to remove, and the store's
/// row when the target names a store model.
pub(crate) struct Changes<T: SyncTarget> {
    pub(crate) rows: Vec<T>,
    pub(crate) removed: Vec<T::Id>,
    pub(crate) store: Option<Arc<T::Store>>,
}

impl<T: SyncTarget> Changes<T> {
    /// Rows written, nothing removed.
    #[cfg(test)]
    pub(crate) fn rows(rows: Vec<T>) -> Self {
        Self {
            rows,
            removed: Vec::new(),
            store: None,
        }
    }
}

impl<T: SyncTarget> Default for Changes<T> {
    fn default() -> Self {
        Self {
            rows: Vec::new(),
            removed: Vec::new(),
            store: None,
        }
    }
}

impl<T: SyncTarget> Batch<T> {
    pub(crate) fn new(store: T::StoreKey, changes: Changes<T>) -> Self {
        Self {
            store,
            store_row: changes.store,
            rows: changes.rows.into(),
            removed: changes.removed.into(),
            attempt: 1,
        }
    }

    pub(crate) fn with_attempt(&self, attempt: u32) -> Self {
        Self {
            attempt,
            ..self.clone()
        }
    }

    /// The store every row of the batch belongs to.
    pub fn store(&self) -> &T::StoreKey {
        &self.store
    }

    /// The store's row, loaded in the same query as the batch's rows, when the target names its
    /// store model with `#[synced(store = Store)]`. `None` without a store model, or when no row
    /// of the store exists.
    pub fn store_row(&self) -> Option<&T::Store> {
        self.store_row.as_deref()
    }

    /// The rows written, as committed, one per id.
    pub fn rows(&self) -> &[T] {
        &self.rows
    }

    /// The ids of the rows, in batch order.
    pub fn ids(&self) -> impl Iterator<Item = T::Id> + '_ {
        self.rows.iter().map(crate::Synced::sync_key)
    }

    /// The ids of rows deleted from this store: remove them from the external system. A row
    /// deleted and written again before its transaction committed is in [`Batch::rows`]
    /// instead; so is a row of a target deleted through a reference model, which changes it.
    pub fn removed(&self) -> &[T::Id] {
        &self.removed
    }

    /// How many changes the batch holds: rows written and rows removed.
    pub fn len(&self) -> usize {
        self.rows.len() + self.removed.len()
    }

    /// Whether the batch holds no change.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.removed.is_empty()
    }

    /// Which attempt this call is: 1 for the first, 2 for the first retry, and so on.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

impl<T: SyncTarget> Clone for Batch<T> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            store_row: self.store_row.clone(),
            rows: Arc::clone(&self.rows),
            removed: Arc::clone(&self.removed),
            attempt: self.attempt,
        }
    }
}

impl<T: SyncTarget> fmt::Debug for Batch<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("store", &self.store)
            .field("store_row", &self.store_row)
            .field("rows", &self.rows)
            .field("removed", &self.removed)
            .field("attempt", &self.attempt)
            .finish()
    }
}

/// Delivers the committed batches of one target model to an external system.
///
/// Called once per store per flush, off the committing task. Return
/// [`HandlerError`] to have the batch retried or dead-lettered. Any async closure
/// `Fn(Batch<T>) -> impl Future<Output = Result<(), HandlerError>>` is a handler:
///
/// ```
/// # use diesel_sync_runtime as diesel_sync;
/// # use diesel_sync::{Batch, HandlerError, Handler, SyncTarget};
/// # fn check<T: SyncTarget>() -> impl Handler<T> {
/// async |batch: Batch<T>| -> Result<(), HandlerError> {
///     println!("store {:?}: {} rows", batch.store(), batch.len());
///     Ok(())
/// }
/// # }
/// ```
pub trait Handler<T: SyncTarget>: Send + Sync + 'static {
    /// Delivers one store's batch.
    fn handle(&self, batch: Batch<T>) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

impl<T, F, Fut> Handler<T> for F
where
    T: SyncTarget,
    F: Fn(Batch<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    fn handle(&self, batch: Batch<T>) -> impl Future<Output = Result<(), HandlerError>> + Send {
        self(batch)
    }
}
