//! Durable delivery: the worker that claims outbox rows, resolves and dispatches their keys over
//! a connection of its own, and deletes a row only once every batch made from it was delivered.
//! A batch that runs out of retries becomes a dead outbox row, with its error and attempts.
//!
//! A worker runs one round at a time: claim → resolve → dispatch → wait until the round's
//! batches are delivered or dead-lettered → delete the claimed rows and write the dead ones, in
//! one transaction. Rows another process holds are skipped while its lease lasts.

use std::any::TypeId;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use diesel::QueryResult;
use futures_util::FutureExt as _;
use tokio::sync::{watch, Notify};
use tracing::Instrument;

use crate::blocking::BlockingOutbox;
use crate::collector::Frame;
use crate::connection::{CaptureConnection, SyncedConnection};
use crate::dead_letter::DeadLetter;
use crate::dispatch::panic_message;
use crate::offload::{BlockingOwn, OwnConnection};
use crate::outbox::{self, millis, now_ms, Claim, Durable, Entry, NewEntry, OutboxBackend};
use crate::registry::Registry;

/// What a durable registry's clones share with its worker.
#[derive(Debug)]
pub(crate) struct DurableState {
    /// Wakes the worker: a commit wrote rows, or `settled()` asks.
    wake: Notify,
    /// Bumped by each `settled()`; a worker round that began after it and found no live row
    /// publishes it in `drained`.
    asked: AtomicU64,
    drained: watch::Sender<u64>,
    stopping: AtomicBool,
    /// No worker runs in this process: other processes deliver what it records.
    record_only: AtomicBool,
    /// The attempt the current round makes: the highest of its rows' attempts.
    attempt: AtomicU32,
    /// The batches of the rounds that failed, each with when to try it again (`None`: dead),
    /// written as outbox rows when the round finishes.
    failed: Mutex<Vec<(DeadLetter, Option<Duration>)>>,
}

impl DurableState {
    pub(crate) fn new() -> Self {
        Self {
            wake: Notify::new(),
            asked: AtomicU64::new(0),
            drained: watch::Sender::new(0),
            stopping: AtomicBool::new(false),
            record_only: AtomicBool::new(false),
            attempt: AtomicU32::new(1),
            failed: Mutex::new(Vec::new()),
        }
    }

    /// Rows were written: the worker looks at once.
    pub(crate) fn rows_written(&self) {
        self.wake.notify_one();
    }

    /// Keeps a dead letter for the round to write as a dead row.
    pub(crate) fn dead_letter(&self, letter: DeadLetter) {
        self.failures().push((letter, None));
    }

    /// Keeps a failed batch for the round to write back as a row to retry after `delay`.
    pub(crate) fn retry_later(&self, letter: DeadLetter, delay: Duration) {
        self.failures().push((letter, Some(delay)));
    }

    /// The attempt the current round makes.
    pub(crate) fn round_attempt(&self) -> u32 {
        self.attempt.load(Ordering::Acquire).max(1)
    }

    /// Resolves once a worker round that began after this call found no live row in the
    /// outbox: every row written before it was delivered, or is dead.
    pub(crate) async fn drained(&self) {
        if self.record_only.load(Ordering::Acquire) {
            return;
        }
        let asked = self.asked.fetch_add(1, Ordering::AcqRel) + 1;
        let mut drained = self.drained.subscribe();
        self.wake.notify_one();
        // The sender lives as long as this state.
        let _ = drained.wait_for(|round| *round >= asked).await;
    }

    /// No worker will run: `drained` returns at once.
    pub(crate) fn record_only(&self) {
        self.record_only.store(true, Ordering::Release);
    }

    /// Stops the worker after its current round; rows it holds return to the outbox when
    /// their lease ends.
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, Vec<(DeadLetter, Option<Duration>)>> {
        self.failed.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The worker's name in `claimed_by`: the process and a number of its own.
fn worker_name() -> String {
    static WORKERS: AtomicU64 = AtomicU64::new(0);
    format!(
        "pid {} worker {}",
        std::process::id(),
        WORKERS.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs the delivery loop until the registry is shut down, restarting it after a panic (its
/// claimed rows come back when their lease ends).
pub(crate) async fn supervise<K: Delivers>(
    registry: Registry<K>,
    durable: Durable,
    state: Arc<DurableState>,
) {
    while !state.stopping() && registry.has_users() {
        let run = run(&registry, durable.clone(), Arc::clone(&state));
        if let Err(panic) = AssertUnwindSafe(run).catch_unwind().await {
            let message = panic_message(&*panic);
            tracing::error!(panic = message, "the outbox worker panicked; restarting it");
            tokio::time::sleep(durable.poll_interval).await;
        }
    }
}

/// The delivery loop of a durable registry, until it is shut down.
async fn run<K: Delivers>(registry: &Registry<K>, durable: Durable, state: Arc<DurableState>) {
    let name = worker_name();
    let mut conn: Option<K::Own> = None;
    tracing::info!(worker = name, "outbox delivery started");
    while !state.stopping() && registry.has_users() {
        let asked = state.asked.load(Ordering::Acquire);
        let connection = match &mut conn {
            Some(connection) => connection,
            None => match K::connect(&durable.url).await {
                Ok(connection) => conn.insert(connection),
                Err(error) => {
                    tracing::error!(worker = name, %error, "the outbox worker cannot connect; retrying");
                    tokio::time::sleep(durable.poll_interval).await;
                    continue;
                }
            },
        };
        let now = now_ms();
        let claim = Claim {
            worker: name.clone(),
            rows: durable.claim_rows,
            now,
            lease_ends: now.saturating_add(millis(durable.lease)),
        };
        let claimed = K::claim(connection, claim).await;
        match claimed {
            Ok(rows) if rows.is_empty() => {
                if let Ok(0) = K::live(connection).await {
                    state.drained.send_if_modified(|round| {
                        let newer = asked > *round;
                        *round = (*round).max(asked);
                        newer
                    });
                }
                idle(&state, &durable).await;
            }
            Ok(rows) => {
                let span = tracing::info_span!("outbox_round", worker = name, rows = rows.len());
                let finished = deliver(registry, connection, rows, &state)
                    .instrument(span)
                    .await;
                if let Err(error) = finished {
                    tracing::error!(worker = name, %error, "the outbox round could not be recorded; its rows return when their lease ends");
                    conn = None;
                }
            }
            Err(error) => {
                tracing::error!(worker = name, %error, "claiming outbox rows failed; reconnecting");
                conn = None;
                idle(&state, &durable).await;
            }
        }
    }
    tracing::info!(worker = name, "outbox delivery stopped");
}

/// Waits for a wake-up, or the poll interval: rows other processes write wake no one here. A
/// wake-up lingers a moment, for the commits that follow it to share the round.
async fn idle(state: &DurableState, durable: &Durable) {
    let woken = tokio::time::timeout(durable.poll_interval, state.wake.notified()).await;
    if woken.is_ok() && !state.stopping() {
        tokio::time::sleep(durable.linger).await;
    }
}

/// One round, under the delivery lock of each model it holds (taken in name order, so rounds
/// of several processes never wait on each other in a cycle). An error leaves the locks to the
/// connection's end: the worker drops its connection after one.
async fn deliver<K: Delivers>(
    registry: &Registry<K>,
    conn: &mut K::Own,
    rows: Vec<Entry>,
    state: &DurableState,
) -> diesel::QueryResult<()> {
    let mut models: Vec<String> = rows.iter().map(|row| row.model.clone()).collect();
    models.sort_unstable();
    models.dedup();
    for model in &models {
        K::model_lock(conn, model, true).await?;
    }
    deliver_locked(registry, conn, rows, state).await?;
    for model in models.iter().rev() {
        K::model_lock(conn, model, false).await?;
    }
    Ok(())
}

/// One round: the claimed rows' keys resolved and dispatched, then the rows deleted, and the
/// round's failed batches written as rows to retry later, or as dead rows once their attempts
/// ran out. Rows that cannot be read are made dead as they are.
async fn deliver_locked<K: Delivers>(
    registry: &Registry<K>,
    conn: &mut K::Own,
    rows: Vec<Entry>,
    state: &DurableState,
) -> diesel::QueryResult<()> {
    let handled = registry.targets();
    let mut frame = Frame::default();
    let mut done = Vec::with_capacity(rows.len());
    let mut dead: Vec<NewEntry> = Vec::new();
    for entry in &rows {
        let mut keys = Frame::default();
        match outbox::decode(entry, &handled, &mut keys) {
            Ok(_) => frame.merge(keys),
            Err(error) => {
                tracing::error!(row = entry.id, model = entry.model, %error, "outbox row cannot be delivered; kept as dead");
                dead.push(NewEntry::dead_copy(entry, error));
            }
        }
        done.push(entry.id);
    }
    // A round's rows share their attempt count (see the claim).
    let attempt = rows.iter().map(|row| row.attempts).max().unwrap_or(1);
    state
        .attempt
        .store(u32::try_from(attempt).unwrap_or(1), Ordering::Release);
    K::resolve_and_dispatch(registry, conn, frame).await;
    let dispatcher = registry.dispatcher();
    dispatcher.settled().await;
    if state.stopping() {
        // Shutdown abandoned what was still in flight: the rows stay for the next start.
        return Ok(());
    }
    let failures = std::mem::take(&mut *state.failures());
    for (letter, retry) in failures {
        match letter.outbox_entries(retry) {
            Ok(entries) => dead.extend(entries),
            Err(error) => {
                // Nothing is deleted: the round's rows come back when their lease ends.
                tracing::error!(model = letter.model(), %error, "a dead letter cannot be recorded in the outbox");
                return Ok(());
            }
        }
    }
    K::finish(conn, done, dead).await
}

/// A connection kind whose durable registry runs a worker: the outbox statements it runs on
/// the registry's own connection.
pub(crate) trait Delivers: OwnConnection {
    /// Claims outbox rows.
    fn claim(
        conn: &mut Self::Own,
        claim: Claim,
    ) -> impl Future<Output = QueryResult<Vec<Entry>>> + Send;

    /// How many outbox rows wait for delivery, dead ones left out.
    fn live(conn: &mut Self::Own) -> impl Future<Output = QueryResult<i64>> + Send;

    /// Takes (`take`) or releases the delivery lock of `model`.
    fn model_lock(
        conn: &mut Self::Own,
        model: &str,
        take: bool,
    ) -> impl Future<Output = QueryResult<()>> + Send;

    /// Deletes the delivered rows and writes the failed ones, in one transaction.
    fn finish(
        conn: &mut Self::Own,
        done: Vec<i64>,
        failed: Vec<NewEntry>,
    ) -> impl Future<Output = QueryResult<()>> + Send;
}

impl<C> Delivers for SyncedConnection<C>
where
    C: CaptureConnection,
    C::Backend: OutboxBackend,
{
    fn claim(conn: &mut C, claim: Claim) -> impl Future<Output = QueryResult<Vec<Entry>>> + Send {
        C::Backend::claim(conn, claim)
    }

    fn live(conn: &mut C) -> impl Future<Output = QueryResult<i64>> + Send {
        C::Backend::live(conn)
    }

    fn model_lock(
        conn: &mut C,
        model: &str,
        take: bool,
    ) -> impl Future<Output = QueryResult<()>> + Send {
        C::Backend::model_lock(conn, model, take)
    }

    fn finish(
        conn: &mut C,
        done: Vec<i64>,
        failed: Vec<NewEntry>,
    ) -> impl Future<Output = QueryResult<()>> + Send {
        C::Backend::finish(conn, done, failed)
    }
}

/// The synchronous connection: each statement runs on a blocking thread of the registry's
/// runtime.
impl<C> Delivers for crate::blocking::SyncedConnection<C>
where
    C: crate::blocking::CaptureConnection + Send,
    C::Backend: BlockingOutbox,
{
    async fn claim(conn: &mut BlockingOwn<C>, claim: Claim) -> QueryResult<Vec<Entry>> {
        conn.run(move |conn| C::Backend::claim(conn, &claim)).await
    }

    async fn live(conn: &mut BlockingOwn<C>) -> QueryResult<i64> {
        conn.run(|conn| C::Backend::live(conn)).await
    }

    async fn model_lock(conn: &mut BlockingOwn<C>, model: &str, take: bool) -> QueryResult<()> {
        let model = model.to_owned();
        conn.run(move |conn| C::Backend::model_lock(conn, &model, take))
            .await
    }

    async fn finish(
        conn: &mut BlockingOwn<C>,
        done: Vec<i64>,
        failed: Vec<NewEntry>,
    ) -> QueryResult<()> {
        conn.run(move |conn| C::Backend::finish(conn, &done, failed))
            .await
    }
}

/// Whether target `target` of a durable registry can be recorded; panics with what to do when
/// it cannot.
pub(crate) fn check_target(target: TypeId, name: &str) {
    if let Err(error) = outbox::check_recordable(target, name) {
        panic!("{error}; register its handler on a registry that is not durable");
    }
}
