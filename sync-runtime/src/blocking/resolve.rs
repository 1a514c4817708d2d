//! After commit, over a synchronous connection: load a target model's pending ids on the
//! committing thread, then group and dispatch them as the async side does.

use diesel::connection::Connection;
use diesel::dsl::{AsSelect, Select};
use diesel::query_builder::QueryId;
use diesel::query_dsl::methods::SelectDsl;
use diesel::query_dsl::LoadQuery;
use diesel::{QueryResult, RunQueryDsl, Selectable, SelectableHelper};

use crate::backend::SyncBackend;
use crate::collector::{PendingIds, PendingSet};
use crate::dispatcher::Dispatcher;
use crate::resolve::{chunks, padded, Prepared, Resolution};
use crate::synced::SyncTarget;

/// A target model that can be loaded by id over synchronous connection `C`: the blocking twin
/// of [`crate::Resolve`].
///
/// Implemented for every [`SyncTarget`] that is `Selectable` on `C`'s backend; hooks require it
/// so that a model which cannot be loaded is a compile error at the write, not a failure after
/// commit.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be loaded by id over `{C}`",
    note = "a target model must derive `Queryable` and `Selectable` for the connection's backend"
)]
pub trait Resolve<C>: SyncTarget {
    /// The most ids one resolve query binds ([`SyncBackend::MAX_IDS_PER_QUERY`]).
    const CHUNK: usize;

    /// Loads the rows of `ids` that still exist.
    fn load(conn: &mut C, ids: Vec<Self::Id>) -> QueryResult<Vec<Self>>;
}

impl<T, C> Resolve<C> for T
where
    T: SyncTarget + Selectable<C::Backend>,
    C: Connection,
    C::Backend: SyncBackend,
    T::SelectExpression: QueryId,
    T::ByIds: SelectDsl<AsSelect<T, C::Backend>>,
    Prepared<Select<T::ByIds, AsSelect<T, C::Backend>>>: LoadQuery<'static, C, T>,
{
    const CHUNK: usize = <C::Backend as SyncBackend>::MAX_IDS_PER_QUERY;

    fn load(conn: &mut C, ids: Vec<Self::Id>) -> QueryResult<Vec<Self>> {
        let ids = padded::<C::Backend, _>(ids);
        Prepared(T::by_ids(ids).select(T::as_select())).load(conn)
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
    }
    resolution.dispatch();
}
