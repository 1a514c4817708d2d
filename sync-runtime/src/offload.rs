//! Resolve off the caller's path. A registry whose connections come from a pool resolves their
//! committed ids on a connection of its own, on its own runtime: the COMMIT queues its frame
//! here and `transaction()` returns at once. A woken resolver lingers a moment, and frames
//! queued meanwhile or while a round runs merge into the next round, so the commits of a busy
//! pool share their resolve queries.
//!
//! One round runs at a time, so the hand-off order of rounds is the order they read the
//! database in (see the dispatcher's `Sequence`). A durable registry's worker loads over a
//! connection of the same kind ([`OwnConnection`]).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use diesel::result::Error;
use diesel::QueryResult;
use futures_util::FutureExt as _;
use tokio::sync::Notify;
use tracing::Instrument;

use crate::capture::CaptureBackend;
use crate::classify::Dialect;
use crate::collector::Frame;
use crate::connection::{CaptureConnection, SyncedConnection};
use crate::dispatch::panic_message;
use crate::dispatcher::Dispatcher;
use crate::registry::Registry;
use crate::resolve::{unhandled, AsyncLoader, Unflushed};

/// What a registry's own SQLite connection runs first: wait for the application's writes
/// rather than fail at once.
const SQLITE_BUSY_TIMEOUT: &str = "PRAGMA busy_timeout = 5000";

/// How often an idle resolver looks whether the application dropped the registry.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// How long a woken resolver waits for the commits that follow the first to share its round:
/// on a busy pool, one resolve query instead of one per commit.
const LINGER: Duration = Duration::from_millis(5);

/// The committed frames waiting for the registry's own connection.
#[derive(Debug, Default)]
pub(crate) struct Offload {
    queue: Mutex<Queued>,
    wake: Notify,
}

/// Frames merged in commit order; each counts as pending work in the dispatcher until the round
/// that resolves it handed its batches on.
#[derive(Debug, Default)]
struct Queued {
    frame: Frame,
    frames: u64,
}

impl Offload {
    /// Queues a committed frame for the next round. Takes no lock the database holds, and never
    /// panics: it runs right after a COMMIT.
    pub(crate) fn push(&self, dispatcher: &Dispatcher, frame: Frame) {
        dispatcher.shared().start(1);
        {
            let mut queue = self.queue();
            queue.frame.merge(frame);
            queue.frames += 1;
        }
        self.wake.notify_one();
    }

    /// At the shutdown deadline: the ids no round took yet become dead letters. Returns how
    /// many id sets were abandoned.
    pub(crate) fn abandon(&self, dispatcher: &Dispatcher, reason: &str) -> usize {
        let Queued { frame, frames } = std::mem::take(&mut *self.queue());
        let sets = frame.into_targets();
        let abandoned = sets.len();
        for set in sets {
            tracing::error!(
                model = set.target_name(),
                ids = set.len(),
                "committed ids were not resolved by the shutdown deadline; dead-lettered"
            );
            dispatcher.dead_letter(set.unresolved(format!("committed, but {reason}")));
        }
        dispatcher.shared().settle(frames);
        abandoned
    }

    fn take(&self) -> Queued {
        std::mem::take(&mut *self.queue())
    }

    fn queue(&self) -> MutexGuard<'_, Queued> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Starts resolving `registry`'s committed frames on a connection of its own to `url`, unless
/// it already does, is durable (its worker does), or `url` names a database only one connection
/// sees (SQLite's `:memory:`). Without the registry's runtime, frames stay on the caller's path.
pub(crate) fn start<K: OwnConnection>(registry: &Registry<K>, url: &str) {
    if registry.is_durable() || url == ":memory:" || registry.dispatcher().offload().is_some() {
        return;
    }
    let runtime = match registry.dispatcher().background_handle() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "committed ids are resolved on the committing connection");
            return;
        }
    };
    let offload = Arc::new(Offload::default());
    if registry.dispatcher().set_offload(Arc::clone(&offload)) {
        runtime.spawn(run(registry.clone(), url.to_owned(), offload));
    }
}

/// The rounds: take every queued frame, resolve and dispatch it, until the application dropped
/// every clone of the registry and nothing is queued.
async fn run<K: OwnConnection>(registry: Registry<K>, url: String, offload: Arc<Offload>) {
    let mut conn: Option<K::Own> = None;
    tracing::debug!("committed ids are resolved on the registry's own connection");
    loop {
        let Queued { frame, frames } = offload.take();
        if frames == 0 {
            // The registry's clone held here is the last one: no commit can queue a frame.
            if registry.dispatcher().is_last() {
                break;
            }
            if tokio::time::timeout(IDLE_CHECK, offload.wake.notified())
                .await
                .is_ok()
            {
                tokio::time::sleep(LINGER).await;
            }
            continue;
        }
        let span = tracing::info_span!("resolve_round", frames, ids = frame.len());
        let round = round(&registry, &url, &mut conn, frame).instrument(span);
        if let Err(panic) = AssertUnwindSafe(round).catch_unwind().await {
            // The round's `Unflushed` dead-lettered what it had not handed on.
            let message = panic_message(&*panic);
            tracing::error!(panic = message, "a resolve round panicked; reconnecting");
            conn = None;
        }
        registry.dispatcher().shared().settle(frames);
    }
    tracing::debug!("the registry's own resolve connection closed");
}

/// One round over the registry's connection, opened first if there is none. A failed query
/// dead-letters its ids (as on the caller's path) and drops the connection, which may be broken.
async fn round<K: OwnConnection>(
    registry: &Registry<K>,
    url: &str,
    conn: &mut Option<K::Own>,
    frame: Frame,
) {
    let own = match conn {
        Some(own) => own,
        None => match K::connect(url).await {
            Ok(own) => conn.insert(own),
            Err(error) => {
                tracing::error!(%error, "the registry's own connection cannot open; committed ids dead-lettered");
                let reason =
                    format!("committed, but the registry's own connection could not open: {error}");
                for set in frame.into_targets() {
                    registry
                        .dispatcher()
                        .dead_letter(set.unresolved(reason.clone()));
                }
                return;
            }
        },
    };
    let failed = &registry.dispatcher().counters().failed_loads;
    let before = failed.load(Ordering::Acquire);
    K::resolve_and_dispatch(registry, own, frame).await;
    if failed.load(Ordering::Acquire) != before {
        *conn = None;
    }
}

/// A connection kind whose registry can open a connection of its own, and load committed ids
/// over it as a flush after COMMIT would.
pub(crate) trait OwnConnection: Sized + Send + 'static {
    /// The registry's own connection.
    type Own: Send;

    /// Opens a connection to `url`.
    fn connect(url: &str) -> impl Future<Output = QueryResult<Self::Own>> + Send;

    /// Loads `frame`'s ids and hands the batches to dispatch.
    fn resolve_and_dispatch(
        registry: &Registry<Self>,
        conn: &mut Self::Own,
        frame: Frame,
    ) -> impl Future<Output = ()> + Send;
}

/// The async connection: a connection of the same kind.
impl<C: CaptureConnection> OwnConnection for SyncedConnection<C> {
    type Own = C;

    async fn connect(url: &str) -> QueryResult<C> {
        let mut conn = C::establish(url)
            .await
            .map_err(|error| Error::QueryBuilderError(error.into()))?;
        if C::Backend::DIALECT == Dialect::Sqlite {
            diesel_async::SimpleAsyncConnection::batch_execute(&mut conn, SQLITE_BUSY_TIMEOUT)
                .await?;
        }
        Ok(conn)
    }

    async fn resolve_and_dispatch(registry: &Registry<Self>, conn: &mut C, frame: Frame) {
        let dispatcher = registry.dispatcher();
        let mut unflushed = Unflushed::new(dispatcher, frame);
        while let Some(pending) = unflushed.next() {
            match registry.loader::<AsyncLoader<C>>(pending.target()) {
                Some(load) => load(conn, dispatcher, pending).await,
                None => unhandled(dispatcher, pending),
            }
            unflushed.handed_on();
        }
    }
}

/// A synchronous connection, shared with the blocking thread that runs each statement.
pub(crate) struct BlockingOwn<C>(Arc<Mutex<C>>);

impl<C: Send + 'static> BlockingOwn<C> {
    /// Runs `task` on the connection, on a blocking thread of the current runtime.
    pub(crate) async fn run<R: Send + 'static>(
        &self,
        task: impl FnOnce(&mut C) -> QueryResult<R> + Send + 'static,
    ) -> QueryResult<R> {
        let conn = Arc::clone(&self.0);
        tokio::task::spawn_blocking(move || {
            task(&mut conn.lock().unwrap_or_else(PoisonError::into_inner))
        })
        .await
        .unwrap_or_else(|error| Err(Error::QueryBuilderError(error.into())))
    }
}

/// The synchronous connection: Diesel's connection, run on blocking threads of the registry's
/// runtime, loading rows as the committing thread would.
impl<C> OwnConnection for crate::blocking::SyncedConnection<C>
where
    C: crate::blocking::CaptureConnection + Send,
{
    type Own = BlockingOwn<C>;

    async fn connect(url: &str) -> QueryResult<BlockingOwn<C>> {
        let url = url.to_owned();
        let conn = tokio::task::spawn_blocking(move || {
            let mut conn =
                C::establish(&url).map_err(|error| Error::QueryBuilderError(error.into()))?;
            if C::Backend::DIALECT == Dialect::Sqlite {
                conn.batch_execute(SQLITE_BUSY_TIMEOUT)?;
            }
            Ok(conn)
        })
        .await
        .unwrap_or_else(|error| Err(Error::QueryBuilderError(error.into())))?;
        Ok(BlockingOwn(Arc::new(Mutex::new(conn))))
    }

    async fn resolve_and_dispatch(
        registry: &Registry<Self>,
        conn: &mut BlockingOwn<C>,
        frame: Frame,
    ) {
        let registry = registry.clone();
        let loaded = conn
            .run(move |conn| {
                crate::blocking::resolve_frame(&registry, conn, frame);
                Ok(())
            })
            .await;
        if let Err(error) = loaded {
            tracing::error!(%error, "a blocking resolve thread failed");
        }
    }
}
