//! `SyncedConnection<C>`: any diesel-async connection, plus the collector its writes register
//! with, and a transaction manager that tells the collector about BEGIN, RELEASE, ROLLBACK and
//! COMMIT.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::ops::DerefMut;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use diesel::associations::HasTable;
use diesel::connection::{CacheSize, Instrumentation, TransactionManagerStatus};
use diesel::query_builder::{AsQuery, QueryFragment, QueryId};
use diesel::result::Error;
use diesel::{ConnectionResult, Identifiable, QueryResult};
use diesel_async::{
    AsyncConnection, AsyncConnectionCore, SimpleAsyncConnection, TransactionManager,
    UpdateAndFetchResults,
};
use futures_util::future::{BoxFuture, Either};
use futures_util::{Stream, TryStreamExt};
use pin_project_lite::pin_project;
use tracing::Instrument;

use crate::capture::{
    in_batch, refused, Capture, CaptureBackend, Captured, KeyColumn, KeysFrom, OwnedStatement,
    Plan, Plans, ReadKeys, Reads, Refused, ReturningKey, Rows,
};
use crate::catalog::insert_captured;
use crate::classify::Dialect;
use crate::collector::{transaction_lost, Calls, Collector, DeadlockWatch, Frame, Running};
use crate::error::CaptureRefused;
use crate::outbox::{NewEntry, OutboxBackend};
use crate::registry::{Loader, Registry, Resolves};
use crate::resolve::{async_loader, unhandled, AsyncLoader, Resolve, Unflushed};
use crate::synced::{SyncTarget, Synced};

/// A diesel-async connection whose synced writes are collected per transaction and handed on
/// after COMMIT.
///
/// It is an [`AsyncConnection`] itself: use it wherever the inner connection was used.
/// Transactions (`conn.transaction(async |conn| …)`) nest as savepoints; a released savepoint's
/// ids merge into its parent, a rolled-back one's are dropped, and the outermost COMMIT hands
/// the ids on only once the database has accepted it.
///
/// ```no_run
/// # use diesel_sync_runtime as diesel_sync;
/// use diesel_async::AsyncConnection;
/// use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
/// use diesel::SqliteConnection;
/// use diesel_sync::{Registry, SyncedConnection};
///
/// # async fn connect(registry: Registry<SyncedConnection<SyncConnectionWrapper<SqliteConnection>>>) -> diesel::ConnectionResult<()> {
/// let inner = SyncConnectionWrapper::<SqliteConnection>::establish("shop.db").await?;
/// let mut conn = SyncedConnection::new(inner, registry);
/// # Ok(()) }
/// ```
pub struct SyncedConnection<C> {
    inner: C,
    collector: Collector,
    plans: Plans,
    registry: Registry<Self>,
    /// The `transaction()` calls running.
    calls: Arc<Calls>,
}

/// A diesel-async connection capture runs on: a backend it knows, and rows it can hold across
/// an await (those of every diesel-async connection), as a captured write's rows are all read
/// before the caller sees the first.
pub trait CaptureConnection: AsyncConnection<Backend: CaptureBackend> + 'static {
    /// A captured write's rows, read to the end.
    type HeldRows<'conn, 'query>: Stream<Item = QueryResult<Self::Row<'conn, 'query>>>
        + Extend<QueryResult<Self::Row<'conn, 'query>>>
        + Default
        + Send
        + Unpin;
}

impl<C> CaptureConnection for C
where
    C: AsyncConnection<Backend: CaptureBackend> + 'static,
    for<'conn, 'query> C::Row<'conn, 'query>: Send,
{
    type HeldRows<'conn, 'query> = HeldRows<C::Row<'conn, 'query>>;
}

/// Rows read ahead, handed out in order.
#[doc(hidden)]
#[derive(Debug)]
pub struct HeldRows<R>(VecDeque<QueryResult<R>>);

impl<R> Default for HeldRows<R> {
    fn default() -> Self {
        Self(VecDeque::new())
    }
}

impl<R> Extend<QueryResult<R>> for HeldRows<R> {
    fn extend<I: IntoIterator<Item = QueryResult<R>>>(&mut self, rows: I) {
        self.0.extend(rows);
    }
}

impl<R> Unpin for HeldRows<R> {}

impl<R> Stream for HeldRows<R> {
    type Item = QueryResult<R>;

    fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(self.get_mut().0.pop_front())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.0.len(), Some(self.0.len()))
    }
}

/// A connection that routes through a [`SyncedConnection`]: the connection itself, or a pooled
/// connection that dereferences to one.
pub trait AsSynced: Send {
    /// The wrapped diesel-async connection.
    type Inner: CaptureConnection;
    /// The synced connection.
    fn as_synced(&mut self) -> &mut SyncedConnection<Self::Inner>;
}

impl<C> AsSynced for SyncedConnection<C>
where
    C: CaptureConnection,
{
    type Inner = C;
    fn as_synced(&mut self) -> &mut SyncedConnection<C> {
        self
    }
}

impl<P> AsSynced for P
where
    P: DerefMut + Send,
    P::Target: AsSynced,
{
    type Inner = <P::Target as AsSynced>::Inner;
    fn as_synced(&mut self) -> &mut SyncedConnection<Self::Inner> {
        self.deref_mut().as_synced()
    }
}

impl<C> SyncedConnection<C>
where
    C: CaptureConnection,
{
    /// Wraps `inner`; its synced writes go to `registry`'s handlers.
    ///
    /// On MySQL the connection watches every statement `inner` runs for a deadlock, which rolls
    /// the whole transaction back: it replaces the instrumentation `inner` had with Diesel's
    /// default one, watched. Set your own with `set_instrumentation` on this connection.
    pub fn new(mut inner: C, registry: Registry<Self>) -> Self {
        let calls = Arc::<Calls>::default();
        if C::Backend::DIALECT == Dialect::Mysql {
            let default = diesel::connection::get_default_instrumentation();
            inner.set_instrumentation(DeadlockWatch::new(&calls, default));
        }
        Self {
            inner,
            collector: Collector::new(),
            plans: Plans::new(
                Reads {
                    dialect: <C::Backend as CaptureBackend>::DIALECT,
                    returning: true,
                },
                registry.targets(),
            ),
            registry,
            calls,
        }
    }

    /// The registry this connection hands committed ids to.
    pub fn registry(&self) -> &Registry<Self> {
        &self.registry
    }

    /// The wrapped connection. Writes made on it directly are not synced.
    pub fn inner_mut(&mut self) -> &mut C {
        &mut self.inner
    }

    /// Unwraps the connection, dropping ids of any open transaction.
    pub fn into_inner(self) -> C {
        self.inner
    }

    /// Ids registered in the open transaction (every level), not yet handed on.
    pub fn pending_ids(&self) -> usize {
        self.collector.pending()
    }

    /// Registers ids of target model `T` changed by a write the hooks cannot see (raw SQL,
    /// `sql_query`, a trigger). Inside a transaction they are handed on after COMMIT; outside,
    /// at once.
    ///
    /// ```ignore
    /// diesel::sql_query("UPDATE products SET price_cents = price_cents + 1 WHERE id = 7")
    ///     .execute(conn).await?;
    /// conn.mark_changed::<Product>([7]).await;
    /// ```
    pub async fn mark_changed<T: SyncTarget>(&mut self, ids: impl IntoIterator<Item = T::Id>) {
        self.register::<T>(ids).await;
    }

    /// Registers rows of target model `T` deleted by a write the connection did not capture,
    /// each with the store it belonged to: they reach the store's handler as removals
    /// ([`Batch::removed`](crate::Batch::removed)). A row that exists again at COMMIT is sent
    /// as a change instead.
    ///
    /// ```ignore
    /// conn.inner_mut().batch_execute("DELETE FROM products WHERE id = 7").await?;
    /// conn.mark_removed::<Product>([(7, store_id)]).await;
    /// ```
    pub async fn mark_removed<T: SyncTarget>(
        &mut self,
        removed: impl IntoIterator<Item = (T::Id, T::StoreKey)>,
    ) {
        self.drop_lost_levels();
        if let Some(frame) = self.collector.add(|frame| frame.remove::<T>(removed)) {
            self.flush(frame).await;
        }
    }

    /// Adds ids to the innermost open transaction, or hands them on now if none is open.
    pub(crate) async fn register<T: SyncTarget>(&mut self, ids: impl IntoIterator<Item = T::Id>) {
        self.drop_lost_levels();
        if let Some(frame) = self.collector.add(|frame| frame.insert::<T>(ids)) {
            self.flush(frame).await;
        }
    }

    /// Resolves and dispatches a committed frame. Never fails: errors become dead letters.
    ///
    /// A durable registry's frame committed on its own (a write outside a transaction) is
    /// recorded in the outbox for the worker instead, or, if that fails, delivered from here.
    async fn flush(&mut self, frame: Frame) {
        if frame.is_empty() {
            return;
        }
        if let Some(outbox) = self
            .registry
            .outbox()
            .filter(|_| self.collector.base_depth() == 0)
        {
            let wake = Arc::clone(&outbox.state);
            let entries = self.outbox_entries(&frame);
            let recorded = match entries {
                Ok(entries) => self.append(entries).await,
                Err(error) => Err(error),
            };
            match recorded {
                Ok(()) => return wake.rows_written(),
                Err(error) => {
                    tracing::error!(%error, "recording committed ids in the outbox failed; delivering them from memory");
                }
            }
        }
        let dispatcher = self.registry.dispatcher();
        if let Some(offload) = dispatcher
            .offload()
            .filter(|_| self.collector.base_depth() == 0)
        {
            return offload.push(dispatcher, frame);
        }
        let span = tracing::info_span!("flush", ids = frame.len());
        async {
            let dispatcher = self.registry.dispatcher();
            let mut unflushed = Unflushed::new(dispatcher, frame);
            while let Some(pending) = unflushed.next() {
                match self.registry.loader::<AsyncLoader<C>>(pending.target()) {
                    Some(load) => load(&mut self.inner, dispatcher, pending).await,
                    None => unhandled(dispatcher, pending),
                }
                unflushed.handed_on();
            }
        }
        .instrument(span)
        .await;
    }

    /// The outbox rows recording `frame`'s ids of the models with a handler.
    fn outbox_entries(&self, frame: &Frame) -> QueryResult<Vec<NewEntry>> {
        frame
            .outbox_entries(&self.registry.targets())
            .map_err(|error| Error::QueryBuilderError(error.into()))
    }

    /// Writes outbox rows in one statement, when the registry is durable.
    async fn append(&mut self, entries: Vec<NewEntry>) -> QueryResult<()> {
        let Some(outbox) = self.registry.outbox() else {
            return Ok(());
        };
        if entries.is_empty() {
            return Ok(());
        }
        let rows = entries.len();
        outbox.append::<Append<C>>()(&mut self.inner, entries).await?;
        tracing::debug!(rows, "committed ids recorded in the outbox");
        Ok(())
    }

    /// The inner connection's transaction depth; a broken transaction manager counts as none
    /// open, so nothing from it is ever handed on.
    fn database_depth(&mut self) -> usize {
        match C::TransactionManager::transaction_manager_status_mut(&mut self.inner)
            .transaction_depth()
        {
            Ok(depth) => depth.map_or(0, |d| d.get() as usize),
            Err(_) => 0,
        }
    }
}

/// How a durable registry's connections of kind `C` write outbox rows, as the registry stores
/// it.
pub(crate) type Append<C> = for<'a> fn(&'a mut C, Vec<NewEntry>) -> BoxFuture<'a, QueryResult<()>>;

/// The [`Append`] of `C`.
pub(crate) fn append_entries<C>(
    conn: &mut C,
    entries: Vec<NewEntry>,
) -> BoxFuture<'_, QueryResult<()>>
where
    C: AsyncConnectionCore,
    C::Backend: OutboxBackend,
{
    Box::pin(<C::Backend as OutboxBackend>::append(conn, entries))
}

/// A transaction closure whose future can be named, so its `Send` can be required: the shape
/// of diesel-async's own bound on `transaction`. Implemented for every async closure.
#[doc(hidden)]
pub trait TransactionFn<T, R>:
    AsyncFnOnce(T) -> R + FnOnce(T) -> <Self as TransactionFn<T, R>>::Fut
{
    /// The closure's future.
    type Fut: Future<Output = R>;
}

impl<F, T, Fut, R> TransactionFn<T, R> for F
where
    F: AsyncFnOnce(T) -> R + FnOnce(T) -> Fut,
    Fut: Future<Output = R>,
{
    type Fut = Fut;
}

/// The transaction manager of [`SyncedConnection`]: delegates to `C`'s and keeps the collector's
/// frames in step with the database's transaction depth.
#[derive(Debug)]
pub struct SyncedTransactionManager<C>(std::marker::PhantomData<C>);

impl<C> TransactionManager<SyncedConnection<C>> for SyncedTransactionManager<C>
where
    C: CaptureConnection,
{
    type TransactionStateData =
        <C::TransactionManager as TransactionManager<C>>::TransactionStateData;

    /// diesel-async's `transaction`, with one addition: a transaction left open by a
    /// `transaction()` that never finished (its future dropped, its closure panicked) is rolled
    /// back first. Without that, the next `transaction()` would run as a savepoint inside it and
    /// return `Ok`, though nothing it did would ever commit.
    // Spelled as the trait spells it: as an `async fn`, the future would also hold `R` and `E`,
    // which the trait does not require to outlive the connection's borrow.
    #[allow(clippy::manual_async_fn)]
    fn transaction<'a, 'conn, F, R, E>(
        conn: &'conn mut SyncedConnection<C>,
        callback: F,
    ) -> impl Future<Output = Result<R, E>> + Send + 'conn
    where
        for<'r> F: AsyncFnOnce(&'r mut SyncedConnection<C>) -> Result<R, E>
            + TransactionFn<&'r mut SyncedConnection<C>, Result<R, E>, Fut: Send>
            + Send
            + 'a,
        E: From<Error> + Send,
        R: Send,
        'a: 'conn,
    {
        async move {
            let callback = callback;
            conn.roll_back_abandoned().await?;
            let _running = Running::enter(&conn.calls);
            Self::begin_transaction(conn).await?;
            let depth = conn.database_depth();
            let result = callback(&mut *conn).await;
            // A nested `transaction()` that never finished (its panic caught, its future
            // dropped inside this closure) left its savepoint open: it is rolled back, or this
            // level's COMMIT would only release it and leave the transaction open.
            conn.roll_back_above(depth).await?;
            match result {
                Ok(value) => {
                    Self::commit_transaction(conn).await?;
                    Ok(value)
                }
                Err(user_error) => match Self::rollback_transaction(conn).await {
                    Ok(()) | Err(Error::BrokenTransactionManager) => Err(user_error),
                    Err(rollback_error) => Err(rollback_error.into()),
                },
            }
        }
    }

    async fn begin_transaction(conn: &mut SyncedConnection<C>) -> QueryResult<()> {
        if conn.calls.transaction_lost() {
            return Err(transaction_lost());
        }
        let result = C::TransactionManager::begin_transaction(&mut conn.inner).await;
        let depth = conn.database_depth();
        conn.collector.began(depth);
        result
    }

    async fn rollback_transaction(conn: &mut SyncedConnection<C>) -> QueryResult<()> {
        let before = conn.database_depth();
        let result = C::TransactionManager::rollback_transaction(&mut conn.inner).await;
        if (result.is_err() || conn.calls.transaction_lost())
            && before > 1
            && <C::Backend as CaptureBackend>::DIALECT == Dialect::Mysql
        {
            // The savepoint is gone: InnoDB rolled the whole transaction back (a deadlock).
            // Every level is closed to match, so that what the closures still run is seen as
            // the autocommitted statements it is, and the outermost level reports the failure.
            conn.calls.lose_transaction();
            conn.close_every_level().await;
        }
        let depth = conn.database_depth();
        conn.collector.rolled_back(depth);
        result
    }

    /// A durable registry's outermost COMMIT first writes the frame's outbox rows in the same
    /// transaction; if that fails, the transaction is rolled back and the error returned.
    async fn commit_transaction(conn: &mut SyncedConnection<C>) -> QueryResult<()> {
        if conn.calls.transaction_lost() {
            // Nothing is left to commit: MySQL would accept the COMMIT of no transaction.
            conn.close_every_level().await;
            let depth = conn.database_depth();
            conn.collector.rolled_back(depth);
            return Err(transaction_lost());
        }
        // Inside a test transaction nothing commits: its ids are delivered from memory.
        let outermost = conn.database_depth() == 1 && conn.collector.base_depth() == 0;
        let entries = match conn.collector.outermost() {
            Some(frame) if outermost && conn.registry.is_durable() => conn.outbox_entries(frame),
            _ => Ok(Vec::new()),
        };
        let recorded = match entries {
            Ok(entries) => conn.append(entries).await,
            Err(error) => Err(error),
        };
        if let Err(error) = recorded {
            tracing::error!(%error, "recording committed ids in the outbox failed; rolling back");
            let _ = Self::rollback_transaction(conn).await;
            return Err(error);
        }
        let result = C::TransactionManager::commit_transaction(&mut conn.inner).await;
        let depth = conn.database_depth();
        if let Some(frame) = conn.collector.committed(result.is_ok(), depth) {
            match conn.registry.outbox().filter(|_| outermost) {
                Some(outbox) => outbox.state.rows_written(),
                None => conn.flush(frame).await,
            }
        }
        result
    }

    fn transaction_manager_status_mut(
        conn: &mut SyncedConnection<C>,
    ) -> &mut TransactionManagerStatus {
        C::TransactionManager::transaction_manager_status_mut(&mut conn.inner)
    }

    fn is_broken_transaction_manager(conn: &mut SyncedConnection<C>) -> bool {
        C::TransactionManager::is_broken_transaction_manager(&mut conn.inner)
    }
}

/// Raw SQL is planned like any statement: a batch runs one statement at a time when one of
/// them writes a synced table, each write captured; a batch with a write that cannot be captured
/// is refused before any of it runs.
impl<C> SimpleAsyncConnection for SyncedConnection<C>
where
    C: CaptureConnection,
{
    async fn batch_execute(&mut self, query: &str) -> QueryResult<()> {
        self.drop_lost_levels();
        let statements = match self.plans.text(query) {
            Plan::Pass => return self.inner.batch_execute(query).await,
            Plan::Refuse(refusal) => return Err(refused(refusal)),
            Plan::Capture(capture) => vec![(query.to_owned(), Plan::Capture(capture))],
            Plan::Batch(statements) => statements,
        };
        for (statement, plan) in statements {
            match plan {
                Plan::Capture(capture) => {
                    let statement = diesel::sql_query(statement);
                    let read = ReadKeys::of(&statement, &capture)?;
                    self.run_captured(Box::new(statement), capture, read)
                        .await?;
                }
                _ => self.inner.batch_execute(&statement).await?,
            }
        }
        Ok(())
    }
}

impl<C> AsyncConnectionCore for SyncedConnection<C>
where
    C: CaptureConnection,
{
    type ExecuteFuture<'conn, 'query> = Either<
        C::ExecuteFuture<'conn, 'query>,
        Either<CapturedCount<'conn, 'query, C>, BoxFuture<'conn, QueryResult<usize>>>,
    >;
    type LoadFuture<'conn, 'query> = SyncedLoad<'conn, 'query, C>;
    type Stream<'conn, 'query> = Either<C::Stream<'conn, 'query>, CapturedRows<'conn, 'query, C>>;
    type Row<'conn, 'query> = C::Row<'conn, 'query>;
    type Backend = C::Backend;

    fn load<'conn, 'query, T>(&'conn mut self, source: T) -> Self::LoadFuture<'conn, 'query>
    where
        T: AsQuery + 'query,
        T::Query: QueryFragment<Self::Backend> + QueryId + 'query,
    {
        self.drop_lost_levels();
        let query = source.as_query();
        let capture = match self.plans.get(&query) {
            Plan::Pass => return pass(self.inner.load(query)),
            Plan::Refuse(refusal) => return pass(self.inner.load(Refused(refusal))),
            Plan::Batch(statements) => {
                return pass(self.inner.load(Refused(in_batch(&statements))));
            }
            Plan::Capture(capture) => capture,
        };
        // Outside a transaction the keys could only be resolved once the caller is done with
        // the rows, which borrow the connection.
        if !self.collector.in_transaction() {
            let refusal = CaptureRefused::returns_rows_outside_a_transaction(&capture.model);
            return pass(self.inner.load(Refused(refusal)));
        }
        if !matches!(capture.keys, KeysFrom::Returning) {
            let refusal = CaptureRefused::selected_keys_run_for_rows(&capture.model);
            return pass(self.inner.load(Refused(refusal)));
        }
        SyncedLoad::Captured {
            load: self.captured(query, capture, true),
        }
    }

    fn execute_returning_count<'conn, 'query, T>(
        &'conn mut self,
        source: T,
    ) -> Self::ExecuteFuture<'conn, 'query>
    where
        T: QueryFragment<Self::Backend> + QueryId + 'query,
    {
        self.drop_lost_levels();
        match self.plans.get(&source) {
            Plan::Pass => Either::Left(self.inner.execute_returning_count(source)),
            Plan::Refuse(refusal) => Either::Right(Either::Right(Box::pin(std::future::ready(
                Err(refused(refusal)),
            )))),
            Plan::Batch(statements) => Either::Right(Either::Right(Box::pin(std::future::ready(
                Err(refused(in_batch(&statements))),
            )))),
            // In a transaction nothing runs after the statement: it runs as the caller built
            // it, its binds borrowed.
            Plan::Capture(capture)
                if self.collector.in_transaction()
                    && matches!(capture.keys, KeysFrom::Returning) =>
            {
                Either::Right(Either::Left(CapturedCount(
                    self.captured(source, capture, false),
                )))
            }
            Plan::Capture(capture) => {
                // Owned, so the future can keep the connection after the statement: outside a
                // transaction the keys are resolved right after it.
                let statement = <C::Backend as CaptureBackend>::own(&source);
                let read = ReadKeys::of(&source, &capture);
                Either::Right(Either::Right(Box::pin(async move {
                    self.run_captured(statement?, capture, read?).await
                })))
            }
        }
    }
}

impl<C: CaptureConnection> SyncedConnection<C> {
    /// Once the database rolled the running calls' transaction back (MySQL, after a deadlock),
    /// drops every level's ids, before anything else reaches the connection: what the closures
    /// still run is autocommitted, and handed on as such. Diesel's levels stay open until the
    /// calls end them; the outermost one then fails.
    fn drop_lost_levels(&mut self) {
        if self.calls.transaction_lost() && self.collector.pending_levels() {
            tracing::warn!("the database rolled the whole transaction back; its ids are dropped");
            self.collector.lose_levels();
        }
    }

    /// `query`, a write to a synced table inside a transaction, run with its key column
    /// returned: every key is registered once every row is read.
    fn captured<'conn, 'query, Q>(
        &'conn mut self,
        query: Q,
        capture: Capture,
        hold_rows: bool,
    ) -> CapturedLoad<'conn, 'query, C>
    where
        Q: QueryFragment<C::Backend> + QueryId + 'query,
    {
        let Self {
            inner, collector, ..
        } = self;
        let load = inner.load(ReturningKey::new(query, &capture));
        CapturedLoad {
            state: LoadState::Running(Box::pin(load)),
            collector,
            capture,
            captured: Captured::default(),
            hold_rows,
            rows: Default::default(),
            written: 0,
        }
    }
}

/// The execution of a write to a synced table inside a transaction: its rows are read for
/// their keys, and counted.
#[doc(hidden)]
pub struct CapturedCount<'conn, 'query, C: CaptureConnection>(CapturedLoad<'conn, 'query, C>);

impl<C: CaptureConnection> Future for CapturedCount<'_, '_, C> {
    type Output = QueryResult<usize>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let load = &mut self.get_mut().0;
        Pin::new(&mut *load).poll(cx).map_ok(|_| load.written)
    }
}

impl<C: CaptureConnection> fmt::Debug for CapturedCount<'_, '_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CapturedCount").field(&self.0).finish()
    }
}

/// The rows of a captured write, read to the end before the caller sees the first.
pub(crate) type CapturedRows<'conn, 'query, C> = <C as CaptureConnection>::HeldRows<'conn, 'query>;

fn pass<'conn, 'query, C: CaptureConnection>(
    load: C::LoadFuture<'conn, 'query>,
) -> SyncedLoad<'conn, 'query, C> {
    SyncedLoad::Passed { load }
}

pin_project! {
    /// The load of a statement through a [`SyncedConnection`]: the inner connection's, or a
    /// captured write's.
    #[doc(hidden)]
    #[project = SyncedLoadProjection]
    pub enum SyncedLoad<'conn, 'query, C: CaptureConnection> {
        /// A statement that writes no synced table, or a refused one.
        Passed { #[pin] load: C::LoadFuture<'conn, 'query> },
        /// A captured write.
        Captured { load: CapturedLoad<'conn, 'query, C> },
    }
}

impl<'conn, 'query, C: CaptureConnection> Future for SyncedLoad<'conn, 'query, C> {
    type Output = QueryResult<Either<C::Stream<'conn, 'query>, CapturedRows<'conn, 'query, C>>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            SyncedLoadProjection::Passed { load } => load.poll(cx).map_ok(Either::Left),
            SyncedLoadProjection::Captured { load } => Pin::new(load).poll(cx),
        }
    }
}

impl<C: CaptureConnection> fmt::Debug for SyncedLoad<'_, '_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncedLoad::Passed { .. } => f.write_str("SyncedLoad::Passed"),
            SyncedLoad::Captured { load } => load.fmt(f),
        }
    }
}

/// The load of a write to a synced table, inside a transaction: the write runs with its key
/// column returned, and every row is read, and every key registered, before the caller sees
/// the first (`get_result` stops at the first).
#[doc(hidden)]
pub struct CapturedLoad<'conn, 'query, C: CaptureConnection> {
    state: LoadState<'conn, 'query, C>,
    collector: &'conn mut Collector,
    capture: Capture,
    captured: Captured,
    /// Whether the caller reads the rows (`load`), or only their count (`execute`).
    hold_rows: bool,
    rows: C::HeldRows<'conn, 'query>,
    written: usize,
}

enum LoadState<'conn, 'query, C: CaptureConnection> {
    Running(Pin<Box<C::LoadFuture<'conn, 'query>>>),
    Reading(Pin<Box<C::Stream<'conn, 'query>>>),
    Done,
}

// The inner futures are boxed, and nothing else is pinned.
impl<C: CaptureConnection> Unpin for CapturedLoad<'_, '_, C> {}

impl<'conn, 'query, C: CaptureConnection> Future for CapturedLoad<'conn, 'query, C> {
    type Output = QueryResult<Either<C::Stream<'conn, 'query>, CapturedRows<'conn, 'query, C>>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                LoadState::Running(load) => match ready!(load.as_mut().poll(cx)) {
                    Ok(rows) => this.state = LoadState::Reading(Box::pin(rows)),
                    Err(error) => {
                        this.state = LoadState::Done;
                        return Poll::Ready(Err(error));
                    }
                },
                LoadState::Reading(rows) => match ready!(rows.as_mut().poll_next(cx)) {
                    Some(Ok(row)) => {
                        match this.captured.read::<C::Backend, _>(
                            &row,
                            &this.capture,
                            KeyColumn::Last,
                        ) {
                            Ok(()) => {
                                if this.hold_rows {
                                    this.rows.extend([Ok(row)]);
                                }
                            }
                            Err(error) => {
                                this.state = LoadState::Done;
                                return Poll::Ready(Err(error));
                            }
                        }
                    }
                    Some(Err(error)) => {
                        this.state = LoadState::Done;
                        return Poll::Ready(Err(error));
                    }
                    None => {
                        this.state = LoadState::Done;
                        let captured = std::mem::take(&mut this.captured);
                        this.written = captured.len();
                        let capture = &this.capture;
                        this.collector
                            .add(|frame| insert_captured(frame, capture, captured));
                        let rows = std::mem::take(&mut this.rows);
                        return Poll::Ready(Ok(Either::Right(rows)));
                    }
                },
                LoadState::Done => panic!("`CapturedLoad` polled after it completed"),
            }
        }
    }
}

impl<C: CaptureConnection> fmt::Debug for CapturedLoad<'_, '_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CapturedLoad")
            .field("model", &self.capture.model.model)
            .field("keys", &self.captured.len())
            .finish_non_exhaustive()
    }
}

impl<C> SyncedConnection<C>
where
    C: CaptureConnection,
{
    /// Runs a write to a synced table and registers the keys of the rows it wrote: in the open
    /// transaction, or handed on now when none is open (with a durable registry, in a
    /// transaction of its own, so that the write and its outbox rows commit together).
    /// Returns the rows written.
    async fn run_captured(
        &mut self,
        statement: OwnedStatement<C::Backend>,
        capture: Capture,
        read: ReadKeys<C::Backend>,
    ) -> QueryResult<usize> {
        if self.registry.is_durable() && !self.collector.in_transaction() {
            self.begin_unless_open().await?;
            let result = Box::pin(self.run_captured(statement, capture, read)).await;
            return self.end_opened(true, result).await;
        }
        let (written, captured) = match read {
            ReadKeys::Returning => self.write_returning_keys(statement, &capture).await?,
            ReadKeys::SelectedFirst(select) => {
                self.write_after_keys(statement, select, &capture).await?
            }
            // A plain INSERT writes every row it binds, or fails.
            ReadKeys::Known(captured) => {
                let written = self.inner.execute_returning_count(Rows(statement)).await?;
                (written, captured)
            }
        };
        tracing::trace!(
            table = capture.model.table,
            keys = captured.len(),
            "write captured"
        );
        if let Some(frame) = self
            .collector
            .add(|frame| insert_captured(frame, &capture, captured))
        {
            self.flush(frame).await;
        }
        Ok(written)
    }

    /// The write with its key column returned (`RETURNING`): the rows written are the keys read.
    async fn write_returning_keys(
        &mut self,
        statement: OwnedStatement<C::Backend>,
        capture: &Capture,
    ) -> QueryResult<(usize, Captured)> {
        let rows = self
            .inner
            .load(ReturningKey::new(Rows(statement), capture))
            .await?;
        let captured = rows
            .try_fold(Captured::default(), |mut captured, row| {
                let read = captured.read::<C::Backend, _>(&row, capture, KeyColumn::Last);
                std::future::ready(read.map(|()| captured))
            })
            .await?;
        Ok((captured.len(), captured))
    }

    /// The write after a `SELECT … FOR UPDATE` of the keys it will touch, both in one
    /// transaction (opened here when none is), so the rows locked are the rows written.
    async fn write_after_keys(
        &mut self,
        statement: OwnedStatement<C::Backend>,
        select: OwnedStatement<C::Backend>,
        capture: &Capture,
    ) -> QueryResult<(usize, Captured)> {
        let opened = self.begin_unless_open().await?;
        let result = async {
            let rows = self.inner.load(Rows(select)).await?;
            let captured = rows
                .try_fold(Captured::default(), |mut captured, row| {
                    let read = captured.read::<C::Backend, _>(&row, capture, KeyColumn::First);
                    std::future::ready(read.map(|()| captured))
                })
                .await?;
            let written = self.inner.execute_returning_count(Rows(statement)).await?;
            Ok((written, captured))
        }
        .await;
        self.end_opened(opened, result).await
    }

    /// Rolls back what a `transaction()` that never finished left open. With no call running,
    /// every level above the test transaction's (if any) is such a leftover.
    async fn roll_back_abandoned(&mut self) -> QueryResult<()> {
        if self.calls.running() {
            return Ok(());
        }
        let base = self.collector.base_depth();
        match self.roll_back_above(base).await {
            // The levels are gone either way: the database had already rolled the whole
            // transaction back (on MySQL, after a deadlock), so its savepoints were missing.
            Err(error) if self.database_depth() <= base => {
                tracing::warn!(%error, "the abandoned transaction was already rolled back by the database");
                Ok(())
            }
            result => result,
        }
    }

    /// Rolls back every level of a transaction the database already rolled back: its
    /// savepoints are gone, so their rollbacks fail; the outermost ROLLBACK ends the rest.
    async fn close_every_level(&mut self) {
        tracing::warn!("the database rolled the whole transaction back; closing every level");
        // A failed savepoint rollback still closes its level in diesel-async's count: go on
        // while the count goes down.
        let mut depth = self.database_depth();
        while depth > 0 {
            let _ = C::TransactionManager::rollback_transaction(&mut self.inner).await;
            let closed = std::mem::replace(&mut depth, self.database_depth());
            if depth >= closed {
                break;
            }
        }
    }

    /// Rolls back every level above database depth `depth`.
    async fn roll_back_above(&mut self, depth: usize) -> QueryResult<()> {
        let above = self.database_depth().saturating_sub(depth);
        if above > 0 {
            tracing::warn!(
                levels = above,
                "rolling back transaction levels a transaction() that never finished left open"
            );
        }
        while self.database_depth() > depth {
            SyncedTransactionManager::<C>::rollback_transaction(self).await?;
        }
        Ok(())
    }

    /// Opens a transaction when none is open, for a write of several statements that must
    /// commit or roll back together. Returns whether it opened one.
    pub(crate) async fn begin_unless_open(&mut self) -> QueryResult<bool> {
        if self.collector.in_transaction() {
            return Ok(false);
        }
        SyncedTransactionManager::<C>::begin_transaction(self).await?;
        Ok(true)
    }

    /// Ends the transaction [`Self::begin_unless_open`] opened, if it did: commits after
    /// `result` succeeded, rolls back after it failed.
    pub(crate) async fn end_opened<T>(
        &mut self,
        opened: bool,
        result: QueryResult<T>,
    ) -> QueryResult<T> {
        if opened {
            match &result {
                Ok(_) => SyncedTransactionManager::<C>::commit_transaction(self).await?,
                Err(_) => SyncedTransactionManager::<C>::rollback_transaction(self).await?,
            }
        }
        result
    }
}

impl<C> AsyncConnection for SyncedConnection<C>
where
    C: CaptureConnection,
{
    type TransactionManager = SyncedTransactionManager<C>;

    /// Connects with an empty registry: ids are collected and dropped with a warning. Use
    /// [`SyncedConnection::new`] (or a pool built with a registry) to deliver them.
    async fn establish(database_url: &str) -> ConnectionResult<Self> {
        Ok(Self::new(
            C::establish(database_url).await?,
            Registry::empty(),
        ))
    }

    /// Begins a test transaction and treats the transactions run inside it as outermost: their
    /// ids are handed on when they finish, so tests see what would be sent.
    async fn begin_test_transaction(&mut self) -> QueryResult<()> {
        self.inner.begin_test_transaction().await?;
        self.collector.enter_test_transaction();
        Ok(())
    }

    fn transaction_state(
        &mut self,
    ) -> &mut <C::TransactionManager as TransactionManager<C>>::TransactionStateData {
        self.inner.transaction_state()
    }

    fn instrumentation(&mut self) -> &mut dyn Instrumentation {
        self.inner.instrumentation()
    }

    fn set_instrumentation(&mut self, instrumentation: impl Instrumentation) {
        if C::Backend::DIALECT == Dialect::Mysql {
            let next = Some(Box::new(instrumentation) as Box<dyn Instrumentation>);
            self.inner
                .set_instrumentation(DeadlockWatch::new(&self.calls, next));
        } else {
            self.inner.set_instrumentation(instrumentation);
        }
    }

    fn set_prepared_statement_cache_size(&mut self, size: CacheSize) {
        self.inner.set_prepared_statement_cache_size(size);
    }
}

/// Committed ids of `T` are loaded over `C` itself, right after COMMIT.
impl<C, T> Resolves<T> for SyncedConnection<C>
where
    C: AsyncConnection + 'static,
    T: Resolve<C>,
{
    fn loader() -> Loader {
        let load: AsyncLoader<C> = async_loader::<T, C>;
        Loader::new(load)
    }
}

/// `save_changes`: the row Diesel reads back is registered.
impl<C, Changes, Output> UpdateAndFetchResults<Changes, Output> for SyncedConnection<C>
where
    C: CaptureConnection + UpdateAndFetchResults<Changes, Output>,
    Changes: Identifiable + HasTable + Send,
    Output: Synced + Send,
{
    fn update_and_fetch<'conn, 'changes>(
        &'conn mut self,
        changeset: Changes,
    ) -> BoxFuture<'changes, QueryResult<Output>>
    where
        Changes: 'changes,
        'conn: 'changes,
        Self: 'changes,
    {
        Box::pin(async move {
            // A durable registry's save outside a transaction runs in one of its own, so that
            // the row and its outbox record commit together.
            let opened = self.registry.is_durable() && self.begin_unless_open().await?;
            let saved = async {
                let row = self.inner.update_and_fetch(changeset).await?;
                self.register::<Output::Target>([row.sync_key()]).await;
                Ok(row)
            }
            .await;
            self.end_opened(opened, saved).await
        })
    }
}

#[cfg(any(feature = "deadpool", feature = "bb8"))]
impl<C> diesel_async::pooled_connection::PoolableConnection for SyncedConnection<C> where
    C: diesel_async::pooled_connection::PoolableConnection + CaptureConnection
{
}

impl<C: fmt::Debug> fmt::Debug for SyncedConnection<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncedConnection")
            .field("inner", &self.inner)
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}
