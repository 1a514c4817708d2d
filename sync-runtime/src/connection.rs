//! `SyncedConnection<C>`: any diesel-async connection, plus the collector its writes register
//! with, and a transaction manager that tells the collector about BEGIN, RELEASE, ROLLBACK and
//! COMMIT.

use std::fmt;
use std::ops::DerefMut;

use diesel::associations::HasTable;
use diesel::connection::{CacheSize, Instrumentation, TransactionManagerStatus};
use diesel::query_builder::{AsQuery, QueryFragment, QueryId};
use diesel::{ConnectionResult, Identifiable, QueryResult};
use diesel_async::{
    AsyncConnection, AsyncConnectionCore, SimpleAsyncConnection, TransactionManager,
    UpdateAndFetchResults,
};
use futures_util::future::BoxFuture;
use tracing::Instrument;

use crate::collector::{Collector, Frame, PendingIds};
use crate::registry::Registry;
use crate::resolve::Resolve;
use crate::synced::Synced;

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
/// # async fn connect(registry: Registry) -> diesel::ConnectionResult<()> {
/// let inner = SyncConnectionWrapper::<SqliteConnection>::establish("shop.db").await?;
/// let mut conn = SyncedConnection::new(inner, registry);
/// # Ok(()) }
/// ```
pub struct SyncedConnection<C> {
    inner: C,
    collector: Collector<dyn PendingIds<C>>,
    registry: Registry,
}

/// A connection that routes through a [`SyncedConnection`]: the connection itself, or a pooled
/// connection that dereferences to one.
pub trait AsSynced: Send {
    /// The wrapped diesel-async connection.
    type Inner: AsyncConnection + 'static;
    /// The synced connection.
    fn as_synced(&mut self) -> &mut SyncedConnection<Self::Inner>;
}

impl<C: AsyncConnection + 'static> AsSynced for SyncedConnection<C> {
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

impl<C: AsyncConnection + 'static> SyncedConnection<C> {
    /// Wraps `inner`; its synced writes go to `registry`'s handlers.
    pub fn new(inner: C, registry: Registry) -> Self {
        Self {
            inner,
            collector: Collector::new(),
            registry,
        }
    }

    /// The registry this connection hands committed ids to.
    pub fn registry(&self) -> &Registry {
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
    pub async fn mark_changed<T: Resolve<C>>(&mut self, ids: impl IntoIterator<Item = T::Id>) {
        self.register::<T>(ids).await;
    }

    /// Adds ids to the innermost open transaction, or hands them on now if none is open.
    pub(crate) async fn register<T: Resolve<C>>(&mut self, ids: impl IntoIterator<Item = T::Id>) {
        match self.collector.current() {
            Some(frame) => frame.insert::<T>(ids),
            None => {
                let mut frame = Frame::<dyn PendingIds<C>>::default();
                frame.insert::<T>(ids);
                self.flush(frame).await;
            }
        }
    }

    /// Resolves and dispatches a committed frame. Never fails: errors become dead letters.
    async fn flush(&mut self, frame: Frame<dyn PendingIds<C>>) {
        if frame.is_empty() {
            return;
        }
        let span = tracing::info_span!("flush", ids = frame.len());
        async {
            for pending in frame.into_targets() {
                pending.flush(&mut self.inner, &self.registry).await;
            }
        }
        .instrument(span)
        .await;
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

/// The transaction manager of [`SyncedConnection`]: delegates to `C`'s and keeps the collector's
/// frames in step with the database's transaction depth.
#[derive(Debug)]
pub struct SyncedTransactionManager<C>(std::marker::PhantomData<C>);

impl<C> TransactionManager<SyncedConnection<C>> for SyncedTransactionManager<C>
where
    C: AsyncConnection + 'static,
{
    type TransactionStateData =
        <C::TransactionManager as TransactionManager<C>>::TransactionStateData;

    async fn begin_transaction(conn: &mut SyncedConnection<C>) -> QueryResult<()> {
        let result = C::TransactionManager::begin_transaction(&mut conn.inner).await;
        let depth = conn.database_depth();
        conn.collector.began(depth);
        result
    }

    async fn rollback_transaction(conn: &mut SyncedConnection<C>) -> QueryResult<()> {
        let result = C::TransactionManager::rollback_transaction(&mut conn.inner).await;
        let depth = conn.database_depth();
        conn.collector.rolled_back(depth);
        result
    }

    async fn commit_transaction(conn: &mut SyncedConnection<C>) -> QueryResult<()> {
        let result = C::TransactionManager::commit_transaction(&mut conn.inner).await;
        let depth = conn.database_depth();
        if let Some(frame) = conn.collector.committed(result.is_ok(), depth) {
            conn.flush(frame).await;
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

impl<C: AsyncConnection + 'static> SimpleAsyncConnection for SyncedConnection<C> {
    async fn batch_execute(&mut self, query: &str) -> QueryResult<()> {
        self.inner.batch_execute(query).await
    }
}

impl<C: AsyncConnection + 'static> AsyncConnectionCore for SyncedConnection<C> {
    type ExecuteFuture<'conn, 'query> = C::ExecuteFuture<'conn, 'query>;
    type LoadFuture<'conn, 'query> = C::LoadFuture<'conn, 'query>;
    type Stream<'conn, 'query> = C::Stream<'conn, 'query>;
    type Row<'conn, 'query> = C::Row<'conn, 'query>;
    type Backend = C::Backend;

    fn load<'conn, 'query, T>(&'conn mut self, source: T) -> Self::LoadFuture<'conn, 'query>
    where
        T: AsQuery + 'query,
        T::Query: QueryFragment<Self::Backend> + QueryId + 'query,
    {
        self.inner.load(source)
    }

    fn execute_returning_count<'conn, 'query, T>(
        &'conn mut self,
        source: T,
    ) -> Self::ExecuteFuture<'conn, 'query>
    where
        T: QueryFragment<Self::Backend> + QueryId + 'query,
    {
        self.inner.execute_returning_count(source)
    }
}

impl<C: AsyncConnection + 'static> AsyncConnection for SyncedConnection<C> {
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
        self.inner.set_instrumentation(instrumentation);
    }

    fn set_prepared_statement_cache_size(&mut self, size: CacheSize) {
        self.inner.set_prepared_statement_cache_size(size);
    }
}

/// `save_changes`: the row Diesel reads back is registered.
impl<C, Changes, Output> UpdateAndFetchResults<Changes, Output> for SyncedConnection<C>
where
    C: AsyncConnection + UpdateAndFetchResults<Changes, Output> + 'static,
    Changes: Identifiable + HasTable + Send,
    Output: Synced<Target: Resolve<C>> + Send,
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
            let row = self.inner.update_and_fetch(changeset).await?;
            self.register::<Output::Target>([row.sync_key()]).await;
            Ok(row)
        })
    }
}

#[cfg(any(feature = "deadpool", feature = "bb8"))]
impl<C> diesel_async::pooled_connection::PoolableConnection for SyncedConnection<C> where
    C: diesel_async::pooled_connection::PoolableConnection + 'static
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
