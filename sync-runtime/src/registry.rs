//! The registry: one handler per target model, built once at startup and shared by every
//! connection. It owns the dispatcher's state, the dead letters and the counters.

use std::any::{type_name, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::runtime::{Handle, Runtime};
use tokio::sync::{Notify, Semaphore};
use tokio::task::AbortHandle;

use crate::dead_letter::{DeadLetter, DeadLetterSink, DeadLetters};
use crate::dispatch::{dispatch, AnyModelQueue, ModelQueue};
use crate::handler::Handler;
use crate::metrics::{Counters, Metrics};
use crate::retry::RetryPolicy;
use crate::synced::SyncTarget;

/// Handlers per target model, and everything that happens after commit.
///
/// Cheap to clone: every clone shares one dispatcher. Build it once at startup and give a clone
/// to each [`SyncedConnection`](crate::SyncedConnection) or pool.
///
/// ```
/// # use diesel_sync_runtime as diesel_sync;
/// use diesel_sync::{Registry, RetryPolicy};
/// # use diesel_sync::{Batch, HandlerError, SyncTarget};
/// # fn build<Product: SyncTarget>() {
/// let registry = Registry::builder()
///     .handler(async |batch: Batch<Product>| -> Result<(), HandlerError> {
///         // send batch.rows() to the store batch.store()
///         Ok(())
///     })
///     .retry_policy(RetryPolicy::default().max_attempts(5))
///     .build();
/// # }
/// ```
#[derive(Clone)]
pub struct Registry {
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
}

/// Builds a [`Registry`]; see [`Registry::builder`].
pub struct RegistryBuilder {
    models: Vec<PendingModel>,
    default_policy: RetryPolicy,
    sink: Option<Box<dyn DeadLetterSink>>,
    max_concurrent_calls: Option<usize>,
}

/// A handler waiting for `build`, which fixes its retry policy.
struct PendingModel {
    target: TypeId,
    name: &'static str,
    policy: Option<RetryPolicy>,
    make: Box<dyn FnOnce(RetryPolicy) -> Arc<dyn AnyModelQueue>>,
}

/// What [`Registry::shutdown`] did with the batches pending when it was called.
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

impl Registry {
    /// Starts building a registry.
    pub fn builder() -> RegistryBuilder {
        RegistryBuilder {
            models: Vec::new(),
            default_policy: RetryPolicy::default(),
            sink: None,
            max_concurrent_calls: None,
        }
    }

    /// A registry with no handlers: ids are collected and dropped with a warning.
    pub fn empty() -> Self {
        Self::builder().build()
    }

    /// Whether target model `T` has a handler.
    pub fn handles<T: SyncTarget>(&self) -> bool {
        self.shared.models.contains_key(&TypeId::of::<T>())
    }

    /// The counters since the registry was built.
    pub fn metrics(&self) -> Metrics {
        self.shared
            .counters
            .snapshot(self.shared.pending.load(Ordering::Acquire))
    }

    /// The in-memory dead letters (empty when a custom sink was set with
    /// [`RegistryBuilder::dead_letter_sink`]).
    pub fn dead_letters(&self) -> &DeadLetters {
        &self.shared.memory
    }

    /// Resolves once every batch handed on so far is delivered or dead-lettered.
    ///
    /// Commits do not wait for handlers; scripts and tests await this when they need to.
    pub async fn settled(&self) {
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
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        let before = self.metrics();
        let abandoned = if tokio::time::timeout(deadline, self.settled()).await.is_ok() {
            0
        } else {
            let reason = format!("not delivered within the shutdown deadline of {deadline:?}");
            let abandoned: usize = self
                .shared
                .models
                .values()
                .map(|m| m.abandon(&self.shared, &reason))
                .sum();
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

    /// [`Registry::settled`] for synchronous code: blocks the calling thread until every batch
    /// handed on so far is delivered or dead-lettered. No tokio runtime is needed.
    ///
    /// # Panics
    /// When called on a tokio runtime's worker thread (from async code); await
    /// [`Registry::settled`] there. A `spawn_blocking` thread may call it.
    pub fn settled_blocking(&self) {
        self.shared.background().block_on(self.settled());
    }

    /// [`Registry::shutdown`] for synchronous code: blocks the calling thread for at most
    /// `deadline`, then dead-letters whatever is still pending. No tokio runtime is needed.
    ///
    /// # Panics
    /// When called on a tokio runtime's worker thread; await [`Registry::shutdown`] there.
    pub fn shutdown_blocking(&self, deadline: Duration) -> ShutdownReport {
        self.shared.background().block_on(self.shutdown(deadline))
    }

    /// Hands one flush's batches of `T` to the dispatcher. Returns at once.
    pub(crate) fn dispatch<T: SyncTarget>(&self, batches: Vec<(T::StoreKey, Vec<T>)>) {
        let Some(queue) = self.shared.models.get(&TypeId::of::<T>()) else {
            return;
        };
        let queue = Arc::clone(queue)
            .into_any()
            .downcast::<ModelQueue<T>>()
            .expect("a registry keys each model queue by its TypeId");
        dispatch(&self.shared, &queue, batches);
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    pub(crate) fn dead_letter(&self, letter: DeadLetter) {
        self.shared.dead_letter(letter);
    }
}

impl Shared {
    pub(crate) fn dead_letter(&self, letter: DeadLetter) {
        Counters::add(&self.counters.dead_letters, 1);
        match &self.sink {
            Some(sink) => sink.put(letter),
            None => self.memory.put(letter),
        }
    }

    pub(crate) fn start_one(&self) {
        self.pending.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn settle_one(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.settled.notify_waiters();
        }
    }

    /// Spawns on the caller's tokio runtime, or on the registry's own when there is none
    /// (a synchronous caller).
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) -> AbortHandle {
        let handle = Handle::try_current().unwrap_or_else(|_| self.background().handle().clone());
        handle.spawn(task).abort_handle()
    }

    /// The registry's own runtime, started on first use.
    fn background(&self) -> &Runtime {
        self.background.get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("diesel-sync-dispatch")
                .enable_time()
                .build()
                .expect("failed to start the diesel-sync dispatch runtime")
        })
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

impl RegistryBuilder {
    /// Registers the handler of target model `T`, with the builder's retry policy.
    ///
    /// # Panics
    /// When `T` already has a handler: each target model has exactly one.
    #[must_use]
    pub fn handler<T: SyncTarget>(self, handler: impl Handler<T>) -> Self {
        self.register(handler, None)
    }

    /// Registers the handler of target model `T` with its own retry policy.
    ///
    /// # Panics
    /// When `T` already has a handler.
    #[must_use]
    pub fn handler_with_policy<T: SyncTarget>(
        self,
        handler: impl Handler<T>,
        policy: RetryPolicy,
    ) -> Self {
        self.register(handler, Some(policy))
    }

    fn register<T: SyncTarget>(
        mut self,
        handler: impl Handler<T>,
        policy: Option<RetryPolicy>,
    ) -> Self {
        let target = TypeId::of::<T>();
        assert!(
            self.models.iter().all(|m| m.target != target),
            "`{}` already has a handler: register one handler per target model",
            type_name::<T>()
        );
        self.models.push(PendingModel {
            target,
            name: type_name::<T>(),
            policy,
            make: Box::new(move |policy| Arc::new(ModelQueue::new(handler, policy))),
        });
        self
    }

    /// The retry policy of every handler registered without its own.
    #[must_use]
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.default_policy = policy;
        self
    }

    /// Sends dead letters to `sink` instead of keeping them in memory.
    #[must_use]
    pub fn dead_letter_sink(mut self, sink: impl DeadLetterSink) -> Self {
        self.sink = Some(Box::new(sink));
        self
    }

    /// Caps handler calls in flight across all models and stores (unlimited by default;
    /// each store has at most one in flight either way).
    #[must_use]
    pub fn max_concurrent_calls(mut self, calls: usize) -> Self {
        self.max_concurrent_calls = Some(calls.max(1));
        self
    }

    /// Builds the registry.
    pub fn build(self) -> Registry {
        let default_policy = self.default_policy;
        let models = self
            .models
            .into_iter()
            .map(|m| {
                tracing::debug!(model = m.name, "sync handler registered");
                (m.target, (m.make)(m.policy.unwrap_or(default_policy)))
            })
            .collect();
        Registry {
            shared: Arc::new(Shared {
                models,
                sink: self.sink,
                memory: DeadLetters::default(),
                counters: Counters::default(),
                call_limit: self.max_concurrent_calls.map(Semaphore::new),
                pending: AtomicU64::new(0),
                settled: Notify::new(),
                background: OnceLock::new(),
            }),
        }
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("models", &self.shared.models.len())
            .field("metrics", &self.metrics())
            .finish()
    }
}

impl fmt::Debug for RegistryBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryBuilder")
            .field(
                "models",
                &self.models.iter().map(|m| m.name).collect::<Vec<_>>(),
            )
            .field("default_policy", &self.default_policy)
            .finish_non_exhaustive()
    }
}
