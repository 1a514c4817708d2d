//! After commit: load a target model's pending ids in as few queries as the backend allows,
//! skip ids whose rows are gone, group the rows by store, hand the batches to dispatch.

use std::any::{type_name, TypeId};
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;

use futures_util::TryFutureExt as _;
use scoped_futures::ScopedBoxFuture;

use diesel::backend::Backend;
use diesel::dsl::{AsSelect, Select};
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::query_dsl::methods::SelectDsl;
use diesel::{Expression, QueryResult, Selectable, SelectableHelper};
use diesel_async::methods::LoadQuery;
use diesel_async::{AsyncConnectionCore, RunQueryDsl};
use tracing::Instrument;

use crate::backend::SyncBackend;
use crate::collector::{Frame, PendingIds, PendingSet};
use crate::dead_letter::DeadLetter;
use crate::dispatcher::{Dispatcher, Ticket};
use crate::handler::Changes;
use crate::metrics::Counters;
use crate::synced::{LoadsAlone, LoadsWithStore, NoStore, SyncTarget};

/// A target model that can be loaded by id over connection `C`.
///
/// Implemented for every [`SyncTarget`] that is `Selectable` on `C`'s backend, and whose store
/// model, if it names one, is too; hooks require it so that a model which cannot be loaded is a
/// compile error at the write, not a failure after commit.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be loaded by id over `{C}`",
    note = "a target model must derive `Queryable` and `Selectable` for the connection's backend, and so must its store model"
)]
pub trait Resolve<C: Send>: SyncTarget {
    /// The most ids one resolve query binds.
    const CHUNK: usize;

    /// Loads the rows of `ids` that still exist, with their store rows.
    fn load(
        conn: &mut C,
        ids: Vec<Self::Id>,
    ) -> impl Future<Output = QueryResult<Loaded<Self>>> + Send;

    /// Loads the store rows of `keys` (none without a store model).
    fn load_stores(
        conn: &mut C,
        keys: Vec<Self::StoreKey>,
    ) -> impl Future<Output = QueryResult<Vec<Self::Store>>> + Send;
}

impl<T, C> Resolve<C> for T
where
    T: SyncTarget,
    C: AsyncConnectionCore,
    C::Backend: SyncBackend,
    T::Loads: LoadWith<T, C>,
{
    const CHUNK: usize = <C::Backend as SyncBackend>::MAX_IDS_PER_QUERY;

    fn load(
        conn: &mut C,
        ids: Vec<Self::Id>,
    ) -> impl Future<Output = QueryResult<Loaded<Self>>> + Send {
        <T::Loads as LoadWith<T, C>>::load(conn, padded::<C::Backend, _>(ids))
    }

    fn load_stores(
        conn: &mut C,
        keys: Vec<Self::StoreKey>,
    ) -> impl Future<Output = QueryResult<Vec<Self::Store>>> + Send {
        <T::Loads as LoadWith<T, C>>::load_stores(conn, keys)
    }
}

/// One resolve query's rows, and the store rows that came with them, one per store.
#[derive(Debug)]
pub struct Loaded<T: SyncTarget> {
    pub(crate) rows: Vec<T>,
    pub(crate) stores: Vec<T::Store>,
}

impl<T: SyncTarget> Loaded<T> {
    /// Rows that bring no store row.
    pub(crate) fn alone(rows: Vec<T>) -> Self {
        Self {
            rows,
            stores: Vec::new(),
        }
    }

    /// Rows of a left join with their stores: each store kept once.
    pub(crate) fn joined(pairs: Vec<(T, Option<T::Store>)>) -> Self {
        let mut seen = HashSet::new();
        let mut loaded = Self {
            rows: Vec::with_capacity(pairs.len()),
            stores: Vec::new(),
        };
        for (row, store) in pairs {
            if let Some(store) = store.filter(|_| seen.insert(row.store_key())) {
                loaded.stores.push(store);
            }
            loaded.rows.push(row);
        }
        loaded
    }
}

/// How target `T`'s rows load over `C`: alone, or joined with its store model. Implemented
/// by the two markers of [`SyncTarget::Loads`], so that each kind of target has its query.
#[doc(hidden)]
pub trait LoadWith<T: SyncTarget, C: Send> {
    fn load(conn: &mut C, ids: Vec<T::Id>) -> impl Future<Output = QueryResult<Loaded<T>>> + Send;

    fn load_stores(
        conn: &mut C,
        keys: Vec<T::StoreKey>,
    ) -> impl Future<Output = QueryResult<Vec<T::Store>>> + Send;
}

/// The rows of a target with no store model: `SELECT … FROM table WHERE id IN (…)`.
impl<T, C> LoadWith<T, C> for LoadsAlone
where
    T: SyncTarget<Store = NoStore, Loads = LoadsAlone> + Selectable<C::Backend>,
    C: AsyncConnectionCore,
    T::SelectExpression: QueryId,
    T::ByIds: SelectDsl<AsSelect<T, C::Backend>>,
    Prepared<Select<T::ByIds, AsSelect<T, C::Backend>>>: LoadQuery<'static, C, T> + Send + 'static,
{
    fn load(conn: &mut C, ids: Vec<T::Id>) -> impl Future<Output = QueryResult<Loaded<T>>> + Send {
        Prepared(T::by_ids(ids).select(T::as_select()))
            .load(conn)
            .map_ok(Loaded::alone)
    }

    fn load_stores(
        _: &mut C,
        _: Vec<T::StoreKey>,
    ) -> impl Future<Output = QueryResult<Vec<NoStore>>> + Send {
        std::future::ready(Ok(Vec::new()))
    }
}

/// The rows of a target with store model `S`, each with its store row in the same query:
/// `SELECT … FROM table LEFT JOIN stores ON … WHERE id IN (…)`. A left join, so that a row whose
/// store row is missing still loads.
impl<T, C, S> LoadWith<T, C> for LoadsWithStore
where
    T: SyncTarget<Store = S, Loads = LoadsWithStore> + Selectable<C::Backend>,
    S: Selectable<C::Backend> + Send,
    Option<S>: Selectable<C::Backend>,
    T::SelectExpression: QueryId,
    S::SelectExpression: QueryId,
    C: AsyncConnectionCore,
    JoinedSelection<T, S, C::Backend>: Expression,
    T::ByIds: SelectDsl<JoinedSelection<T, S, C::Backend>>,
    Prepared<Select<T::ByIds, JoinedSelection<T, S, C::Backend>>>:
        LoadQuery<'static, C, (T, Option<S>)> + Send + 'static,
    T::StoresByKeys: SelectDsl<AsSelect<S, C::Backend>>,
    Prepared<Select<T::StoresByKeys, AsSelect<S, C::Backend>>>:
        LoadQuery<'static, C, S> + Send + 'static,
{
    fn load(conn: &mut C, ids: Vec<T::Id>) -> impl Future<Output = QueryResult<Loaded<T>>> + Send {
        Prepared(T::by_ids(ids).select((T::as_select(), Option::<S>::as_select())))
            .load(conn)
            .map_ok(Loaded::joined)
    }

    fn load_stores(
        conn: &mut C,
        keys: Vec<T::StoreKey>,
    ) -> impl Future<Output = QueryResult<Vec<S>>> + Send {
        Prepared(T::stores_by_keys(keys).select(S::as_select())).load(conn)
    }
}

/// What a joined resolve query selects: the target's fields, then its store's, or `NULL`s.
pub(crate) type JoinedSelection<T, S, DB> = (AsSelect<T, DB>, AsSelect<Option<S>, DB>);

/// A resolve query Diesel keeps prepared. Diesel prepares an `IN (…)` list afresh on every run,
/// since its length changes the statement; [`padded`] lists have few lengths, and the statement
/// of each is cached like any other.
#[derive(Debug)]
pub struct Prepared<Q>(pub(crate) Q);

impl<Q: Query> Query for Prepared<Q> {
    type SqlType = Q::SqlType;
}

impl<Q> QueryId for Prepared<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q: QueryFragment<DB>, DB: Backend> QueryFragment<DB> for Prepared<Q> {
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        self.0.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _: &DB) -> QueryResult<bool> {
        Ok(true)
    }
}

impl<Q, Conn> diesel::RunQueryDsl<Conn> for Prepared<Q> {}

/// `ids` with the last repeated, where each id is a placeholder of its own, so that lists of
/// any length share a few lengths: up to the next power of two for short lists, the next
/// multiple of 1,024 for long ones (never past the backend's chunk). A connection then keeps at
/// most a few dozen resolve statements per model. Repeated ids load nothing twice.
pub(crate) fn padded<DB: SyncBackend, Id: Clone>(mut ids: Vec<Id>) -> Vec<Id> {
    const STEP: usize = 1_024;
    if !DB::BINDS_EACH_ID {
        return ids;
    }
    if let Some(last) = ids.last().cloned() {
        let length = if ids.len() <= STEP {
            ids.len().next_power_of_two()
        } else {
            ids.len().div_ceil(STEP) * STEP
        };
        ids.resize(length.min(DB::MAX_IDS_PER_QUERY).max(ids.len()), last);
    }
    ids
}

/// How a diesel-async connection `C` loads one target model's committed ids, as a
/// [`Registry`](crate::Registry) stores it for each model with a handler.
pub(crate) type AsyncLoader<C> =
    for<'a> fn(&'a mut C, &'a Dispatcher, &'a dyn PendingSet) -> ScopedBoxFuture<'a, 'a, ()>;

/// The [`AsyncLoader`] of target model `T`.
pub(crate) fn async_loader<'a, T: Resolve<C>, C: Send>(
    conn: &'a mut C,
    dispatcher: &'a Dispatcher,
    set: &'a dyn PendingSet,
) -> ScopedBoxFuture<'a, 'a, ()> {
    Box::pin(resolve_and_dispatch::<T, C>(
        conn,
        dispatcher,
        PendingIds::<T>::of(set),
    ))
}

/// Resolves one target model's committed ids and dispatches them, one batch per store.
async fn resolve_and_dispatch<T, C>(conn: &mut C, dispatcher: &Dispatcher, pending: &PendingIds<T>)
where
    T: Resolve<C>,
    C: Send,
{
    let (mut resolution, ids) = Resolution::<T>::start(dispatcher, pending);
    let span = resolution.span();
    async {
        for chunk in chunks(ids, T::CHUNK) {
            let loaded = T::load(conn, chunk.clone()).await;
            resolution.loaded(chunk, loaded);
        }
        resolution.count_stale();
        for keys in chunks(resolution.stores_missing(), T::CHUNK) {
            let loaded = T::load_stores(conn, keys.clone()).await;
            resolution.stores_loaded(keys, loaded);
        }
    }
    .instrument(span)
    .await;
    resolution.dispatch();
}

/// One target model's committed ids on their way from loading to dispatch: the bookkeeping the
/// async and the blocking resolve share. Only the loading differs between them.
pub(crate) struct Resolution<'r, T: SyncTarget> {
    dispatcher: &'r Dispatcher,
    /// Its place in the hand-off order, taken before the first query.
    ticket: Ticket,
    model: &'static str,
    committed: usize,
    unresolved: usize,
    rows: Vec<T>,
    /// The ids of rows the transaction deleted, with their stores: those whose rows do not load
    /// are removals.
    removed: HashMap<T::Id, T::StoreKey>,
    /// The store rows loaded with the rows, when the target names a store model.
    stores: HashMap<T::StoreKey, Arc<T::Store>>,
}

impl<'r, T: SyncTarget> Resolution<'r, T> {
    /// Counts the pending ids of `T`, a model with a handler, and returns the ids to load.
    pub(crate) fn start(dispatcher: &'r Dispatcher, pending: &PendingIds<T>) -> (Self, Vec<T::Id>) {
        let committed = pending.ids.len();
        Counters::add(&dispatcher.counters().ids_committed, committed);
        let resolution = Self {
            dispatcher,
            ticket: dispatcher.ticket::<T>(),
            model: type_name::<T>(),
            committed,
            unresolved: 0,
            rows: Vec::with_capacity(committed),
            removed: pending.removed.clone(),
            stores: HashMap::new(),
        };
        (resolution, pending.ids.iter().cloned().collect())
    }

    /// The `resolve` span the loading runs in.
    pub(crate) fn span(&self) -> tracing::Span {
        tracing::info_span!("resolve", model = self.model, ids = self.committed)
    }

    /// Takes one chunk's query result: its rows and stores, or its ids dead-lettered.
    pub(crate) fn loaded(&mut self, chunk: Vec<T::Id>, loaded: QueryResult<Loaded<T>>) {
        Counters::add(&self.dispatcher.counters().resolve_queries, 1);
        match loaded {
            Ok(loaded) => {
                self.rows.extend(loaded.rows);
                for store in loaded.stores {
                    self.stores
                        .entry(T::key_of_store(&store))
                        .or_insert_with(|| Arc::new(store));
                }
            }
            Err(error) => {
                Counters::add(&self.dispatcher.counters().failed_loads, 1);
                let model = self.model;
                tracing::error!(model, ids = chunk.len(), %error, "loading committed rows failed; ids dead-lettered");
                self.unresolved += chunk.len();
                for id in &chunk {
                    self.removed.remove(id);
                }
                self.dispatcher
                    .dead_letter(DeadLetter::unresolved::<T>(chunk, error.to_string()));
            }
        }
    }

    /// Keeps one row per key, tells removals (deleted rows that did not load) from changes, and
    /// counts the ids whose rows no longer exist for another reason.
    pub(crate) fn count_stale(&mut self) {
        // A key column that is not unique in the database loads several rows for one id.
        let loaded = self.rows.len();
        let mut seen = HashSet::with_capacity(loaded);
        self.rows.retain(|row| seen.insert(row.sync_key()));
        let repeated = loaded - self.rows.len();
        if repeated > 0 {
            tracing::warn!(
                model = self.model,
                repeated,
                "rows share a key, which is not unique in the database; the first of each is sent"
            );
        }
        // Deleted, then written again before the commit: a change.
        self.removed.retain(|id, _| !seen.contains(id));
        Counters::add(&self.dispatcher.counters().ids_removed, self.removed.len());
        let stale = self
            .committed
            .saturating_sub(self.unresolved + self.rows.len() + self.removed.len());
        if stale > 0 {
            Counters::add(&self.dispatcher.counters().ids_stale, stale);
            tracing::debug!(
                model = self.model,
                stale,
                "skipped ids whose rows no longer exist"
            );
        }
    }

    /// The stores of removals that no loaded row brought along, when the target names a store
    /// model: a batch that only removes rows gets its store row from one more query.
    pub(crate) fn stores_missing(&self) -> Vec<T::StoreKey> {
        if TypeId::of::<T::Store>() == TypeId::of::<NoStore>() {
            return Vec::new();
        }
        let missing: HashSet<&T::StoreKey> = self
            .removed
            .values()
            .filter(|store| !self.stores.contains_key(store))
            .collect();
        missing.into_iter().cloned().collect()
    }

    /// Takes the store rows of [`Resolution::stores_missing`]. If they cannot be loaded, the
    /// removals in those stores are dead-lettered: a filter could not be asked about them.
    pub(crate) fn stores_loaded(
        &mut self,
        keys: Vec<T::StoreKey>,
        loaded: QueryResult<Vec<T::Store>>,
    ) {
        Counters::add(&self.dispatcher.counters().resolve_queries, 1);
        match loaded {
            Ok(stores) => {
                for store in stores {
                    self.stores.insert(T::key_of_store(&store), Arc::new(store));
                }
            }
            Err(error) => {
                Counters::add(&self.dispatcher.counters().failed_loads, 1);
                let keys: HashSet<T::StoreKey> = keys.into_iter().collect();
                let ids: Vec<T::Id> = self
                    .removed
                    .iter()
                    .filter(|(_, store)| keys.contains(store))
                    .map(|(id, _)| id.clone())
                    .collect();
                let model = self.model;
                tracing::error!(model, ids = ids.len(), %error, "loading the stores of removed rows failed; ids dead-lettered");
                for id in &ids {
                    self.removed.remove(id);
                }
                self.dispatcher
                    .dead_letter(DeadLetter::unresolved::<T>(ids, error.to_string()));
            }
        }
    }

    /// Groups the rows and removals by store and hands the batches to the dispatcher.
    pub(crate) fn dispatch(self) {
        self.dispatcher.dispatch(
            self.ticket,
            group_by_store(self.rows, self.removed, &self.stores),
        );
    }
}

/// The ids in chunks of at most `size`, one resolve query each.
pub(crate) fn chunks<Id>(ids: Vec<Id>, size: usize) -> impl Iterator<Item = Vec<Id>> {
    let mut ids = ids.into_iter();
    std::iter::from_fn(move || {
        let chunk: Vec<Id> = ids.by_ref().take(size).collect();
        (!chunk.is_empty()).then_some(chunk)
    })
}

/// Groups rows and removals by store key, stores in order of their first change, each with its
/// store row when one was loaded.
fn group_by_store<T: SyncTarget>(
    rows: Vec<T>,
    removed: HashMap<T::Id, T::StoreKey>,
    stores: &HashMap<T::StoreKey, Arc<T::Store>>,
) -> Vec<(T::StoreKey, Changes<T>)> {
    let mut groups = Groups::<T>::default();
    for row in rows {
        groups.of(row.store_key()).rows.push(row);
    }
    for (id, store) in removed {
        groups.of(store).removed.push(id);
    }
    for (store, changes) in &mut groups.list {
        changes.store = stores.get(store).cloned();
    }
    groups.list
}

/// Each store's changes, stores in order of their first change.
struct Groups<T: SyncTarget> {
    list: Vec<(T::StoreKey, Changes<T>)>,
    index: HashMap<T::StoreKey, usize>,
}

impl<T: SyncTarget> Default for Groups<T> {
    fn default() -> Self {
        Self {
            list: Vec::new(),
            index: HashMap::new(),
        }
    }
}

impl<T: SyncTarget> Groups<T> {
    /// The changes of `store`, added empty the first time.
    fn of(&mut self, store: T::StoreKey) -> &mut Changes<T> {
        let at = match self.index.entry(store) {
            Entry::Occupied(at) => *at.get(),
            Entry::Vacant(slot) => {
                self.list.push((slot.key().clone(), Changes::default()));
                *slot.insert(self.list.len() - 1)
            }
        };
        &mut self.list[at].1
    }
}

/// A committed frame's ids on their way to dispatch, one target model at a time. A model's ids
/// leave once its resolve has handed their rows on; whatever is left when this is dropped (the
/// future driving the flush dropped part-way, or a panic) is dead-lettered, never lost.
pub(crate) struct Unflushed<'d> {
    dispatcher: &'d Dispatcher,
    sets: VecDeque<Box<dyn PendingSet>>,
}

impl<'d> Unflushed<'d> {
    pub(crate) fn new(dispatcher: &'d Dispatcher, frame: Frame) -> Self {
        Self {
            dispatcher,
            sets: frame.into_targets().into(),
        }
    }

    /// The next model's ids to resolve.
    pub(crate) fn next(&self) -> Option<&dyn PendingSet> {
        self.sets.front().map(|set| &**set)
    }

    /// The ids [`Unflushed::next`] gave were handed on.
    pub(crate) fn handed_on(&mut self) {
        self.sets.pop_front();
    }
}

impl Drop for Unflushed<'_> {
    fn drop(&mut self) {
        for set in self.sets.drain(..) {
            tracing::error!(
                model = set.target_name(),
                ids = set.len(),
                "the flush after COMMIT stopped before these ids were resolved; dead-lettered"
            );
            self.dispatcher.dead_letter(set.unresolved(
                "committed, but the flush after COMMIT stopped (its future was dropped) before the rows were loaded".to_owned(),
            ));
        }
    }
}

/// Committed ids of a target model with no handler: counted, then dropped with a warning.
pub(crate) fn unhandled(dispatcher: &Dispatcher, set: &dyn PendingSet) {
    Counters::add(&dispatcher.counters().ids_committed, set.len());
    tracing::warn!(
        model = set.target_name(),
        ids = set.len(),
        "ids committed for a model with no handler; register one with `RegistryBuilder::handler`"
    );
}

/// Chunking and padding of the ids a resolve query binds, without a database.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_never_exceed_the_backend_limit_and_keep_every_id() {
        let chunked: Vec<Vec<u32>> = chunks((0..10).collect(), 4).collect();
        assert_eq!(chunked, [vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]);
        assert_eq!(chunks(Vec::<u32>::new(), 4).count(), 0);
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn a_list_of_placeholders_is_padded_to_a_power_of_two_within_the_limit() {
        use diesel::sqlite::Sqlite;
        assert_eq!(padded::<Sqlite, _>(vec![7, 3, 5]), [7, 3, 5, 5]);
        assert_eq!(padded::<Sqlite, _>(vec![1]), [1]);
        assert_eq!(padded::<Sqlite, _>(Vec::<i64>::new()), Vec::<i64>::new());
        assert_eq!(
            padded::<Sqlite, _>((0..1_000).collect::<Vec<_>>()).len(),
            1_024
        );
        assert_eq!(
            padded::<Sqlite, _>((0..10_000).collect::<Vec<_>>()).len(),
            10_240
        );
        let limit = <Sqlite as SyncBackend>::MAX_IDS_PER_QUERY;
        let near_the_limit: Vec<usize> = (0..limit - 10).collect();
        assert_eq!(padded::<Sqlite, _>(near_the_limit).len(), limit);
        let full: Vec<usize> = (0..limit).collect();
        assert_eq!(padded::<Sqlite, _>(full).len(), limit);
    }

    #[cfg(any(feature = "postgres", feature = "blocking-postgres"))]
    #[test]
    fn an_array_bind_is_not_padded() {
        assert_eq!(padded::<diesel::pg::Pg, _>(vec![7, 3, 5]), [7, 3, 5]);
    }
}
