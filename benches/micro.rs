//! Micro-benchmarks on SQLite, each beside its bare baseline in the same run:
//!
//! - `write_hook/*`: a synced write (`diesel_sync::insert_into` / `update`) against the same
//!   statement with bare diesel-async, inside a transaction that is rolled back afterwards, so
//!   only the write and its hook are timed (no flush); `insert_one/bare_returning` is the bare
//!   statement the synced insert runs on SQLite (`INSERT … RETURNING object_id`);
//! - `write_hook_blocking/*`: the same on synchronous Diesel (`SqliteConnection`), where no
//!   thread hop per statement hides the hook's cost; `*/bare_returning` adds the `RETURNING`
//!   clause the synced write runs;
//! - `capture_blocking/*`: plain Diesel through a synchronous `SyncedConnection` against the
//!   bare connection: statements on a table without a `Synced` model (planned once per
//!   statement type), a read, raw SQL (parsed every time), and a captured write to a synced
//!   table beside the bare statement with the `RETURNING` it adds;
//! - `after_commit/*`: COMMIT of a transaction with 10,000 pending product ids over 100 stores,
//!   resolve, dispatch and a no-op handler until `settled()`, against a bare COMMIT followed by
//!   loading the same 10,000 rows (the query resolve cannot avoid).
//!
//! `cargo bench --bench micro` (criterion). Collector memory and commit-to-handler latency are
//! measured by the `workloads` bench instead (a per-thread allocation counter and per-call
//! timestamps).

#[path = "micro/blocking.rs"]
mod blocking;
#[path = "workloads/schema.rs"]
#[allow(dead_code)]
mod schema;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use diesel::result::Error;
use diesel::{ExpressionMethods, QueryDsl, SelectableHelper};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, RunQueryDsl, SimpleAsyncConnection};
use diesel_sync::{Batch, HandlerError, Registry, SyncedConnection};
use tokio::runtime::Runtime;

use crate::schema::{price_records, product, products, stores_sql, Backend, PriceRecord, Product};

type Inner = SyncConnectionWrapper<diesel::SqliteConnection>;
type Conn = SyncedConnection<Inner>;

const PRODUCTS: usize = 10_000;
const PER_STORE: usize = 100;

/// Ends a timed transaction: rolls it back, carrying the time out.
enum Stop {
    Timed(Duration),
    Db(Error),
}

impl From<Error> for Stop {
    fn from(error: Error) -> Self {
        Stop::Db(error)
    }
}

fn timed(result: Result<(), Stop>) -> Duration {
    match result {
        Err(Stop::Timed(elapsed)) => elapsed,
        Err(Stop::Db(error)) => panic!("database error: {error}"),
        Ok(()) => unreachable!("timed transactions roll back"),
    }
}

/// The SQLite file of the database named `name`.
fn sqlite_path(name: &str) -> String {
    let dir = std::env::temp_dir().join("diesel-sync-bench");
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(format!("micro_{name}_{}.db", std::process::id()))
        .display()
        .to_string()
}

/// A fresh SQLite file with the workloads' schema, 100 stores and 10,000 products.
fn setup(runtime: &Runtime, name: &str, registry: Registry<Conn>) -> Conn {
    runtime.block_on(async {
        let path = sqlite_path(name);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{path}{suffix}"));
        }
        let mut inner = Inner::establish(&path).await.expect("open SQLite");
        inner
            .batch_execute(Backend::Sqlite.schema())
            .await
            .expect("schema");
        inner.batch_execute(&stores_sql()).await.expect("stores");
        let rows: Vec<Product> = (0..PRODUCTS).map(|i| product(i, PER_STORE)).collect();
        inner
            .spawn_blocking(move |conn| {
                diesel::Connection::transaction(conn, |conn| {
                    for chunk in rows.chunks(8_000) {
                        diesel::RunQueryDsl::execute(
                            diesel::insert_into(products::table).values(chunk),
                            conn,
                        )?;
                    }
                    Ok(())
                })
            })
            .await
            .expect("seed products");
        SyncedConnection::new(inner, registry)
    })
}

/// A registry whose handler does nothing.
fn no_op_registry() -> Registry<Conn> {
    Registry::builder()
        .handler(async |_batch: Batch<Product>| -> Result<(), HandlerError> { Ok(()) })
        .build()
}

#[derive(Debug, Clone, Copy)]
enum Write {
    InsertOne,
    UpdateOne,
    /// 100 rows: one store's products.
    UpdateBulk,
}

impl Write {
    fn name(self) -> &'static str {
        match self {
            Write::InsertOne => "insert_one",
            Write::UpdateOne => "update_one",
            Write::UpdateBulk => "update_bulk_100",
        }
    }
}

fn record(i: u64) -> PriceRecord {
    let i = usize::try_from(i).expect("iteration fits in usize");
    schema::price_record(i, i % PRODUCTS)
}

fn product_id(i: u64) -> i64 {
    i64::try_from(i % PRODUCTS as u64).expect("fits") + 1
}

fn store_id(i: u64) -> i64 {
    i64::try_from(i % 100).expect("fits") + 1
}

async fn synced_write(conn: &mut Conn, write: Write, i: u64) -> Result<usize, Error> {
    match write {
        Write::InsertOne => {
            diesel_sync::insert_into(price_records::table)
                .values(&record(i))
                .execute(conn)
                .await
        }
        Write::UpdateOne => {
            diesel_sync::update(products::table.find(product_id(i)))
                .set(products::price_cents.eq(i64::try_from(i).expect("fits")))
                .execute(conn)
                .await
        }
        Write::UpdateBulk => {
            diesel_sync::update(products::table.filter(products::store_id.eq(store_id(i))))
                .set(products::price_cents.eq(products::price_cents + 1))
                .execute(conn)
                .await
        }
    }
}

/// The statement the synced insert runs on SQLite (`INSERT … RETURNING object_id`), bare.
async fn bare_insert_returning(conn: &mut Inner, i: u64) -> Result<usize, Error> {
    let keys: Vec<i64> = diesel::insert_into(price_records::table)
        .values(&record(i))
        .returning(price_records::object_id)
        .load(conn)
        .await?;
    Ok(keys.len())
}

async fn bare_write(conn: &mut Inner, write: Write, i: u64) -> Result<usize, Error> {
    match write {
        Write::InsertOne => {
            diesel::insert_into(price_records::table)
                .values(&record(i))
                .execute(conn)
                .await
        }
        Write::UpdateOne => {
            diesel::update(products::table.find(product_id(i)))
                .set(products::price_cents.eq(i64::try_from(i).expect("fits")))
                .execute(conn)
                .await
        }
        Write::UpdateBulk => {
            diesel::update(products::table.filter(products::store_id.eq(store_id(i))))
                .set(products::price_cents.eq(products::price_cents + 1))
                .execute(conn)
                .await
        }
    }
}

fn write_hook(c: &mut Criterion) {
    let runtime = runtime();
    let mut conn = setup(&runtime, "write_hook", no_op_registry());
    let mut group = c.benchmark_group("write_hook");
    group
        .sample_size(50)
        .measurement_time(Duration::from_secs(5));
    for write in [Write::InsertOne, Write::UpdateOne, Write::UpdateBulk] {
        group.bench_function(format!("{}/bare", write.name()), |b| {
            b.iter_custom(|iters| {
                timed(runtime.block_on(conn.inner_mut().transaction(async |conn| {
                    let start = Instant::now();
                    for i in 0..iters {
                        black_box(bare_write(conn, write, i).await?);
                    }
                    Err::<(), _>(Stop::Timed(start.elapsed()))
                })))
            });
        });
        if let Write::InsertOne = write {
            group.bench_function("insert_one/bare_returning", |b| {
                b.iter_custom(|iters| {
                    timed(runtime.block_on(conn.inner_mut().transaction(async |conn| {
                        let start = Instant::now();
                        for i in 0..iters {
                            black_box(bare_insert_returning(conn, i).await?);
                        }
                        Err::<(), _>(Stop::Timed(start.elapsed()))
                    })))
                });
            });
        }
        group.bench_function(format!("{}/synced", write.name()), |b| {
            b.iter_custom(|iters| {
                timed(runtime.block_on(conn.transaction(async |conn| {
                    let start = Instant::now();
                    for i in 0..iters {
                        black_box(synced_write(conn, write, i).await?);
                    }
                    Err::<(), _>(Stop::Timed(start.elapsed()))
                })))
            });
        });
    }
    group.finish();
}

fn after_commit(c: &mut Criterion) {
    let runtime = runtime();
    let registry = no_op_registry();
    let mut conn = setup(&runtime, "after_commit", registry.clone());
    let ids: Vec<i64> = (1..=i64::try_from(PRODUCTS).expect("fits")).collect();
    let mut group = c.benchmark_group("after_commit");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("10k_ids_100_stores/baseline_commit_and_load", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let body_end = conn
                        .inner_mut()
                        .transaction(async |_| Ok::<_, Error>(Instant::now()))
                        .await
                        .expect("commit");
                    let rows: Vec<Product> = products::table
                        .filter(products::id.eq_any(&ids))
                        .select(Product::as_select())
                        .load(conn.inner_mut())
                        .await
                        .expect("load");
                    total += body_end.elapsed();
                    assert_eq!(black_box(rows).len(), PRODUCTS);
                }
                total
            })
        });
    });
    group.bench_function("10k_ids_100_stores/synced_no_op_handler", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let body_end = conn
                        .transaction(async |conn| {
                            conn.mark_changed::<Product>(ids.iter().copied()).await;
                            Ok::<_, Error>(Instant::now())
                        })
                        .await
                        .expect("commit");
                    registry.settled().await;
                    total += body_end.elapsed();
                }
                total
            })
        });
    });
    group.finish();
    let metrics = registry.metrics();
    assert_eq!(metrics.dead_letters, 0, "{metrics:?}");
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    write_hook(&mut criterion);
    blocking::write_hook(&mut criterion);
    blocking::capture(&mut criterion);
    blocking::commit(&mut criterion);
    after_commit(&mut criterion);
    criterion.final_summary();
}
