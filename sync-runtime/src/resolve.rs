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
    let Some(mut resolution) = Resolution::<T>::start(registry, ids.len()) else {
        return;
    };
    let span = resolution.span();
    async {
        for chunk in chunks(ids, T::CHUNK) {
            let loaded = T::load(conn, chunk.clone()).await;
            resolution.loaded(chunk, loaded);
        }
        resolution.count_stale();
    }
    .instrument(span)
    .await;
    resolution.dispatch();
}

/// One target model's committed ids on their way from loading to dispatch: the bookkeeping the
/// async and the blocking resolve share. Only the loading differs between them.
pub(crate) struct Resolution<'r, T: SyncTarget> {
    registry: &'r Registry,
    model: &'static str,
    committed: usize,
    unresolved: usize,
    rows: Vec<T>,
}

impl<'r, T: SyncTarget> Resolution<'r, T> {
    /// Counts `committed` ids of `T`; `None` (with a warning) when `T` has no handler, so
    /// nothing is loaded.
    pub(crate) fn start(registry: &'r Registry, committed: usize) -> Option<Self> {
        let model = type_name::<T>();
        Counters::add(&registry.counters().ids_committed, committed);
        if !registry.handles::<T>() {
            tracing::warn!(model, ids = committed, "ids committed for a model with no handler; register one with `RegistryBuilder::handler`");
            return None;
        }
        Some(Self {
            registry,
            model,
            committed,
            unresolved: 0,
            rows: Vec::with_capacity(committed),
        })
    }

    /// The `resolve` span the loading runs in.
    pub(crate) fn span(&self) -> tracing::Span {
        tracing::info_span!("resolve", model = self.model, ids = self.committed)
    }

    /// Takes one chunk's query result: its rows, or its ids dead-lettered.
    pub(crate) fn loaded(&mut self, chunk: Vec<T::Id>, loaded: QueryResult<Vec<T>>) {
        Counters::add(&self.registry.counters().resolve_queries, 1);
        match loaded {
            Ok(loaded) => self.rows.extend(loaded),
            Err(error) => {
                let model = self.model;
                tracing::error!(model, ids = chunk.len(), %error, "loading committed rows failed; ids dead-lettered");
                self.unresolved += chunk.len();
                self.registry
                    .dead_letter(DeadLetter::unresolved::<T>(chunk, error.to_string()));
            }
        }
    }

    /// Counts the ids whose rows no longer exist.
    pub(crate) fn count_stale(&self) {
        let stale = self.committed - self.unresolved - self.rows.len();
        if stale > 0 {
            Counters::add(&self.registry.counters().ids_stale, stale);
            tracing::debug!(
                model = self.model,
                stale,
                "skipped ids whose rows no longer exist"
            );
        }
    }

    /// Groups the rows by store and hands the batches to the dispatcher.
    pub(crate) fn dispatch(self) {
        self.registry.dispatch(group_by_store(self.rows));
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
