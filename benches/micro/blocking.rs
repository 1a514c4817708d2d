//! The write hook on synchronous Diesel (`diesel_sync::blocking` over `SqliteConnection`): no
//! statement hops to a blocking thread, so the hook's own cost is not lost in scheduling noise
//! as it is over `SyncConnectionWrapper`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use diesel::prelude::*;
use diesel::result::Error;
use diesel_sync::blocking::SyncedConnection;
use diesel_sync::{Batch, HandlerError, Registry};

use crate::schema::{price_records, product, products, stores_sql, Backend, Product};
use crate::{
    no_op_registry, product_id, record, runtime, setup, sqlite_path, store_id, timed, Stop, Write,
    PER_STORE, PRODUCTS,
};

/// The bare statement of `write` for iteration `i`.
fn bare_write(conn: &mut SqliteConnection, write: Write, i: u64) -> Result<usize, Error> {
    match write {
        Write::InsertOne => diesel::insert_into(price_records::table)
            .values(&record(i))
            .execute(conn),
        Write::UpdateOne => diesel::update(products::table.find(product_id(i)))
            .set(products::price_cents.eq(i64::try_from(i).expect("fits")))
            .execute(conn),
        Write::UpdateBulk => {
            diesel::update(products::table.filter(products::store_id.eq(store_id(i))))
                .set(products::price_cents.eq(products::price_cents + 1))
                .execute(conn)
        }
    }
}

/// The bare statement of `write` with the `RETURNING` clause the synced write adds on SQLite;
/// `None` for the bulk update, whose returned keys are measured by the synced line.
fn bare_returning(
    conn: &mut SqliteConnection,
    write: Write,
    i: u64,
) -> Option<Result<Vec<i64>, Error>> {
    match write {
        Write::InsertOne => Some(
            diesel::insert_into(price_records::table)
                .values(&record(i))
                .returning(price_records::object_id)
                .get_results(conn),
        ),
        Write::UpdateOne => Some(
            diesel::update(products::table.find(product_id(i)))
                .set(products::price_cents.eq(i64::try_from(i).expect("fits")))
                .returning(products::id)
                .get_results(conn),
        ),
        Write::UpdateBulk => None,
    }
}

/// The same statement through `diesel_sync`.
fn synced_write(
    conn: &mut SyncedConnection<SqliteConnection>,
    write: Write,
    i: u64,
) -> Result<usize, Error> {
    match write {
        Write::InsertOne => diesel_sync::insert_into(price_records::table)
            .values(&record(i))
            .execute_blocking(conn),
        Write::UpdateOne => diesel_sync::update(products::table.find(product_id(i)))
            .set(products::price_cents.eq(i64::try_from(i).expect("fits")))
            .execute_blocking(conn),
        Write::UpdateBulk => {
            diesel_sync::update(products::table.filter(products::store_id.eq(store_id(i))))
                .set(products::price_cents.eq(products::price_cents + 1))
                .execute_blocking(conn)
        }
    }
}

pub(crate) fn write_hook(c: &mut Criterion) {
    // Seeded through the async setup, then opened again synchronously.
    let name = "write_hook_blocking";
    drop(setup(&runtime(), name, no_op_registry()));
    let mut conn = SyncedConnection::new(
        SqliteConnection::establish(&sqlite_path(name)).expect("open SQLite"),
        Registry::builder()
            .handler(async |_batch: Batch<Product>| -> Result<(), HandlerError> { Ok(()) })
            .build(),
    );
    let mut group = c.benchmark_group("write_hook_blocking");
    group
        .sample_size(50)
        .measurement_time(Duration::from_secs(5));
    for write in [Write::InsertOne, Write::UpdateOne, Write::UpdateBulk] {
        group.bench_function(format!("{}/bare", write.name()), |b| {
            b.iter_custom(|iters| {
                timed(conn.inner_mut().transaction(|conn| {
                    let start = Instant::now();
                    for i in 0..iters {
                        black_box(bare_write(conn, write, i)?);
                    }
                    Err::<(), _>(Stop::Timed(start.elapsed()))
                }))
            });
        });
        if !matches!(write, Write::UpdateBulk) {
            group.bench_function(format!("{}/bare_returning", write.name()), |b| {
                b.iter_custom(|iters| {
                    timed(conn.inner_mut().transaction(|conn| {
                        let start = Instant::now();
                        for i in 0..iters {
                            let keys = bare_returning(conn, write, i).expect("a returning form");
                            black_box(keys?);
                        }
                        Err::<(), _>(Stop::Timed(start.elapsed()))
                    }))
                });
            });
        }
        group.bench_function(format!("{}/synced", write.name()), |b| {
            b.iter_custom(|iters| {
                timed(conn.transaction(|conn| {
                    let start = Instant::now();
                    for i in 0..iters {
                        black_box(synced_write(conn, write, i)?);
                    }
                    Err::<(), _>(Stop::Timed(start.elapsed()))
                }))
            });
        });
    }
    group.finish();
}

/// A statement of the capture group, for iteration `i`.
#[derive(Debug, Clone, Copy)]
enum Statement {
    /// `UPDATE stores …`: a table without a `Synced` model, planned once per statement type.
    UnsyncedUpdate,
    /// `SELECT … FROM stores WHERE id = ?`: a read, planned once per statement type.
    Read,
    /// `sql_query("UPDATE stores …")`: raw SQL on a table without a model, parsed every time.
    RawUnsyncedUpdate,
    /// `UPDATE products … WHERE id = ?` with plain Diesel: captured, with `RETURNING id`.
    SyncedUpdate,
}

impl Statement {
    fn name(self) -> &'static str {
        match self {
            Statement::UnsyncedUpdate => "unsynced_update",
            Statement::Read => "read",
            Statement::RawUnsyncedUpdate => "raw_unsynced_update",
            Statement::SyncedUpdate => "synced_update",
        }
    }

    /// Runs the statement on any synchronous SQLite connection, bare or synced.
    fn run<C>(self, conn: &mut C, i: u64) -> Result<usize, Error>
    where
        C: diesel::connection::LoadConnection<Backend = diesel::sqlite::Sqlite>,
    {
        use crate::schema::stores;
        let store = store_id(i);
        match self {
            Statement::UnsyncedUpdate => diesel::update(stores::table.find(store))
                .set(stores::sync_enabled.eq(i % 2 == 0))
                .execute(conn),
            Statement::Read => stores::table
                .find(store)
                .select(stores::name)
                .first::<String>(conn)
                .map(|name| name.len()),
            Statement::RawUnsyncedUpdate => {
                diesel::sql_query("UPDATE stores SET sync_enabled = ? WHERE id = ?")
                    .bind::<diesel::sql_types::Bool, _>(i % 2 == 0)
                    .bind::<diesel::sql_types::BigInt, _>(store)
                    .execute(conn)
            }
            Statement::SyncedUpdate => diesel::update(products::table.find(product_id(i)))
                .set(products::price_cents.eq(i64::try_from(i).expect("fits")))
                .execute(conn),
        }
    }
}

/// Plain Diesel through a synchronous `SyncedConnection` against the bare connection: what
/// planning costs a statement on a table without a `Synced` model (next to nothing once its
/// type is planned), what raw SQL costs (parsed every time), and what capture costs a write to
/// a synced table (`RETURNING` and the registration; `bare_returning` is its floor).
pub(crate) fn capture(c: &mut Criterion) {
    let name = "capture_blocking";
    drop(setup(&runtime(), name, no_op_registry()));
    let mut conn = SyncedConnection::new(
        SqliteConnection::establish(&sqlite_path(name)).expect("open SQLite"),
        Registry::builder()
            .handler(async |_batch: Batch<Product>| -> Result<(), HandlerError> { Ok(()) })
            .build(),
    );
    let mut group = c.benchmark_group("capture_blocking");
    group
        .sample_size(50)
        .measurement_time(Duration::from_secs(5));
    for statement in [
        Statement::UnsyncedUpdate,
        Statement::Read,
        Statement::RawUnsyncedUpdate,
        Statement::SyncedUpdate,
    ] {
        group.bench_function(format!("{}/bare", statement.name()), |b| {
            b.iter_custom(|iters| {
                timed(conn.inner_mut().transaction(|conn| {
                    let start = Instant::now();
                    for i in 0..iters {
                        black_box(statement.run(conn, i)?);
                    }
                    Err::<(), _>(Stop::Timed(start.elapsed()))
                }))
            });
        });
        if matches!(statement, Statement::SyncedUpdate) {
            group.bench_function(format!("{}/bare_returning", statement.name()), |b| {
                b.iter_custom(|iters| {
                    timed(conn.inner_mut().transaction(|conn| {
                        let start = Instant::now();
                        for i in 0..iters {
                            let keys = bare_returning(conn, Write::UpdateOne, i)
                                .expect("an update has a returning form");
                            black_box(keys?);
                        }
                        Err::<(), _>(Stop::Timed(start.elapsed()))
                    }))
                });
            });
        }
        group.bench_function(format!("{}/synced", statement.name()), |b| {
            b.iter_custom(|iters| {
                timed(conn.transaction(|conn| {
                    let start = Instant::now();
                    for i in 0..iters {
                        black_box(statement.run(conn, i)?);
                    }
                    Err::<(), _>(Stop::Timed(start.elapsed()))
                }))
            });
        });
    }
    group.finish();
}

/// An in-memory database with the workloads' schema, 100 stores and 10,000 products: no fsync at
/// COMMIT hides what the library adds to one.
fn in_memory() -> SqliteConnection {
    use diesel::connection::SimpleConnection;
    let mut conn = SqliteConnection::establish(":memory:").expect("open SQLite");
    conn.batch_execute(Backend::Sqlite.schema())
        .expect("schema");
    conn.batch_execute(&stores_sql()).expect("stores");
    let rows: Vec<Product> = (0..PRODUCTS).map(|i| product(i, PER_STORE)).collect();
    for chunk in rows.chunks(8_000) {
        diesel::insert_into(products::table)
            .values(chunk)
            .execute(&mut conn)
            .expect("products");
    }
    conn
}

/// What one committed transaction costs: a transaction saving one price record with plain
/// Diesel, bare and synced. The synced one adds the capture's `RETURNING`, the resolve query
/// after COMMIT and the hand-off to the dispatcher; each sample ends when its handlers are done.
pub(crate) fn commit(c: &mut Criterion) {
    let registry = Registry::builder()
        .handler(async |_batch: Batch<Product>| -> Result<(), HandlerError> { Ok(()) })
        .build();
    let mut bare = in_memory();
    let mut synced = SyncedConnection::new(in_memory(), registry.clone());
    let mut group = c.benchmark_group("commit_blocking");
    group
        .sample_size(50)
        .measurement_time(Duration::from_secs(5));
    group.bench_function("save_one_in_memory/bare", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for i in 0..iters {
                bare.transaction(|conn| bare_write(conn, Write::InsertOne, i))
                    .expect("commit");
            }
            start.elapsed()
        });
    });
    group.bench_function("save_one_in_memory/synced", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for i in 0..iters {
                synced
                    .transaction(|conn| {
                        diesel::insert_into(price_records::table)
                            .values(&record(i))
                            .execute(conn)
                    })
                    .expect("commit");
            }
            registry.settled_blocking();
            start.elapsed()
        });
    });
    group.finish();
    let metrics = registry.metrics();
    assert_eq!(metrics.dead_letters, 0, "{metrics:?}");
    assert!(metrics.delivered > 0, "{metrics:?}");
}
