//! The transaction-scoped collector: one frame of pending ids per open transaction level, and
//! the rules for what BEGIN, RELEASE, ROLLBACK and COMMIT do to them. Pure data: no I/O, no
//! connection type; both connection kinds drive it.
//!
//! A frame holds, for each target model, the deduplicated ids written at that level. Releasing a
//! savepoint merges its frame into the parent; rolling back drops it; the outermost COMMIT takes
//! the last frame and hands it to resolve and dispatch.

use std::any::{type_name, Any, TypeId};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use diesel::connection::{Instrumentation, InstrumentationEvent};
use diesel::result::{DatabaseErrorKind, Error};

use crate::dead_letter::DeadLetter;
use crate::outbox::{self, NewEntry};
use crate::synced::SyncTarget;

/// The frames of one connection, innermost last. `frames.len()` follows the transaction depth.
#[derive(Debug)]
pub(crate) struct Collector {
    frames: Vec<Frame>,
    /// The depth a COMMIT must return to for its ids to be handed on: 0, or 1 inside a test
    /// transaction, so that the transactions a test runs are treated as outermost.
    flush_depth: usize,
}

/// The ids written at one transaction level, grouped by target model.
#[derive(Debug, Default)]
pub(crate) struct Frame {
    // A frame rarely holds more than a few target models: a linear scan beats hashing.
    targets: Vec<Box<dyn PendingSet>>,
}

/// One target model's pending ids, whatever the model: what a frame stores.
pub(crate) trait PendingSet: Send + std::fmt::Debug {
    fn target(&self) -> TypeId;
    fn target_name(&self) -> &'static str;
    fn len(&self) -> usize;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
    /// The ids as a dead letter, for a flush that could not finish.
    fn unresolved(&self, error: String) -> DeadLetter;
    /// The outbox rows recording the ids.
    fn outbox_entries(&self) -> Result<Vec<NewEntry>, String>;
    /// Adds another set of the same target model, given as [`PendingSet::into_any`] returned it.
    fn absorb(&mut self, other: Box<dyn Any>);
}

/// The pending ids of target model `T`.
#[derive(Debug)]
pub(crate) struct PendingIds<T: SyncTarget> {
    /// Every id written, the deleted ones included.
    pub(crate) ids: HashSet<T::Id>,
    /// The ids of deleted rows, with the store each belonged to. Resolve tells a removal from
    /// a change: a row deleted and written again in the transaction loads, and is a change.
    pub(crate) removed: HashMap<T::Id, T::StoreKey>,
}

impl<T: SyncTarget> PendingIds<T> {
    fn new() -> Self {
        Self {
            ids: HashSet::new(),
            removed: HashMap::new(),
        }
    }

    /// The set the frame keyed by `T`'s `TypeId`.
    pub(crate) fn of(set: &dyn PendingSet) -> &Self {
        set.as_any()
            .downcast_ref::<Self>()
            .expect("a frame keys each target model by its TypeId")
    }

    /// The ids of a set the frame keyed by `T`'s `TypeId`.
    #[cfg(test)]
    pub(crate) fn ids(set: &dyn PendingSet) -> Vec<T::Id> {
        Self::of(set).ids.iter().cloned().collect()
    }

    /// Registers the deletion of row `id`, which belonged to `store`.
    pub(crate) fn remove(&mut self, id: T::Id, store: T::StoreKey) {
        self.ids.insert(id.clone());
        self.removed.insert(id, store);
    }
}

impl Collector {
    pub(crate) fn new() -> Self {
        Self {
            frames: Vec::new(),
            flush_depth: 0,
        }
    }

    /// After BEGIN or SAVEPOINT, successful or not: one frame per level the database has open.
    pub(crate) fn began(&mut self, depth: usize) {
        self.truncate_to(depth);
    }

    /// After ROLLBACK: the level's ids are dropped whether or not ROLLBACK itself reported an
    /// error, and so are those of any other level the database no longer has open.
    pub(crate) fn rolled_back(&mut self, depth: usize) {
        self.frames.pop();
        self.truncate_to(depth);
    }

    /// After COMMIT or RELEASE, with `committed` telling whether the database accepted it and
    /// `depth` its transaction depth now. Returns the frame to hand on when the outermost level
    /// committed; a released savepoint merges into its parent; after a failure, the levels that
    /// no longer exist were rolled back.
    pub(crate) fn committed(&mut self, committed: bool, depth: usize) -> Option<Frame> {
        let closed_one_level = depth + 1 == self.frames.len();
        match committed {
            true if closed_one_level && depth == self.flush_depth => self.frames.pop(),
            true if closed_one_level => {
                self.release();
                None
            }
            _ => {
                self.truncate_to(depth);
                None
            }
        }
    }

    /// Inside a test transaction: its level has a frame, and the transactions run in it are
    /// handed on when they commit.
    pub(crate) fn enter_test_transaction(&mut self) {
        self.truncate_to(1);
        self.flush_depth = 1;
    }

    /// Merges a released savepoint's frame into the level below it.
    fn release(&mut self) {
        if let Some(frame) = self.frames.pop() {
            match self.frames.last_mut() {
                Some(parent) => parent.merge(frame),
                None => self.frames.push(frame),
            }
        }
    }

    /// After the database rolled the whole transaction back under the running calls: every
    /// level's ids are dropped, and what runs next is handed on as the autocommitted statements
    /// it is.
    pub(crate) fn lose_levels(&mut self) {
        self.truncate_to(self.flush_depth);
    }

    /// Brings the frame count in step with the database's transaction depth: frames of levels
    /// that no longer exist were rolled back, so their ids are dropped.
    fn truncate_to(&mut self, depth: usize) {
        self.frames.truncate(depth);
        while self.frames.len() < depth {
            self.frames.push(Frame::default());
        }
    }

    /// Adds ids with `insert` to the innermost open level. With no transaction open the write
    /// has committed already: the ids go to a new frame, returned to be handed on at once.
    pub(crate) fn add(&mut self, insert: impl FnOnce(&mut Frame)) -> Option<Frame> {
        match self.frames.last_mut() {
            Some(frame) => {
                insert(frame);
                None
            }
            None => {
                let mut frame = Frame::default();
                insert(&mut frame);
                Some(frame)
            }
        }
    }

    /// The database depth that counts as no transaction: 1 inside a test transaction.
    pub(crate) fn base_depth(&self) -> usize {
        self.flush_depth
    }

    /// Whether a transaction is open.
    pub(crate) fn in_transaction(&self) -> bool {
        !self.frames.is_empty()
    }

    /// The frame the next COMMIT hands on when it closes the outermost level: `Some` while
    /// exactly that level is open.
    pub(crate) fn outermost(&self) -> Option<&Frame> {
        (self.frames.len() == self.flush_depth + 1)
            .then(|| self.frames.last())
            .flatten()
    }

    /// Whether a level above the test transaction's (if any) is open.
    pub(crate) fn pending_levels(&self) -> bool {
        self.frames.len() > self.flush_depth
    }

    /// Ids pending at every level, for diagnostics.
    pub(crate) fn pending(&self) -> usize {
        self.frames.iter().map(Frame::len).sum()
    }
}

impl Frame {
    /// The pending ids of target model `T`, created empty the first time.
    pub(crate) fn pending_mut<T: SyncTarget>(&mut self) -> &mut PendingIds<T> {
        let target = TypeId::of::<T>();
        let index = match self.targets.iter().position(|p| p.target() == target) {
            Some(index) => index,
            None => {
                self.targets.push(Box::new(PendingIds::<T>::new()));
                self.targets.len() - 1
            }
        };
        self.targets[index]
            .as_any_mut()
            .downcast_mut::<PendingIds<T>>()
            .expect("a frame keys each target model by its TypeId")
    }

    /// The set of target model `T`, created empty the first time.
    pub(crate) fn ids_mut<T: SyncTarget>(&mut self) -> &mut HashSet<T::Id> {
        &mut self.pending_mut::<T>().ids
    }

    /// Adds ids of target model `T`; an id already pending is kept once.
    pub(crate) fn insert<T: SyncTarget>(&mut self, ids: impl IntoIterator<Item = T::Id>) {
        self.ids_mut::<T>().extend(ids);
    }

    /// Adds deleted rows of target model `T`, each with its store.
    pub(crate) fn remove<T: SyncTarget>(
        &mut self,
        removed: impl IntoIterator<Item = (T::Id, T::StoreKey)>,
    ) {
        let pending = self.pending_mut::<T>();
        for (id, store) in removed {
            pending.remove(id, store);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.targets.iter().map(|p| p.len()).sum()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.targets.iter().all(|p| p.len() == 0)
    }

    /// Adds the ids of another frame, the other's deletions winning.
    pub(crate) fn merge(&mut self, child: Frame) {
        for pending in child.targets {
            match self
                .targets
                .iter_mut()
                .find(|p| p.target() == pending.target())
            {
                Some(existing) => existing.absorb(pending.into_any()),
                None => self.targets.push(pending),
            }
        }
    }

    /// The outbox rows recording the ids of the target models in `handled` (the others have no
    /// handler: their ids are dropped, as they would be after COMMIT).
    pub(crate) fn outbox_entries(&self, handled: &[TypeId]) -> Result<Vec<NewEntry>, String> {
        let mut entries = Vec::new();
        for pending in &self.targets {
            if handled.contains(&pending.target()) {
                entries.extend(pending.outbox_entries()?);
            }
        }
        Ok(entries)
    }

    /// Each target model's pending ids, ready to flush.
    pub(crate) fn into_targets(self) -> Vec<Box<dyn PendingSet>> {
        self.targets
    }
}

impl<T: SyncTarget> PendingSet for PendingIds<T> {
    fn target(&self) -> TypeId {
        TypeId::of::<T>()
    }

    fn target_name(&self) -> &'static str {
        type_name::<T>()
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn unresolved(&self, error: String) -> DeadLetter {
        DeadLetter::unresolved::<T>(self.ids.iter().cloned().collect(), error)
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }

    fn outbox_entries(&self) -> Result<Vec<NewEntry>, String> {
        let changed: Vec<T::Id> = self
            .ids
            .iter()
            .filter(|id| !self.removed.contains_key(id))
            .cloned()
            .collect();
        let removed: Vec<(T::Id, T::StoreKey)> = self
            .removed
            .iter()
            .map(|(id, store)| (id.clone(), store.clone()))
            .collect();
        outbox::entries::<T>(&changed, &removed)
    }

    fn absorb(&mut self, other: Box<dyn Any>) {
        let other = other
            .downcast::<Self>()
            .expect("only sets of the same target model are merged");
        if other.ids.len() > self.ids.len() {
            let mine = std::mem::replace(&mut self.ids, other.ids);
            self.ids.extend(mine);
        } else {
            self.ids.extend(other.ids);
        }
        // A later level's deletion is the newer: it replaces an earlier one's store.
        self.removed.extend(other.removed);
    }
}

/// The `transaction()` calls running on a connection, whatever ends them (a call that
/// returned, a future dropped, a closure that panicked). With none running, an open transaction
/// was left behind by one that never finished. `lost` says the database rolled back the
/// transaction the running calls are in, under them (MySQL does after a deadlock).
#[derive(Debug, Default)]
pub(crate) struct Calls {
    running: AtomicUsize,
    lost: AtomicBool,
}

impl Calls {
    /// Whether a `transaction()` call is running.
    pub(crate) fn running(&self) -> bool {
        self.running.load(Ordering::Acquire) > 0
    }

    /// Records that the database rolled the running calls' transaction back. Until the
    /// outermost returns, no `transaction()` may begin: it would open a new transaction, which
    /// an enclosing call's COMMIT would then commit.
    pub(crate) fn lose_transaction(&self) {
        if self.running() {
            self.lost.store(true, Ordering::Release);
        }
    }

    /// Whether the database rolled back the transaction the running calls are in.
    pub(crate) fn transaction_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }
}

/// Watches every statement a MySQL connection runs, the application's own on `inner_mut()`
/// included, for a deadlock: `InnoDB` then rolled the whole transaction back, savepoints
/// included, and the connection's transaction manager does not know. Passes every event on to
/// the instrumentation the application set.
pub(crate) struct DeadlockWatch {
    calls: Arc<Calls>,
    next: Option<Box<dyn Instrumentation>>,
}

impl DeadlockWatch {
    /// The watch over the running calls `calls`, in front of `next` (Diesel's default
    /// instrumentation, or the application's).
    pub(crate) fn new(calls: &Arc<Calls>, next: Option<Box<dyn Instrumentation>>) -> Self {
        Self {
            calls: Arc::clone(calls),
            next,
        }
    }
}

impl Instrumentation for DeadlockWatch {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        if let InstrumentationEvent::FinishQuery {
            error: Some(error), ..
        } = &event
        {
            if is_deadlock(error) {
                self.calls.lose_transaction();
            }
        }
        self.next.on_connection_event(event);
    }
}

/// Whether `error` is `InnoDB`'s deadlock (1213): the synchronous client reports its SQLSTATE
/// as a serialization failure; diesel-async's MySQL connection only keeps its message.
fn is_deadlock(error: &Error) -> bool {
    match error {
        Error::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => true,
        Error::DatabaseError(_, info) => info.message().starts_with("Deadlock found"),
        _ => false,
    }
}

/// One `transaction()` call running; the outermost one's end clears [`Calls::transaction_lost`].
pub(crate) struct Running(Arc<Calls>);

impl Running {
    pub(crate) fn enter(calls: &Arc<Calls>) -> Self {
        calls.running.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(calls))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.lost.store(false, Ordering::Release);
        }
    }
}

/// The error of a `transaction()` begun inside a call whose transaction the database rolled
/// back: a serialization failure, which callers that retry deadlocks retry.
pub(crate) fn transaction_lost() -> diesel::result::Error {
    let message = "the database rolled back the transaction this `transaction()` would run in \
                   (MySQL does after a deadlock), so it cannot begin: return the error from the \
                   outermost `transaction()` and run it again";
    tracing::error!("{message}");
    diesel::result::Error::DatabaseError(
        diesel::result::DatabaseErrorKind::SerializationFailure,
        Box::new(message.to_owned()),
    )
}

/// The commit rules, without a database: what each transaction event does to the frames.
#[cfg(test)]
mod tests {
    use super::*;

    use crate::synced::TestRow as Product;

    /// Registers `ids` at the innermost level, as a write would, inside a transaction.
    fn write(collector: &mut Collector, ids: &[i64]) {
        let outside = collector.add(|frame| frame.insert::<Product>(ids.iter().copied()));
        assert!(outside.is_none(), "a transaction is open");
    }

    fn ids(frame: Frame) -> Vec<i64> {
        let mut ids: Vec<i64> = frame
            .into_targets()
            .iter()
            .flat_map(|set| PendingIds::<Product>::ids(&**set))
            .collect();
        ids.sort_unstable();
        ids
    }

    #[test]
    fn the_outermost_commit_hands_on_its_ids_once_each() {
        let mut collector = Collector::new();
        collector.began(1);
        write(&mut collector, &[1, 2, 1]);
        assert_eq!(collector.pending(), 2);
        let frame = collector.committed(true, 0).expect("outermost commit");
        assert_eq!(ids(frame), vec![1, 2]);
        assert_eq!(collector.pending(), 0);
    }

    #[test]
    fn a_released_savepoint_merges_into_its_parent() {
        let mut collector = Collector::new();
        collector.began(1);
        write(&mut collector, &[1]);
        collector.began(2);
        write(&mut collector, &[2, 1]);
        assert!(
            collector.committed(true, 1).is_none(),
            "RELEASE hands nothing on"
        );
        let frame = collector.committed(true, 0).expect("outermost commit");
        assert_eq!(ids(frame), vec![1, 2]);
    }

    #[test]
    fn a_rolled_back_savepoint_drops_only_its_own_ids() {
        let mut collector = Collector::new();
        collector.began(1);
        write(&mut collector, &[1]);
        collector.began(2);
        write(&mut collector, &[2]);
        collector.rolled_back(1);
        let frame = collector.committed(true, 0).expect("outermost commit");
        assert_eq!(ids(frame), vec![1]);
    }

    #[test]
    fn a_failed_commit_hands_on_nothing_and_drops_the_levels_that_closed() {
        let mut collector = Collector::new();
        collector.began(1);
        write(&mut collector, &[1]);
        assert!(collector.committed(false, 0).is_none());
        assert_eq!(collector.pending(), 0);
        let outside = collector.add(|frame| frame.insert::<Product>([9]));
        assert_eq!(ids(outside.expect("no transaction open")), vec![9]);
    }

    #[test]
    fn a_deletion_keeps_its_store_through_a_released_savepoint_and_a_rollback_drops_it() {
        let mut collector = Collector::new();
        collector.began(1);
        collector.began(2);
        collector.add(|frame| frame.remove::<Product>([(3, ())]));
        collector.committed(true, 1);
        collector.began(2);
        collector.add(|frame| frame.remove::<Product>([(4, ())]));
        collector.rolled_back(1);
        let frame = collector.committed(true, 0).expect("outermost commit");
        let targets = frame.into_targets();
        let pending = PendingIds::<Product>::of(&*targets[0]);
        assert_eq!(pending.ids.iter().copied().collect::<Vec<_>>(), [3]);
        assert_eq!(pending.removed.keys().copied().collect::<Vec<_>>(), [3]);
    }

    #[test]
    fn inside_a_test_transaction_the_next_level_commits_as_outermost() {
        let mut collector = Collector::new();
        collector.enter_test_transaction();
        collector.began(2);
        write(&mut collector, &[7]);
        let frame = collector.committed(true, 1).expect("treated as outermost");
        assert_eq!(ids(frame), vec![7]);
    }
}
