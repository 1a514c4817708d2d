//! W1, W1base, W2 and W3 on synchronous Diesel (`SqliteConnection` through
//! `diesel_sync::blocking`), beside the diesel-async lines of the same run: the connection most
//! Diesel applications use. Here a synced insert is one multi-row `INSERT … RETURNING` per
//! chunk, as bare Diesel's is, and no statement hops to a blocking thread.

use std::time::Instant;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::result::Error;
use diesel::SqliteConnection;
use diesel_sync::blocking::SyncedConnection;
use diesel_sync::Registry;

use crate::plan;
use crate::recorder::{Outcome, Recorder};
use crate::report::{median, Line};
use crate::run::{bulk_insert, db, w2_transactions, w2_w3_expected, Bench};
use crate::schema::{price_records, product, products, stores_sql, Backend, PriceRecord, Product};

pub(crate) const CONNECTION: &str = "SqliteConnection (blocking)";
pub(crate) const CONNECTION_IN_MEMORY: &str = "SqliteConnection (blocking, in memory)";
const RESOLVE_CHUNK: usize =
    <diesel::sqlite::Sqlite as diesel_sync::SyncBackend>::MAX_IDS_PER_QUERY;

/// A fresh SQLite database with the schema, the stores and `products` products: a file, or
/// with `--memory` an in-memory database (its path then names nothing on disk).
fn fresh(
    bench: &Bench,
    label: &str,
    products_count: usize,
    per_store: usize,
) -> QueryResult<(String, SqliteConnection)> {
    let path = if bench.memory {
        ":memory:".to_owned()
    } else {
        let dir = std::env::temp_dir().join("diesel-sync-bench");
        std::fs::create_dir_all(&dir).map_err(|e| Error::QueryBuilderError(e.into()))?;
        let path = dir.join(format!("{}_{label}_blocking.db", bench.tag));
        let path = path.display().to_string();
        remove(&path);
        path
    };
    let mut conn =
        SqliteConnection::establish(&path).map_err(|e| Error::QueryBuilderError(e.into()))?;
    conn.batch_execute(Backend::Sqlite.schema())?;
    conn.batch_execute(&stores_sql())?;
    let rows: Vec<_> = (0..products_count).map(|i| product(i, per_store)).collect();
    conn.transaction(|conn| {
        for chunk in rows.chunks(8_000) {
            diesel::insert_into(products::table)
                .values(chunk)
                .execute(conn)?;
        }
        QueryResult::Ok(())
    })?;
    Ok((path, conn))
}

/// The connection column of a line: which database the synchronous runs used.
pub(crate) fn connection(bench: &Bench) -> &'static str {
    if bench.memory {
        CONNECTION_IN_MEMORY
    } else {
        CONNECTION
    }
}

fn remove(path: &str) {
    if path == ":memory:" {
        return;
    }
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{path}{suffix}"));
    }
}

fn synced(
    conn: SqliteConnection,
) -> (
    SyncedConnection<SqliteConnection>,
    Recorder,
    Registry<SyncedConnection<SqliteConnection>>,
) {
    let recorder = Recorder::default();
    let registry = recorder.registry();
    (
        SyncedConnection::new(conn, registry.clone()),
        recorder,
        registry,
    )
}

/// W1 and W1base on the synchronous connection, `insert_chunk` rows per statement. Also
/// W1base with `RETURNING` (the statement the synced insert runs, without the sync) and a bare
/// load of the products resolve loads: the two costs the overhead ratio is made of.
pub(crate) fn w1(bench: &Bench) -> Result<Vec<Line>, String> {
    let size = bench.size;
    let (rows, expected) = bulk_insert(size.products, size.per_store, RESOLVE_CHUNK);
    let mut times = W1Times::default();
    let mut outcomes = Vec::new();
    for _ in 0..bench.runs {
        for returning in [false, true] {
            let (path, mut conn) =
                fresh(bench, "w1base", size.products, size.per_store).map_err(db)?;
            let start = Instant::now();
            conn.transaction(|conn| insert_bare(conn, &rows, size.insert_chunk, returning))
                .map_err(db)?;
            let seconds = start.elapsed().as_secs_f64();
            if returning {
                times.returning.push(seconds);
            } else {
                times.bare.push(seconds);
            }
            drop(conn);
            remove(&path);
        }

        for keys_from_rows in [false, true] {
            let (path, conn) = fresh(bench, "w1", size.products, size.per_store).map_err(db)?;
            let (mut conn, recorder, registry) = synced(conn);
            let start = Instant::now();
            conn.transaction(|conn| insert_synced(conn, &rows, size.insert_chunk, keys_from_rows))
                .map_err(db)?;
            registry.settled_blocking();
            let seconds = start.elapsed().as_secs_f64();
            if keys_from_rows {
                times.keys_from_rows.push(seconds);
            } else {
                times.synced.push(seconds);
            }
            outcomes.push(Outcome::check(&recorder.take(), &expected, &registry));
            let start = Instant::now();
            let loaded = load_products(conn.inner_mut(), &rows).map_err(db)?;
            times.resolve_load.push(start.elapsed().as_secs_f64());
            if loaded != rows.len() {
                return Err(format!("loaded {loaded} of {} products", rows.len()));
            }
            drop(conn);
            remove(&path);
        }
    }
    let bare = median(&times.bare);
    let synced = median(&times.synced);
    let load = median(&times.resolve_load);
    let baseline = Line::new("W1base", Backend::Sqlite.name(), connection(bench))
        .int("runs", times.bare.len() as u64)
        .num("median_s", bare)
        .int("rows", rows.len() as u64);
    let returning = Line::new(
        "W1base_returning",
        Backend::Sqlite.name(),
        connection(bench),
    )
    .int("runs", times.returning.len() as u64)
    .num("median_s", median(&times.returning))
    .str("baseline", "W1base")
    .num("baseline_s", bare)
    .num("ratio", median(&times.returning) / bare)
    .int("rows", rows.len() as u64);
    let line = Line::new("W1", Backend::Sqlite.name(), connection(bench))
        .int("runs", times.synced.len() as u64)
        .num("median_s", synced)
        .str("baseline", "W1base")
        .num("baseline_s", bare)
        .num("ratio", synced / bare);
    let line = crate::run::with_outcomes(line, &outcomes)
        .num("resolve_load_s", load)
        .num("ratio_without_resolve_load", (synced - load) / bare);
    let keyed_s = median(&times.keys_from_rows);
    let keyed = Line::new(
        "W1_keys_from_rows",
        Backend::Sqlite.name(),
        connection(bench),
    )
    .int("runs", times.keys_from_rows.len() as u64)
    .num("median_s", keyed_s)
    .str("baseline", "W1base")
    .num("baseline_s", bare)
    .num("ratio", keyed_s / bare);
    let keyed = crate::run::with_outcomes(keyed, &outcomes)
        .num("resolve_load_s", load)
        .num("ratio_without_resolve_load", (keyed_s - load) / bare);
    Ok(vec![baseline, returning, line, keyed])
}

/// The timings of W1's runs.
#[derive(Debug, Default)]
struct W1Times {
    bare: Vec<f64>,
    returning: Vec<f64>,
    synced: Vec<f64>,
    keys_from_rows: Vec<f64>,
    resolve_load: Vec<f64>,
}

/// Loads the products `rows` sync, as resolve does: one `eq_any` per chunk.
fn load_products(conn: &mut SqliteConnection, rows: &[PriceRecord]) -> QueryResult<usize> {
    let ids: Vec<i64> = rows.iter().map(|r| r.object_id).collect();
    let mut loaded = 0;
    for part in ids.chunks(RESOLVE_CHUNK) {
        let products: Vec<Product> = products::table
            .filter(products::id.eq_any(part))
            .select(Product::as_select())
            .load(conn)?;
        loaded += products.len();
    }
    Ok(loaded)
}

/// Inserts `rows` with bare Diesel, returning their `object_id`s when `returning`.
fn insert_bare(
    conn: &mut SqliteConnection,
    rows: &[PriceRecord],
    chunk: usize,
    returning: bool,
) -> QueryResult<()> {
    for part in rows.chunks(chunk) {
        let insert = diesel::insert_into(price_records::table).values(part);
        if returning {
            let keys: Vec<i64> = insert.returning(price_records::object_id).load(conn)?;
            std::hint::black_box(keys);
        } else {
            insert.execute(conn)?;
        }
    }
    Ok(())
}

/// Inserts `rows` with plain Diesel, which the connection captures, or through
/// `diesel_sync::insert_into(…).keys_from_rows()` when `keys_from_rows`.
fn insert_synced(
    conn: &mut SyncedConnection<SqliteConnection>,
    rows: &[PriceRecord],
    chunk: usize,
    keys_from_rows: bool,
) -> QueryResult<()> {
    for part in rows.chunks(chunk) {
        if keys_from_rows {
            diesel_sync::insert_into(price_records::table)
                .values(part)
                .keys_from_rows()
                .execute_blocking(conn)?;
        } else {
            diesel::insert_into(price_records::table)
                .values(part)
                .execute(conn)?;
        }
    }
    Ok(())
}

/// W2 (`rollback` false) or W3 (every 3rd transaction rolls back) on the synchronous connection.
///
/// Besides the bare baseline, two bare runs add the synced run's costs one at a time: each
/// save with its key returned (`RETURNING`), then also, after each COMMIT, the load of the
/// changed products that resolve runs. What the synced run takes beyond the second is the
/// library's own: the collector, and handing each batch to the dispatcher's runtime.
pub(crate) fn w2_w3(bench: &Bench, rollback: bool) -> Result<Vec<Line>, String> {
    let size = bench.size;
    let transactions = w2_transactions(size);
    let fails = |t: usize| rollback && plan::fails(t);
    let expected = w2_w3_expected(&transactions, rollback, size, RESOLVE_CHUNK);
    let (workload, label) = if rollback { ("W3", "w3") } else { ("W2", "w2") };
    let mut bare_times: [Vec<f64>; 3] = Default::default();
    let (mut synced_times, mut outcomes) = (Vec::new(), Vec::new());
    for _ in 0..bench.runs {
        for (bare, times) in Bare::ALL.into_iter().zip(&mut bare_times) {
            let (path, mut conn) = fresh(
                bench,
                &format!("{label}base"),
                size.products,
                size.per_store,
            )
            .map_err(db)?;
            let start = Instant::now();
            for (t, rows) in transactions.iter().enumerate() {
                bare.transaction(&mut conn, rows, fails(t))?;
            }
            times.push(start.elapsed().as_secs_f64());
            drop(conn);
            remove(&path);
        }

        let (path, conn) = fresh(bench, label, size.products, size.per_store).map_err(db)?;
        let (mut conn, recorder, registry) = synced(conn);
        let start = Instant::now();
        for (t, rows) in transactions.iter().enumerate() {
            // The same plain Diesel statement as the bare side: the connection captures it.
            saves(&mut conn, rows, fails(t), |conn, row| {
                diesel::insert_into(price_records::table)
                    .values(row)
                    .execute(conn)
            })?;
        }
        registry.settled_blocking();
        synced_times.push(start.elapsed().as_secs_f64());
        outcomes.push(Outcome::check(&recorder.take(), &expected, &registry));
        drop(conn);
        remove(&path);
    }
    let [bare, returning, resolved] = bare_times.each_ref().map(|times| median(times));
    let synced = median(&synced_times);
    let line = Line::new(workload, Backend::Sqlite.name(), connection(bench))
        .int("runs", synced_times.len() as u64)
        .num("median_s", synced)
        .str("baseline", &format!("{workload}base"))
        .num("baseline_s", bare)
        .num("ratio", synced / bare);
    #[allow(clippy::cast_precision_loss)] // a thousand transactions
    let per_transaction = |seconds: f64| seconds / transactions.len() as f64 * 1e6;
    let line = crate::run::with_outcomes(line, &outcomes)
        .int("transactions", transactions.len() as u64)
        .num("bare_us_per_tx", per_transaction(bare))
        .num("returning_us_per_tx", per_transaction(returning - bare))
        .num("resolve_us_per_tx", per_transaction(resolved - returning))
        .num("handoff_us_per_tx", per_transaction(synced - resolved));
    Ok(vec![line])
}

/// The bare runs of W2 and W3, each adding one of the synced run's costs to the one before.
#[derive(Debug, Clone, Copy)]
enum Bare {
    /// The saves alone.
    Plain,
    /// Each save returning its key, as the captured statement does.
    Returning,
    /// Also the load of the changed products after each COMMIT, as resolve runs it.
    ReturningAndResolved,
}

impl Bare {
    const ALL: [Bare; 3] = [Bare::Plain, Bare::Returning, Bare::ReturningAndResolved];

    fn transaction(
        self,
        conn: &mut SqliteConnection,
        rows: &[PriceRecord],
        fail: bool,
    ) -> Result<(), String> {
        saves(conn, rows, fail, |conn, row| {
            let insert = diesel::insert_into(price_records::table).values(row);
            match self {
                Bare::Plain => insert.execute(conn),
                Bare::Returning | Bare::ReturningAndResolved => {
                    let key: i64 = insert
                        .returning(price_records::object_id)
                        .get_result(conn)?;
                    std::hint::black_box(key);
                    Ok(1)
                }
            }
        })?;
        if matches!(self, Bare::ReturningAndResolved) && !fail {
            let mut ids: Vec<i64> = rows.iter().map(|row| row.object_id).collect();
            ids.sort_unstable();
            ids.dedup();
            let products: Vec<Product> = products::table
                .filter(products::id.eq_any(&ids))
                .select(Product::as_select())
                .load(conn)
                .map_err(db)?;
            std::hint::black_box(products);
        }
        Ok(())
    }
}

/// One transaction saving each row in turn with `save`, rolled back when `fail`.
fn saves<C: Connection>(
    conn: &mut C,
    rows: &[PriceRecord],
    fail: bool,
    save: impl Fn(&mut C, &PriceRecord) -> QueryResult<usize>,
) -> Result<(), String> {
    let result = conn.transaction(|conn| {
        for row in rows {
            save(conn, row)?;
        }
        if fail {
            return Err(Error::RollbackTransaction);
        }
        Ok(())
    });
    match (result, fail) {
        (Ok(()), false) | (Err(Error::RollbackTransaction), true) => Ok(()),
        (Ok(()), true) => Err("a failing transaction committed".to_owned()),
        (Err(error), _) => Err(db(error)),
    }
}
