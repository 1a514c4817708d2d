//! The transaction-scoped collector: one frame of pending ids per open transaction level.
//!
//! A frame holds, for each target model, the deduplicated ids written at that level. Releasing a
//! savepoint merges its frame into the parent; rolling back drops it; the outermost COMMIT takes
//! the last frame and hands it to resolve and dispatch.
//!
//! Frames are generic over the boxed pending-set trait object `P`: `dyn PendingIds<C>` for a
//! diesel-async connection (an async flush), `dyn BlockingPendingIds<C>` for a synchronous Diesel
//! connection (a blocking flush). Both hold the same [`PendingTarget`]; only the flush differs.

use std::any::{Any, TypeId};
use std::collections::HashSet;
use std::marker::PhantomData;

use scoped_futures::ScopedBoxFuture;

use crate::registry::Registry;
use crate::resolve::{resolve_and_dispatch, Resolve};
use crate::synced::SyncTarget;

/// The frames of one connection, innermost last. `frames.len()` follows the transaction depth.
pub(crate) struct Collector<P: ?Sized> {
    frames: Vec<Frame<P>>,
    /// The depth a COMMIT must return to for its ids to be handed on: 0, or 1 inside a test
    /// transaction, so that the transactions a test runs are treated as outermost.
    flush_depth: usize,
}

/// The ids written at one transaction level, grouped by target model.
pub(crate) struct Frame<P: ?Sized> {
    // A frame rarely holds more than a few target models: a linear scan beats hashing.
    targets: Vec<Box<P>>,
}

/// What a frame does with a target model's pending ids, whichever connection kind flushes them.
pub(crate) trait PendingSet: Send {
    fn target(&self) -> TypeId;
    fn len(&self) -> usize;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
    /// Adds another set of the same target model, given as [`PendingSet::into_any`] returned it.
    fn absorb(&mut self, other: Box<dyn Any>);
}

/// A pending-set trait object that can hold ids of target model `T`.
pub(crate) trait PendingKind<T: SyncTarget>: PendingSet {
    /// An empty set of `T`.
    fn empty() -> Box<Self>;
    /// The ids of a set of `T` (the caller checked its target).
    fn ids_mut(pending: &mut Self) -> &mut HashSet<T::Id>;
}

/// The pending ids of one target model, with the monomorphised code that resolves them over a
/// diesel-async connection `C`.
pub(crate) trait PendingIds<C>: PendingSet {
    /// Loads the rows, groups them by store and hands the batches to the registry.
    fn flush<'a>(
        self: Box<Self>,
        conn: &'a mut C,
        registry: &'a Registry,
    ) -> ScopedBoxFuture<'a, 'a, ()>;
}

/// The pending ids of one target model, resolved over a synchronous Diesel connection `C`.
pub(crate) trait BlockingPendingIds<C>: PendingSet {
    /// Loads the rows, groups them by store and hands the batches to the registry.
    fn flush(self: Box<Self>, conn: &mut C, registry: &Registry);
}

/// The ids of target model `T`, to be resolved over `C`.
pub(crate) struct PendingTarget<T: SyncTarget, C> {
    pub(crate) ids: HashSet<T::Id>,
    connection: PhantomData<fn(&mut C)>,
}

impl<T: SyncTarget, C> PendingTarget<T, C> {
    pub(crate) fn new() -> Self {
        Self {
            ids: HashSet::new(),
            connection: PhantomData,
        }
    }
}

impl<P: ?Sized + PendingSet> Collector<P> {
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
    pub(crate) fn committed(&mut self, committed: bool, depth: usize) -> Option<Frame<P>> {
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

    /// Brings the frame count in step with the database's transaction depth: frames of levels
    /// that no longer exist were rolled back, so their ids are dropped.
    fn truncate_to(&mut self, depth: usize) {
        self.frames.truncate(depth);
        while self.frames.len() < depth {
            self.frames.push(Frame::default());
        }
    }

    /// The innermost frame, if a transaction is open.
    pub(crate) fn current(&mut self) -> Option<&mut Frame<P>> {
        self.frames.last_mut()
    }

    /// Ids pending at every level, for diagnostics.
    pub(crate) fn pending(&self) -> usize {
        self.frames.iter().map(Frame::len).sum()
    }
}

impl<P: ?Sized> Default for Frame<P> {
    fn default() -> Self {
        Self {
            targets: Vec::new(),
        }
    }
}

impl<P: ?Sized + PendingSet> Frame<P> {
    /// Adds ids of target model `T`; an id already pending is kept once.
    pub(crate) fn insert<T>(&mut self, ids: impl IntoIterator<Item = T::Id>)
    where
        T: SyncTarget,
        P: PendingKind<T>,
    {
        let target = TypeId::of::<T>();
        let pending = match self.targets.iter().position(|p| p.target() == target) {
            Some(index) => &mut self.targets[index],
            None => {
                self.targets.push(P::empty());
                self.targets.last_mut().expect("just pushed")
            }
        };
        P::ids_mut(pending).extend(ids);
    }

    pub(crate) fn len(&self) -> usize {
        self.targets.iter().map(|p| p.len()).sum()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.targets.iter().all(|p| p.len() == 0)
    }

    fn merge(&mut self, child: Frame<P>) {
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

    /// Each target model's pending ids, ready to flush.
    pub(crate) fn into_targets(self) -> Vec<Box<P>> {
        self.targets
    }
}

impl<T: SyncTarget, C: 'static> PendingSet for PendingTarget<T, C> {
    fn target(&self) -> TypeId {
        TypeId::of::<T>()
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
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
    }
}

impl<T, C> PendingKind<T> for dyn PendingIds<C>
where
    T: Resolve<C>,
    C: Send + 'static,
{
    fn empty() -> Box<Self> {
        Box::new(PendingTarget::<T, C>::new())
    }

    fn ids_mut(pending: &mut Self) -> &mut HashSet<T::Id> {
        &mut pending
            .as_any_mut()
            .downcast_mut::<PendingTarget<T, C>>()
            .expect("a frame keys each target model by its TypeId")
            .ids
    }
}

impl<T, C> PendingIds<C> for PendingTarget<T, C>
where
    T: Resolve<C>,
    C: Send + 'static,
{
    fn flush<'a>(
        self: Box<Self>,
        conn: &'a mut C,
        registry: &'a Registry,
    ) -> ScopedBoxFuture<'a, 'a, ()> {
        Box::pin(resolve_and_dispatch::<T, C>(
            conn,
            registry,
            self.ids.into_iter().collect(),
        ))
    }
}
