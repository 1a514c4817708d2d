//! `blocking::SyncedConnection<C>`: any synchronous Diesel connection, plus the collector its
//! writes register with, and a transaction manager that tells the collector about BEGIN,
//! RELEASE, ROLLBACK and COMMIT. The twin of [`crate::SyncedConnection`], with the same rules.

use std::fmt;
use std::ops::DerefMut;
use std::sync::Arc;

use diesel::connection::DefaultLoadingMode;
use diesel::connection::{
    CacheSize, Connection, ConnectionSealed, Instrumentation, LoadConnection, SimpleConnection,
    TransactionManager, TransactionManagerStatus, WithMetadataLookup,
};
use diesel::expression::QueryMetadata;
use diesel::migration::MigrationConnection;
use diesel::query_builder::{Query, QueryFragment, QueryId};
use diesel::query_dsl::UpdateAndFetchResults;
use diesel::result::Error;
use diesel::sql_types::TypeMetadata;
use diesel::{ConnectionResult, QueryResult};

use crate::capture::{
    in_batch, refused, Capture, CaptureBackend, Captured, KeyColumn, KeysFrom, OwnedStatement,
    Plan, Plans, ReadKeys, Reads, ReturningKey, Rows,
};
use crate::catalog::insert_captured;
use crate::classify::Dialect;
use crate::collector::{transaction_lost, Calls, Collector, DeadlockWatch, Frame, Running};
use crate::error::CaptureRefused;
use crate::outbox::NewEntry;
use crate::registry::{Loader, Registry, Resolves};
use crate::resolve::{unhandled, Unflushed};
use crate::synced::SyncTarget;
use crate::synced::Synced;

use super::resolve::{blocking_loader, BlockingLoader, Resolve};

/// A synchronous Diesel connection whose synced writes are collected per transaction and handed
/// on after COMMIT.
///
/// It is a [`diesel::Connection`] itself: use it wherever the inner connection was used.
/// Transactions (`conn.transaction(|conn| …)`) nest as savepoints; a released savepoint's ids
/// merge into its parent, a rolled-back one's are dropped, and the outermost COMMIT hands the
/// ids on only once the database has accepted it. A synced write outside a transaction is handed
/// on right after it succeeds.
///
/// ```no_run
/// # use diesel_sync_runtime as diesel_sync;
/// use diesel::{Connection, SqliteConnection};
/// use diesel_sync::blocking::SyncedConnection;
/// use diesel_sync::Registry;
///
/// # fn connect(registry: Registry<SyncedConnection<SqliteConnection>>) -> diesel::ConnectionResult<()> {
/// let mut conn = SyncedConnection::new(SqliteConnection::establish("shop.db")?, registry);
/// # Ok(()) }
/// ```
pub struct SyncedConnection<C> {
    inner: C,
    collector: Collector,
    plans: Plans,
    registry: Registry<Self>,
    /// The `transaction()` calls running.
    calls: Arc<Calls>,
    /// The prepared-statement cache size last set through this connection.
    statement_cache: CacheSize,
}

/// A connection that routes through a [`SyncedConnection`]: the connection itself, or a pooled
/// connection (`r2d2::PooledConnection`) that dereferences to one.
pub trait AsSynced: Send {
    /// The wrapped Diesel connection.
    type Inner: CaptureConnection;
    /// The synced connection.
    fn as_synced(&mut self) -> &mut SyncedConnection<Self::Inner>;
}

impl<C: CaptureConnection> AsSynced for SyncedConnection<C> {
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

impl<C: CaptureConnection> SyncedConnection<C> {
    /// Wraps `inner`; its synced writes go to `registry`'s handlers.
    ///
    /// On MySQL the connection watches every statement `inner` runs for a deadlock, which rolls
    /// the whole transaction back: it replaces the instrumentation `inner` had with Diesel's
    /// default one, watched. Set your own with `set_instrumentation` on this connection.
    pub fn new(mut inner: C, registry: Registry<Self>) -> Self {
        let calls = Arc::<Calls>::default();
        if <C::Backend as CaptureBackend>::DIALECT == Dialect::Mysql {
            let default = diesel::connection::get_default_instrumentation();
            inner.set_instrumentation(DeadlockWatch::new(&calls, default));
        }
        Self {
            inner,
            collector: Collector::new(),
            plans: Plans::new(
                Reads {
                    dialect: <C::Backend as CaptureBackend>::DIALECT,
                    returning: <C::Backend as CaptureBackend>::DIALECT != Dialect::Mysql,
                },
                registry.targets(),
            ),
            registry,
            calls,
            statement_cache: CacheSize::Unbounded,
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
    ///     .execute(conn)?;
    /// conn.mark_changed::<Product>([7]);
    /// ```
    pub fn mark_changed<T: SyncTarget>(&mut self, ids: impl IntoIterator<Item = T::Id>) {
        self.register::<T>(ids);
    }

    /// Registers rows of target model `T` deleted by a write the connection did not capture,
    /// each with the store it belonged to: they reach the store's handler as removals
    /// ([`Batch::removed`](crate::Batch::removed)). A row that exists again at COMMIT is sent
    /// as a change instead.
    ///
    /// ```ignore
    /// conn.inner_mut().batch_execute("DELETE FROM products WHERE id = 7")?;
    /// conn.mark_removed::<Product>([(7, store_id)]);
    /// ```
    pub fn mark_removed<T: SyncTarget>(
        &mut self,
        removed: impl IntoIterator<Item = (T::Id, T::StoreKey)>,
    ) {
        if let Some(frame) = self.collector.add(|frame| frame.remove::<T>(removed)) {
            self.flush(frame);
        }
    }

    /// Adds ids to the innermost open transaction, or hands them on now if none is open.
    pub(crate) fn register<T: SyncTarget>(&mut self, ids: impl IntoIterator<Item = T::Id>) {
        if let Some(frame) = self.collector.add(|frame| frame.insert::<T>(ids)) {
            self.flush(frame);
        }
    }

    /// Resolves and dispatches a committed frame. Never fails: errors become dead letters.
    ///
    /// A durable registry's frame committed on its own (a write outside a transaction) is
    /// recorded in the outbox for the worker instead, or, if that fails, delivered from here.
    fn flush(&mut self, frame: Frame) {
        if frame.is_empty() {
            return;
        }
        if let Some(outbox) = self
            .registry
            .outbox()
            .filter(|_| self.collector.base_depth() == 0)
        {
            let wake = Arc::clone(&outbox.state);
            match self
                .outbox_entries(&frame)
                .and_then(|entries| self.append(entries))
            {
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
        let _span = tracing::info_span!("flush", ids = frame.len()).entered();
        resolve_frame(&self.registry, &mut self.inner, frame);
    }

    /// The outbox rows recording `frame`'s ids of the models with a handler.
    fn outbox_entries(&self, frame: &Frame) -> QueryResult<Vec<NewEntry>> {
        frame
            .outbox_entries(&self.registry.targets())
            .map_err(|error| Error::QueryBuilderError(error.into()))
    }

    /// Writes outbox rows in one statement, when the registry is durable.
    fn append(&mut self, entries: Vec<NewEntry>) -> QueryResult<()> {
        let Some(outbox) = self.registry.outbox() else {
            return Ok(());
        };
        if entries.is_empty() {
            return Ok(());
        }
        let rows = entries.len();
        outbox.append::<AppendBlocking<C>>()(&mut self.inner, entries)?;
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

/// Resolves and dispatches a committed frame over `conn`, with `registry`'s loaders: on the
/// committing thread, or on a durable registry's worker.
pub(crate) fn resolve_frame<C: CaptureConnection>(
    registry: &Registry<SyncedConnection<C>>,
    conn: &mut C,
    frame: Frame,
) {
    let dispatcher = registry.dispatcher();
    let mut unflushed = Unflushed::new(dispatcher, frame);
    while let Some(pending) = unflushed.next() {
        match registry.loader::<BlockingLoader<C>>(pending.target()) {
            Some(load) => load(conn, dispatcher, pending),
            None => unhandled(dispatcher, pending),
        }
        unflushed.handed_on();
    }
}

/// How a durable registry's synchronous connections of kind `C` write outbox rows, as the
/// registry stores it.
pub(crate) type AppendBlocking<C> = fn(&mut C, Vec<NewEntry>) -> QueryResult<()>;

/// The [`AppendBlocking`] of `C`.
pub(crate) fn append_entries_blocking<C>(conn: &mut C, entries: Vec<NewEntry>) -> QueryResult<()>
where
    C: Connection,
    C::Backend: super::BlockingOutbox,
{
    <C::Backend as super::BlockingOutbox>::append(conn, entries)
}

/// Committed ids of `T` are loaded over `C` itself, on the committing thread.
impl<C, T> Resolves<T> for SyncedConnection<C>
where
    C: CaptureConnection,
    T: Resolve<C>,
{
    fn loader() -> Loader {
        let load: BlockingLoader<C> = blocking_loader::<T, C>;
        Loader::new(load)
    }
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

    /// Diesel's `transaction`, with one addition: a transaction left open by a
    /// `transaction()` whose closure panicked (and whose panic was caught) is rolled back
    /// first. Without that, the next `transaction()` would run as a savepoint inside it and
    /// return `Ok`, though nothing it did would ever commit.
    fn transaction<F, R, E>(conn: &mut SyncedConnection<C>, callback: F) -> Result<R, E>
    where
        F: FnOnce(&mut SyncedConnection<C>) -> Result<R, E>,
        E: From<Error>,
    {
        conn.roll_back_abandoned()?;
        let _running = Running::enter(&conn.calls);
        Self::begin_transaction(conn)?;
        let depth = conn.database_depth();
        let result = callback(&mut *conn);
        // A nested `transaction()` whose closure panicked, the panic caught inside this closure,
        // left its savepoint open: it is rolled back, or this level's COMMIT would only release
        // it and leave the transaction open.
        conn.roll_back_above(depth)?;
        // Once the database lost the transaction, every level is closed already: this one
        // reports the loss, or the caller's own error.
        let lost = conn.calls.transaction_lost();
        match result {
            Ok(value) => match Self::commit_transaction(conn) {
                Ok(()) => Ok(value),
                Err(Error::NotInTransaction) if lost => Err(transaction_lost().into()),
                Err(error) => Err(error.into()),
            },
            Err(user_error) => match Self::rollback_transaction(conn) {
                Ok(()) | Err(Error::BrokenTransactionManager) => Err(user_error),
                Err(Error::NotInTransaction) if lost => Err(user_error),
                Err(rollback_error) => Err(rollback_error.into()),
            },
        }
    }

    fn begin_transaction(conn: &mut SyncedConnection<C>) -> QueryResult<()> {
        if conn.calls.transaction_lost() {
            return Err(transaction_lost());
        }
        let result = C::TransactionManager::begin_transaction(&mut conn.inner);
        let depth = conn.database_depth();
        conn.collector.began(depth);
        result
    }

    fn rollback_transaction(conn: &mut SyncedConnection<C>) -> QueryResult<()> {
        let before = conn.database_depth();
        let result = C::TransactionManager::rollback_transaction(&mut conn.inner);
        if (result.is_err() || conn.calls.transaction_lost())
            && before > 1
            && <C::Backend as CaptureBackend>::DIALECT == Dialect::Mysql
        {
            // The savepoint is gone: InnoDB rolled the whole transaction back (a deadlock).
            // Every level is closed to match, so that what the closures still run is seen as
            // the autocommitted statements it is, and the outermost level reports the failure.
            conn.calls.lose_transaction();
            conn.close_every_level();
        }
        let depth = conn.database_depth();
        conn.collector.rolled_back(depth);
        result
    }

    /// A durable registry's outermost COMMIT first writes the frame's outbox rows in the same
    /// transaction; if that fails, the transaction is rolled back and the error returned.
    fn commit_transaction(conn: &mut SyncedConnection<C>) -> QueryResult<()> {
        if conn.calls.transaction_lost() {
            // Nothing is left to commit: MySQL would accept the COMMIT of no transaction.
            conn.close_every_level();
            let depth = conn.database_depth();
            conn.collector.rolled_back(depth);
            return Err(transaction_lost());
        }
        // Inside a test transaction nothing commits: its ids are delivered from memory.
        let outermost = conn.database_depth() == 1 && conn.collector.base_depth() == 0;
        let recorded = match conn.collector.outermost() {
            Some(frame) if outermost && conn.registry.is_durable() => conn
                .outbox_entries(frame)
                .and_then(|entries| conn.append(entries)),
            _ => Ok(()),
        };
        if let Err(error) = recorded {
            tracing::error!(%error, "recording committed ids in the outbox failed; rolling back");
            let _ = Self::rollback_transaction(conn);
            return Err(error);
        }
        let result = C::TransactionManager::commit_transaction(&mut conn.inner);
        let depth = conn.database_depth();
        if let Some(frame) = conn.collector.committed(result.is_ok(), depth) {
            match conn.registry.outbox().filter(|_| outermost) {
                Some(outbox) => outbox.state.rows_written(),
                None => conn.flush(frame),
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

/// Raw SQL is planned as on the diesel-async connection: a batch runs one statement at a time
/// when one of them writes a synced table, each write captured; a batch with a write that cannot
/// be captured is refused before any of it runs.
impl<C> SimpleConnection for SyncedConnection<C>
where
    C: CaptureConnection,
{
    fn batch_execute(&mut self, query: &str) -> QueryResult<()> {
        let result = self.batch_execute_planned(query);
        if result.is_err() {
            self.close_lost_levels();
        }
        result
    }
}

impl<C> SyncedConnection<C>
where
    C: CaptureConnection,
{
    /// After a failed statement: when it was a deadlock on MySQL (the watch on the inner
    /// connection saw it), every level is closed at once, so that nothing the rolled-back
    /// statements registered is handed on, and what runs next is seen as the autocommitted
    /// statements it is.
    fn close_lost_levels(&mut self) {
        if self.calls.transaction_lost() && self.database_depth() > 0 {
            self.close_every_level();
            let depth = self.database_depth();
            self.collector.rolled_back(depth);
        }
    }

    /// Rolls back every level of a transaction the database already rolled back: Diesel's
    /// savepoint rollbacks fail or are skipped, its outermost ROLLBACK ends the rest.
    ///
    /// The prepared statements Diesel cached are closed too: after a deadlock, libmariadb can
    /// wait for good on the next run of one.
    fn close_every_level(&mut self) {
        tracing::warn!("the database rolled the whole transaction back; closing every level");
        if self.statement_cache != CacheSize::Disabled {
            self.inner
                .set_prepared_statement_cache_size(CacheSize::Disabled);
            self.inner
                .set_prepared_statement_cache_size(self.statement_cache);
        }
        // A failed savepoint rollback still closes its level in Diesel's count: go on while
        // the count goes down.
        let mut depth = self.database_depth();
        while depth > 0 {
            let _ = C::TransactionManager::rollback_transaction(&mut self.inner);
            let closed = std::mem::replace(&mut depth, self.database_depth());
            if depth >= closed {
                break;
            }
        }
    }

    /// [`SimpleConnection::batch_execute`], each statement planned.
    fn batch_execute_planned(&mut self, query: &str) -> QueryResult<()> {
        let statements = match self.plans.text(query) {
            Plan::Pass => return self.inner.batch_execute(query),
            Plan::Refuse(refusal) => return Err(refused(refusal)),
            Plan::Capture(capture) => vec![(query.to_owned(), Plan::Capture(capture))],
            Plan::Batch(statements) => statements,
        };
        for (statement, plan) in statements {
            match plan {
                Plan::Capture(capture) => {
                    self.run_captured(diesel::sql_query(statement), &capture)?;
                }
                _ => self.inner.batch_execute(&statement)?,
            }
        }
        Ok(())
    }
}

/// A synchronous connection capture runs on: a backend it knows, and `load` for the keys a
/// captured write returns.
pub trait CaptureConnection:
    Connection<Backend: CaptureBackend> + LoadConnection<DefaultLoadingMode> + 'static
{
}

impl<C> CaptureConnection for C where
    C: Connection<Backend: CaptureBackend> + LoadConnection<DefaultLoadingMode> + 'static
{
}

impl<C: CaptureConnection> SyncedConnection<C> {
    /// Runs a write to a synced table and registers the keys of the rows it wrote: in the open
    /// transaction, or handed on now when none is open. Returns the rows written.
    fn run_captured<Q>(&mut self, statement: Q, capture: &Capture) -> QueryResult<usize>
    where
        Q: QueryFragment<C::Backend> + QueryId,
    {
        // A durable registry's write outside a transaction runs in one of its own, so that the
        // write and its outbox rows commit together.
        if self.registry.is_durable() && !self.collector.in_transaction() {
            self.begin_unless_open()?;
            let result = self.run_captured(statement, capture);
            return self.end_opened(true, result);
        }
        let (written, captured) = match ReadKeys::of(&statement, capture)? {
            ReadKeys::Returning => self.write_returning_keys(statement, capture)?,
            ReadKeys::SelectedFirst(select) => {
                self.write_after_keys(&statement, select, capture)?
            }
            // A plain INSERT writes every row it binds, or fails.
            ReadKeys::Known(captured) => {
                (self.inner.execute_returning_count(&statement)?, captured)
            }
        };
        tracing::trace!(
            table = capture.model.table,
            keys = captured.len(),
            "write captured"
        );
        if let Some(frame) = self
            .collector
            .add(|frame| insert_captured(frame, capture, captured))
        {
            self.flush(frame);
        }
        Ok(written)
    }

    /// The write with its key column returned (`RETURNING`): the rows written are the keys read.
    fn write_returning_keys<Q>(
        &mut self,
        statement: Q,
        capture: &Capture,
    ) -> QueryResult<(usize, Captured)>
    where
        Q: QueryFragment<C::Backend> + QueryId,
    {
        let mut captured = Captured::default();
        for row in self.inner.load(ReturningKey::new(statement, capture))? {
            captured.read::<C::Backend, _>(&row?, capture, KeyColumn::Last)?;
        }
        Ok((captured.len(), captured))
    }

    /// The write after a `SELECT … FOR UPDATE` of the keys it will touch, with the same bind
    /// values, both in one transaction (opened here when none is), so the rows locked are the
    /// rows written.
    fn write_after_keys<Q>(
        &mut self,
        statement: &Q,
        select: OwnedStatement<C::Backend>,
        capture: &Capture,
    ) -> QueryResult<(usize, Captured)>
    where
        Q: QueryFragment<C::Backend> + QueryId,
    {
        let opened = self.begin_unless_open()?;
        let written = || {
            let mut captured = Captured::default();
            for row in self.inner.load(Rows(select))? {
                captured.read::<C::Backend, _>(&row?, capture, KeyColumn::First)?;
            }
            let written = self.inner.execute_returning_count(statement)?;
            Ok((written, captured))
        };
        let result = written();
        self.end_opened(opened, result)
    }

    /// Rolls back what a `transaction()` that never finished left open. With no call running,
    /// every level above the test transaction's (if any) is such a leftover.
    fn roll_back_abandoned(&mut self) -> QueryResult<()> {
        if self.calls.running() {
            return Ok(());
        }
        let base = self.collector.base_depth();
        match self.roll_back_above(base) {
            // The levels are gone either way: the database had already rolled the whole
            // transaction back (on MySQL, after a deadlock), so its savepoints were missing.
            Err(error) if self.database_depth() <= base => {
                tracing::warn!(%error, "the abandoned transaction was already rolled back by the database");
                Ok(())
            }
            result => result,
        }
    }

    /// Rolls back every level above database depth `depth`.
    fn roll_back_above(&mut self, depth: usize) -> QueryResult<()> {
        let above = self.database_depth().saturating_sub(depth);
        if above > 0 {
            tracing::warn!(
                levels = above,
                "rolling back transaction levels a transaction() that never finished left open"
            );
        }
        while self.database_depth() > depth {
            SyncedTransactionManager::<C>::rollback_transaction(self)?;
        }
        Ok(())
    }

    /// Opens a transaction when none is open, for a write of several statements that must
    /// commit or roll back together. Returns whether it opened one.
    pub(crate) fn begin_unless_open(&mut self) -> QueryResult<bool> {
        if self.collector.in_transaction() {
            return Ok(false);
        }
        SyncedTransactionManager::<C>::begin_transaction(self)?;
        Ok(true)
    }

    /// Ends the transaction [`Self::begin_unless_open`] opened, if it did: commits after
    /// `result` succeeded, rolls back after it failed.
    pub(crate) fn end_opened<T>(&mut self, opened: bool, result: QueryResult<T>) -> QueryResult<T> {
        if opened {
            match &result {
                Ok(_) => SyncedTransactionManager::<C>::commit_transaction(self)?,
                Err(_) => SyncedTransactionManager::<C>::rollback_transaction(self)?,
            }
        }
        result
    }
}

impl<C: ConnectionSealed> ConnectionSealed for SyncedConnection<C> {}

impl<C: CaptureConnection> Connection for SyncedConnection<C> {
    type Backend = C::Backend;
    type TransactionManager = SyncedTransactionManager<C>;

    /// Connects with an empty registry: ids are collected and dropped with a warning. Use
    /// [`SyncedConnection::new`] (or `SyncedConnection::pool_manager`, feature `r2d2`) to deliver
    /// them.
    fn establish(database_url: &str) -> ConnectionResult<Self> {
        Ok(Self::new(C::establish(database_url)?, Registry::empty()))
    }

    /// Begins a test transaction and treats the transactions run inside it as outermost: their
    /// ids are handed on when they finish, so tests see what would be sent.
    fn begin_test_transaction(&mut self) -> QueryResult<()> {
        self.inner.begin_test_transaction()?;
        self.collector.enter_test_transaction();
        Ok(())
    }

    fn execute_returning_count<T>(&mut self, source: &T) -> QueryResult<usize>
    where
        T: QueryFragment<Self::Backend> + QueryId,
    {
        let result = match self.plans.get(source) {
            Plan::Pass => self.inner.execute_returning_count(source),
            Plan::Refuse(refusal) => Err(refused(refusal)),
            Plan::Batch(statements) => Err(refused(in_batch(&statements))),
            Plan::Capture(capture) => self.run_captured(source, &capture),
        };
        if result.is_err() {
            self.close_lost_levels();
        }
        result
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
        if <C::Backend as CaptureBackend>::DIALECT == Dialect::Mysql {
            let next = Some(Box::new(instrumentation) as Box<dyn Instrumentation>);
            self.inner
                .set_instrumentation(DeadlockWatch::new(&self.calls, next));
        } else {
            self.inner.set_instrumentation(instrumentation);
        }
    }

    fn set_prepared_statement_cache_size(&mut self, size: CacheSize) {
        self.statement_cache = size;
        self.inner.set_prepared_statement_cache_size(size);
    }
}

impl<B, C> LoadConnection<B> for SyncedConnection<C>
where
    C: LoadConnection<B> + CaptureConnection,
{
    type Cursor<'conn, 'query> = SyncedCursor<'conn, 'query, C, B>;
    type Row<'conn, 'query> = <C as LoadConnection<B>>::Row<'conn, 'query>;

    fn load<'conn, 'query, T>(
        &'conn mut self,
        source: T,
    ) -> QueryResult<Self::Cursor<'conn, 'query>>
    where
        T: Query + QueryFragment<Self::Backend> + QueryId + 'query,
        Self::Backend: QueryMetadata<T::SqlType>,
    {
        let capture = match self.plans.get(&source) {
            Plan::Pass => {
                // A deadlock is noted by the watch on the inner connection; the next statement
                // or transaction call closes the levels.
                return <C as LoadConnection<B>>::load(&mut self.inner, source)
                    .map(SyncedCursor::Inner);
            }
            Plan::Refuse(refusal) => return Err(refused(refusal)),
            Plan::Batch(statements) => return Err(refused(in_batch(&statements))),
            Plan::Capture(capture) => capture,
        };
        // Outside a transaction the keys could only be resolved once the caller is done with
        // the rows, which borrow the connection.
        if !self.collector.in_transaction() {
            return Err(refused(CaptureRefused::returns_rows_outside_a_transaction(
                &capture.model,
            )));
        }
        if !matches!(capture.keys, KeysFrom::Returning) {
            return Err(refused(CaptureRefused::selected_keys_run_for_rows(
                &capture.model,
            )));
        }
        let query = ReturningKey::new(source, &capture).typed::<T::SqlType>();
        let Self {
            inner, collector, ..
        } = self;
        // Every row is read before any is handed on: the caller may stop at the first
        // (`get_result`), and every key must be registered.
        let mut rows = Vec::new();
        let mut captured = Captured::default();
        for row in <C as LoadConnection<B>>::load(inner, query)? {
            let row = row?;
            captured.read::<C::Backend, _>(&row, &capture, KeyColumn::Last)?;
            rows.push(Ok(row));
        }
        collector.add(|frame| insert_captured(frame, &capture, captured));
        Ok(SyncedCursor::Rows(rows.into_iter()))
    }
}

/// The rows of a load through a [`SyncedConnection`]: the inner connection's cursor, or the
/// rows of a captured write, read to the end so that every key was registered.
#[doc(hidden)]
pub enum SyncedCursor<'conn, 'query, C: LoadConnection<B> + 'static, B> {
    /// A statement that writes no synced table.
    Inner(<C as LoadConnection<B>>::Cursor<'conn, 'query>),
    /// A captured write's rows.
    Rows(std::vec::IntoIter<QueryResult<<C as LoadConnection<B>>::Row<'conn, 'query>>>),
}

impl<'conn, 'query, C: LoadConnection<B> + 'static, B> Iterator
    for SyncedCursor<'conn, 'query, C, B>
{
    type Item = QueryResult<<C as LoadConnection<B>>::Row<'conn, 'query>>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            SyncedCursor::Inner(cursor) => cursor.next(),
            SyncedCursor::Rows(rows) => rows.next(),
        }
    }
}

impl<C: LoadConnection<B> + 'static, B> fmt::Debug for SyncedCursor<'_, '_, C, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncedCursor::Inner(_) => f.write_str("SyncedCursor::Inner"),
            SyncedCursor::Rows(rows) => write!(f, "SyncedCursor::Rows({})", rows.len()),
        }
    }
}

impl<C: WithMetadataLookup + CaptureConnection> WithMetadataLookup for SyncedConnection<C> {
    fn metadata_lookup(&mut self) -> &mut <C::Backend as TypeMetadata>::MetadataLookup {
        self.inner.metadata_lookup()
    }
}

/// Migrations run on the inner connection's migration table (`diesel_migrations`).
impl<C: MigrationConnection + CaptureConnection> MigrationConnection for SyncedConnection<C> {
    fn setup(&mut self) -> QueryResult<usize> {
        self.inner.setup()
    }
}

/// `save_changes`: the row Diesel reads back is registered.
impl<C, Changes, Output> UpdateAndFetchResults<Changes, Output> for SyncedConnection<C>
where
    C: UpdateAndFetchResults<Changes, Output> + CaptureConnection,
    Output: Synced,
{
    fn update_and_fetch(&mut self, changeset: Changes) -> QueryResult<Output> {
        // A durable registry's save outside a transaction runs in one of its own, so that the
        // row and its outbox record commit together.
        let opened = self.registry.is_durable() && self.begin_unless_open()?;
        let saved = self.inner.update_and_fetch(changeset).inspect(|row| {
            self.register::<Output::Target>([row.sync_key()]);
        });
        self.end_opened(opened, saved)
    }
}

#[cfg(feature = "r2d2")]
impl<C> diesel::r2d2::R2D2Connection for SyncedConnection<C>
where
    C: diesel::r2d2::R2D2Connection + CaptureConnection,
{
    fn ping(&mut self) -> QueryResult<()> {
        self.inner.ping()
    }

    fn is_broken(&mut self) -> bool {
        self.inner.is_broken()
    }
}

impl<C: fmt::Debug> fmt::Debug for SyncedConnection<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncedConnection")
            .field("inner", &self.inner)
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}
