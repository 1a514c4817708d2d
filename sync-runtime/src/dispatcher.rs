//! The dispatcher's state: one queue per target model, the dead letters, the counters, and the
//! runtime that delivers when the committing thread has none.

use std::any::TypeId;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use tokio::runtime::{Handle, Runtime};
use tokio::sync::{Notify, Semaphore};
use tokio::task::AbortHandle;

use crate::dead_letter::{DeadLetter, DeadLetterSink, DeadLetters};
use crate::dispatch::{dispatch, panic_message, AnyModelQueue, ModelQueue};
use crate::handler::Changes;
use crate::metrics::{Counters, Metrics};
use crate::offload::Offload;
use crate::synced::SyncTarget;
use crate::worker::DurableState;

/// Everything that happens after resolve: the model queues, the dead letters and the counters.
/// Cheap to clone: every clone (and so every clone of the [`Registry`](crate::Registry) that
/// owns it) shares one state.
#[derive(Clone)]
pub(crate) struct Dispatcher {
    shared: Arc<Shared>,
}

/// State shared by a registry's clones and its worker tasks.
pub(crate) struct Shared {
    models: HashMap<TypeId, Arc<dyn AnyModelQueue>>,
    sink: Option<Box<dyn DeadLetterSink>>,
    memory: DeadLetters,
    pub(crate) counters: Counters,
    pub(crate) call_limit: Option<Semaphore>,
    pending: AtomicU64,
    settled: Notify,
    background: OnceLock<Runtime>,
    /// In durable mode: where dead letters go, to become dead outbox rows.
    durable: OnceLock<Arc<DurableState>>,
    /// When the registry serves a pool: the queue of committed frames its own connection
    /// resolves.
    offload: OnceLock<Arc<Offload>>,
    /// One hand-off order per target model.
    sequences: Mutex<HashMap<TypeId, Sequence>>,
}

/// Hands resolved batches to a model's queues in the order their resolves started. A resolve
/// that started later read the database no earlier (it runs after its COMMIT), so its rows are
/// never older than those handed on before them, and a store's latest delivery is its freshest
/// row, whichever connection's flush finished first.
#[derive(Default)]
struct Sequence {
    next_ticket: u64,
    next_out: u64,
    /// Resolves that finished before an earlier one: their hand-off, or nothing if they
    /// stopped.
    finished: BTreeMap<u64, Option<HandOff>>,
}

type HandOff = Box<dyn FnOnce() + Send>;

/// A resolve's place in its model's [`Sequence`], taken before its first query; it counts as
/// pending until its batches are handed on. Dropped unused (the flush stopped), it gives its
/// place up.
pub(crate) struct Ticket {
    shared: Arc<Shared>,
    model: TypeId,
    number: u64,
    used: bool,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.used {
            self.shared.finish(self.model, self.number, None);
        }
    }
}

/// What [`Registry::shutdown`](crate::Registry::shutdown) did with the batches pending when it was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Batches delivered while draining.
    pub delivered: u64,
    /// Batches dead-lettered while draining, those abandoned at the deadline included.
    pub dead_lettered: u64,
    /// Batches still queued or in flight at the deadline (dead-lettered, counted above too).
    pub abandoned: u64,
}

impl Dispatcher {
    pub(crate) fn new(
        models: HashMap<TypeId, Arc<dyn AnyModelQueue>>,
        sink: Option<Box<dyn DeadLetterSink>>,
        max_concurrent_calls: Option<usize>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                models,
                sink,
                memory: DeadLetters::default(),
                counters: Counters::default(),
                call_limit: max_concurrent_calls.map(Semaphore::new),
                pending: AtomicU64::new(0),
                settled: Notify::new(),
                background: OnceLock::new(),
                durable: OnceLock::new(),
                offload: OnceLock::new(),
                sequences: Mutex::default(),
            }),
        }
    }

    /// The counters since the registry was built.
    pub(crate) fn metrics(&self) -> Metrics {
        self.shared
            .counters
            .snapshot(self.shared.pending.load(Ordering::Acquire))
    }

    /// The in-memory dead letters (empty when a custom sink was set with
    /// `RegistryBuilder::dead_letter_sink`).
    pub(crate) fn dead_letters(&self) -> &DeadLetters {
        &self.shared.memory
    }

    /// Resolves once every batch handed on so far is delivered or dead-lettered.
    ///
    /// Commits do not wait for handlers; scripts and tests await this when they need to.
    pub(crate) async fn settled(&self) {
        let shared = &self.shared;
        loop {
            let notified = shared.settled.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if shared.pending.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Drains before the process exits: waits up to `deadline` for pending batches (retries
    /// included), then dead-letters whatever is still queued or in flight.
    pub(crate) async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        let before = self.metrics();
        let abandoned = if tokio::time::timeout(deadline, self.settled()).await.is_ok() {
            0
        } else {
            let reason = format!("not delivered within the shutdown deadline of {deadline:?}");
            let unresolved = self
                .offload()
                .map_or(0, |offload| offload.abandon(self, &reason));
            let abandoned: usize = unresolved
                + self
                    .shared
                    .models
                    .values()
                    .map(|m| m.abandon(&self.shared, &reason))
                    .sum::<usize>();
            tracing::error!(
                abandoned,
                "shutdown deadline passed; pending batches dead-lettered"
            );
            abandoned as u64
        };
        let after = self.metrics();
        ShutdownReport {
            delivered: after.delivered - before.delivered,
            dead_lettered: after.dead_letters - before.dead_letters,
            abandoned,
        }
    }

    /// The registry's own runtime, for the blocking waits (never on a commit's path).
    fn background_or_panic(&self) -> &Runtime {
        self.shared
            .background()
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// A place in `T`'s hand-off order, for a resolve about to run its first query.
    pub(crate) fn ticket<T: SyncTarget>(&self) -> Ticket {
        let model = TypeId::of::<T>();
        self.shared.start(1);
        let mut sequences = self.shared.sequences();
        let sequence = sequences.entry(model).or_default();
        let number = sequence.next_ticket;
        sequence.next_ticket += 1;
        Ticket {
            shared: Arc::clone(&self.shared),
            model,
            number,
            used: false,
        }
    }

    /// Hands one resolve's batches of `T` to the dispatcher, once every resolve of `T` that
    /// started before it has. Returns at once.
    pub(crate) fn dispatch<T: SyncTarget>(
        &self,
        mut ticket: Ticket,
        batches: Vec<(T::StoreKey, Changes<T>)>,
    ) {
        ticket.used = true;
        let hand_off = self.shared.models.get(&TypeId::of::<T>()).map(|queue| {
            let queue = Arc::clone(queue)
                .into_any()
                .downcast::<ModelQueue<T>>()
                .expect("a registry keys each model queue by its TypeId");
            let shared = Arc::clone(&self.shared);
            Box::new(move || dispatch(&shared, &queue, batches)) as HandOff
        });
        self.shared.finish(ticket.model, ticket.number, hand_off);
    }

    /// A handle to the registry's own runtime, started on first use.
    pub(crate) fn background_handle(&self) -> Result<Handle, String> {
        self.shared.background_handle()
    }

    /// Sends dead letters to the outbox worker of a durable registry.
    pub(crate) fn make_durable(&self, state: Arc<DurableState>) {
        let _ = self.shared.durable.set(state);
    }

    /// Resolves committed frames on the registry's own connection from now on.
    pub(crate) fn set_offload(&self, offload: Arc<Offload>) -> bool {
        self.shared.offload.set(offload).is_ok()
    }

    /// The queue of committed frames, when the registry resolves them on its own connection.
    pub(crate) fn offload(&self) -> Option<&Offload> {
        self.shared.offload.get().map(Arc::as_ref)
    }

    /// The state every clone shares.
    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Whether this clone is the last one: nothing else can hand work on.
    pub(crate) fn is_last(&self) -> bool {
        Arc::strong_count(&self.shared) == 1
    }

    /// Runs `future` to completion on the registry's own runtime, blocking the calling thread.
    ///
    /// # Panics
    /// When called on a tokio runtime's worker thread.
    pub(crate) fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.background_or_panic().block_on(future)
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    pub(crate) fn dead_letter(&self, letter: DeadLetter) {
        self.shared.dead_letter(letter);
    }
}

impl Shared {
    fn sequences(&self) -> MutexGuard<'_, HashMap<TypeId, Sequence>> {
        self.sequences
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that resolve `number` of `model` finished, and hands on every finished resolve
    /// whose predecessors all have, in order. Each stops counting as pending once handed on
    /// (its batches count from then on).
    fn finish(&self, model: TypeId, number: u64, hand_off: Option<HandOff>) {
        let mut sequences = self.sequences();
        let sequence = sequences.entry(model).or_default();
        sequence.finished.insert(number, hand_off);
        while let Some(hand_off) = sequence.finished.remove(&sequence.next_out) {
            sequence.next_out += 1;
            if let Some(hand_off) = hand_off {
                hand_off();
            }
            self.settle(1);
        }
    }

    pub(crate) fn dead_letter(&self, letter: DeadLetter) {
        Counters::add(&self.counters.dead_letters, 1);
        if let Some(durable) = self.durable.get() {
            durable.dead_letter(letter);
            return;
        }
        match &self.sink {
            // The application's sink runs right after a COMMIT: its panic is caught, and the
            // letter it lost is logged whole.
            Some(sink) => {
                let (model, store, ids, error) = (
                    letter.model(),
                    letter.store().map(str::to_owned),
                    letter.ids().to_vec(),
                    letter.error().to_owned(),
                );
                let put = std::panic::catch_unwind(AssertUnwindSafe(|| sink.put(letter)));
                if let Err(panic) = put {
                    let panic = panic_message(&*panic);
                    tracing::error!(
                        model,
                        store,
                        ?ids,
                        error,
                        panic,
                        "the dead-letter sink panicked; this log holds the letter"
                    );
                }
            }
            None => self.memory.put(letter),
        }
    }

    /// The state of a durable registry's worker, if the registry is durable.
    pub(crate) fn durable(&self) -> Option<&DurableState> {
        self.durable.get().map(Arc::as_ref)
    }

    /// Counts `n` units of work as pending: `settled()` waits for them.
    pub(crate) fn start(&self, n: u64) {
        self.pending.fetch_add(n, Ordering::AcqRel);
    }

    /// `n` units of work [`Shared::start`] counted are done.
    pub(crate) fn settle(&self, n: u64) {
        if n > 0 && self.pending.fetch_sub(n, Ordering::AcqRel) == n {
            self.settled.notify_waiters();
        }
    }

    /// Spawns on the caller's tokio runtime, or on the registry's own when there is none
    /// (a synchronous caller). Fails only when the registry's own runtime cannot start.
    pub(crate) fn spawn(
        &self,
        task: impl Future<Output = ()> + Send + 'static,
    ) -> Result<AbortHandle, String> {
        let handle = match Handle::try_current() {
            Ok(handle) => handle,
            Err(_) => self.background()?.handle().clone(),
        };
        Ok(handle.spawn(task).abort_handle())
    }

    /// A handle to the registry's own runtime, started on first use.
    pub(crate) fn background_handle(&self) -> Result<Handle, String> {
        self.background().map(|runtime| runtime.handle().clone())
    }

    /// The registry's own runtime, started on first use.
    fn background(&self) -> Result<&Runtime, String> {
        if let Some(runtime) = self.background.get() {
            return Ok(runtime);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("diesel-sync-dispatch")
            .enable_all()
            .build()
            .map_err(|error| {
                format!("the diesel-sync dispatch runtime could not start: {error}")
            })?;
        // Another thread may have started one meanwhile: the first stays, this one stops.
        if let Err(spare) = self.background.set(runtime) {
            spare.shutdown_background();
        }
        Ok(self.background.get().expect("set above"))
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // A runtime may not be dropped from async code; let its threads wind down on their own.
        if let Some(runtime) = self.background.take() {
            runtime.shutdown_background();
        }
    }
}

impl fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dispatcher")
            .field("models", &self.shared.models.len())
            .field("metrics", &self.metrics())
            .finish()
    }
}

/// The hand-off order, without a database.
#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::handler::Batch;
    use crate::retry::RetryPolicy;

    // A product version: the key is 7 for every row, the price tells versions apart.
    use crate::synced::TestRow as Price;

    #[tokio::test]
    async fn a_resolve_that_started_later_is_handed_on_later_whichever_finished_first() {
        let delivered: Arc<Mutex<Vec<i64>>> = Arc::default();
        let seen = Arc::clone(&delivered);
        let handler = move |batch: Batch<Price>| {
            seen.lock()
                .unwrap()
                .extend(batch.rows().iter().map(|p| p.0));
            async { Ok(()) }
        };
        let queue: Arc<dyn AnyModelQueue> =
            Arc::new(ModelQueue::new(handler, RetryPolicy::default(), None));
        let dispatcher =
            Dispatcher::new(HashMap::from([(TypeId::of::<Price>(), queue)]), None, None);
        // The first resolve read the older row; the second, started later, the newer one.
        let first = dispatcher.ticket::<Price>();
        let second = dispatcher.ticket::<Price>();
        dispatcher.dispatch(second, vec![((), Changes::rows(vec![Price(2)]))]);
        assert_eq!(
            dispatcher.metrics().pending,
            2,
            "the second waits for the first"
        );
        dispatcher.dispatch(first, vec![((), Changes::rows(vec![Price(1)]))]);
        dispatcher.settled().await;
        assert_eq!(
            *delivered.lock().unwrap().last().unwrap(),
            2,
            "the newest row is last"
        );
        // A resolve that stopped gives its place up.
        let stopped = dispatcher.ticket::<Price>();
        let third = dispatcher.ticket::<Price>();
        dispatcher.dispatch(third, vec![((), Changes::rows(vec![Price(3)]))]);
        drop(stopped);
        dispatcher.settled().await;
        assert_eq!(*delivered.lock().unwrap().last().unwrap(), 3);
    }

    #[tokio::test]
    async fn a_store_filter_skips_the_batches_of_stores_it_turns_away_or_cannot_ask() {
        use crate::dispatch::StoreFilter;
        use crate::synced::{StoredRow, TestStore};

        let delivered: Arc<Mutex<Vec<i64>>> = Arc::default();
        let seen = Arc::clone(&delivered);
        let handler = move |batch: Batch<StoredRow>| {
            seen.lock().unwrap().push(*batch.store());
            async { Ok(()) }
        };
        let filter: StoreFilter<StoredRow> = Box::new(|store: &TestStore| store.on);
        let queue: Arc<dyn AnyModelQueue> = Arc::new(ModelQueue::new(
            handler,
            RetryPolicy::default(),
            Some(filter),
        ));
        let dispatcher = Dispatcher::new(
            HashMap::from([(TypeId::of::<StoredRow>(), queue)]),
            None,
            None,
        );
        let changes = |store: i64, row: Option<bool>| Changes {
            store: row.map(|on| Arc::new(TestStore { id: store, on })),
            ..Changes::rows(vec![StoredRow(store * 10, store)])
        };
        let batches = vec![
            (1, changes(1, Some(true))),
            (2, changes(2, Some(false))),
            (3, changes(3, None)),
        ];
        dispatcher.dispatch(dispatcher.ticket::<StoredRow>(), batches);
        dispatcher.settled().await;
        assert_eq!(*delivered.lock().unwrap(), [1]);
        let metrics = dispatcher.metrics();
        assert_eq!((metrics.batches, metrics.batches_skipped), (1, 2));
        assert_eq!(metrics.dead_letters, 0);
    }
}
