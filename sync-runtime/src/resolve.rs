//! After commit: load a target model's pending ids in as few queries as the backend allows,
//! skip ids whose rows are gone, group the rows by store, hand the batches to dispatch.

use std::any::type_name;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::future::Future;

use diesel::dsl::{AsSelect, Select};
use diesel::query_builder::QueryId;
use diesel::query_dsl::methods::SelectDsl;
use diesel::{QueryResult, Selectable, SelectableHelper};
use diesel_async::methods::LoadQuery;
use diesel_async::{AsyncConnectionCore, RunQueryDsl};
use tracing::Instrument;

use crate::backend::SyncBackend;
use crate::dead_letter::DeadLetter;
use crate::metrics::Counters;
use crate::registry::Registry;
use crate::synced::SyncTarget;

/// A target model that can be loaded by id over connection `C`.
///
/// Implemented for every [`SyncTarget`] that is `Selectable` on `C`'s backend; hooks require it so
/// that a model which cannot be loaded is a compile error at the write, not a failure after commit.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be loaded by id over `{C}`",
    note = "a target model must derive `Queryable` and `Selectable` for the connection's backend"
)]
pub trait Resolve<C: Send>: SyncTarget {
    /// The most ids one resolve query binds.
    const CHUNK: usize;

    /// Loads the rows of `ids` that still exist.
    fn load(
        conn: &mut C,
        ids: Vec<Self::Id>,
    ) -> impl Future<Output = QueryResult<Vec<Self>>> + Send;
}

impl<T, C> Resolve<C> for T
where
    T: SyncTarget + Selectable<C::Backend>,
    C: AsyncConnectionCore,
    C::Backend: SyncBackend,
    T::SelectExpression: QueryId,
    T::ByIds: SelectDsl<AsSelect<T, C::Backend>>,
    Select<T::ByIds, AsSelect<T, C::Backend>>: LoadQuery<'static, C, T> + Send + 'static,
{
    const CHUNK: usize = <C::Backend as SyncBackend>::MAX_IDS_PER_QUERY;

    fn load(
        conn: &mut C,
        ids: Vec<Self::Id>,
    ) -> impl Future<Output = QueryResult<Vec<Self>>> + Send {
        T::by_ids(ids).select(T::as_select()).load(conn)
    }
}

/// Resolves one target model's committed ids and dispatches them, one batch per store.
pub(crate) async fn resolve_and_dispatch<T, C>(conn: &mut C, registry: &Registry, ids: Vec<T::Id>)
where
    T: Resolve<C>,
    C: Send,
{
    let model = type_name::<T>();
    let committed = ids.len();
    let counters = registry.counters();
    Counters::add(&counters.ids_committed, committed);
    if !registry.handles::<T>() {
        tracing::warn!(model, ids = committed, "ids committed for a model with no handler; register one with `RegistryBuilder::handler`");
        return;
    }
    let span = tracing::info_span!("resolve", model, ids = committed);
    let rows = async {
        let mut rows = Vec::with_capacity(committed);
        let mut unresolved = 0;
        let mut ids = ids.into_iter();
        loop {
            let chunk: Vec<T::Id> = ids.by_ref().take(T::CHUNK).collect();
            if chunk.is_empty() {
                break;
            }
            Counters::add(&counters.resolve_queries, 1);
            match T::load(conn, chunk.clone()).await {
                Ok(loaded) => rows.extend(loaded),
                Err(error) => {
                    tracing::error!(model, ids = chunk.len(), %error, "loading committed rows failed; ids dead-lettered");
                    unresolved += chunk.len();
                    registry.dead_letter(DeadLetter::unresolved::<T>(chunk, error.to_string()));
                }
            }
        }
        let stale = committed - unresolved - rows.len();
        if stale > 0 {
            Counters::add(&counters.ids_stale, stale);
            tracing::debug!(model, stale, "skipped ids whose rows no longer exist");
        }
        rows
    }
    .instrument(span)
    .await;
    registry.dispatch(group_by_store(rows));
}

/// Groups rows by store key, stores in order of their first row.
fn group_by_store<T: SyncTarget>(rows: Vec<T>) -> Vec<(T::StoreKey, Vec<T>)> {
    let mut groups: Vec<(T::StoreKey, Vec<T>)> = Vec::new();
    let mut index: HashMap<T::StoreKey, usize> = HashMap::new();
    for row in rows {
        let at = match index.entry(row.store_key()) {
            Entry::Occupied(at) => *at.get(),
            Entry::Vacant(slot) => {
                groups.push((slot.key().clone(), Vec::new()));
                *slot.insert(groups.len() - 1)
            }
        };
        groups[at].1.push(row);
    }
    groups
}
