//! Where batches go when every attempt failed: nothing committed disappears silently.

use std::any::Any;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::handler::Batch;
use crate::outbox::{failed_entries, NewEntry};
use crate::synced::SyncTarget;

/// A batch that could not be delivered, with the reason.
pub struct DeadLetter {
    model: &'static str,
    store: Option<String>,
    ids: Vec<String>,
    error: String,
    attempts: u32,
    payload: Box<dyn Any + Send + Sync>,
    /// The dead outbox rows recording it, in durable mode.
    record: Record,
}

type Record =
    fn(&(dyn Any + Send + Sync), &str, u32, Option<Duration>) -> Result<Vec<NewEntry>, String>;

impl DeadLetter {
    pub(crate) fn undelivered<T: SyncTarget>(
        batch: Batch<T>,
        error: String,
        attempts: u32,
    ) -> Self {
        Self {
            model: std::any::type_name::<T>(),
            store: Some(format!("{:?}", batch.store())),
            ids: batch
                .ids()
                .chain(batch.removed().iter().cloned())
                .map(|id| format!("{id:?}"))
                .collect(),
            error,
            attempts,
            payload: Box::new(batch),
            record: failed_entries::<T>,
        }
    }

    pub(crate) fn unresolved<T: SyncTarget>(ids: Vec<T::Id>, error: String) -> Self {
        Self {
            model: std::any::type_name::<T>(),
            store: None,
            ids: ids.iter().map(|id| format!("{id:?}")).collect(),
            error,
            attempts: 0,
            payload: Box::new(ids),
            record: failed_entries::<T>,
        }
    }

    /// The target model's type name.
    pub fn model(&self) -> &'static str {
        self.model
    }

    /// The store key (`Debug`-formatted), or `None` when the rows could not even be loaded.
    pub fn store(&self) -> Option<&str> {
        self.store.as_deref()
    }

    /// The ids of the batch, rows written then rows removed (`Debug`-formatted).
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// The last error.
    pub fn error(&self) -> &str {
        &self.error
    }

    /// How many calls were made (0 when the rows could not be loaded after commit).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The outbox rows that keep this letter in durable mode: to retry after `retry`, or dead.
    pub(crate) fn outbox_entries(&self, retry: Option<Duration>) -> Result<Vec<NewEntry>, String> {
        (self.record)(&*self.payload, &self.error, self.attempts, retry)
    }

    /// The undelivered batch, typed, to send again.
    pub fn batch<T: SyncTarget>(&self) -> Option<&Batch<T>> {
        self.payload.downcast_ref()
    }

    /// The committed ids whose rows could not be loaded, typed, to mark changed again.
    pub fn unresolved_ids<T: SyncTarget>(&self) -> Option<&[T::Id]> {
        self.payload.downcast_ref::<Vec<T::Id>>().map(Vec::as_slice)
    }
}

impl fmt::Debug for DeadLetter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetter")
            .field("model", &self.model)
            .field("store", &self.store)
            .field("ids", &self.ids.len())
            .field("error", &self.error)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// Receives dead letters. The default, [`DeadLetters`], keeps them in memory.
pub trait DeadLetterSink: Send + Sync + 'static {
    /// Stores one dead letter. Must not block for long: it runs on a dispatch task.
    fn put(&self, letter: DeadLetter);
}

/// The in-memory dead-letter sink: inspect it, drain it, re-drive what it holds.
#[derive(Clone, Default)]
pub struct DeadLetters {
    letters: Arc<Mutex<Vec<DeadLetter>>>,
}

impl DeadLetters {
    /// How many dead letters are held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Takes every dead letter out.
    pub fn drain(&self) -> Vec<DeadLetter> {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<DeadLetter>> {
        self.letters.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl DeadLetterSink for DeadLetters {
    fn put(&self, letter: DeadLetter) {
        self.lock().push(letter);
    }
}

impl fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetters")
            .field("len", &self.len())
            .finish()
    }
}
