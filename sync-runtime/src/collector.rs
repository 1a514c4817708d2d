//! The transaction-scoped collector: one frame of pending ids per open transaction level.
//!
//! A frame holds, for each target model, the deduplicated ids written at that level. Releasing a
//! savepoint merges its frame into the parent; rolling back drops it; the outermost COMMIT takes
//! the last frame and hands it to resolve and dispatch.

use std::any::{Any, TypeId};
use std::collections::HashSet;
use std::marker::PhantomData;

use scoped_futures::ScopedBoxFuture;

use crate::registry::Registry;
use crate::resolve::{resolve_and_dispatch, Resolve};
use crate::synced::SyncTarget;

/// The frames of one connection, innermost last. `frames.len()` follows the transaction depth.
pub(crate) struct Collector<C> {
    frames: Vec<Frame<C>>,
}

/// The ids written at one transaction level, grouped by target model.
pub(crate) struct Frame<C> {
    // A frame rarely holds more than a few target models: a linear scan beats hashing.
    targets: Vec<Box<dyn PendingIds<C>>>,
}

/// The pending ids of one target model, with the monomorphised code that resolves them over `C`.
pub(crate) trait PendingIds<C>: Send {
    fn target(&self) -> TypeId;
    fn len(&self) -> usize;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
    /// Adds another set of the same target model.
    fn absorb(&mut self, other: Box<dyn PendingIds<C>>);
    /// Loads the rows, groups them by store and hands the batches to the registry.
    fn flush<'a>(
        self: Box<Self>,
        conn: &'a mut C,
        registry: &'a Registry,
    ) -> ScopedBoxFuture<'a, 'a, ()>;
}

struct PendingTarget<T: SyncTarget, C> {
    ids: HashSet<T::Id>,
    connection: PhantomData<fn(&mut C)>,
}

impl<C: Send + 'static> Collector<C> {
    pub(crate) fn new() -> Self {
        Self { frames: Vec::new() }
    }

    pub(crate) fn depth(&self) -> usize {
        self.frames.len()
    }

    /// Takes the innermost frame; the caller merges, flushes or drops it.
    pub(crate) fn pop(&mut self) -> Option<Frame<C>> {
        self.frames.pop()
    }

    /// Merges a released savepoint's frame into the level below it.
    pub(crate) fn release(&mut self) {
        if let Some(frame) = self.frames.pop() {
            match self.frames.last_mut() {
                Some(parent) => parent.merge(frame),
                None => self.frames.push(frame),
            }
        }
    }

    /// Brings the frame count back in step with the database's transaction depth after an error:
    /// frames of levels that no longer exist were rolled back, so their ids are dropped.
    pub(crate) fn truncate_to(&mut self, depth: usize) {
        self.frames.truncate(depth);
        while self.frames.len() < depth {
            self.frames.push(Frame::default());
        }
    }

    /// The innermost frame, if a transaction is open.
    pub(crate) fn current(&mut self) -> Option<&mut Frame<C>> {
        self.frames.last_mut()
    }

    /// Ids pending at every level, for diagnostics.
    pub(crate) fn pending(&self) -> usize {
        self.frames.iter().map(Frame::len).sum()
    }
}

impl<C> Default for Frame<C> {
    fn default() -> Self {
        Self {
            targets: Vec::new(),
        }
    }
}

impl<C: Send + 'static> Frame<C> {
    /// Adds ids of target model `T`; an id already pending is kept once.
    pub(crate) fn insert<T>(&mut self, ids: impl IntoIterator<Item = T::Id>)
    where
        T: Resolve<C>,
    {
        let target = TypeId::of::<T>();
        let pending = match self.targets.iter().position(|p| p.target() == target) {
            Some(index) => &mut self.targets[index],
            None => {
                self.targets.push(Box::new(PendingTarget::<T, C> {
                    ids: HashSet::new(),
                    connection: PhantomData,
                }));
                self.targets.last_mut().expect("just pushed")
            }
        };
        pending
            .as_any_mut()
            .downcast_mut::<PendingTarget<T, C>>()
            .expect("a frame keys each target model by its TypeId")
            .ids
            .extend(ids);
    }

    pub(crate) fn len(&self) -> usize {
        self.targets.iter().map(|p| p.len()).sum()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.targets.iter().all(|p| p.len() == 0)
    }

    fn merge(&mut self, child: Frame<C>) {
        for pending in child.targets {
            match self
                .targets
                .iter_mut()
                .find(|p| p.target() == pending.target())
            {
                Some(existing) => existing.absorb(pending),
                None => self.targets.push(pending),
            }
        }
    }

    /// Each target model's pending ids, ready to flush.
    pub(crate) fn into_targets(self) -> Vec<Box<dyn PendingIds<C>>> {
        self.targets
    }
}

impl<T, C> PendingIds<C> for PendingTarget<T, C>
where
    T: Resolve<C>,
    C: Send + 'static,
{
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

    fn absorb(&mut self, other: Box<dyn PendingIds<C>>) {
        let other = other
            .into_any()
            .downcast::<Self>()
            .expect("only sets of the same target model are merged");
        if other.ids.len() > self.ids.len() {
            let mine = std::mem::replace(&mut self.ids, other.ids);
            self.ids.extend(mine);
        } else {
            self.ids.extend(other.ids);
        }
    }

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
