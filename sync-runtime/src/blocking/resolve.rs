//! After commit, over a synchronous connection: load a target model's pending ids on the
//! committing thread, then group and dispatch them as the async side does.

use diesel::connection::Connection;
use diesel::dsl::{AsSelect, Select};
use diesel::query_builder::QueryId;
use diesel::query_dsl::methods::SelectDsl;
use diesel::query_dsl::LoadQuery;
use diesel::{Expression, QueryResult, RunQueryDsl, Selectable, SelectableHelper};

use crate::backend::SyncBackend;
use crate::collector::{PendingIds, PendingSet};
use crate::dispatcher::Dispatcher;
use crate::resolve::{chunks, padded, JoinedSelection, Loaded, Prepared, Resolution};
use crate::synced::{LoadsAlone, LoadsWithStore, NoStore, SyncTarget};

/// A target model that can be loaded by id over synchronous connection `C`: the blocking twin
/// of [`crate::Resolve`].
///
/// Implemented for every [`SyncTarget`] that is `Selectable` on `C`'s backend, and whose store
/// model, if it names one, is too; hooks require it so that a model which cannot be loaded is a
/// compile error at the write, not a failure after commit.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be loaded by id over `{C}`",
    note = "a target model must derive `Queryable` and `Selectable` for the connection's backend, and so must its store model"
)]
pub trait Resolve<C>: SyncTarget {
    /// The most ids one resolve query binds ([`SyncBackend::MAX_IDS_PER_QUERY`]).
    const CHUNK: usize;

    /// Loads the rows of `ids` that still exist, with their store rows.
    fn load(conn: &mut C, ids: Vec<Self::Id>) -> QueryResult<Loaded<Self>>;

    /// Loads the store rows of `keys` (none without a store model).
    fn load_stores(conn: &mut C, keys: Vec<Self::StoreKey>) -> QueryResult<Vec<Self::Store>>;
}

impl<T, C> Resolve<C> for T
where
    T: SyncTarget,
    C: Connection,
    C::Backend: SyncBackend,
    T::Loads: LoadWith<T, C>,
{
    const CHUNK: usize = <C::Backend as SyncBackend>::MAX_IDS_PER_QUERY;

    fn load(conn: &mut C, ids: Vec<Self::Id>) -> QueryResult<Loaded<Self>> {
        <T::Loads as LoadWith<T, C>>::load(conn, padded::<C::Backend, _>(ids))
    }

    fn load_stores(conn: &mut C, keys: Vec<Self::StoreKey>) -> QueryResult<Vec<Self::Store>> {
        <T::Loads as LoadWith<T, C>>::load_stores(conn, keys)
    }
}

/// How target `T`'s rows load over synchronous connection `C`: alone, or joined with its store model; the blocking twin of the async one.
#[doc(hidden)]
pub trait LoadWith<T: SyncTarget, C> {
    fn load(conn: &mut C, ids: Vec<T::Id>) -> QueryResult<Loaded<T>>;

    fn load_stores(conn: &mut C, keys: Vec<T::StoreKey>) -> QueryResult<Vec<T::Store>>;
}

impl<T, C> LoadWith<T, C> for LoadsAlone
where
    T: SyncTarget<Store = NoStore, Loads = LoadsAlone> + Selectable<C::Backend>,
    C: Connection,
    T::SelectExpression: QueryId,
    T::ByIds: SelectDsl<AsSelect<T, C::Backend>>,
    Prepared<Select<T::ByIds, AsSelect<T, C::Backend>>>: LoadQuery<'static, C, T>,
{
    fn load(conn: &mut C, ids: Vec<T::Id>) -> QueryResult<Loaded<T>> {
        Prepared(T::by_ids(ids).select(T::as_select()))
            .load(conn)
            .map(Loaded::alone)
    }

    fn load_stores(_: &mut C, _: Vec<T::StoreKey>) -> QueryResult<Vec<NoStore>> {
        Ok(Vec::new())
    }
}

impl<T, C, S> LoadWith<T, C> for LoadsWithStore
where
    T: SyncTarget<Store = S, Loads = LoadsWithStore> + Selectable<C::Backend>,
    S: Selectable<C::Backend> + Send,
    Option<S>: Selectable<C::Backend>,
    T::SelectExpression: QueryId,
    S::SelectExpression: QueryId,
    C: Connection,
    JoinedSelection<T, S, C::Backend>: Expression,
    T::ByIds: SelectDsl<JoinedSelection<T, S, C::Backend>>,
    Prepared<Select<T::ByIds, JoinedSelection<T, S, C::Backend>>>:
        LoadQuery<'static, C, (T, Option<S>)>,
    T::StoresByKeys: SelectDsl<AsSelect<S, C::Backend>>,
    Prepared<Select<T::StoresByKeys, AsSelect<S, C::Backend>>>: LoadQuery<'static, C, S>,
{
    fn load(conn: &mut C, ids: Vec<T::Id>) -> QueryResult<Loaded<T>> {
        Prepared(T::by_ids(ids).select((T::as_select(), Option::<S>::as_select())))
            .load(conn)
            .map(Loaded::joined)
    }

    fn load_stores(conn: &mut C, keys: Vec<T::StoreKey>) -> QueryResult<Vec<S>> {
        Prepared(T::stores_by_keys(keys).select(S::as_select())).load(conn)
    }
}

/// How a synchronous connection `C` loads one target model's committed ids, as a
/// [`Registry`](crate::Registry) stores it for each model with a handler.
pub(crate) type BlockingLoader<C> = fn(&mut C, &Dispatcher, &dyn PendingSet);

/// The [`BlockingLoader`] of target model `T`: loads the ids on the committing thread, then
/// groups and dispatches them as the async side does.
pub(crate) fn blocking_loader<T: Resolve<C>, C>(
    conn: &mut C,
    dispatcher: &Dispatcher,
    set: &dyn PendingSet,
) {
    let (mut resolution, ids) = Resolution::<T>::start(dispatcher, PendingIds::<T>::of(set));
    {
        let _span = resolution.span().entered();
        for chunk in chunks(ids, T::CHUNK) {
            let loaded = T::load(conn, chunk.clone());
            resolution.loaded(chunk, loaded);
        }
        resolution.count_stale();
        for keys in chunks(resolution.stores_missing(), T::CHUNK) {
            let loaded = T::load_stores(conn, keys.clone());
            resolution.stores_loaded(keys, loaded);
        }
    }
    resolution.dispatch();
}
