//! Delivery after commit: one worker task per busy store, retries with backoff, dead letters.
//!
//! A store has at most one call in flight, so it sees its batches in commit order. Batches that
//! arrive while a call is in flight wait in one merged batch (one row per id, the latest
//! committed row wins), so a burst of commits to one store makes few calls.

use std::any::{type_name, Any};
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures_util::future::join_all;
use futures_util::FutureExt;
use tokio::task::AbortHandle;
use tracing::Instrument;

use crate::dead_letter::DeadLetter;
use crate::dispatcher::Shared;
use crate::error::{HandlerError, Retry};
use crate::handler::{Batch, Changes, Handler};
use crate::metrics::Counters;
use crate::retry::RetryPolicy;
use crate::synced::SyncTarget;
use crate::worker::DurableState;

type CallFuture<'a> = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + 'a>>;

/// A handler behind a pointer: `Handler::handle` returns an opaque future.
trait DynHandler<T: SyncTarget>: Send + Sync {
    fn call(&self, batch: Batch<T>) -> CallFuture<'_>;
}

impl<T: SyncTarget, H: Handler<T>> DynHandler<T> for H {
    fn call(&self, batch: Batch<T>) -> CallFuture<'_> {
        Box::pin(self.handle(batch))
    }
}

/// Whether a store's batches are delivered, asked of its row as each batch arrives; see
/// [`RegistryBuilder::when`](crate::RegistryBuilder::when).
pub(crate) type StoreFilter<T> = Box<dyn Fn(&<T as SyncTarget>::Store) -> bool + Send + Sync>;

/// The handler, policy, store filter and per-store queues of one target model.
pub(crate) struct ModelQueue<T: SyncTarget> {
    handler: Box<dyn DynHandler<T>>,
    policy: RetryPolicy,
    filter: Option<StoreFilter<T>>,
    stores: Mutex<HashMap<T::StoreKey, StoreState<T>>>,
}

/// A store with work: the batch in flight and the merged batch waiting behind it.
struct StoreState<T: SyncTarget> {
    in_flight: Option<Batch<T>>,
    /// The calls that failed for the batch in flight, and the last error: what a dead letter
    /// made at the shutdown deadline reports.
    failed: Option<(u32, String)>,
    waiting: Option<Waiting<T>>,
    task: Option<AbortHandle>,
    /// The dispatch that started its worker, which records the worker's task.
    started_by: u64,
}

/// Numbers each dispatch that starts workers.
static DISPATCHES: AtomicU64 = AtomicU64::new(0);

/// Changes that arrived while a call was in flight, one per id: the latest wins, as does the
/// latest store row.
struct Waiting<T: SyncTarget> {
    changes: Vec<Change<T>>,
    index: HashMap<T::Id, usize>,
    store: Option<Arc<T::Store>>,
}

enum Change<T: SyncTarget> {
    Row(T),
    Removed(T::Id),
}

/// The model-independent face of a [`ModelQueue`], as the registry stores it.
pub(crate) trait AnyModelQueue: Send + Sync {
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
    /// Dead-letters everything queued or in flight; returns how many batches that was.
    fn abandon(&self, shared: &Shared, reason: &str) -> usize;
}

impl<T: SyncTarget> ModelQueue<T> {
    pub(crate) fn new(
        handler: impl Handler<T>,
        policy: RetryPolicy,
        filter: Option<StoreFilter<T>>,
    ) -> Self {
        Self {
            handler: Box::new(handler),
            policy,
            filter,
            stores: Mutex::new(HashMap::new()),
        }
    }

    fn stores(&self) -> MutexGuard<'_, HashMap<T::StoreKey, StoreState<T>>> {
        self.stores.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What the store filter says of these changes: it turns them away when it said no to the
    /// store's row, or there is no row to ask. It runs right after a COMMIT, so its panic is
    /// caught (the batch is then dead-lettered).
    fn verdict(&self, store: &T::StoreKey, changes: &Changes<T>) -> Verdict {
        let Some(filter) = &self.filter else {
            return Verdict::Deliver;
        };
        let model = type_name::<T>();
        match changes.store.as_deref() {
            Some(row) => match std::panic::catch_unwind(AssertUnwindSafe(|| filter(row))) {
                Ok(true) => Verdict::Deliver,
                Ok(false) => {
                    tracing::debug!(
                        model,
                        ?store,
                        changes = changes.rows.len() + changes.removed.len(),
                        "store filtered out; batch skipped"
                    );
                    Verdict::Skip
                }
                Err(panic) => Verdict::Panicked(panic_message(&*panic).to_owned()),
            },
            None => {
                tracing::warn!(
                    model,
                    ?store,
                    changes = changes.rows.len() + changes.removed.len(),
                    "no row of this store exists to ask the store filter; batch skipped"
                );
                Verdict::Skip
            }
        }
    }
}

/// What a model's store filter says of a batch.
enum Verdict {
    Deliver,
    Skip,
    /// The filter panicked, with this message.
    Panicked(String),
}

impl<T: SyncTarget> AnyModelQueue for ModelQueue<T> {
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }

    fn abandon(&self, shared: &Shared, reason: &str) -> usize {
        let mut abandoned = 0;
        // Taken out first: an aborted worker may be dropped at once, and it locks the queue.
        let stores: Vec<_> = self.stores().drain().collect();
        for (store, state) in stores {
            if let Some(task) = state.task {
                task.abort();
            }
            let in_flight = state.in_flight.map(|batch| match state.failed {
                Some((attempts, error)) => {
                    let error = format!("{reason}; the last of {attempts} calls failed: {error}");
                    (batch, error, attempts)
                }
                None => (batch, reason.to_owned(), 0),
            });
            let waiting = state.waiting.map(|waiting| {
                (
                    Batch::new(store.clone(), waiting.into_changes()),
                    reason.to_owned(),
                    0,
                )
            });
            for (batch, error, attempts) in in_flight.into_iter().chain(waiting) {
                shared.dead_letter(DeadLetter::undelivered(batch, error, attempts));
                shared.settle(1);
                abandoned += 1;
            }
        }
        abandoned
    }
}

/// Queues one flush's batches of model `T`, starting a worker for each idle store. The
/// workers a flush starts run in one task: a commit wakes the runtime once, however many
/// stores it touched.
pub(crate) fn dispatch<T: SyncTarget>(
    shared: &Arc<Shared>,
    queue: &Arc<ModelQueue<T>>,
    batches: Vec<(T::StoreKey, Changes<T>)>,
) {
    let mut stores = queue.stores();
    let dispatch_id = DISPATCHES.fetch_add(1, Ordering::Relaxed);
    let (mut started, mut workers) = (Vec::new(), Vec::new());
    for (store, changes) in batches {
        match queue.verdict(&store, &changes) {
            Verdict::Deliver => {}
            Verdict::Skip => {
                Counters::add(&shared.counters.batches_skipped, 1);
                continue;
            }
            Verdict::Panicked(message) => {
                tracing::error!(
                    model = type_name::<T>(),
                    ?store,
                    panic = message,
                    "the store filter panicked; batch dead-lettered"
                );
                let error = format!("the store filter panicked: {message}");
                shared.dead_letter(DeadLetter::undelivered(
                    Batch::new(store, changes),
                    error,
                    0,
                ));
                continue;
            }
        }
        Counters::add(&shared.counters.batches, 1);
        match stores.entry(store) {
            Entry::Occupied(mut busy) => {
                let state = busy.get_mut();
                match &mut state.waiting {
                    Some(waiting) => waiting.merge(changes),
                    None => {
                        shared.start(1);
                        let mut waiting = Waiting::default();
                        waiting.merge(changes);
                        state.waiting = Some(waiting);
                    }
                }
            }
            Entry::Vacant(idle) => {
                shared.start(1);
                let batch = Batch::new(idle.key().clone(), changes);
                started.push(idle.key().clone());
                let worker = StoreWorker::new(shared, queue, idle.key().clone(), dispatch_id);
                workers.push(run_store(worker, batch.clone()));
                idle.insert(StoreState {
                    in_flight: Some(batch),
                    failed: None,
                    waiting: None,
                    task: None,
                    started_by: dispatch_id,
                });
            }
        }
    }
    if workers.is_empty() {
        return;
    }
    // Spawned with the queue unlocked: waking the runtime takes a system call, and the
    // workers lock the queue as soon as their call returns.
    drop(stores);
    let spawned = shared.spawn(join_all(workers).map(drop));
    let mut stores = queue.stores();
    let task = match spawned {
        Ok(task) => task,
        Err(error) => {
            // Never a panic after COMMIT: the batches the workers would have delivered are
            // dead-lettered, with what went wrong.
            tracing::error!(model = type_name::<T>(), %error, "batches dead-lettered");
            for store in started {
                let Some(state) = stores.remove(&store) else {
                    continue;
                };
                let batches = state.in_flight.into_iter().chain(
                    state
                        .waiting
                        .map(|waiting| Batch::new(store.clone(), waiting.into_changes())),
                );
                for batch in batches {
                    shared.dead_letter(DeadLetter::undelivered(batch, error.clone(), 0));
                    shared.settle(1);
                }
            }
            return;
        }
    };
    for store in started {
        // A worker done by now has removed its store, and another dispatch may have started
        // a new one since.
        match stores.get_mut(&store) {
            Some(state) if state.started_by == dispatch_id => state.task = Some(task.clone()),
            _ => {}
        }
    }
}

/// Delivers a store's batches one at a time until none is waiting.
async fn run_store<T: SyncTarget>(mut worker: StoreWorker<T>, mut batch: Batch<T>) {
    let (shared, queue) = (Arc::clone(&worker.shared), Arc::clone(&worker.queue));
    loop {
        let store = batch.store().clone();
        deliver(&shared, &queue, batch).await;
        let mut stores = queue.stores();
        // Gone when shutdown abandoned this store meanwhile; it settled the batch then.
        let Some(state) = stores.get_mut(&store) else {
            worker.finished = true;
            return;
        };
        shared.settle(1);
        match state.waiting.take() {
            Some(waiting) => {
                batch = Batch::new(store, waiting.into_changes());
                state.in_flight = Some(batch.clone());
                state.failed = None;
            }
            None => {
                stores.remove(&store);
                worker.finished = true;
                return;
            }
        }
    }
}

/// A store's worker, as its task holds it. Dropped before it finished, because the runtime
/// running it shut down (a per-test runtime, a command-line tool's `block_on`), it restarts the
/// store's delivery on the registry's own runtime: the store is never left in flight for good.
struct StoreWorker<T: SyncTarget> {
    shared: Arc<Shared>,
    queue: Arc<ModelQueue<T>>,
    store: T::StoreKey,
    /// The `started_by` of the store state this worker serves.
    id: u64,
    finished: bool,
}

impl<T: SyncTarget> StoreWorker<T> {
    fn new(shared: &Arc<Shared>, queue: &Arc<ModelQueue<T>>, store: T::StoreKey, id: u64) -> Self {
        Self {
            shared: Arc::clone(shared),
            queue: Arc::clone(queue),
            store,
            id,
            finished: false,
        }
    }
}

impl<T: SyncTarget> Drop for StoreWorker<T> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut stores = self.queue.stores();
        // Shutdown abandoned the store (and aborted this task), or a later worker serves it.
        let Some(state) = stores.get_mut(&self.store) else {
            return;
        };
        if state.started_by != self.id {
            return;
        }
        let Some(batch) = state.in_flight.clone() else {
            return;
        };
        let model = type_name::<T>();
        let runtime = match self.shared.background_handle() {
            Ok(runtime) => runtime,
            Err(error) => {
                tracing::error!(model, store = ?self.store, %error, "batches dead-lettered");
                let Some(state) = stores.remove(&self.store) else {
                    return;
                };
                let waiting = state
                    .waiting
                    .map(|waiting| Batch::new(self.store.clone(), waiting.into_changes()));
                for batch in state.in_flight.into_iter().chain(waiting) {
                    self.shared
                        .dead_letter(DeadLetter::undelivered(batch, error.clone(), 0));
                    self.shared.settle(1);
                }
                return;
            }
        };
        tracing::warn!(
            model,
            store = ?self.store,
            "the runtime delivering this store's batch shut down; delivery continues on the registry's own runtime"
        );
        let id = DISPATCHES.fetch_add(1, Ordering::Relaxed);
        state.started_by = id;
        let worker = StoreWorker::new(&self.shared, &self.queue, self.store.clone(), id);
        state.task = Some(runtime.spawn(run_store(worker, batch)).abort_handle());
    }
}

/// Calls the handler until the batch is delivered or the policy gives up. A durable registry
/// makes one call per delivery round, the round's attempt: a failure is retried by a later
/// round, the outbox holding the attempt count, the next attempt's time and the error.
async fn deliver<T: SyncTarget>(shared: &Shared, queue: &ModelQueue<T>, batch: Batch<T>) {
    let model = type_name::<T>();
    let durable = shared.durable();
    let mut attempt = durable.map_or(1, DurableState::round_attempt);
    let mut delays = queue.policy.delays().skip(attempt as usize - 1);
    loop {
        let span = tracing::info_span!("dispatch", model, store = ?batch.store(), rows = batch.len(), attempt);
        let outcome = async {
            let _permit = match &shared.call_limit {
                Some(limit) => Some(
                    limit
                        .acquire()
                        .await
                        .expect("the call limit is never closed"),
                ),
                None => None,
            };
            AssertUnwindSafe(queue.handler.call(batch.with_attempt(attempt)))
                .catch_unwind()
                .await
        }
        .instrument(span)
        .await;
        Counters::add(&shared.counters.calls, 1);
        let error = match outcome {
            Ok(Ok(())) => {
                Counters::add(&shared.counters.delivered, 1);
                tracing::debug!(model, store = ?batch.store(), rows = batch.len(), attempt, "batch delivered");
                return;
            }
            Ok(Err(error)) => error,
            Err(panic) => {
                HandlerError::retryable(format!("handler panicked: {}", panic_message(&*panic)))
            }
        };
        Counters::add(&shared.counters.failures, 1);
        if let Some(state) = queue.stores().get_mut(batch.store()) {
            state.failed = Some((attempt, error.to_string()));
        }
        let delay = match error.retry() {
            Retry::Never => None,
            Retry::Backoff => delays.next(),
            Retry::After(wait) => delays.next().map(|_| wait),
        };
        let Some(delay) = delay else {
            tracing::error!(model, store = ?batch.store(), rows = batch.len(), attempts = attempt, %error, "batch dead-lettered");
            shared.dead_letter(DeadLetter::undelivered(batch, error.to_string(), attempt));
            return;
        };
        Counters::add(&shared.counters.retries, 1);
        if let Some(durable) = durable {
            tracing::warn!(model, store = ?batch.store(), attempt, ?delay, %error, "handler failed; the outbox retries it");
            durable.retry_later(
                DeadLetter::undelivered(batch, error.to_string(), attempt),
                delay,
            );
            return;
        }
        tracing::warn!(model, store = ?batch.store(), attempt, ?delay, %error, "handler failed; retrying");
        tokio::time::sleep(delay).await;
        attempt += 1;
    }
}

pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a non-string payload")
}

impl<T: SyncTarget> Default for Waiting<T> {
    fn default() -> Self {
        Self {
            changes: Vec::new(),
            index: HashMap::new(),
            store: None,
        }
    }
}

impl<T: SyncTarget> Waiting<T> {
    /// Adds a later commit's changes: a change already waiting for the same id is replaced by
    /// the newer one (a row by its newer version, or by its removal, and the other way round).
    fn merge(&mut self, changes: Changes<T>) {
        if changes.store.is_some() {
            self.store = changes.store;
        }
        let rows = changes
            .rows
            .into_iter()
            .map(|row| (row.sync_key(), Change::Row(row)));
        let removed = changes
            .removed
            .into_iter()
            .map(|id| (id.clone(), Change::Removed(id)));
        for (id, change) in rows.chain(removed) {
            match self.index.entry(id) {
                Entry::Occupied(at) => self.changes[*at.get()] = change,
                Entry::Vacant(slot) => {
                    slot.insert(self.changes.len());
                    self.changes.push(change);
                }
            }
        }
    }

    fn into_changes(self) -> Changes<T> {
        let mut changes = Changes {
            store: self.store,
            ..Changes::default()
        };
        for change in self.changes {
            match change {
                Change::Row(row) => changes.rows.push(row),
                Change::Removed(id) => changes.removed.push(id),
            }
        }
        changes
    }
}

/// How changes queued behind an in-flight call merge, without a database.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::synced::TestRow;

    #[test]
    fn the_latest_change_of_an_id_wins_whether_a_row_or_a_removal() {
        let mut waiting = Waiting::<TestRow>::default();
        waiting.merge(Changes::rows(vec![TestRow(1)]));
        waiting.merge(Changes {
            removed: vec![7],
            ..Changes::default()
        });
        let changes = waiting.into_changes();
        assert!(changes.rows.is_empty());
        assert_eq!(changes.removed, [7]);

        let mut waiting = Waiting::<TestRow>::default();
        waiting.merge(Changes {
            removed: vec![7],
            ..Changes::default()
        });
        waiting.merge(Changes::rows(vec![TestRow(2)]));
        let changes = waiting.into_changes();
        assert_eq!(
            changes.rows.iter().map(|row| row.0).collect::<Vec<_>>(),
            [2]
        );
        assert!(changes.removed.is_empty());
    }
}
