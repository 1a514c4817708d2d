//! Durable mode's record: the outbox table. The outermost COMMIT of a durable registry's
//! connection writes the keys it collected into the outbox inside the same transaction, so the
//! change and its sync record commit or roll back together; the delivery worker
//! ([`crate::worker`]) claims rows, resolves and dispatches them, and deletes a row only once
//! its batches were delivered. A crash between COMMIT and delivery loses nothing: the rows wait
//! for the next worker.

use std::any::{type_name, Any, TypeId};
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use diesel::backend::Backend;
use diesel::prelude::*;
use diesel::QueryResult;
use diesel_async::{AsyncConnection, AsyncConnectionCore, RunQueryDsl};
use diesel_migrations::{embed_migrations, EmbeddedMigrations};

use crate::catalog::{Catalog, Deletes, DynKey, ModelFacts};
use crate::collector::Frame;
use crate::handler::Batch;
use crate::synced::SyncTarget;

diesel::table! {
    /// The outbox: one row per target model and chunk of committed keys.
    diesel_sync_outbox (id) {
        id -> BigInt,
        model -> Text,
        changed -> Text,
        removed -> Text,
        attempts -> Integer,
        last_error -> Nullable<Text>,
        available_at -> BigInt,
        claimed_by -> Nullable<Text>,
        dead_at -> Nullable<BigInt>,
    }
}

pub(crate) use diesel_sync_outbox as outbox;

/// The outbox table's schema, one set of migrations per backend, to run with
/// [`diesel_migrations`](https://docs.rs/diesel_migrations) before a durable registry starts:
///
/// ```no_run
/// # use diesel_sync_runtime as diesel_sync;
/// use diesel::Connection;
/// use diesel_migrations::MigrationHarness;
///
/// let mut conn = diesel::SqliteConnection::establish("shop.db")?;
/// conn.run_pending_migrations(diesel_sync::migrations::SQLITE)?;
/// # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
/// ```
///
/// An async-only application runs them through diesel-async's `AsyncConnectionWrapper`.
pub mod migrations {
    use super::{embed_migrations, EmbeddedMigrations};

    /// The outbox on PostgreSQL.
    pub const POSTGRES: EmbeddedMigrations = embed_migrations!("migrations/postgres");
    /// The outbox on MySQL and MariaDB.
    pub const MYSQL: EmbeddedMigrations = embed_migrations!("migrations/mysql");
    /// The outbox on SQLite (a database file: the delivery worker opens a connection of its own).
    pub const SQLITE: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
}

/// Durable mode's settings: where the delivery worker connects, and how it claims outbox rows.
/// Given to [`RegistryBuilder::durable`](crate::RegistryBuilder::durable).
///
/// On SQLite the worker's connection writes to the application's database file: give the
/// application's connections a busy timeout (`PRAGMA busy_timeout = 5000`), as any program with
/// two connections to one file needs.
///
/// ```
/// # use diesel_sync_runtime as diesel_sync;
/// use std::time::Duration;
/// use diesel_sync::Durable;
///
/// let durable = Durable::new("postgres://localhost/shop").lease(Duration::from_secs(120));
/// ```
#[derive(Debug, Clone)]
pub struct Durable {
    pub(crate) url: String,
    pub(crate) lease: Duration,
    pub(crate) poll_interval: Duration,
    pub(crate) claim_rows: i64,
    pub(crate) deliver: bool,
    pub(crate) linger: Duration,
}

impl Durable {
    /// Durable delivery from the outbox of the database at `url`, which the worker connects to.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_secs(1),
            claim_rows: 256,
            deliver: true,
            linger: Duration::from_millis(5),
        }
    }

    /// How long a claimed row stays the worker's (default 60 s). A worker that dies leaves its
    /// rows to the next one once the lease ends; a delivery slower than the lease may be made
    /// twice.
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How often an idle worker looks for rows other processes wrote (default 1 s); rows this
    /// process commits wake it at once.
    #[must_use]
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Records committed ids in the outbox and leaves their delivery to other processes: a
    /// web server whose writes worker processes deliver. No worker starts here, and
    /// [`Registry::settled`](crate::Registry::settled) does not wait for the outbox.
    #[must_use]
    pub fn record_only(mut self) -> Self {
        self.deliver = false;
        self
    }

    /// How long a worker woken by a commit waits before it claims (default 5 ms), so that the
    /// commits of a busy moment share one round: fewer worker queries competing with the
    /// application's, for that much more latency.
    #[must_use]
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// The most outbox rows one delivery round claims (default 256, each up to
    /// 10,000 keys).
    #[must_use]
    pub fn claim_rows(mut self, rows: u32) -> Self {
        self.claim_rows = i64::from(rows.max(1));
        self
    }
}

/// The most keys one outbox row holds.
const KEYS_PER_ROW: usize = 10_000;

/// The keys of one outbox row, as its JSON columns hold them.
#[derive(Debug, Default)]
pub(crate) struct Keys {
    changed: Vec<DynKey>,
    removed: Vec<(DynKey, Option<DynKey>)>,
}

/// An outbox row to write. Not public API.
#[doc(hidden)]
#[derive(Debug, Insertable)]
#[diesel(table_name = diesel_sync_outbox, treat_none_as_default_value = false)]
pub struct NewEntry {
    model: String,
    changed: String,
    removed: String,
    attempts: i32,
    last_error: Option<String>,
    available_at: i64,
    dead_at: Option<i64>,
}

/// A claimed outbox row. Not public API.
#[doc(hidden)]
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = diesel_sync_outbox)]
pub struct Entry {
    pub(crate) id: i64,
    pub(crate) model: String,
    changed: String,
    removed: String,
    pub(crate) attempts: i32,
}

/// A dead outbox row. Not public API: read as a [`DeadRow`].
#[doc(hidden)]
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = diesel_sync_outbox)]
pub struct DeadEntry {
    id: i64,
    model: String,
    changed: String,
    removed: String,
    attempts: i32,
    last_error: Option<String>,
    dead_at: Option<i64>,
}

/// A batch whose retries ran out, as a durable registry keeps it in the outbox; see
/// [`Registry::dead_rows`](crate::Registry::dead_rows).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadRow {
    /// The outbox row's id, to retry or discard it by.
    pub id: i64,
    /// The table of the target model.
    pub model: String,
    /// The ids of changed rows, as a JSON list (numbers or strings).
    pub changed: String,
    /// The ids of removed rows with their stores, as JSON pairs.
    pub removed: String,
    /// The calls made.
    pub attempts: u32,
    /// The handler's last error.
    pub error: String,
    /// When delivery gave up.
    pub dead_at: SystemTime,
}

impl From<DeadEntry> for DeadRow {
    fn from(entry: DeadEntry) -> Self {
        let dead_at = u64::try_from(entry.dead_at.unwrap_or_default()).unwrap_or_default();
        Self {
            id: entry.id,
            model: entry.model,
            changed: entry.changed,
            removed: entry.removed,
            attempts: u32::try_from(entry.attempts).unwrap_or_default(),
            error: entry.last_error.unwrap_or_default(),
            dead_at: UNIX_EPOCH + Duration::from_millis(dead_at),
        }
    }
}

/// Milliseconds since the Unix epoch: the outbox's clock.
pub(crate) fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The outbox rows recording target `T`'s committed `changed` ids and `removed` rows, at most
/// [`KEYS_PER_ROW`] keys each. Fails, before anything is written, for a target whose keys the
/// outbox cannot hold (an id type other than `i16`, `i32`, `i64` or `String`).
pub(crate) fn entries<T: SyncTarget>(
    changed: &[T::Id],
    removed: &[(T::Id, T::StoreKey)],
) -> Result<Vec<NewEntry>, String> {
    let facts = target_facts(TypeId::of::<T>(), type_name::<T>())?;
    let codec = facts.key.ok_or_else(|| unreadable::<T>())?;
    let encode_ids = |ids: Vec<T::Id>| (codec.encode)(&ids).ok_or_else(unreadable::<T>);
    let mut keys = Vec::new();
    for chunk in changed.chunks(KEYS_PER_ROW) {
        keys.push(Keys {
            changed: encode_ids(chunk.to_vec())?,
            removed: Vec::new(),
        });
    }
    if !removed.is_empty() {
        let Deletes::Removal(removal) = facts.deletes else {
            return Err(format!(
                "the removals of `{}` cannot be recorded in the outbox: its store key type is not one a key can be",
                type_name::<T>()
            ));
        };
        for chunk in removed.chunks(KEYS_PER_ROW) {
            let (ids, stores): (Vec<T::Id>, Vec<T::StoreKey>) = chunk.iter().cloned().unzip();
            let stores = (removal.encode_stores)(&stores).ok_or_else(unreadable::<T>)?;
            keys.push(Keys {
                changed: Vec::new(),
                removed: encode_ids(ids)?.into_iter().zip(stores).collect(),
            });
        }
    }
    let available_at = now_ms();
    Ok(keys
        .into_iter()
        .map(|keys| keys.entry(facts.table, available_at))
        .collect())
}

/// The outbox rows recording a failed batch's ids with its error and attempts: to claim again
/// after `retry`, or dead when it is `None`.
pub(crate) fn failed_entries<T: SyncTarget>(
    payload: &(dyn Any + Send + Sync),
    error: &str,
    attempts: u32,
    retry: Option<Duration>,
) -> Result<Vec<NewEntry>, String> {
    let mut entries = if let Some(batch) = payload.downcast_ref::<Batch<T>>() {
        let removed: Vec<_> = batch
            .removed()
            .iter()
            .map(|id| (id.clone(), batch.store().clone()))
            .collect();
        entries::<T>(&batch.ids().collect::<Vec<_>>(), &removed)?
    } else if let Some(ids) = payload.downcast_ref::<Vec<T::Id>>() {
        entries::<T>(ids, &[])?
    } else {
        return Err(format!(
            "a dead letter of `{}` holds no ids",
            type_name::<T>()
        ));
    };
    let now = now_ms();
    for entry in &mut entries {
        entry.attempts = i32::try_from(attempts).unwrap_or(i32::MAX);
        entry.last_error = Some(error.to_owned());
        match retry {
            Some(delay) => entry.available_at = now.saturating_add(millis(delay)),
            None => entry.dead_at = Some(now),
        }
    }
    Ok(entries)
}

/// Adds a claimed row's keys to `frame`, as ids of the target whose table the row names.
/// Returns the target, or why the row cannot be delivered.
pub(crate) fn decode(
    entry: &Entry,
    handled: &[TypeId],
    frame: &mut Frame,
) -> Result<TypeId, String> {
    let facts = Catalog::get()
        .model(&entry.model, handled)
        .ok()
        .flatten()
        .filter(|facts| facts.model == facts.target_name)
        .ok_or_else(|| format!("no synced target model has the table `{}`", entry.model))?;
    let codec = facts
        .key
        .ok_or_else(|| format!("the keys of `{}` cannot be read", facts.target_name))?;
    let changed: Vec<DynKey> = serde_json::from_str(&entry.changed)
        .map_err(|error| format!("the outbox row's `changed` is not a list of keys: {error}"))?;
    let removed: Vec<(DynKey, Option<DynKey>)> = serde_json::from_str(&entry.removed)
        .map_err(|error| format!("the outbox row's `removed` is not a list of keys: {error}"))?;
    let mut fits = (codec.insert)(frame, changed);
    if !removed.is_empty() {
        let Deletes::Removal(removal) = facts.deletes else {
            return Err(format!(
                "the removals of `{}` cannot be read",
                facts.target_name
            ));
        };
        let (ids, stores): (Vec<DynKey>, Vec<Option<DynKey>>) = removed.into_iter().unzip();
        fits &= (removal.remove)(frame, ids, stores.into_iter().flatten().collect());
    }
    if !fits {
        return Err(format!(
            "a key of the outbox row does not fit the id type of `{}`",
            facts.target_name
        ));
    }
    Ok(facts.target)
}

fn target_facts(target: TypeId, name: &str) -> Result<&'static ModelFacts, String> {
    Catalog::get()
        .target(target)
        .ok_or_else(|| format!("`{name}` is not registered by `#[derive(Synced)]`"))
}

fn unreadable<T>() -> String {
    format!(
        "`{}` cannot be recorded in the outbox: durable mode needs an id of type i16, i32, i64 or String",
        type_name::<T>()
    )
}

/// Whether the outbox can record target `T`'s ids: what a durable registry checks of each
/// model it handles, when it is built.
pub(crate) fn check_recordable(target: TypeId, name: &str) -> Result<(), String> {
    let facts = target_facts(target, name)?;
    match facts.key {
        Some(_) => Ok(()),
        None => Err(format!(
            "`{name}` cannot be recorded in the outbox: durable mode needs an id of type i16, i32, i64 or String"
        )),
    }
}

impl NewEntry {
    /// A claimed row again, as a dead row with `error`.
    pub(crate) fn dead_copy(entry: &Entry, error: String) -> Self {
        Self {
            model: entry.model.clone(),
            changed: entry.changed.clone(),
            removed: entry.removed.clone(),
            attempts: entry.attempts,
            last_error: Some(error),
            available_at: now_ms(),
            dead_at: Some(now_ms()),
        }
    }
}

impl Keys {
    fn entry(self, model: &str, available_at: i64) -> NewEntry {
        NewEntry {
            model: model.to_owned(),
            changed: serde_json::to_string(&self.changed).expect("keys serialize"),
            removed: serde_json::to_string(&self.removed).expect("keys serialize"),
            attempts: 0,
            last_error: None,
            available_at,
            dead_at: None,
        }
    }
}

/// What a delivery round claims: up to `rows` rows available now, leased to `worker` until
/// `lease_ends`.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct Claim {
    pub(crate) worker: String,
    pub(crate) rows: i64,
    pub(crate) now: i64,
    pub(crate) lease_ends: i64,
}

/// A backend the outbox runs on: the statements of durable mode, spelled with the concrete
/// backend. Implemented for PostgreSQL, MySQL and SQLite.
pub trait OutboxBackend: Backend {
    /// Writes `entries` in one statement. Not public API.
    #[doc(hidden)]
    fn append<C: AsyncConnectionCore<Backend = Self>>(
        conn: &mut C,
        entries: Vec<NewEntry>,
    ) -> impl Future<Output = QueryResult<()>> + Send;

    /// Claims rows, skipping those another worker holds locked. Not public API.
    #[doc(hidden)]
    fn claim<C: AsyncConnection<Backend = Self>>(
        conn: &mut C,
        claim: Claim,
    ) -> impl Future<Output = QueryResult<Vec<Entry>>> + Send;

    /// Deletes the delivered rows `done` and writes the dead rows `dead`, in one transaction.
    /// Not public API.
    #[doc(hidden)]
    fn finish<C: AsyncConnection<Backend = Self>>(
        conn: &mut C,
        done: Vec<i64>,
        dead: Vec<NewEntry>,
    ) -> impl Future<Output = QueryResult<()>> + Send;

    /// The dead rows, oldest first. Not public API.
    #[doc(hidden)]
    fn dead<C: AsyncConnectionCore<Backend = Self>>(
        conn: &mut C,
    ) -> impl Future<Output = QueryResult<Vec<DeadEntry>>> + Send;

    /// Makes dead row `id` (every dead row with `None`) claimable again, its attempts reset.
    /// Not public API.
    #[doc(hidden)]
    fn revive<C: AsyncConnectionCore<Backend = Self>>(
        conn: &mut C,
        id: Option<i64>,
    ) -> impl Future<Output = QueryResult<usize>> + Send;

    /// Deletes dead row `id` (every dead row with `None`). Not public API.
    #[doc(hidden)]
    fn discard<C: AsyncConnectionCore<Backend = Self>>(
        conn: &mut C,
        id: Option<i64>,
    ) -> impl Future<Output = QueryResult<usize>> + Send;

    /// Takes (`take`: waits until this connection holds it) or releases the delivery lock of
    /// target model `model` (its table): one delivery round per model at a time across every
    /// process, so that a store never receives rows older than a delivery that already
    /// succeeded for it. Not public API.
    #[doc(hidden)]
    fn model_lock<C: AsyncConnectionCore<Backend = Self>>(
        conn: &mut C,
        model: &str,
        take: bool,
    ) -> impl Future<Output = QueryResult<()>> + Send;

    /// How many rows wait for delivery, dead ones left out. Not public API.
    #[doc(hidden)]
    fn live<C: AsyncConnectionCore<Backend = Self>>(
        conn: &mut C,
    ) -> impl Future<Output = QueryResult<i64>> + Send;
}

/// The rows a round claims of those available, oldest first: the ones with as many attempts
/// as the oldest, so that the round's attempt is every batch's own (a retried batch does not
/// lend its count to fresh ones).
pub(crate) fn same_attempts(available: Vec<(i64, i32)>) -> Vec<i64> {
    let Some(&(_, attempts)) = available.as_slice().first() else {
        return Vec::new();
    };
    available
        .into_iter()
        .filter(|&(_, a)| a == attempts)
        .map(|(id, _)| id)
        .collect()
}

/// Runs `body` in a transaction of its own on `conn`.
async fn in_transaction<C, T>(
    conn: &mut C,
    body: impl AsyncFnOnce(&mut C) -> QueryResult<T>,
) -> QueryResult<T>
where
    C: AsyncConnection,
{
    use diesel_async::TransactionManager as _;
    C::TransactionManager::begin_transaction(conn).await?;
    match body(conn).await {
        Ok(value) => {
            C::TransactionManager::commit_transaction(conn).await?;
            Ok(value)
        }
        Err(error) => {
            let _ = C::TransactionManager::rollback_transaction(conn).await;
            Err(error)
        }
    }
}

/// Implements [`OutboxBackend`] for a backend; `$lock` turns the claim's `SELECT` into one that
/// locks the rows it reads and skips those another worker locked (`FOR UPDATE SKIP LOCKED`,
/// where the backend has it: SQLite has one writer at a time). `$append` writes the rows.
macro_rules! outbox_backend {
    (
        $backend:ty,
        lock: $lock_model:expr,
        unlock: $unlock_model:expr,
        |$select:ident| $lock:expr,
        |$conn:ident, $entries:ident| $append:expr
    ) => {
        impl OutboxBackend for $backend {
            async fn model_lock<C: AsyncConnectionCore<Backend = Self>>(
                conn: &mut C,
                model: &str,
                take: bool,
            ) -> QueryResult<()> {
                let Some(sql) = (if take { $lock_model } else { $unlock_model }) else {
                    return Ok(());
                };
                let rows = diesel::sql_query(sql)
                    .bind::<diesel::sql_types::Text, _>(lock_name(model))
                    .load(conn)
                    .await?;
                lock_taken(model, rows)
            }

            async fn append<C: AsyncConnectionCore<Backend = Self>>(
                $conn: &mut C,
                $entries: Vec<NewEntry>,
            ) -> QueryResult<()> {
                $append
            }

            async fn claim<C: AsyncConnection<Backend = Self>>(
                conn: &mut C,
                claim: Claim,
            ) -> QueryResult<Vec<Entry>> {
                in_transaction(conn, async move |conn: &mut C| {
                    let $select = outbox::table
                        .select((outbox::id, outbox::attempts))
                        .filter(outbox::dead_at.is_null())
                        .filter(outbox::available_at.le(claim.now))
                        .order(outbox::id)
                        .limit(claim.rows);
                    let available: Vec<(i64, i32)> = $lock.load(conn).await?;
                    let ids = same_attempts(available);
                    if ids.is_empty() {
                        return Ok(Vec::new());
                    }
                    diesel::update(outbox::table.filter(outbox::id.eq_any(&ids)))
                        .set((
                            outbox::available_at.eq(claim.lease_ends),
                            outbox::claimed_by.eq(&claim.worker),
                            outbox::attempts.eq(outbox::attempts + 1),
                        ))
                        .execute(conn)
                        .await?;
                    outbox::table
                        .filter(outbox::id.eq_any(&ids))
                        .order(outbox::id)
                        .select(Entry::as_select())
                        .load(conn)
                        .await
                })
                .await
            }

            async fn finish<C: AsyncConnection<Backend = Self>>(
                conn: &mut C,
                done: Vec<i64>,
                dead: Vec<NewEntry>,
            ) -> QueryResult<()> {
                in_transaction(conn, async move |conn: &mut C| {
                    if !done.is_empty() {
                        diesel::delete(outbox::table.filter(outbox::id.eq_any(&done)))
                            .execute(conn)
                            .await?;
                    }
                    if !dead.is_empty() {
                        Self::append(conn, dead).await?;
                    }
                    Ok(())
                })
                .await
            }

            async fn dead<C: AsyncConnectionCore<Backend = Self>>(
                conn: &mut C,
            ) -> QueryResult<Vec<DeadEntry>> {
                outbox::table
                    .filter(outbox::dead_at.is_not_null())
                    .order(outbox::id)
                    .select(DeadEntry::as_select())
                    .load(conn)
                    .await
            }

            async fn revive<C: AsyncConnectionCore<Backend = Self>>(
                conn: &mut C,
                id: Option<i64>,
            ) -> QueryResult<usize> {
                let dead = outbox::table
                    .filter(outbox::dead_at.is_not_null())
                    .into_boxed();
                let dead = match id {
                    Some(id) => dead.filter(outbox::id.eq(id)),
                    None => dead,
                };
                diesel::update(outbox::table.filter(outbox::id.eq_any(dead.select(outbox::id))))
                    .set((
                        outbox::dead_at.eq(None::<i64>),
                        outbox::attempts.eq(0),
                        outbox::available_at.eq(now_ms()),
                        outbox::claimed_by.eq(None::<String>),
                    ))
                    .execute(conn)
                    .await
            }

            async fn discard<C: AsyncConnectionCore<Backend = Self>>(
                conn: &mut C,
                id: Option<i64>,
            ) -> QueryResult<usize> {
                let dead = outbox::dead_at.is_not_null();
                match id {
                    Some(id) => {
                        diesel::delete(outbox::table.filter(dead).filter(outbox::id.eq(id)))
                            .execute(conn)
                            .await
                    }
                    None => {
                        diesel::delete(outbox::table.filter(dead))
                            .execute(conn)
                            .await
                    }
                }
            }

            async fn live<C: AsyncConnectionCore<Backend = Self>>(
                conn: &mut C,
            ) -> QueryResult<i64> {
                outbox::table
                    .filter(outbox::dead_at.is_null())
                    .count()
                    .get_result(conn)
                    .await
            }
        }
    };
}

/// The name of a model's delivery lock.
pub(crate) fn lock_name(model: &str) -> String {
    format!("diesel_sync_outbox:{model}")
}

/// Whether a lock statement's row says it took (or released) `model`'s lock.
pub(crate) fn lock_taken(model: &str, rows: Vec<LockTaken>) -> QueryResult<()> {
    match rows.into_iter().next().and_then(|row| row.taken) {
        Some(true) => Ok(()),
        _ => Err(diesel::result::Error::QueryBuilderError(
            format!("the delivery lock of `{model}` was not taken").into(),
        )),
    }
}

/// What a lock statement returns: whether it took (or released) the lock.
#[derive(Debug, QueryableByName)]
pub(crate) struct LockTaken {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Bool>)]
    taken: Option<bool>,
}

/// The delivery lock's statements, each binding the lock's name and returning `taken`.
#[cfg(any(feature = "postgres", feature = "blocking-postgres"))]
pub(crate) const PG_LOCK: &str =
    "SELECT pg_advisory_lock(hashtextextended($1, 0)) IS NOT NULL AS taken";
#[cfg(any(feature = "postgres", feature = "blocking-postgres"))]
pub(crate) const PG_UNLOCK: &str = "SELECT pg_advisory_unlock(hashtextextended($1, 0)) AS taken";
// GET_LOCK returns 1 once taken; a day's timeout stands for "wait".
#[cfg(any(feature = "mysql", feature = "blocking-mysql"))]
pub(crate) const MYSQL_LOCK: &str = "SELECT GET_LOCK(?, 86400) = 1 AS taken";
#[cfg(any(feature = "mysql", feature = "blocking-mysql"))]
pub(crate) const MYSQL_UNLOCK: &str = "SELECT RELEASE_LOCK(?) = 1 AS taken";

#[cfg(any(feature = "postgres", feature = "blocking-postgres"))]
outbox_backend!(
    diesel::pg::Pg,
    lock: Some(PG_LOCK),
    unlock: Some(PG_UNLOCK),
    |select| select.for_update().skip_locked(),
    |conn, entries| diesel::insert_into(outbox::table)
        .values(entries)
        .execute(conn)
        .await
        .map(drop)
);
#[cfg(any(feature = "mysql", feature = "blocking-mysql"))]
outbox_backend!(
    diesel::mysql::Mysql,
    lock: Some(MYSQL_LOCK),
    unlock: Some(MYSQL_UNLOCK),
    |select| select.for_update().skip_locked(),
    |conn, entries| diesel::insert_into(outbox::table)
        .values(entries)
        .execute(conn)
        .await
        .map(drop)
);
// One statement per row (per target model and chunk of keys): diesel-async has no multi-row
// insert on SQLite.
#[cfg(feature = "sqlite")]
outbox_backend!(
    diesel::sqlite::Sqlite,
    lock: None::<&str>,
    unlock: None::<&str>,
    |select| select,
    |conn, entries| {
        for entry in entries {
            diesel::insert_into(outbox::table)
                .values(entry)
                .execute(conn)
                .await?;
        }
        Ok(())
    }
);

/// Which available rows a round claims, without a database.
#[cfg(test)]
mod tests {
    use super::same_attempts;

    #[test]
    fn a_round_claims_the_rows_with_as_many_attempts_as_the_oldest() {
        assert_eq!(same_attempts(vec![(3, 2), (4, 0), (5, 2), (9, 1)]), [3, 5]);
        assert_eq!(same_attempts(vec![(1, 0), (2, 0)]), [1, 2]);
        assert!(same_attempts(Vec::new()).is_empty());
    }
}
