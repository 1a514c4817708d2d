//! Durable delivery on PostgreSQL over loopback, in one process run:
//!
//! - **drain**: ids committed to the outbox by a record-only registry, then drained by 1, 2 and
//!   4 workers (durable registries of this process, each on its own connection and runtime
//!   thread): ids per second from the workers' start to an empty outbox;
//! - **commits**: small transactions (one product's price each) from 32 tasks on a pool of 8
//!   connections, per second: bare Diesel, in-memory delivery, durable delivery; the ratios are
//!   against bare Diesel of the same run.
//!
//! Every run checks what it delivered against what committed; a wrong count fails the run.
//! Prints one JSON object per result line.
//!
//! ```text
//! cargo bench --bench outbox -- [--smoke] [--runs N] [--only drain|commits]
//! ```
//!
//! PostgreSQL: `DIESEL_SYNC_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`).

#[path = "workloads/db.rs"]
#[allow(dead_code)]
mod db;
#[path = "workloads/recorder.rs"]
#[allow(dead_code)]
mod recorder;
#[path = "workloads/report.rs"]
#[allow(dead_code)]
mod report;
#[path = "workloads/schema.rs"]
#[allow(dead_code)]
mod schema;

use std::collections::HashSet;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use diesel_sync::{Durable, Registry, SyncedConnection};

use crate::db::{create_database, drop_database};
use crate::recorder::Recorder;
use crate::report::{median, Line};
use crate::schema::{product, products, stores_sql, Backend};

// The workloads' modules count allocations through it; this benchmark does not.
use allocation_counter as _;

type Synced = SyncedConnection<AsyncPgConnection>;

const USAGE: &str = "usage: outbox [--smoke] [--runs N] [--only drain|commits]";

/// The sizes of one invocation.
#[derive(Debug, Clone, Copy)]
struct Size {
    products: usize,
    per_store: usize,
    /// Transactions of the drain's commit phase, and ids each.
    drain_transactions: usize,
    ids_per_transaction: usize,
    /// Tasks, pool connections and transactions per task of the commit benchmark.
    tasks: usize,
    pool: usize,
    commits_per_task: usize,
}

impl Size {
    const FULL: Size = Size {
        products: 100_000,
        per_store: 1_000,
        drain_transactions: 1_000,
        ids_per_transaction: 1_000,
        tasks: 32,
        pool: 8,
        commits_per_task: 200,
    };
    const SMOKE: Size = Size {
        products: 2_000,
        per_store: 100,
        drain_transactions: 20,
        ids_per_transaction: 100,
        tasks: 8,
        pool: 4,
        commits_per_task: 10,
    };
}

fn main() -> ExitCode {
    let mut size = Size::FULL;
    let mut runs = 3;
    let mut only: Option<String> = None;
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        match word.as_str() {
            "--bench" => {}
            "--smoke" => size = Size::SMOKE,
            "--only" => only = words.next(),
            "--runs" => match words.next().and_then(|n| n.parse().ok()).filter(|&n| n > 0) {
                Some(n) => runs = n,
                None => {
                    eprintln!("{USAGE}");
                    return ExitCode::from(2);
                }
            },
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let tag = format!("diesel_sync_outbox_bench_{}", std::process::id());
    let mut ok = true;
    let wants = |part: &str| only.as_deref().is_none_or(|only| only == part);
    for workers in [1, 2, 4].into_iter().filter(|_| wants("drain")) {
        eprintln!("[postgres] drain, {workers} workers");
        ok &= report::emit(
            runtime.block_on(drain(size, runs, workers, &tag)),
            "drain",
            "postgres",
            "AsyncPgConnection",
        );
    }
    if wants("commits") {
        eprintln!("[postgres] commits");
        ok &= report::emit(
            runtime.block_on(commits(size, runs, &tag)),
            "commits",
            "postgres",
            "AsyncPgConnection",
        );
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "error: a run delivered other ids than it committed; see the lines with \"ok\":false"
        );
        ExitCode::FAILURE
    }
}

#[allow(clippy::needless_pass_by_value)] // it reads as `.map_err(database)`
fn database(error: diesel::result::Error) -> String {
    format!("database error: {error}")
}

/// A fresh database with the workloads' schema, the outbox and `size.products` products.
async fn fresh(size: Size, tag: &str, label: &str) -> Result<(String, String), String> {
    let name = format!("{tag}_{label}");
    let url = create_database(Backend::Postgres, &name).await?;
    let mut conn = AsyncPgConnection::establish(&url)
        .await
        .map_err(|e| format!("connect to {url}: {e}"))?;
    let setup = [
        Backend::Postgres.schema(),
        Backend::Postgres.outbox(),
        &stores_sql(),
    ]
    .join(";\n");
    conn.batch_execute(&setup).await.map_err(database)?;
    let rows: Vec<_> = (0..size.products)
        .map(|i| product(i, size.per_store))
        .collect();
    for chunk in rows.chunks(5_000) {
        diesel::insert_into(products::table)
            .values(chunk)
            .execute(&mut conn)
            .await
            .map_err(database)?;
    }
    Ok((name, url))
}

/// Fills the outbox through a record-only registry (untimed), then times `workers` durable
/// registries draining it. Returns the line.
#[allow(clippy::cast_precision_loss)]
async fn drain(size: Size, runs: usize, workers: usize, tag: &str) -> Result<Vec<Line>, String> {
    let ids = size.drain_transactions * size.ids_per_transaction;
    let mut seconds = Vec::new();
    let mut rows_delivered = 0;
    let mut complete = true;
    for _ in 0..runs {
        let (name, url) = fresh(size, tag, &format!("drain{workers}")).await?;
        let recorder = Recorder::default();
        let writer: Registry<Synced> = recorder
            .builder()
            .durable(Durable::new(&url).record_only())
            .build();
        let inner = AsyncPgConnection::establish(&url)
            .await
            .map_err(|e| e.to_string())?;
        let mut conn = SyncedConnection::new(inner, writer);
        let mut committed = HashSet::new();
        for t in 0..size.drain_transactions {
            let first =
                i64::try_from((t * size.ids_per_transaction) % size.products).expect("small") + 1;
            let last = first + i64::try_from(size.ids_per_transaction).expect("small") - 1;
            conn.transaction(async |conn| {
                diesel::update(products::table.filter(products::id.between(first, last)))
                    .set(products::price_cents.eq(products::price_cents + 1))
                    .execute(conn)
                    .await
            })
            .await
            .map_err(database)?;
            committed.extend(first..=last);
        }
        drop(conn);

        let start = Instant::now();
        let registries: Vec<Registry<Synced>> = (0..workers)
            .map(|_| {
                recorder
                    .builder()
                    .durable(Durable::new(&url).poll_interval(Duration::from_millis(20)))
                    .build()
            })
            .collect();
        for registry in &registries {
            registry.settled().await;
        }
        seconds.push(start.elapsed().as_secs_f64());
        for registry in &registries {
            registry.shutdown(Duration::from_secs(5)).await;
        }
        let calls = recorder.take();
        rows_delivered = calls.iter().map(|call| call.ids.len()).sum::<usize>();
        let delivered: HashSet<i64> = calls.into_iter().flat_map(|call| call.ids).collect();
        complete &= delivered == committed;
        drop(registries);
        drop_database(Backend::Postgres, &name, &url).await;
    }
    let median_s = median(&seconds);
    Ok(vec![Line::new("drain", "postgres", "AsyncPgConnection")
        .int("workers", workers as u64)
        .int("runs", runs as u64)
        .int("ids_committed", ids as u64)
        .int("outbox_rows", size.drain_transactions as u64)
        .int("rows_delivered", rows_delivered as u64)
        .num("median_s", median_s)
        .num("ids_per_s", ids as f64 / median_s)
        .check(complete)])
}

/// Which side of the commit benchmark a run is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Side {
    Bare,
    Memory,
    Durable,
    /// Durable, recording only: the commits' share of the cost, without this process's worker
    /// competing for the cores (the outbox is drained after the timed run).
    DurableRecordOnly,
}

/// Times `size.tasks` tasks each committing `size.commits_per_task` one-row transactions on a
/// pool, for each side; returns one line per side.
#[allow(clippy::cast_precision_loss)]
async fn commits(size: Size, runs: usize, tag: &str) -> Result<Vec<Line>, String> {
    let commits = size.tasks * size.commits_per_task;
    let mut lines = Vec::new();
    let mut bare_s = Vec::new();
    for side in [
        Side::Bare,
        Side::Memory,
        Side::Durable,
        Side::DurableRecordOnly,
    ] {
        let mut seconds = Vec::new();
        let mut complete = true;
        for _ in 0..runs {
            let (name, url) = fresh(size, tag, &format!("commits_{side:?}").to_lowercase()).await?;
            let recorder = Recorder::default();
            let (elapsed, registry) = match side {
                Side::Bare => {
                    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(&url);
                    let pool = Pool::builder(manager)
                        .max_size(size.pool)
                        .build()
                        .map_err(|e| e.to_string())?;
                    (run_tasks(size, move || pool.clone()).await?, None)
                }
                Side::Memory | Side::Durable | Side::DurableRecordOnly => {
                    let registry: Registry<Synced> = match side {
                        Side::Durable => recorder.builder().durable(Durable::new(&url)).build(),
                        Side::DurableRecordOnly => recorder
                            .builder()
                            .durable(Durable::new(&url).record_only())
                            .build(),
                        _ => recorder.registry(),
                    };
                    let manager = Synced::pool_manager(url.clone(), registry.clone());
                    let pool = Pool::builder(manager)
                        .max_size(size.pool)
                        .build()
                        .map_err(|e| e.to_string())?;
                    (run_tasks(size, move || pool.clone()).await?, Some(registry))
                }
            };
            seconds.push(elapsed);
            if let Some(registry) = registry {
                // Untimed: everything committed arrives (recorded only: a worker drains it).
                let worker: Option<Registry<Synced>> = (side == Side::DurableRecordOnly)
                    .then(|| recorder.builder().durable(Durable::new(&url)).build());
                if let Some(worker) = &worker {
                    worker.settled().await;
                    worker.shutdown(Duration::from_secs(5)).await;
                }
                registry.settled().await;
                let delivered: HashSet<i64> = recorder
                    .take()
                    .into_iter()
                    .flat_map(|call| call.ids)
                    .collect();
                complete &= delivered.len() == commits.min(size.products);
                registry.shutdown(Duration::from_secs(5)).await;
            }
            drop_database(Backend::Postgres, &name, &url).await;
        }
        let median_s = median(&seconds);
        let mut line = Line::new(
            &format!("commits_{side:?}").to_lowercase(),
            "postgres",
            "AsyncPgConnection",
        )
        .int("tasks", size.tasks as u64)
        .int("pool", size.pool as u64)
        .int("commits", commits as u64)
        .num("median_s", median_s)
        .num("commits_per_s", commits as f64 / median_s);
        if side == Side::Bare {
            bare_s = seconds;
        } else {
            let bare = median(&bare_s);
            line = line
                .str("baseline", "commits_bare")
                .num("baseline_commits_per_s", commits as f64 / bare)
                .num("ratio_of_bare_commits_per_s", bare / median_s);
        }
        lines.push(line.check(complete));
    }
    Ok(lines)
}

/// A pool the commit tasks share: bare or synced.
trait CommitPool: Clone + Send + Sync + 'static {
    /// Commits one transaction setting product `id`'s price.
    fn commit(&self, id: i64) -> impl std::future::Future<Output = QueryResult<()>> + Send;
}

impl<C> CommitPool for Pool<C>
where
    C: diesel_async::pooled_connection::PoolableConnection<Backend = diesel::pg::Pg> + 'static,
{
    async fn commit(&self, id: i64) -> QueryResult<()> {
        let mut conn = self
            .get()
            .await
            .map_err(|e| diesel::result::Error::QueryBuilderError(e.into()))?;
        conn.transaction(async |conn| set_price(conn, id).await)
            .await
    }
}

async fn set_price<C>(conn: &mut C, id: i64) -> QueryResult<()>
where
    C: diesel_async::AsyncConnection<Backend = diesel::pg::Pg>,
{
    diesel::update(products::table.find(id))
        .set(products::price_cents.eq(products::price_cents + 1))
        .execute(conn)
        .await
        .map(drop)
}

/// Runs the commit tasks on `pool`; returns the seconds they took.
async fn run_tasks<P: CommitPool>(size: Size, pool: impl Fn() -> P) -> Result<f64, String> {
    let start = Instant::now();
    let tasks: Vec<_> = (0..size.tasks)
        .map(|task| {
            let pool = pool();
            tokio::spawn(async move {
                for n in 0..size.commits_per_task {
                    let id = i64::try_from((task * size.commits_per_task + n) % size.products)
                        .expect("small")
                        + 1;
                    pool.commit(id).await?;
                }
                QueryResult::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await.map_err(|e| e.to_string())?.map_err(database)?;
    }
    Ok(start.elapsed().as_secs_f64())
}
