//! What the durable tests share: a database with the outbox migrated in, the outbox's rows as
//! the tests read them, and the database's audit as sets of ids.
#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use diesel::prelude::*;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::{AsyncConnection, SimpleAsyncConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness};
use diesel_sync::Durable;

use crate::common::{create_database, Backend, Capture, Product, Seed};

diesel::table! {
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

/// An outbox row, as the tests read it.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = diesel_sync_outbox)]
pub struct OutboxRow {
    pub id: i64,
    pub model: String,
    pub changed: String,
    pub removed: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub available_at: i64,
    pub dead_at: Option<i64>,
}

impl OutboxRow {
    /// The ids the row records as changed.
    pub fn changed(&self) -> BTreeSet<i64> {
        serde_json::from_str::<Vec<i64>>(&self.changed)
            .expect("a JSON list of integer keys")
            .into_iter()
            .collect()
    }
}

/// The database's record of what committed: ids changed, and ids of products deleted.
#[derive(Debug, Default)]
pub struct Audit {
    pub changed: BTreeSet<i64>,
    pub removed: BTreeSet<i64>,
}

impl Audit {
    /// The changed ids whose rows were not deleted later: what arrives as rows (the deleted
    /// ones arrive as removals).
    pub fn still_present(&self) -> BTreeSet<i64> {
        self.changed.difference(&self.removed).copied().collect()
    }

    pub fn from_rows(rows: Vec<(i64, bool)>) -> Self {
        let mut audit = Self::default();
        for (id, removed) in rows {
            let ids = if removed {
                &mut audit.removed
            } else {
                &mut audit.changed
            };
            ids.insert(id);
        }
        audit
    }
}

/// Durable mode for a test: the worker looks often and leases briefly, so rows a killed
/// process held come back within seconds.
pub fn durable(url: &str) -> Durable {
    Durable::new(url)
        .poll_interval(Duration::from_millis(50))
        .lease(Duration::from_secs(2))
}

/// The outbox migrations of `backend`.
pub fn migrations(backend: Backend) -> EmbeddedMigrations {
    match backend {
        Backend::Sqlite => diesel_sync::migrations::SQLITE,
        Backend::Postgres => diesel_sync::migrations::POSTGRES,
        Backend::Mysql => diesel_sync::migrations::MYSQL,
    }
}

/// A fresh database named after `test`, with the test schema, the outbox (through its embedded
/// migrations) and `count` products, five per store; the audit starts empty. Returns its URL.
pub async fn database<C>(backend: Backend, test: &str, count: i64) -> String
where
    C: AsyncConnection + SimpleAsyncConnection + Seed + 'static,
    AsyncConnectionWrapper<C>: MigrationHarness<C::Backend>,
{
    let url = create_database(backend, &format!("durable_{test}")).await;
    let migrate = url.clone();
    tokio::task::spawn_blocking(move || {
        let mut conn = <AsyncConnectionWrapper<C> as diesel::Connection>::establish(&migrate)
            .expect("connect");
        conn.run_pending_migrations(migrations(backend))
            .map(drop)
            .expect("outbox migrations");
    })
    .await
    .expect("migrations ran");
    let mut conn = C::establish(&url).await.expect("connect");
    conn.batch_execute(backend.schema()).await.expect("schema");
    conn.seed_products(crate::common::products(count, 5), backend)
        .await;
    conn.batch_execute("DELETE FROM audit")
        .await
        .expect("clear the audit");
    url
}

/// Milliseconds since the Unix epoch, as the outbox counts time.
pub fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    i64::try_from(since.as_millis()).expect("in range")
}

/// Polls `probe` until it finds something, failing the test after a minute.
pub async fn wait_for<T>(mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not seen within a minute"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Lets `conn` wait while the worker's own connection writes: on SQLite, both share one file.
pub async fn share_the_database<C: SimpleAsyncConnection>(conn: &mut C, backend: Backend) {
    if backend == Backend::Sqlite {
        conn.batch_execute("PRAGMA busy_timeout = 5000")
            .await
            .expect("busy timeout");
    }
}

/// Each delivered product's last delivered row, by id.
pub fn last_delivered(capture: &Capture) -> HashMap<i64, Product> {
    capture
        .calls()
        .into_iter()
        .flat_map(|call| call.rows)
        .map(|row| (row.id, row))
        .collect()
}
