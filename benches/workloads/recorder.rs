//! The in-memory recorder handler, and the check of what it recorded against what committed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use diesel_sync::{Batch, HandlerError, Registry, RegistryBuilder, Resolves, RetryPolicy};

use crate::schema::Product;

/// One handler call as the recorder saw it.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub(crate) ids: Vec<i64>,
    /// Every row of the batch belongs to the batch's store.
    pub(crate) rows_in_store: bool,
    /// When the handler was entered.
    pub(crate) at: Instant,
}

/// Records every batch; the handler does no other work.
#[derive(Debug, Clone, Default)]
pub(crate) struct Recorder {
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Recorder {
    /// A registry whose only handler is this recorder (no retries: it never fails).
    pub(crate) fn registry<Conn: Resolves<Product>>(&self) -> Registry<Conn> {
        self.builder().build()
    }

    /// The builder of [`Recorder::registry`], to add to before it is built.
    pub(crate) fn builder<Conn: Resolves<Product>>(&self) -> RegistryBuilder<Conn, Product> {
        let calls = Arc::clone(&self.calls);
        Registry::builder()
            .handler(move |batch: Batch<Product>| {
                let at = Instant::now();
                let calls = Arc::clone(&calls);
                async move {
                    let store = *batch.store();
                    let call = Call {
                        ids: batch.ids().collect(),
                        rows_in_store: batch.rows().iter().all(|p| p.store_id == store),
                        at,
                    };
                    calls
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(call);
                    Ok::<(), HandlerError>(())
                }
            })
            .retry_policy(RetryPolicy::never())
    }

    /// Takes the calls recorded so far.
    pub(crate) fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// What should be delivered: for each id, how many committed transactions wrote it, and how many
/// handler calls those commits make (one per distinct store of each committed transaction).
#[derive(Debug, Default)]
pub(crate) struct Expected {
    ids: HashMap<i64, u64>,
    pub(crate) calls: u64,
    pub(crate) resolve_queries: u64,
    /// Ids written by work that rolled back.
    rolled_back: HashSet<i64>,
}

impl Expected {
    /// A committed transaction that wrote `ids`; `chunk` is the resolve chunk of the backend.
    pub(crate) fn commit(
        &mut self,
        ids: impl IntoIterator<Item = i64>,
        per_store: usize,
        chunk: usize,
    ) {
        let ids: HashSet<i64> = ids.into_iter().collect();
        if ids.is_empty() {
            return;
        }
        let stores: HashSet<i64> = ids
            .iter()
            .map(|&id| crate::schema::store_of(id, per_store))
            .collect();
        self.calls += stores.len() as u64;
        self.resolve_queries += ids.len().div_ceil(chunk) as u64;
        for id in ids {
            *self.ids.entry(id).or_default() += 1;
        }
    }

    /// Work that rolled back and must deliver nothing.
    pub(crate) fn roll_back(&mut self, ids: impl IntoIterator<Item = i64>) {
        self.rolled_back.extend(ids);
    }

    /// Ids delivered in total over all committed transactions (an id once per transaction).
    pub(crate) fn ids_total(&self) -> u64 {
        self.ids.values().sum()
    }
}

/// What a run delivered, compared with what it committed.
///
/// A store has one call in flight at a time; batches that commit meanwhile wait merged into one
/// (an id once, its latest row). So calls may be fewer than the committed (transaction, store)
/// pairs, and an id two merged batches share is delivered once: `merged_calls` counts the
/// difference. Every committed id must still be delivered, and none more often than committed
/// transactions wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) calls: u64,
    pub(crate) expected_calls: u64,
    pub(crate) ids_total: u64,
    pub(crate) ids_distinct: u64,
    pub(crate) expected_ids: u64,
    pub(crate) expected_distinct: u64,
    pub(crate) resolve_queries: u64,
    pub(crate) expected_resolve_queries: u64,
    /// Deliveries beyond what committed work accounts for: an id from rolled-back work, or an
    /// id delivered more often than committed transactions wrote it.
    pub(crate) leaked: u64,
    /// Committed ids never delivered.
    pub(crate) missed: u64,
    /// Of the leaked deliveries, those of ids that only rolled-back work wrote.
    pub(crate) leaked_rolled_back_only: u64,
    /// Calls holding a row of another store.
    pub(crate) misrouted_calls: u64,
    pub(crate) dead_letters: u64,
    /// Durable delivery: a worker round loads the ids of several commits at once, so the
    /// resolve queries expected are an upper bound.
    pub(crate) resolve_queries_at_most: bool,
}

impl Outcome {
    pub(crate) fn check<Conn: 'static>(
        calls: &[Call],
        expected: &Expected,
        registry: &Registry<Conn>,
    ) -> Self {
        let mut delivered: HashMap<i64, u64> = HashMap::new();
        for call in calls {
            for &id in &call.ids {
                *delivered.entry(id).or_default() += 1;
            }
        }
        let mut leaked = 0;
        let mut leaked_rolled_back_only = 0;
        for (id, &times) in &delivered {
            let due = expected.ids.get(id).copied().unwrap_or(0);
            if times > due {
                leaked += times - due;
                if due == 0 && expected.rolled_back.contains(id) {
                    leaked_rolled_back_only += times;
                }
            }
        }
        let missed = expected
            .ids
            .keys()
            .filter(|id| !delivered.contains_key(id))
            .count() as u64;
        let metrics = registry.metrics();
        Self {
            calls: calls.len() as u64,
            expected_calls: expected.calls,
            ids_total: delivered.values().sum(),
            ids_distinct: delivered.len() as u64,
            expected_ids: expected.ids_total(),
            expected_distinct: expected.ids.len() as u64,
            resolve_queries: metrics.resolve_queries,
            expected_resolve_queries: expected.resolve_queries,
            leaked,
            missed,
            leaked_rolled_back_only,
            misrouted_calls: calls.iter().filter(|c| !c.rows_in_store).count() as u64,
            dead_letters: metrics.dead_letters,
            resolve_queries_at_most: registry.is_durable(),
        }
    }

    /// Calls saved by merging batches that waited behind a call to the same store.
    pub(crate) fn merged_calls(&self) -> u64 {
        self.expected_calls.saturating_sub(self.calls)
    }

    /// Every correctness field as the workload expects it. Without merged calls, every
    /// transaction's ids are delivered exactly once each.
    pub(crate) fn ok(&self) -> bool {
        let resolve_queries = if self.resolve_queries_at_most {
            self.resolve_queries <= self.expected_resolve_queries
        } else {
            self.resolve_queries == self.expected_resolve_queries
        };
        let deliveries = if self.merged_calls() == 0 {
            self.ids_total == self.expected_ids
        } else {
            self.ids_total <= self.expected_ids
        };
        self.leaked == 0
            && self.missed == 0
            && self.calls <= self.expected_calls
            && self.ids_distinct == self.expected_distinct
            && deliveries
            && resolve_queries
            && self.misrouted_calls == 0
            && self.dead_letters == 0
    }

    /// The fields that do not depend on timing (merging does), for comparing runs.
    pub(crate) fn deterministic(&self) -> (u64, u64, u64, u64, u64, u64) {
        // Durable delivery: how many commits a worker round loads at once depends on timing.
        let resolve_queries = if self.resolve_queries_at_most {
            0
        } else {
            self.resolve_queries
        };
        (
            self.ids_distinct,
            resolve_queries,
            self.leaked,
            self.missed,
            self.misrouted_calls,
            self.dead_letters,
        )
    }
}
