//! The registry: one handler per target model, built once at startup for one connection type
//! and shared by every connection of that type. It knows how each target model is loaded over
//! that connection (resolve) and owns the dispatcher.

use std::any::{type_name, Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use diesel::QueryResult;

use crate::blocking::{append_entries_blocking, AppendBlocking};
use crate::catalog::{Catalog, ModelFacts};
use crate::connection::{append_entries, Append, CaptureConnection, SyncedConnection};
use crate::dead_letter::{DeadLetterSink, DeadLetters};
use crate::dispatch::{AnyModelQueue, ModelQueue, StoreFilter};
use crate::dispatcher::{Dispatcher, ShutdownReport};
use crate::handler::Handler;
use crate::metrics::Metrics;
use crate::outbox::{DeadRow, Durable, OutboxBackend};
use crate::retry::RetryPolicy;
use crate::synced::{StoreModel, SyncTarget};
use crate::worker::{self, check_target, DurableState};

/// Handlers per target model, and everything that happens after commit, for connections of
/// type `Conn` ([`SyncedConnection<C>`](crate::SyncedConnection) or
/// [`blocking::SyncedConnection<C>`](crate::blocking::SyncedConnection)).
///
/// Cheap to clone: every clone shares one dispatcher. Build it once at startup and give a clone
/// to each connection or pool. `Conn` is usually inferred from the connection the registry is
/// given to; registering a handler checks, at compile time, that the model can be loaded over
/// that connection.
///
/// Dropping every clone (connections included) does not cancel what was already handed on:
/// the batches pending then are still delivered, retries included, on the runtime they run on
/// (the registry's own one stops once they are done). Only the process ending stops them; call
/// [`shutdown`](Self::shutdown) before it does. A [durable](RegistryBuilder::durable)
/// registry's worker stops after its round once every clone is dropped; what it did not deliver
/// waits in the outbox for the next start. A registry that serves a pool loads what is still
/// queued before its own connection closes.
///
/// ```
/// # use diesel_sync_runtime as diesel_sync;
/// use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
/// use diesel_sync::{Registry, RetryPolicy, SyncedConnection};
/// # use diesel_sync::{Batch, HandlerError, Resolve};
/// # type Conn = SyncedConnection<SyncConnectionWrapper<diesel::SqliteConnection>>;
/// # fn build<Product: Resolve<SyncConnectionWrapper<diesel::SqliteConnection>>>() {
/// let registry: Registry<Conn> = Registry::builder()
///     .handler(async |batch: Batch<Product>| -> Result<(), HandlerError> {
///         // send batch.rows() to the store batch.store()
///         Ok(())
///     })
///     .retry_policy(RetryPolicy::default().max_attempts(5))
///     .build();
/// # }
/// ```
pub struct Registry<Conn> {
    dispatcher: Dispatcher,
    loaders: Arc<HashMap<TypeId, Loader>>,
    outbox: Option<Arc<OutboxLink>>,
    connection: PhantomData<fn() -> Conn>,
}

/// A durable registry's outbox: how its connections write to it, and what they share with its
/// delivery worker.
pub(crate) struct OutboxLink {
    pub(crate) state: Arc<DurableState>,
    /// The connection kind's [`Append`](crate::connection::Append), type-erased.
    append: Box<dyn Any + Send + Sync>,
}

impl OutboxLink {
    /// The function that writes outbox rows over connection type `C`'s inner connection.
    pub(crate) fn append<F: Any>(&self) -> &F {
        self.append
            .downcast_ref::<F>()
            .expect("a durable registry's append comes from its connection type")
    }
}

impl fmt::Debug for OutboxLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboxLink")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// A connection type whose committed ids of target model `T` can be loaded: implemented by
/// [`SyncedConnection<C>`](crate::SyncedConnection) when `T` is
/// [`Resolve<C>`](crate::Resolve), and by the blocking connection likewise.
#[diagnostic::on_unimplemented(
    message = "`{T}` cannot be loaded by id over `{Self}`",
    note = "a target model must derive `Queryable` and `Selectable` for the connection's backend"
)]
pub trait Resolves<T: SyncTarget>: 'static {
    /// How the connection loads `T` after commit. Not public API.
    #[doc(hidden)]
    fn loader() -> Loader;
}

/// `Registry<()>` serves no connection: it registers handlers and dispatches, and is what code
/// that only checks its handlers builds (compile tests, examples of a handler).
impl<T: SyncTarget> Resolves<T> for () {
    fn loader() -> Loader {
        Loader::new(())
    }
}

/// A connection kind's type-erased function that resolves and dispatches one target model's
/// committed ids. Not public API.
#[doc(hidden)]
pub struct Loader(Box<dyn Any + Send + Sync>);

impl Loader {
    /// Wraps the connection kind's function; [`Registry::loader`] gets it back by its type.
    pub(crate) fn new<F: Any + Send + Sync>(load: F) -> Self {
        Self(Box::new(load))
    }
}

impl fmt::Debug for Loader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Loader")
    }
}

impl<Conn> Clone for Registry<Conn> {
    fn clone(&self) -> Self {
        Self {
            dispatcher: self.dispatcher.clone(),
            loaders: Arc::clone(&self.loaders),
            outbox: self.outbox.clone(),
            connection: PhantomData,
        }
    }
}

impl<Conn: 'static> Registry<Conn> {
    /// Starts building a registry.
    pub fn builder() -> RegistryBuilder<Conn> {
        RegistryBuilder {
            last: PhantomData,
            models: Vec::new(),
            default_policy: RetryPolicy::default(),
            sink: None,
            max_concurrent_calls: None,
            outbox: None,
            connection: PhantomData,
        }
    }

    /// A registry with no handlers: ids are collected and dropped with a warning.
    pub fn empty() -> Self {
        Self::builder().build()
    }

    /// Whether target model `T` has a handler.
    pub fn handles<T: SyncTarget>(&self) -> bool {
        self.loaders.contains_key(&TypeId::of::<T>())
    }

    /// The counters since the registry was built.
    pub fn metrics(&self) -> Metrics {
        self.dispatcher.metrics()
    }

    /// The in-memory dead letters (empty when a custom sink was set with
    /// [`RegistryBuilder::dead_letter_sink`]).
    pub fn dead_letters(&self) -> &DeadLetters {
        self.dispatcher.dead_letters()
    }

    /// Resolves once every batch handed on so far is delivered or dead-lettered.
    ///
    /// Commits do not wait for handlers; scripts and tests await this when they need to. A
    /// durable registry resolves once its worker found no row left to deliver in the outbox
    /// (dead rows aside), whichever process wrote them.
    pub async fn settled(&self) {
        if let Some(outbox) = &self.outbox {
            outbox.state.drained().await;
        }
        self.dispatcher.settled().await;
    }

    /// Drains before the process exits: waits up to `deadline` for pending batches (retries
    /// included), then dead-letters whatever is still queued or in flight.
    ///
    /// A durable registry's worker stops claiming rows; what it had not delivered by the
    /// deadline stays in the outbox, and is delivered after the next start once the rows'
    /// lease ends.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        if let Some(outbox) = &self.outbox {
            outbox.state.stop();
        }
        self.dispatcher.shutdown(deadline).await
    }

    /// [`Registry::settled`] for synchronous code: blocks the calling thread until every batch
    /// handed on so far is delivered or dead-lettered. No tokio runtime is needed.
    ///
    /// # Panics
    /// When called on a tokio runtime's worker thread (from async code); await
    /// [`Registry::settled`] there. A `spawn_blocking` thread may call it.
    pub fn settled_blocking(&self) {
        self.dispatcher.block_on(self.settled());
    }

    /// [`Registry::shutdown`] for synchronous code: blocks the calling thread for at most
    /// `deadline`, then dead-letters whatever is still pending. No tokio runtime is needed.
    ///
    /// # Panics
    /// When called on a tokio runtime's worker thread; await [`Registry::shutdown`] there.
    pub fn shutdown_blocking(&self, deadline: Duration) -> ShutdownReport {
        self.dispatcher.block_on(self.shutdown(deadline))
    }

    /// Whether the registry is durable: its connections record committed ids in the outbox.
    pub fn is_durable(&self) -> bool {
        self.outbox.is_some()
    }

    /// Whether a clone of this durable registry other than the worker's own is left: once the
    /// application dropped every registry and connection, the worker stops after its round
    /// (what it did not deliver waits in the outbox for the next start).
    pub(crate) fn has_users(&self) -> bool {
        self.outbox
            .as_ref()
            .is_none_or(|outbox| Arc::strong_count(outbox) > 1)
    }

    /// Wakes a durable registry's worker: rows became claimable.
    fn wake_worker(&self) {
        if let Some(outbox) = &self.outbox {
            outbox.state.rows_written();
        }
    }

    /// The outbox of a durable registry.
    pub(crate) fn outbox(&self) -> Option<&OutboxLink> {
        self.outbox.as_deref()
    }

    /// The target models with a handler.
    pub(crate) fn targets(&self) -> Vec<TypeId> {
        self.loaders.keys().copied().collect()
    }

    pub(crate) fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    /// The function that loads target model `target` over this registry's connection type, as
    /// the connection kind stored it (`F`), if the model has a handler.
    pub(crate) fn loader<F: Any>(&self, target: TypeId) -> Option<&F> {
        self.loaders.get(&target).map(|loader| {
            loader
                .0
                .downcast_ref::<F>()
                .expect("a registry's loaders all come from its connection type")
        })
    }
}

/// Builds a [`Registry`]; see [`Registry::builder`].
///
/// `Last` is the target model whose handler was registered last, which
/// [`when`](RegistryBuilder::when) applies to (`()` before the first).
pub struct RegistryBuilder<Conn, Last = ()> {
    last: PhantomData<fn() -> Last>,
    models: Vec<PendingModel>,
    default_policy: RetryPolicy,
    sink: Option<Box<dyn DeadLetterSink>>,
    max_concurrent_calls: Option<usize>,
    outbox: Option<DurableSetup<Conn>>,
    connection: PhantomData<fn() -> Conn>,
}

/// What [`RegistryBuilder::durable`] set up, for `build` to start. Not public API.
#[doc(hidden)]
pub struct DurableSetup<Conn> {
    append: Box<dyn Any + Send + Sync>,
    start: StartWorker<Conn>,
}

impl<Conn> fmt::Debug for DurableSetup<Conn> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DurableSetup").finish_non_exhaustive()
    }
}

/// Durable mode with `append`, the connection kind's function that writes outbox rows; the
/// registry built starts a worker unless `durable` is record-only.
fn durable_setup<Conn: worker::Delivers>(
    append: Box<dyn Any + Send + Sync>,
    durable: Durable,
) -> DurableSetup<Conn> {
    DurableSetup {
        append,
        start: Box::new(move |registry: Registry<Conn>, state| {
            if !durable.deliver {
                state.record_only();
                return Ok(());
            }
            let runtime = registry.dispatcher().background_handle()?;
            runtime.spawn(worker::supervise(registry, durable, state));
            Ok(())
        }),
    }
}

/// Spawns the delivery worker of the registry built.
type StartWorker<Conn> = Box<dyn FnOnce(Registry<Conn>, Arc<DurableState>) -> Result<(), String>>;

/// A handler waiting for `build`, which fixes its retry policy.
struct PendingModel {
    target: TypeId,
    name: &'static str,
    policy: Option<RetryPolicy>,
    /// The model's [`StoreFilter`], if [`RegistryBuilder::when`] set one.
    filter: Option<Box<dyn Any>>,
    loader: Loader,
    make: MakeQueue,
}

/// Builds a model's queue from its retry policy and its type-erased store filter.
type MakeQueue = Box<dyn FnOnce(RetryPolicy, Option<Box<dyn Any>>) -> Arc<dyn AnyModelQueue>>;

/// A target model whose batches carry their store's row: it names its store model with
/// `#[synced(store = Store)]`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` names no store model, so its batches carry no store row to filter by",
    label = "no store model",
    note = "name the store model on `{Self}`: `#[diesel(belongs_to(Store))]` and `#[synced(store = Store)]`, where `Store` is the `Identifiable` model of the table its store column points at"
)]
pub trait WithStoreModel: SyncTarget {}

#[diagnostic::do_not_recommend]
impl<T: SyncTarget> WithStoreModel for T where T::Store: StoreModel<T::StoreKey> {}

impl<Conn: 'static, Last> RegistryBuilder<Conn, Last> {
    /// Registers the handler of target model `T`, with the builder's retry policy.
    ///
    /// # Panics
    /// When `T` already has a handler: each target model has exactly one.
    #[must_use]
    pub fn handler<T: SyncTarget>(self, handler: impl Handler<T>) -> RegistryBuilder<Conn, T>
    where
        Conn: Resolves<T>,
    {
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
    ) -> RegistryBuilder<Conn, T>
    where
        Conn: Resolves<T>,
    {
        self.register(handler, Some(policy))
    }

    fn register<T: SyncTarget>(
        mut self,
        handler: impl Handler<T>,
        policy: Option<RetryPolicy>,
    ) -> RegistryBuilder<Conn, T>
    where
        Conn: Resolves<T>,
    {
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
            filter: None,
            loader: Conn::loader(),
            make: Box::new(move |policy, filter| {
                let filter = filter.map(|filter| {
                    *filter
                        .downcast::<StoreFilter<T>>()
                        .expect("`when` stores the filter of the model it follows")
                });
                Arc::new(ModelQueue::new(handler, policy, filter))
            }),
        });
        RegistryBuilder {
            last: PhantomData,
            models: self.models,
            default_policy: self.default_policy,
            sink: self.sink,
            max_concurrent_calls: self.max_concurrent_calls,
            outbox: self.outbox,
            connection: PhantomData,
        }
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

    /// What does not match between the synced models linked into the program and the handlers
    /// registered so far; [`RegistryBuilder::build`] logs each as a warning.
    ///
    /// Warnings, not errors: a program may sync some models from another process or registry,
    /// and the ids of a model without a handler are counted and reported again when they
    /// commit.
    pub fn mismatches(&self) -> Vec<Mismatch> {
        let handled: Vec<(TypeId, &'static str)> =
            self.models.iter().map(|m| (m.target, m.name)).collect();
        mismatches(Catalog::get().models(), &handled)
    }

    /// Builds the registry; a durable one starts its delivery worker.
    ///
    /// # Panics
    /// For a durable registry: when a handled model's ids cannot be recorded in the outbox
    /// (an id type other than `i16`, `i32`, `i64` or `String`), or the registry's runtime
    /// cannot start.
    pub fn build(self) -> Registry<Conn> {
        if !self.models.is_empty() {
            for mismatch in self.mismatches() {
                tracing::warn!(%mismatch, "synced models and handlers do not match");
            }
        }
        let default_policy = self.default_policy;
        let mut queues = HashMap::new();
        let mut loaders = HashMap::new();
        for model in &self.models {
            if self.outbox.is_some() {
                check_target(model.target, model.name);
            }
        }
        for model in self.models {
            tracing::debug!(model = model.name, "sync handler registered");
            queues.insert(
                model.target,
                (model.make)(model.policy.unwrap_or(default_policy), model.filter),
            );
            loaders.insert(model.target, model.loader);
        }
        let mut registry = Registry {
            dispatcher: Dispatcher::new(queues, self.sink, self.max_concurrent_calls),
            loaders: Arc::new(loaders),
            outbox: None,
            connection: PhantomData,
        };
        if let Some(durable) = self.outbox {
            let state = Arc::new(DurableState::new());
            registry.dispatcher.make_durable(Arc::clone(&state));
            registry.outbox = Some(Arc::new(OutboxLink {
                state: Arc::clone(&state),
                append: durable.append,
            }));
            if let Err(error) = (durable.start)(registry.clone(), state) {
                panic!("the durable registry's worker cannot start: {error}");
            }
        }
        registry
    }
}

/// The dead rows of a durable registry's outbox: batches whose retries ran out, kept with their
/// error until they are retried or discarded. Each method runs one statement on `conn`'s inner
/// connection; `conn` may be any connection to the outbox's database. The synchronous
/// connection's registry has the same methods, blocking.
impl<C> Registry<SyncedConnection<C>>
where
    C: CaptureConnection,
    C::Backend: OutboxBackend,
{
    /// The dead rows, oldest first.
    pub async fn dead_rows(&self, conn: &mut SyncedConnection<C>) -> QueryResult<Vec<DeadRow>> {
        let rows = C::Backend::dead(conn.inner_mut()).await?;
        Ok(rows.into_iter().map(DeadRow::from).collect())
    }

    /// Delivers dead row `id` again (once its handler is fixed, say), its attempts counted
    /// afresh. Returns whether there was such a dead row.
    pub async fn retry_dead_row(
        &self,
        conn: &mut SyncedConnection<C>,
        id: i64,
    ) -> QueryResult<bool> {
        let revived = C::Backend::revive(conn.inner_mut(), Some(id)).await?;
        self.wake_worker();
        Ok(revived > 0)
    }

    /// Delivers every dead row again. Returns how many there were.
    pub async fn retry_dead_rows(&self, conn: &mut SyncedConnection<C>) -> QueryResult<usize> {
        let revived = C::Backend::revive(conn.inner_mut(), None).await?;
        self.wake_worker();
        Ok(revived)
    }

    /// Deletes dead row `id` without delivering it. Returns whether there was such a dead row.
    pub async fn discard_dead_row(
        &self,
        conn: &mut SyncedConnection<C>,
        id: i64,
    ) -> QueryResult<bool> {
        Ok(C::Backend::discard(conn.inner_mut(), Some(id)).await? > 0)
    }

    /// Deletes every dead row. Returns how many there were.
    pub async fn discard_dead_rows(&self, conn: &mut SyncedConnection<C>) -> QueryResult<usize> {
        C::Backend::discard(conn.inner_mut(), None).await
    }
}

/// The dead rows for synchronous code: the same methods as the async connection's, each one
/// statement on `conn`'s inner connection.
impl<C> Registry<crate::blocking::SyncedConnection<C>>
where
    C: crate::blocking::CaptureConnection + Send,
    C::Backend: crate::blocking::BlockingOutbox,
{
    /// The dead rows, oldest first.
    pub fn dead_rows(
        &self,
        conn: &mut crate::blocking::SyncedConnection<C>,
    ) -> QueryResult<Vec<DeadRow>> {
        let rows = <C::Backend as crate::blocking::BlockingOutbox>::dead(conn.inner_mut())?;
        Ok(rows.into_iter().map(DeadRow::from).collect())
    }

    /// Delivers dead row `id` again, its attempts counted afresh. Returns whether there was
    /// such a dead row.
    pub fn retry_dead_row(
        &self,
        conn: &mut crate::blocking::SyncedConnection<C>,
        id: i64,
    ) -> QueryResult<bool> {
        let revived =
            <C::Backend as crate::blocking::BlockingOutbox>::revive(conn.inner_mut(), Some(id))?;
        self.wake_worker();
        Ok(revived > 0)
    }

    /// Delivers every dead row again. Returns how many there were.
    pub fn retry_dead_rows(
        &self,
        conn: &mut crate::blocking::SyncedConnection<C>,
    ) -> QueryResult<usize> {
        let revived =
            <C::Backend as crate::blocking::BlockingOutbox>::revive(conn.inner_mut(), None)?;
        self.wake_worker();
        Ok(revived)
    }

    /// Deletes dead row `id` without delivering it. Returns whether there was such a dead row.
    pub fn discard_dead_row(
        &self,
        conn: &mut crate::blocking::SyncedConnection<C>,
        id: i64,
    ) -> QueryResult<bool> {
        let discarded =
            <C::Backend as crate::blocking::BlockingOutbox>::discard(conn.inner_mut(), Some(id))?;
        Ok(discarded > 0)
    }

    /// Deletes every dead row. Returns how many there were.
    pub fn discard_dead_rows(
        &self,
        conn: &mut crate::blocking::SyncedConnection<C>,
    ) -> QueryResult<usize> {
        <C::Backend as crate::blocking::BlockingOutbox>::discard(conn.inner_mut(), None)
    }
}

impl<Conn: 'static, Last> RegistryBuilder<Conn, Last> {
    /// Makes delivery durable: the outermost COMMIT of each connection also writes the ids it
    /// collected to the outbox table (see [`migrations`](crate::migrations)), in the same
    /// transaction, and a worker of the registry's own delivers from there, on a connection of
    /// its own to `durable`'s URL. A row leaves the outbox only once its batches were
    /// delivered, so a crash or a deploy between COMMIT and delivery loses nothing: the next
    /// start (or another process with a durable registry on the same database) delivers it.
    ///
    /// `transaction()` returns right after COMMIT: the rows are loaded and dispatched off the
    /// caller's path. Delivery is at least once; see the crate documentation.
    ///
    /// ```no_run
    /// # use diesel_sync_runtime as diesel_sync;
    /// use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
    /// use diesel_sync::{Durable, Registry, SyncedConnection};
    ///
    /// type Conn = SyncedConnection<SyncConnectionWrapper<diesel::SqliteConnection>>;
    /// let registry: Registry<Conn> = Registry::builder()
    ///     // .handler(…)
    ///     .durable(Durable::new("shop.db"))
    ///     .build();
    /// ```
    ///
    /// The same holds for the synchronous
    /// [`blocking::SyncedConnection`](crate::blocking::SyncedConnection): its worker runs a
    /// Diesel connection on blocking threads of the registry's own runtime, so the application
    /// needs no tokio runtime.
    #[must_use]
    pub fn durable(mut self, durable: Durable) -> Self
    where
        Conn: DurableConnection,
    {
        self.outbox = Some(Conn::durable_setup(durable));
        self
    }
}

/// A connection kind a durable registry serves: [`SyncedConnection`] and
/// [`blocking::SyncedConnection`](crate::blocking::SyncedConnection), on PostgreSQL, MySQL and
/// SQLite.
#[diagnostic::on_unimplemented(
    message = "a durable registry cannot serve `{Self}`",
    note = "durable delivery serves `SyncedConnection` and `blocking::SyncedConnection` on PostgreSQL, MySQL and SQLite"
)]
pub trait DurableConnection: Sized + 'static {
    /// How the connection kind writes outbox rows, and its worker. Not public API.
    #[doc(hidden)]
    fn durable_setup(durable: Durable) -> DurableSetup<Self>;
}

impl<C> DurableConnection for SyncedConnection<C>
where
    C: CaptureConnection,
    C::Backend: OutboxBackend,
{
    fn durable_setup(durable: Durable) -> DurableSetup<Self> {
        let append: Append<C> = append_entries::<C>;
        durable_setup(Box::new(append), durable)
    }
}

impl<C> DurableConnection for crate::blocking::SyncedConnection<C>
where
    C: crate::blocking::CaptureConnection + Send,
    C::Backend: crate::blocking::BlockingOutbox,
{
    fn durable_setup(durable: Durable) -> DurableSetup<Self> {
        let append: AppendBlocking<C> = append_entries_blocking::<C>;
        durable_setup(Box::new(append), durable)
    }
}

impl<Conn: 'static, T: SyncTarget> RegistryBuilder<Conn, T> {
    /// Delivers a batch of the handler just registered only when `filter` says yes to its
    /// store's row, as loaded with the batch after its commit: a store's "sync" switch, read
    /// from the database for every commit, so flipping it takes effect from the next one.
    ///
    /// A batch turned away, or whose store has no row, is skipped: counted in
    /// [`Metrics::batches_skipped`], not delivered and not retried later. Its changes are sent
    /// again only when the rows change again.
    ///
    /// ```
    /// # use diesel_sync_runtime as diesel_sync;
    /// # use diesel_sync::{Batch, HandlerError, Registry, Resolves, SyncTarget};
    /// # #[derive(Debug)] struct Store { sync_enabled: bool }
    /// # fn build<Conn: Resolves<Product>, Product: SyncTarget<Store = Store, StoreKey = i64> + diesel_sync::WithStoreModel>() -> Registry<Conn> {
    /// Registry::builder()
    ///     .handler(async |batch: Batch<Product>| -> Result<(), HandlerError> { Ok(()) })
    ///     .when(|store: &Store| store.sync_enabled)
    ///     .build()
    /// # }
    /// ```
    ///
    /// # Panics
    /// When the handler already has a filter.
    #[must_use]
    pub fn when(mut self, filter: impl Fn(&T::Store) -> bool + Send + Sync + 'static) -> Self
    where
        T: WithStoreModel,
    {
        let model = self
            .models
            .last_mut()
            .expect("`when` follows the handler it filters");
        assert!(
            model.filter.is_none(),
            "`{}` already has a store filter: combine the conditions in one `when`",
            type_name::<T>()
        );
        let filter: StoreFilter<T> = Box::new(filter);
        model.filter = Some(Box::new(filter));
        self
    }
}

/// A synced model and the registry's handlers that do not match; see
/// [`RegistryBuilder::mismatches`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mismatch {
    /// Writes to `table` are captured for `target`, which has no handler: they are dropped.
    NoHandler {
        /// The model that derives `Synced`.
        model: &'static str,
        /// Its table.
        table: &'static str,
        /// The target its writes sync.
        target: &'static str,
    },
    /// `target` has a handler, but no model that syncs it is linked into the program, so no
    /// write through a connection reaches the handler (only `mark_changed` does).
    NotLinked {
        /// The target model of the handler.
        target: &'static str,
    },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::NoHandler { model, table, target } => write!(
                f,
                "`{model}` derives `Synced` for table `{table}`, but its target `{target}` has no handler: register one with `.handler::<{target}>(…)`, or its writes are dropped after commit"
            ),
            Mismatch::NotLinked { target } => write!(
                f,
                "`{target}` has a handler, but no model that syncs it is linked into this program: derive `Synced` on `{target}` (or a model that references it) in a crate this program uses"
            ),
        }
    }
}

/// The mismatches between `models` (the catalog) and `handled` targets (id, name).
fn mismatches<'a>(
    models: impl Iterator<Item = &'a ModelFacts>,
    handled: &[(TypeId, &'static str)],
) -> Vec<Mismatch> {
    let models: Vec<&ModelFacts> = models.collect();
    let mut found: Vec<Mismatch> = models
        .iter()
        .filter(|m| handled.iter().all(|(target, _)| *target != m.target))
        .map(|m| Mismatch::NoHandler {
            model: m.model,
            table: m.table,
            target: m.target_name,
        })
        .collect();
    found.extend(
        handled
            .iter()
            .filter(|(target, _)| models.iter().all(|m| m.target != *target))
            .map(|(_, name)| Mismatch::NotLinked { target: name }),
    );
    found.sort_by_key(ToString::to_string);
    found
}

impl<Conn> fmt::Debug for Registry<Conn> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("models", &self.loaders.len())
            .field("durable", &self.outbox.is_some())
            .field("dispatcher", &self.dispatcher)
            .finish()
    }
}

impl<Conn, Last> fmt::Debug for RegistryBuilder<Conn, Last> {
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

#[cfg(test)]
mod tests {
    use std::any::TypeId;

    use super::{mismatches, Mismatch};
    use crate::catalog::ModelFacts;

    struct Product;
    struct Listing;

    fn model(
        model: &'static str,
        table: &'static str,
        target: TypeId,
        name: &'static str,
    ) -> ModelFacts {
        ModelFacts {
            model,
            table,
            key_column: "id",
            target,
            target_name: name,
            key: None,
            deletes: crate::catalog::Deletes::Change,
        }
    }

    #[test]
    fn a_model_without_a_handler_and_a_handler_without_a_model_are_both_reported() {
        let product = TypeId::of::<Product>();
        let listing = TypeId::of::<Listing>();
        let models = [
            model("Product", "products", product, "Product"),
            model("PriceRecord", "price_records", product, "Product"),
            model("Listing", "listings", listing, "Listing"),
        ];
        assert_eq!(
            mismatches(models.iter(), &[(product, "Product")]),
            vec![Mismatch::NoHandler {
                model: "Listing",
                table: "listings",
                target: "Listing"
            }]
        );
        let found = mismatches(
            models[..2].iter(),
            &[(product, "Product"), (listing, "Listing")],
        );
        assert_eq!(found, vec![Mismatch::NotLinked { target: "Listing" }]);
        assert!(found[0]
            .to_string()
            .contains("derive `Synced` on `Listing`"));
        assert!(
            mismatches(models.iter(), &[(product, "Product"), (listing, "Listing")]).is_empty()
        );
    }
}
