//! Four worker processes share the outbox: they drain 100,000 committed ids while the handler
//! fails one call in ten, and the database's own record says every committed change arrived,
//! nothing rolled back arrived, and no product ever received an older row after a newer one.
//!
//! The parent commits through a record-only durable registry (no worker of its own); the
//! workers are this program again, started with `DIESEL_SYNC_WORKER_URL` set. Their handler
//! writes each delivered row into a `deliveries` table, in delivery order. `SQLite` is left out:
//! one process delivers there. (`harness = false`: the workers are a mode of this program.)
// Without a PostgreSQL or MySQL URL at build time the cases are not compiled: nothing runs,
// and what they would use stands unused.
#![cfg_attr(
    not(any(diesel_sync_postgres, diesel_sync_mysql)),
    allow(unused, clippy::unused_async)
)]

mod common;

#[path = "common/outbox.rs"]
mod outbox;

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::result::Error;
use diesel_async::{AsyncConnection, RunQueryDsl, SimpleAsyncConnection};
use diesel_sync::{Batch, Durable, HandlerError, Registry, RetryPolicy, SyncedConnection};

use common::{audit, products, Backend, Product};
use outbox::diesel_sync_outbox;

const WORKER_URL: &str = "DIESEL_SYNC_WORKER_URL";
const WORKER_BACKEND: &str = "DIESEL_SYNC_WORKER_BACKEND";
const WORKER_NUMBER: &str = "DIESEL_SYNC_WORKER_NUMBER";
const READY: &str = "diesel-sync worker: ready";

const WORKERS: usize = 4;
const PRODUCTS: i64 = 2_000;
/// One in ten rolls back: 1,000 commit, 100,000 ids.
const TRANSACTIONS: i64 = 1_111;
const IDS_PER_TRANSACTION: i64 = 100;

diesel::table! {
    /// Each row a worker delivered, in delivery order.
    deliveries (seq) {
        /// The delivery order.
        seq -> BigInt,
        /// Which worker process delivered it.
        worker -> Integer,
        /// The product delivered.
        product_id -> BigInt,
        /// Its price as delivered: the number of the transaction that wrote it.
        price_cents -> BigInt,
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if let Ok(url) = std::env::var(WORKER_URL) {
        let backend = std::env::var(WORKER_BACKEND).expect(WORKER_BACKEND);
        let number: i32 = std::env::var(WORKER_NUMBER)
            .expect(WORKER_NUMBER)
            .parse()
            .expect("a worker number");
        runtime.block_on(worker(&backend, &url, number));
        return;
    }
    let mut ran = 0;
    #[cfg(diesel_sync_postgres)]
    {
        runtime.block_on(postgres::drain());
        ran += 1;
    }
    #[cfg(diesel_sync_mysql)]
    {
        runtime.block_on(mysql::drain());
        ran += 1;
    }
    println!("\ntest result: ok. {ran} passed; 0 failed\n");
}

/// Runs a worker process on the backend the parent named.
async fn worker(backend: &str, url: &str, number: i32) {
    match backend {
        #[cfg(diesel_sync_postgres)]
        "postgres" => postgres::work(url, number).await,
        #[cfg(diesel_sync_mysql)]
        "mysql" => mysql::work(url, number).await,
        other => panic!("{other} is not configured"),
    }
}

/// Kills the workers when the parent is done with them, or panics.
struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

macro_rules! workers_case {
    ($module:ident, $conn:ty, $backend:expr, $deliveries_sql:expr) => {
        #[allow(dead_code)]
        mod $module {
            use super::*;

            type Conn = $conn;

            /// A worker: delivers from the outbox until killed, failing every tenth call, and
            /// writes each delivered row to `deliveries`.
            pub(super) async fn work(url: &str, number: i32) {
                let record = Arc::new(tokio::sync::Mutex::new(
                    Conn::establish(url).await.expect("connect"),
                ));
                let calls = Arc::new(AtomicU64::new(0));
                let registry: Registry<SyncedConnection<Conn>> = Registry::builder()
                    .handler_with_policy(
                        move |batch: Batch<Product>| {
                            let (record, calls) = (Arc::clone(&record), Arc::clone(&calls));
                            async move {
                                if calls.fetch_add(1, Ordering::Relaxed) % 10 == 9 {
                                    return Err(HandlerError::retryable("the marketplace is down"));
                                }
                                let rows: Vec<_> = batch
                                    .rows()
                                    .iter()
                                    .map(|p| {
                                        (
                                            deliveries::worker.eq(number),
                                            deliveries::product_id.eq(p.id),
                                            deliveries::price_cents.eq(p.price_cents),
                                        )
                                    })
                                    .collect();
                                diesel::insert_into(deliveries::table)
                                    .values(rows)
                                    .execute(&mut *record.lock().await)
                                    .await
                                    .map_err(HandlerError::retryable)?;
                                Ok(())
                            }
                        },
                        RetryPolicy::default()
                            .max_attempts(20)
                            .initial_delay(Duration::from_millis(20))
                            .max_delay(Duration::from_millis(200)),
                    )
                    .durable(
                        Durable::new(url)
                            .poll_interval(Duration::from_millis(20))
                            .lease(Duration::from_secs(60)),
                    )
                    .build();
                println!("{READY}");
                let _delivering = registry;
                std::future::pending::<()>().await;
            }

            /// The parent: starts the workers, commits, waits for the outbox to drain, and
            /// checks the deliveries against the database.
            pub(super) async fn drain() {
                let backend: Backend = $backend;
                let name = format!("workers::{}", backend.name());
                let url = outbox::database::<Conn>(backend, &format!("workers_{}", backend.name()), 0).await;
                let mut conn = Conn::establish(&url).await.expect("connect");
                conn.batch_execute($deliveries_sql).await.expect("deliveries table");
                common::Seed::seed_products(&mut conn, common::products(PRODUCTS, 50), backend).await;
                conn.batch_execute("DELETE FROM audit").await.expect("clear the audit");

                let workers = start_workers(&url, backend, &name);
                let started = Instant::now();
                let rolled_back = commit(&url).await;
                let committed_in = started.elapsed();
                let deadline = Instant::now() + Duration::from_secs(120);
                loop {
                    let left: i64 = diesel_sync_outbox::table
                        .count()
                        .get_result(&mut conn)
                        .await
                        .expect("outbox");
                    if left == 0 {
                        break;
                    }
                    if Instant::now() > deadline {
                        let rows: Vec<(i64, i32, Option<String>, i64, Option<String>, Option<i64>)> = diesel_sync_outbox::table
                            .select((
                                diesel_sync_outbox::id,
                                diesel_sync_outbox::attempts,
                                diesel_sync_outbox::last_error,
                                diesel_sync_outbox::available_at,
                                diesel_sync_outbox::claimed_by,
                                diesel_sync_outbox::dead_at,
                            ))
                            .load(&mut conn)
                            .await
                            .expect("outbox");
                        panic!("{name}: {left} outbox rows left after two minutes, at {}: {rows:?}", outbox::now_ms());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let drained_in = started.elapsed();
                drop(workers);

                let (ids, delivered, per_worker) = check(&mut conn, &rolled_back, &name).await;
                println!(
                    "test {name} ... ok ({ids} ids committed in {} transactions ({} rolled back) in {committed_in:.1?}; drained by {WORKERS} workers {drained_in:.1?} after the first commit; {delivered} rows delivered, per worker {per_worker:?})",
                    TRANSACTIONS - i64::try_from(rolled_back.len()).expect("small"),
                    rolled_back.len(),
                );
            }

            /// Starts the worker processes and waits until each is ready.
            fn start_workers(url: &str, backend: Backend, name: &str) -> Workers {
                let mut workers = Workers(
                    (0..WORKERS)
                        .map(|number| {
                            Command::new(std::env::current_exe().expect("this test's path"))
                                .env(WORKER_URL, url)
                                .env(WORKER_BACKEND, backend.name())
                                .env(WORKER_NUMBER, number.to_string())
                                .stdout(Stdio::piped())
                                .spawn()
                                .expect("start a worker")
                        })
                        .collect(),
                );
                for child in &mut workers.0 {
                    let stdout = child.stdout.take().expect("piped");
                    let ready = BufReader::new(stdout)
                        .lines()
                        .map_while(Result::ok)
                        .any(|line| line == READY);
                    assert!(ready, "{name}: a worker exited before it was ready");
                }
                workers
            }

            /// Commits the transactions through a record-only durable registry, each setting
            /// the price of its products to its own number; one in ten rolls back. Returns the
            /// numbers of those.
            async fn commit(url: &str) -> BTreeSet<i64> {
                let registry: Registry<SyncedConnection<Conn>> = Registry::builder()
                    .handler(|_: Batch<Product>| async { Ok::<(), HandlerError>(()) })
                    .durable(Durable::new(url).record_only())
                    .build();
                let inner = Conn::establish(url).await.expect("connect");
                let mut conn = SyncedConnection::new(inner, registry);
                let mut rolled_back = BTreeSet::new();
                for t in 1..=TRANSACTIONS {
                    let ids: Vec<i64> = (0..IDS_PER_TRANSACTION)
                        .map(|k| (t * 37 + k * 101) % PRODUCTS + 1)
                        .collect();
                    let result = conn
                        .transaction(async |conn| {
                            diesel::update(products::table.filter(products::id.eq_any(&ids)))
                                .set(products::price_cents.eq(t))
                                .execute(conn)
                                .await?;
                            if t % 10 == 0 {
                                return Err(Error::RollbackTransaction);
                            }
                            Ok(())
                        })
                        .await;
                    if result.is_err() {
                        rolled_back.insert(t);
                    }
                }
                rolled_back
            }

            /// Checks the deliveries against the audit and the products as committed; returns
            /// the ids committed, the rows delivered and the rows per worker.
            async fn check(
                conn: &mut Conn,
                rolled_back: &BTreeSet<i64>,
                name: &str,
            ) -> (usize, usize, [usize; WORKERS]) {
                let audited: Vec<i64> = audit::table
                    .select(audit::target_id)
                    .load(conn)
                    .await
                    .expect("audit");
                let committed: BTreeSet<i64> = audited.iter().copied().collect();
                let current: HashMap<i64, i64> = products::table
                    .select((products::id, products::price_cents))
                    .load::<(i64, i64)>(conn)
                    .await
                    .expect("products")
                    .into_iter()
                    .collect();
                let delivered: Vec<(i64, i32, i64, i64)> = deliveries::table
                    .select((deliveries::seq, deliveries::worker, deliveries::product_id, deliveries::price_cents))
                    .order(deliveries::seq)
                    .load(conn)
                    .await
                    .expect("deliveries");
                let mut last: HashMap<i64, i64> = HashMap::new();
                let mut per_worker = [0_usize; WORKERS];
                for (seq, worker, product, price) in &delivered {
                    per_worker[usize::try_from(*worker).expect("a worker number")] += 1;
                    assert!(!rolled_back.contains(price), "{name}: delivery {seq} carries rolled-back transaction {price}");
                    if let Some(before) = last.insert(*product, *price) {
                        assert!(
                            *price >= before,
                            "{name}: delivery {seq} of product {product} carries transaction {price} after {before}"
                        );
                    }
                }
                let arrived: BTreeSet<i64> = last.keys().copied().collect();
                assert_eq!(arrived, committed, "{name}: every committed product arrived, and no other");
                for product in &committed {
                    assert_eq!(last[product], current[product], "{name}: product {product}'s last delivery is its committed row");
                }
                let dead: i64 = diesel_sync_outbox::table
                    .filter(diesel_sync_outbox::dead_at.is_not_null())
                    .count()
                    .get_result(conn)
                    .await
                    .expect("outbox");
                assert_eq!(dead, 0, "{name}: no batch ran out of retries");
                (audited.len(), delivered.len(), per_worker)
            }
        }
    };
}

#[cfg(diesel_sync_postgres)]
workers_case!(
    postgres,
    diesel_async::AsyncPgConnection,
    Backend::Postgres,
    "CREATE TABLE deliveries (seq BIGSERIAL PRIMARY KEY, worker INTEGER NOT NULL, product_id BIGINT NOT NULL, price_cents BIGINT NOT NULL)"
);
#[cfg(diesel_sync_mysql)]
workers_case!(
    mysql,
    diesel_async::AsyncMysqlConnection,
    Backend::Mysql,
    "CREATE TABLE deliveries (seq BIGINT AUTO_INCREMENT PRIMARY KEY, worker INTEGER NOT NULL, product_id BIGINT NOT NULL, price_cents BIGINT NOT NULL)"
);
