//! Counters of what was collected, resolved, delivered and lost, readable from the registry.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a registry's counters since it was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// Distinct ids handed on after commits (or after writes outside a transaction).
    pub ids_committed: u64,
    /// Committed ids whose rows no longer existed when resolved, and were not deleted by the
    /// transaction that committed them (a later one did, and sends the removal).
    pub ids_stale: u64,
    /// Committed ids of deleted rows, sent as removals.
    pub ids_removed: u64,
    /// Resolve queries run (joined with the store model's table, when the target names one),
    /// and queries for the stores of batches that only remove rows.
    pub resolve_queries: u64,
    /// Batches queued for a handler (before merging behind an in-flight call).
    pub batches: u64,
    /// Batches a store filter turned away ([`RegistryBuilder::when`](crate::RegistryBuilder::when)),
    /// not counted in `batches`.
    pub batches_skipped: u64,
    /// Handler calls made, retries included.
    pub calls: u64,
    /// Calls that were retries.
    pub retries: u64,
    /// Calls that failed (errors and panics).
    pub failures: u64,
    /// Batches delivered.
    pub delivered: u64,
    /// Dead letters written (undelivered batches and unresolvable id sets).
    pub dead_letters: u64,
    /// Batches queued or in flight now.
    pub pending: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) ids_committed: AtomicU64,
    pub(crate) ids_stale: AtomicU64,
    pub(crate) ids_removed: AtomicU64,
    pub(crate) resolve_queries: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) batches_skipped: AtomicU64,
    pub(crate) calls: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) dead_letters: AtomicU64,
    /// Resolve queries that failed: a registry's own connection reconnects after one.
    pub(crate) failed_loads: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, pending: u64) -> Metrics {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Metrics {
            ids_committed: read(&self.ids_committed),
            ids_stale: read(&self.ids_stale),
            ids_removed: read(&self.ids_removed),
            resolve_queries: read(&self.resolve_queries),
            batches: read(&self.batches),
            batches_skipped: read(&self.batches_skipped),
            calls: read(&self.calls),
            retries: read(&self.retries),
            failures: read(&self.failures),
            delivered: read(&self.delivered),
            dead_letters: read(&self.dead_letters),
            pending,
        }
    }
}
