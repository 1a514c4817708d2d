//! The workloads: setup (untimed), the timed region (writes, commits and after-commit work up
//! to `registry.settled()`), verification (untimed), and the result line of each.

use std::time::{Duration, Instant};

use diesel::result::Error;
use diesel::QueryResult;
use diesel_async::{AsyncConnection, SimpleAsyncConnection};
use diesel_sync::{Registry, SyncedConnection};

use crate::db::{create_database, drop_database, Db, Footprint, SyncedConn};
use crate::plan::{self, SplitMix64, SEED};
use crate::recorder::{Expected, Outcome, Recorder};
use crate::report::{median, micros, percentile, Line};
use crate::schema::{price_record, product, stores_sql, Backend, PriceRecord};

/// How big each workload is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Size {
    pub(crate) products: usize,
    pub(crate) per_store: usize,
    pub(crate) transactions: usize,
    pub(crate) savepoint_picks: usize,
    pub(crate) bulk_update_picks: usize,
    pub(crate) scale_ids: usize,
    pub(crate) scale_per_store: usize,
    /// Rows per `insert_into` in W1 and the scale run.
    pub(crate) insert_chunk: usize,
    /// Pending ids of the two collector measurements.
    pub(crate) collector_ids: [usize; 2],
}

impl Size {
    /// The standard sizes. The scale run keeps 100 stores: 10,000 products each.
    pub(crate) const FULL: Size = Size {
        products: 10_000,
        per_store: 100,
        transactions: 1_000,
        savepoint_picks: 200,
        bulk_update_picks: 1_000,
        scale_ids: 1_000_000,
        scale_per_store: 10_000,
        insert_chunk: 10_000,
        collector_ids: [10_000, 1_000_000],
    };

    /// `--smoke`: small enough for CI; only the correctness fields mean anything.
    pub(crate) const SMOKE: Size = Size {
        products: 1_000,
        per_store: 100,
        transactions: 30,
        savepoint_picks: 20,
        bulk_update_picks: 100,
        scale_ids: 20_000,
        scale_per_store: 200,
        insert_chunk: 10_000,
        collector_ids: [1_000, 20_000],
    };
}

/// One invocation's settings.
#[derive(Debug, Clone)]
pub(crate) struct Bench {
    pub(crate) size: Size,
    pub(crate) runs: usize,
    /// Prefix of every database this process creates.
    pub(crate) tag: String,
    /// `--memory`: synchronous SQLite on in-memory databases, so no fsync at COMMIT hides the
    /// library's own cost.
    pub(crate) memory: bool,
    /// `--durable`: W1 and W2 run once more with durable delivery (the outbox), compared with
    /// the in-memory runs.
    pub(crate) durable: bool,
}

/// The per-id time of W1 on this backend, for the scale run's comparison.
pub(crate) type W1PerId = Option<f64>;

/// A fresh database: created, schema applied, stores and products seeded.
struct Fresh {
    backend: Backend,
    name: String,
    url: String,
}

impl Fresh {
    async fn new<D: Db>(
        bench: &Bench,
        label: &str,
        products: usize,
        per_store: usize,
    ) -> Result<(Self, D::Conn), String> {
        let name = format!("{}_{label}", bench.tag);
        let url = create_database(D::BACKEND, &name).await?;
        let mut conn = D::Conn::establish(&url)
            .await
            .map_err(|e| format!("connect to {url}: {e}"))?;
        conn.batch_execute(D::BACKEND.schema()).await.map_err(db)?;
        conn.batch_execute(D::BACKEND.outbox()).await.map_err(db)?;
        if D::BACKEND == Backend::Sqlite {
            // Durable runs: the outbox worker's connection writes to the same file.
            conn.batch_execute("PRAGMA busy_timeout = 5000")
                .await
                .map_err(db)?;
        }
        conn.batch_execute(&stores_sql()).await.map_err(db)?;
        let rows = (0..products).map(|i| product(i, per_store)).collect();
        D::seed_products(&mut conn, rows).await.map_err(db)?;
        let fresh = Self {
            backend: D::BACKEND,
            name,
            url,
        };
        Ok((fresh, conn))
    }

    /// Drops the database; close its connection first.
    async fn remove(self) {
        drop_database(self.backend, &self.name, &self.url).await;
    }
}

#[allow(clippy::needless_pass_by_value)] // it reads as `.map_err(db)`
pub(crate) fn db(error: Error) -> String {
    format!("database error: {error}")
}

/// A transaction that must commit, or must fail with `RollbackTransaction` when `fail`.
fn expect_outcome<T>(result: QueryResult<T>, fail: bool) -> Result<Option<T>, String> {
    match (result, fail) {
        (Ok(value), false) => Ok(Some(value)),
        (Err(Error::RollbackTransaction), true) => Ok(None),
        (Ok(_), true) => Err("a failing transaction committed".to_owned()),
        (Err(error), _) => Err(db(error)),
    }
}

/// Timings and outcomes of a workload's runs, synced and bare interleaved.
#[derive(Debug, Default)]
struct Runs {
    synced: Vec<f64>,
    bare: Vec<f64>,
    outcomes: Vec<Outcome>,
    footprint: Option<Footprint>,
    /// A bare load of the delivered products, as resolve runs it (W1 and scale).
    resolve_load: Vec<f64>,
    /// Where the time goes (W1 and scale).
    synced_phases: Phases,
    bare_phases: Phases,
}

/// The phases of a timed insert transaction, in seconds: the body (the writes), what
/// `transaction` does after the body (COMMIT; for a synced connection also resolve and
/// dispatch), and the wait in `settled()` for the handlers.
#[derive(Debug, Default)]
struct Phases {
    body: Vec<f64>,
    after_body: Vec<f64>,
    settle: Vec<f64>,
}

impl Phases {
    /// Records one run; returns its total.
    fn push(
        &mut self,
        start: Instant,
        body_end: Instant,
        returned: Instant,
        settled: Option<Instant>,
    ) -> f64 {
        self.body.push((body_end - start).as_secs_f64());
        self.after_body.push((returned - body_end).as_secs_f64());
        let end = settled.unwrap_or(returned);
        if settled.is_some() {
            self.settle.push((end - returned).as_secs_f64());
        }
        (end - start).as_secs_f64()
    }

    fn fields(&self, line: Line, prefix: &str) -> Line {
        if self.body.is_empty() {
            return line;
        }
        let line = line
            .num(&format!("{prefix}_body_s"), median(&self.body))
            .num(&format!("{prefix}_after_body_s"), median(&self.after_body));
        if self.settle.is_empty() {
            line
        } else {
            line.num(&format!("{prefix}_settle_s"), median(&self.settle))
        }
    }
}

/// Times a bare insert transaction.
async fn timed_bare_insert<D: Db>(
    conn: &mut D::Conn,
    rows: &[PriceRecord],
    chunk: usize,
    returning: bool,
    phases: &mut Phases,
) -> Result<f64, String> {
    let start = Instant::now();
    let body_end = D::insert_bare(conn, rows, chunk, returning)
        .await
        .map_err(db)?;
    Ok(phases.push(start, body_end, Instant::now(), None))
}

/// Times a synced insert transaction up to `settled()`.
async fn timed_synced_insert<D: Db>(
    conn: &mut SyncedConn<D>,
    registry: &Registry<SyncedConn<D>>,
    rows: &[PriceRecord],
    chunk: usize,
    keys_from_rows: bool,
    phases: &mut Phases,
) -> Result<f64, String> {
    let start = Instant::now();
    let body_end = D::insert_synced(conn, rows, chunk, keys_from_rows)
        .await
        .map_err(db)?;
    let returned = Instant::now();
    registry.settled().await;
    Ok(phases.push(start, body_end, returned, Some(Instant::now())))
}

impl Runs {
    /// One synced run of W1 or scale on `conn`: the timed insert up to `settled()`, then
    /// (untimed) its outcome, a bare load of the products resolve loaded, and on the first run
    /// the collector's footprint. Returns the connection.
    async fn synced_insert<D: Db>(
        &mut self,
        conn: D::Conn,
        rows: &[PriceRecord],
        chunk: usize,
        keys_from_rows: bool,
        expected: &Expected,
        durable: Option<&str>,
    ) -> Result<SyncedConn<D>, String> {
        let (mut conn, recorder, registry) = synced::<D>(conn, durable);
        let seconds = timed_synced_insert::<D>(
            &mut conn,
            &registry,
            rows,
            chunk,
            keys_from_rows,
            &mut self.synced_phases,
        )
        .await?;
        self.synced.push(seconds);
        self.outcomes
            .push(Outcome::check(&recorder.take(), expected, &registry));
        // A durable registry's worker stops here, before the next run's database of the same
        // name exists.
        registry.shutdown(Duration::from_secs(5)).await;
        self.resolve_load
            .push(time_resolve_load::<D>(conn.inner_mut(), rows).await?);
        if self.footprint.is_none() {
            let replay = registrations(rows, chunk);
            let footprint = D::collector_footprint(&mut conn, &replay, &[]).await;
            self.footprint = Some(footprint.map_err(db)?);
        }
        Ok(conn)
    }

    /// The line: medians, ratio, and the outcome (the first failing run's, else the last's).
    fn line<D: Db>(&self, workload: &str, baseline: &str) -> Line {
        let synced = median(&self.synced);
        let bare = median(&self.bare);
        let line = Line::new(workload, D::BACKEND.name(), D::CONNECTION)
            .int("runs", self.synced.len() as u64)
            .num("median_s", synced)
            .str("baseline", baseline)
            .num("baseline_s", bare)
            .num("ratio", synced / bare);
        let line = with_outcomes(line, &self.outcomes);
        let line = if self.resolve_load.is_empty() {
            line
        } else {
            let load = median(&self.resolve_load);
            line.num("resolve_load_s", load)
                .num("ratio_without_resolve_load", (synced - load) / bare)
        };
        let line = self.synced_phases.fields(line, "synced");
        let line = self.bare_phases.fields(line, "baseline");
        with_footprint(line, self.footprint)
    }
}

/// The outcome fields of a workload's runs: the first failing run's, else the last's, and
/// whether every run delivered the same.
pub(crate) fn with_outcomes(line: Line, outcomes: &[Outcome]) -> Line {
    let outcome = outcomes
        .iter()
        .find(|o| !o.ok())
        .or(outcomes.last())
        .copied();
    let consistent = outcomes
        .windows(2)
        .all(|w| w[0].deterministic() == w[1].deterministic());
    with_outcome(line, outcome)
        .bool("runs_consistent", consistent)
        .check(consistent)
}

fn with_outcome(line: Line, outcome: Option<Outcome>) -> Line {
    let Some(o) = outcome else {
        return line.check(false).str("error", "no run completed");
    };
    line.int("handler_calls", o.calls)
        .int("expected_calls", o.expected_calls)
        .int("merged_calls", o.merged_calls())
        .int("ids_delivered", o.ids_total)
        .int("ids_distinct", o.ids_distinct)
        .int("expected_ids", o.expected_ids)
        .int("expected_distinct", o.expected_distinct)
        .int("resolve_queries", o.resolve_queries)
        .int("expected_resolve_queries", o.expected_resolve_queries)
        .int("ids_leaked", o.leaked)
        .int("ids_leaked_rolled_back_only", o.leaked_rolled_back_only)
        .int("ids_missed", o.missed)
        .int("misrouted_calls", o.misrouted_calls)
        .int("dead_letters", o.dead_letters)
        .check(o.ok())
}

#[allow(clippy::cast_precision_loss)] // byte and id counts far below 2^52
fn with_footprint(line: Line, footprint: Option<Footprint>) -> Line {
    match footprint {
        Some(f) if f.pending > 0 => line
            .int("collector_pending_ids", f.pending as u64)
            .int("collector_peak_bytes", f.peak_bytes)
            .num(
                "collector_bytes_per_pending_id",
                f.peak_bytes as f64 / f.pending as f64,
            ),
        _ => line.null("collector_bytes_per_pending_id"),
    }
}

/// A synced connection with a fresh recorder; with `durable`, delivered through the outbox of
/// the database at that URL.
fn synced<D: Db>(
    conn: D::Conn,
    durable: Option<&str>,
) -> (SyncedConn<D>, Recorder, Registry<SyncedConn<D>>) {
    let recorder = Recorder::default();
    let registry = match durable {
        Some(url) => D::durable_registry(&recorder, url),
        None => D::registry(&recorder),
    };
    (
        SyncedConnection::new(conn, registry.clone()),
        recorder,
        registry,
    )
}

/// Each registration of a workload, as the write path hands ids to the collector (one call per
/// `execute`), to replay for the collector measurement.
fn registrations(rows: &[PriceRecord], per_execute: usize) -> Vec<Vec<i64>> {
    rows.chunks(per_execute)
        .map(|chunk| chunk.iter().map(|r| r.object_id).collect())
        .collect()
}

/// Price records for product indices `indices`, numbered from `k` in write order.
pub(crate) fn records(indices: &[usize], k: &mut usize) -> Vec<PriceRecord> {
    indices
        .iter()
        .map(|&i| {
            let record = price_record(*k, i);
            *k += 1;
            record
        })
        .collect()
}

/// W1's (and scale's) price records, one per product of `products`, and what committing them in
/// one transaction must deliver.
pub(crate) fn bulk_insert(
    products: usize,
    per_store: usize,
    chunk: usize,
) -> (Vec<PriceRecord>, Expected) {
    let indices: Vec<usize> = (0..products).collect();
    let rows = records(&indices, &mut 0);
    let mut expected = Expected::default();
    expected.commit(rows.iter().map(|r| r.object_id), per_store, chunk);
    (rows, expected)
}

/// Times a bare load of the products `rows` sync, chunked as resolve chunks it: the part of
/// the after-commit work that no implementation can skip.
async fn time_resolve_load<D: Db>(conn: &mut D::Conn, rows: &[PriceRecord]) -> Result<f64, String> {
    let ids: Vec<i64> = rows.iter().map(|r| r.object_id).collect();
    let start = Instant::now();
    let loaded = D::load_products(conn, &ids, D::RESOLVE_CHUNK)
        .await
        .map_err(db)?;
    let seconds = elapsed(start);
    if loaded == ids.len() {
        Ok(seconds)
    } else {
        Err(format!("loaded {loaded} of {} products", ids.len()))
    }
}

fn elapsed(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}

/// W1 (synced) and W1base (bare): one transaction inserting one price record per product.
/// Also W1base with `RETURNING` (the statement the synced insert runs, without the sync), to
/// tell the database's share of the overhead from the sync machinery's, and W1 with
/// `keys_from_rows()`, which runs no `RETURNING`. Returns the lines and W1's median time per id.
#[allow(clippy::cast_precision_loss)]
pub(crate) async fn w1<D: Db>(bench: &Bench) -> Result<(Vec<Line>, f64), String> {
    let size = bench.size;
    let (rows, expected) = bulk_insert(size.products, size.per_store, D::RESOLVE_CHUNK);
    // MySQL has no `RETURNING`: its synced insert runs the bare statement.
    let has_returning = D::BACKEND != Backend::Mysql;
    let mut runs = Runs::default();
    // The same inserts with `keys_from_rows()`: no `RETURNING` (MySQL never has one).
    let mut keyed = Runs::default();
    let mut returning = Vec::new();
    let mut returning_phases = Phases::default();
    // The same inserts delivered through the outbox (`--durable`).
    let mut durable = Runs::default();
    for _ in 0..bench.runs {
        let (fresh, mut conn) =
            Fresh::new::<D>(bench, "w1base", size.products, size.per_store).await?;
        let seconds = timed_bare_insert::<D>(
            &mut conn,
            &rows,
            size.insert_chunk,
            false,
            &mut runs.bare_phases,
        )
        .await?;
        runs.bare.push(seconds);
        drop(conn);
        fresh.remove().await;

        if has_returning {
            let (fresh, mut conn) =
                Fresh::new::<D>(bench, "w1base_returning", size.products, size.per_store).await?;
            let seconds = timed_bare_insert::<D>(
                &mut conn,
                &rows,
                size.insert_chunk,
                true,
                &mut returning_phases,
            )
            .await?;
            returning.push(seconds);
            drop(conn);
            fresh.remove().await;
        }

        let (fresh, conn) = Fresh::new::<D>(bench, "w1", size.products, size.per_store).await?;
        let conn = runs
            .synced_insert::<D>(conn, &rows, size.insert_chunk, false, &expected, None)
            .await?;
        drop(conn);
        fresh.remove().await;

        if has_returning {
            let (fresh, conn) =
                Fresh::new::<D>(bench, "w1_keys", size.products, size.per_store).await?;
            let conn = keyed
                .synced_insert::<D>(conn, &rows, size.insert_chunk, true, &expected, None)
                .await?;
            drop(conn);
            fresh.remove().await;
        }

        if bench.durable {
            let (fresh, conn) =
                Fresh::new::<D>(bench, "w1_durable", size.products, size.per_store).await?;
            let url = fresh.url.clone();
            let conn = durable
                .synced_insert::<D>(conn, &rows, size.insert_chunk, false, &expected, Some(&url))
                .await?;
            drop(conn);
            fresh.remove().await;
        }
    }
    let base = Line::new("W1base", D::BACKEND.name(), D::CONNECTION)
        .int("runs", runs.bare.len() as u64)
        .num("median_s", median(&runs.bare))
        .int("rows", rows.len() as u64);
    let base = runs.bare_phases.fields(base, "baseline");
    let mut lines = vec![base];
    if has_returning {
        let line = Line::new("W1base_returning", D::BACKEND.name(), D::CONNECTION)
            .int("runs", returning.len() as u64)
            .num("median_s", median(&returning))
            .str("baseline", "W1base")
            .num("baseline_s", median(&runs.bare))
            .num("ratio", median(&returning) / median(&runs.bare))
            .int("rows", rows.len() as u64);
        lines.push(returning_phases.fields(line, "baseline"));
    }
    let per_id = median(&runs.synced) / rows.len() as f64;
    lines.push(
        runs.line::<D>("W1", "W1base")
            .num("us_per_id", per_id * 1e6),
    );
    if has_returning {
        keyed.bare.clone_from(&runs.bare);
        lines.push(keyed.line::<D>("W1_keys_from_rows", "W1base"));
    }
    if bench.durable {
        // Against the in-memory W1 of the same run.
        durable.bare.clone_from(&runs.synced);
        lines.push(durable.line::<D>("W1durable", "W1"));
    }
    Ok((lines, per_id))
}

/// The W2/W3 transactions: plans from one generator (seed 42), price records numbered in
/// write order (rolled-back writes included).
pub(crate) fn w2_transactions(size: Size) -> Vec<Vec<PriceRecord>> {
    let mut k = 0;
    plan::transaction_plans(size.products, size.transactions)
        .iter()
        .map(|plan| records(plan, &mut k))
        .collect()
}

/// What W2 (`rollback = false`) or W3 must deliver, given the resolve chunk of the backend.
pub(crate) fn w2_w3_expected(
    transactions: &[Vec<PriceRecord>],
    rollback: bool,
    size: Size,
    chunk: usize,
) -> Expected {
    let mut expected = Expected::default();
    for (t, rows) in transactions.iter().enumerate() {
        let ids = rows.iter().map(|r| r.object_id);
        if rollback && plan::fails(t) {
            expected.roll_back(ids);
        } else {
            expected.commit(ids, size.per_store, chunk);
        }
    }
    expected
}

/// W2 (`rollback = false`) and W3 (`rollback = true`): 1,000 transactions of 10 saves each;
/// in W3 every 3rd rolls back after its saves.
pub(crate) async fn w2_w3<D: Db>(bench: &Bench, rollback: bool) -> Result<Vec<Line>, String> {
    let size = bench.size;
    let transactions = w2_transactions(size);
    let fails = |t: usize| rollback && plan::fails(t);
    let expected = w2_w3_expected(&transactions, rollback, size, D::RESOLVE_CHUNK);
    let (workload, label) = if rollback { ("W3", "w3") } else { ("W2", "w2") };
    let mut runs = Runs::default();
    // W2 delivered through the outbox (`--durable`).
    let mut durable = Runs::default();
    for _ in 0..bench.runs {
        let (fresh, mut conn) = Fresh::new::<D>(
            bench,
            &format!("{label}base"),
            size.products,
            size.per_store,
        )
        .await?;
        let start = Instant::now();
        for (t, rows) in transactions.iter().enumerate() {
            expect_outcome(D::saves_bare(&mut conn, rows, fails(t)).await, fails(t))?;
        }
        runs.bare.push(elapsed(start));
        drop(conn);
        fresh.remove().await;

        let (fresh, conn) = Fresh::new::<D>(bench, label, size.products, size.per_store).await?;
        let (mut conn, recorder, registry) = synced::<D>(conn, None);
        let start = Instant::now();
        for (t, rows) in transactions.iter().enumerate() {
            expect_outcome(D::saves_synced(&mut conn, rows, fails(t)).await, fails(t))?;
        }
        registry.settled().await;
        runs.synced.push(elapsed(start));
        runs.outcomes
            .push(Outcome::check(&recorder.take(), &expected, &registry));
        if runs.footprint.is_none() {
            let replay = registrations(&transactions[0], 1);
            runs.footprint = Some(
                D::collector_footprint(&mut conn, &replay, &[])
                    .await
                    .map_err(db)?,
            );
        }
        drop(conn);
        fresh.remove().await;

        if bench.durable && !rollback {
            let (fresh, conn) =
                Fresh::new::<D>(bench, "w2_durable", size.products, size.per_store).await?;
            let (mut conn, recorder, registry) = synced::<D>(conn, Some(&fresh.url));
            let start = Instant::now();
            for rows in &transactions {
                expect_outcome(D::saves_synced(&mut conn, rows, false).await, false)?;
            }
            registry.settled().await;
            durable.synced.push(elapsed(start));
            durable
                .outcomes
                .push(Outcome::check(&recorder.take(), &expected, &registry));
            registry.shutdown(Duration::from_secs(5)).await;
            drop(conn);
            fresh.remove().await;
        }
    }
    let baseline = format!("{workload}base");
    let committed = if rollback {
        transactions.len() - (1..=transactions.len()).filter(|n| n % 3 == 0).count()
    } else {
        transactions.len()
    };
    let mut lines = vec![runs
        .line::<D>(workload, &baseline)
        .int("transactions", transactions.len() as u64)
        .int("committed_transactions", committed as u64)];
    if !durable.synced.is_empty() {
        // Against the in-memory W2 of the same run.
        durable.bare.clone_from(&runs.synced);
        lines.push(
            durable
                .line::<D>("W2durable", workload)
                .int("transactions", transactions.len() as u64),
        );
    }
    Ok(lines)
}

/// W4: one transaction saves 100 products, a savepoint saves 100 others and fails, the outer
/// commits. Only the first 100 are delivered.
pub(crate) async fn w4<D: Db>(bench: &Bench) -> Result<Vec<Line>, String> {
    let size = bench.size;
    let picks = SplitMix64::new(SEED).distinct(size.products, size.savepoint_picks);
    let rows = records(&picks, &mut 0);
    let (outer, inner) = rows.split_at(rows.len() / 2);
    let mut expected = Expected::default();
    expected.commit(
        outer.iter().map(|r| r.object_id),
        size.per_store,
        D::RESOLVE_CHUNK,
    );
    expected.roll_back(inner.iter().map(|r| r.object_id));
    let mut runs = Runs::default();
    for _ in 0..bench.runs {
        let (fresh, mut conn) =
            Fresh::new::<D>(bench, "w4base", size.products, size.per_store).await?;
        let start = Instant::now();
        D::savepoint_bare(&mut conn, outer, inner)
            .await
            .map_err(db)?;
        runs.bare.push(elapsed(start));
        drop(conn);
        fresh.remove().await;

        let (fresh, conn) = Fresh::new::<D>(bench, "w4", size.products, size.per_store).await?;
        let (mut conn, recorder, registry) = synced::<D>(conn, None);
        let start = Instant::now();
        D::savepoint_synced(&mut conn, outer, inner)
            .await
            .map_err(db)?;
        registry.settled().await;
        runs.synced.push(elapsed(start));
        runs.outcomes
            .push(Outcome::check(&recorder.take(), &expected, &registry));
        if runs.footprint.is_none() {
            let (outer, inner) = (registrations(outer, 1), registrations(inner, 1));
            runs.footprint = Some(
                D::collector_footprint(&mut conn, &outer, &inner)
                    .await
                    .map_err(db)?,
            );
        }
        drop(conn);
        fresh.remove().await;
    }
    Ok(vec![runs.line::<D>("W4", "W4base")])
}

/// W5: 1,000 price records inserted without sync (setup), then one transaction runs one
/// `UPDATE price_records SET amount_cents = 1234 WHERE id IN (…)` over all of them.
pub(crate) async fn w5<D: Db>(bench: &Bench) -> Result<Vec<Line>, String> {
    let size = bench.size;
    let picks = SplitMix64::new(SEED).distinct(size.products, size.bulk_update_picks);
    let rows = records(&picks, &mut 0);
    let mut expected = Expected::default();
    expected.commit(
        rows.iter().map(|r| r.object_id),
        size.per_store,
        D::RESOLVE_CHUNK,
    );
    let setup = async |label: &str| -> Result<(Fresh, D::Conn, Vec<i64>), String> {
        let (fresh, mut conn) =
            Fresh::new::<D>(bench, label, size.products, size.per_store).await?;
        D::seed_price_records(&mut conn, rows.clone())
            .await
            .map_err(db)?;
        let ids = D::price_record_ids(&mut conn).await.map_err(db)?;
        if ids.len() != rows.len() {
            return Err(format!(
                "seeded {} price records, found {}",
                rows.len(),
                ids.len()
            ));
        }
        Ok((fresh, conn, ids))
    };
    let mut runs = Runs::default();
    for _ in 0..bench.runs {
        let (fresh, mut conn, ids) = setup("w5base").await?;
        let start = Instant::now();
        let updated = D::bulk_update_bare(&mut conn, &ids).await.map_err(db)?;
        runs.bare.push(elapsed(start));
        check_updated(updated, ids.len())?;
        drop(conn);
        fresh.remove().await;

        let (fresh, conn, ids) = setup("w5").await?;
        let (mut conn, recorder, registry) = synced::<D>(conn, None);
        let start = Instant::now();
        let updated = D::bulk_update_synced(&mut conn, &ids).await.map_err(db)?;
        registry.settled().await;
        runs.synced.push(elapsed(start));
        check_updated(updated, ids.len())?;
        runs.outcomes
            .push(Outcome::check(&recorder.take(), &expected, &registry));
        if runs.footprint.is_none() {
            runs.footprint = Some(
                D::collector_footprint(&mut conn, &registrations(&rows, rows.len()), &[])
                    .await
                    .map_err(db)?,
            );
        }
        drop(conn);
        fresh.remove().await;
    }
    Ok(vec![runs.line::<D>("W5", "W5base")])
}

fn check_updated(updated: usize, expected: usize) -> Result<(), String> {
    if updated == expected {
        Ok(())
    } else {
        Err(format!("the update changed {updated} rows, not {expected}"))
    }
}

/// Scale: W1 with 1,000,000 price records over 1,000,000 products (100 stores) in one
/// transaction, `insert_chunk` rows per statement. One database seeded once; `price_records`
/// is emptied before each run. Compares the time per id with W1's.
#[allow(clippy::cast_precision_loss)]
pub(crate) async fn scale<D: Db>(bench: &Bench, w1_per_id: W1PerId) -> Result<Vec<Line>, String> {
    let size = bench.size;
    let (rows, expected) = bulk_insert(size.scale_ids, size.scale_per_store, D::RESOLVE_CHUNK);
    let (fresh, conn) =
        Fresh::new::<D>(bench, "scale", size.scale_ids, size.scale_per_store).await?;
    let mut conn = Some(conn);
    let mut runs = Runs::default();
    for _ in 0..bench.runs {
        let mut bare = conn
            .take()
            .expect("the connection is put back after each run");
        bare.batch_execute(D::BACKEND.clear_price_records())
            .await
            .map_err(db)?;
        let seconds = timed_bare_insert::<D>(
            &mut bare,
            &rows,
            size.insert_chunk,
            false,
            &mut runs.bare_phases,
        )
        .await?;
        runs.bare.push(seconds);
        bare.batch_execute(D::BACKEND.clear_price_records())
            .await
            .map_err(db)?;

        let synced = runs
            .synced_insert::<D>(bare, &rows, size.insert_chunk, false, &expected, None)
            .await?;
        conn = Some(synced.into_inner());
    }
    drop(conn);
    fresh.remove().await;
    let per_id = median(&runs.synced) / rows.len() as f64;
    let line = runs
        .line::<D>("scale", "scale_base")
        .int("ids", rows.len() as u64)
        .num("us_per_id", per_id * 1e6);
    let line = match w1_per_id {
        Some(w1) => line
            .num("w1_us_per_id", w1 * 1e6)
            .num("per_id_ratio_vs_w1", per_id / w1),
        None => line.null("per_id_ratio_vs_w1"),
    };
    Ok(vec![line])
}

/// Commit-to-handler latency over the W2 transactions, each followed by `settled()` so no
/// batch waits behind another's. For each handler call: the time from the instant the
/// transaction's body finished (its last save returned; COMMIT, resolve and dispatch follow)
/// to the instant the handler was entered. Also the time `transaction` took after the body
/// (COMMIT + resolve + dispatch, on the committing task).
pub(crate) async fn latency<D: Db>(bench: &Bench) -> Result<Vec<Line>, String> {
    let size = bench.size;
    let transactions = w2_transactions(size);
    let (fresh, conn) = Fresh::new::<D>(bench, "latency", size.products, size.per_store).await?;
    let (mut conn, recorder, registry) = synced::<D>(conn, None);
    let mut to_handler = Vec::new();
    let mut in_commit = Vec::new();
    let mut all_calls = Vec::new();
    let mut after_returned: Vec<f64> = Vec::new();
    let mut expected = Expected::default();
    for rows in &transactions {
        expected.commit(
            rows.iter().map(|r| r.object_id),
            size.per_store,
            D::RESOLVE_CHUNK,
        );
        let body_end = D::saves_synced(&mut conn, rows, false).await.map_err(db)?;
        let returned = Instant::now();
        in_commit.push(returned - body_end);
        registry.settled().await;
        let calls = recorder.take();
        for call in &calls {
            to_handler.push(call.at.saturating_duration_since(body_end));
            let after_return = call.at.saturating_duration_since(returned);
            let before_return = returned.saturating_duration_since(call.at);
            after_returned.push(micros(after_return) - micros(before_return));
        }
        all_calls.extend(calls);
    }
    let outcome = Outcome::check(&all_calls, &expected, &registry);
    drop(conn);
    fresh.remove().await;
    to_handler.sort();
    in_commit.sort();
    let line = Line::new("latency", D::BACKEND.name(), D::CONNECTION)
        .str(
            "definition",
            "commit_to_handler: handler entry minus the end of the transaction body (COMMIT, resolve, dispatch and task wake-up in between); transaction_after_body: when transaction() returned minus the end of the body; handler_after_return: handler entry minus when transaction() returned (negative: the handler ran first)",
        )
        .int("samples", to_handler.len() as u64);
    let line = percentiles(line, "commit_to_handler", &to_handler);
    let line = percentiles(line, "transaction_after_body", &in_commit);
    after_returned.sort_by(f64::total_cmp);
    let line = line
        .num(
            "handler_after_return_p50_us",
            signed_percentile(&after_returned, 50),
        )
        .num(
            "handler_after_return_p99_us",
            signed_percentile(&after_returned, 99),
        );
    Ok(vec![with_outcome(line, Some(outcome))])
}

/// Nearest-rank percentile of sorted signed values.
fn signed_percentile(sorted: &[f64], p: usize) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted.len()).div_ceil(100).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn percentiles(line: Line, name: &str, sorted: &[Duration]) -> Line {
    line.num(&format!("{name}_p50_us"), micros(percentile(sorted, 50)))
        .num(&format!("{name}_p99_us"), micros(percentile(sorted, 99)))
        .num(
            &format!("{name}_max_us"),
            micros(sorted.last().copied().unwrap_or_default()),
        )
}

/// Collector bytes per pending id at the two sizes, registering all ids in one call (the
/// hash set is sized once) and one id per call (it grows by doubling: the worst peak).
#[allow(clippy::cast_precision_loss)]
pub(crate) async fn collector<D: Db>(bench: &Bench) -> Result<Vec<Line>, String> {
    let (fresh, conn) = Fresh::new::<D>(bench, "collector", 0, 1).await?;
    let (mut conn, _recorder, _registry) = synced::<D>(conn, None);
    let mut lines = Vec::new();
    for ids in bench.size.collector_ids {
        let all: Vec<i64> = (1..=i64::try_from(ids).expect("ids fit in i64")).collect();
        for (registration, replay) in [
            ("one call", vec![all.clone()]),
            ("one id per call", all.iter().map(|&id| vec![id]).collect()),
        ] {
            // The least of three: another thread allocating meanwhile only adds.
            let mut best: Option<Footprint> = None;
            for _ in 0..3 {
                let footprint = D::collector_footprint(&mut conn, &replay, &[])
                    .await
                    .map_err(db)?;
                if best.is_none_or(|b| footprint.peak_bytes < b.peak_bytes) {
                    best = Some(footprint);
                }
            }
            let best = best.expect("measured three times");
            let per_id = best.peak_bytes as f64 / best.pending as f64;
            lines.push(
                Line::new("collector", D::BACKEND.name(), D::CONNECTION)
                    .int("ids", ids as u64)
                    .str("registration", registration)
                    .int("collector_pending_ids", best.pending as u64)
                    .int("collector_peak_bytes", best.peak_bytes)
                    .num("collector_bytes_per_pending_id", per_id)
                    .bool("within_32_bytes", per_id <= 32.0)
                    .check(best.pending == ids),
            );
        }
    }
    drop(conn);
    fresh.remove().await;
    Ok(lines)
}
