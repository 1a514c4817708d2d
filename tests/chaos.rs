//! Randomized programs of transactions on every backend and both connection kinds, checked
//! against the database's own record of what committed.
//!
//! A program is data ([`Step`]s, run by the behaviour suite's interpreters): writes in every
//! idiom the suite knows, outside any transaction and in transactions nested up to four deep,
//! each ending in a commit, a requested rollback, a panic caught around the call, or (async
//! only) a future dropped mid-transaction; COMMITs that fail on a deferred foreign key; and
//! writes on the inner connection registered with `mark_changed`. After each program the
//! connection runs one empty `transaction()` (which rolls back whatever an unfinished one left
//! open), the registry settles, and the oracle reads the database:
//!
//! - every product the audit triggers recorded (committed changes only) that still exists was
//!   delivered, and the last row its store received equals its row in the database;
//! - nothing was delivered that no committed write changed or no committed `mark_changed` named;
//! - every product a committed delete removed reached its store last as a removal, and no
//!   removal was delivered that no committed delete made;
//! - no dead letters, nothing pending, and no outermost `transaction()` returned `Ok` while
//!   leaving a database transaction open.
//!
//! One fixture serves a whole run: between programs only the audit, the notes and the recorded
//! calls are cleared, the data stays. A failure is shrunk to a minimal program.
//!
//! Each combination of kind and backend runs `DIESEL_SYNC_CHAOS_CASES` programs (200 by
//! default) on one connection, then a tenth as many rounds of two to four tasks on a pool,
//! each running up to three programs on its own connection. Over 10,000 transactions per backend and kind
//! (about three minutes on two cores, most of it the `PostgreSQL` pools meeting deadlocks):
//!
//! ```sh
//! DIESEL_SYNC_CHAOS_CASES=1500 cargo test --features blocking-postgres,blocking-mysql \
//!     --test chaos -- --nocapture
//! ```

#[path = "common/async_kind.rs"]
mod async_kind;
mod common;
#[path = "common/blocking.rs"]
mod common_blocking;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Instant;

use proptest::prelude::*;
use proptest::strategy::Union;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use common::kind::{End, Insert, Kind, Scope, Setup, Step, Trace, Write};
use common::*;

/// Seeded products, ids `1..=SEEDED`: most writes hit one of them.
const SEEDED: i64 = 60;
const PER_STORE: i64 = 20;
const STORES: i64 = SEEDED / PER_STORE;
/// Ids no seed has: inserts create them, deletes and stale reads meet them.
const NEW: std::ops::RangeInclusive<i64> = 1001..=1005;
/// A product no row will ever have: a note on it fails the deferred foreign key at COMMIT.
const MISSING: i64 = 404;

/// What a combination can run.
#[derive(Debug, Clone, Copy)]
struct Caps {
    /// Whether a transaction can be abandoned by dropping its future (the async kind).
    abandon: bool,
}

fn setup() -> Setup {
    Setup {
        products: SEEDED,
        per_store: PER_STORE,
        price_records: (1..=SEEDED)
            .step_by(2)
            .map(|object_id| PriceRecord {
                object_id,
                amount_cents: 100,
            })
            .collect(),
        ..Setup::default()
    }
}

/// How many programs each combination runs on one connection.
fn cases() -> u32 {
    std::env::var("DIESEL_SYNC_CHAOS_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(200)
}

// --- The programs -----------------------------------------------------------------------------

/// A seeded product most of the time, so that writes change rows; sometimes a new one.
fn product_id() -> impl Strategy<Value = i64> + Clone {
    prop_oneof![9 => 1..=SEEDED, 1 => NEW]
}

fn cents() -> impl Strategy<Value = i64> + Clone {
    1..100_000_i64
}

fn write() -> impl Strategy<Value = Write> + Clone {
    prop_oneof![Just(Write::Typed), Just(Write::Plain)]
}

fn insert() -> impl Strategy<Value = Insert> + Clone {
    prop_oneof![
        Just(Insert::Typed),
        Just(Insert::KeysFromRows),
        Just(Insert::Plain)
    ]
}

fn product() -> impl Strategy<Value = Product> + Clone {
    (product_id(), 1..=STORES, cents()).prop_map(|(id, store_id, price_cents)| Product {
        id,
        store_id,
        name: format!("chaos-{id}"),
        price_cents,
    })
}

fn products() -> impl Strategy<Value = Vec<Product>> + Clone {
    prop::collection::vec(product(), 1..=3)
}

/// One row: the unsynced insert runs a statement per row, and a row that fails after one that
/// committed (outside a transaction) would skip the `mark_changed` that follows.
fn one_product() -> impl Strategy<Value = Vec<Product>> + Clone {
    product().prop_map(|row| vec![row])
}

fn price_records() -> impl Strategy<Value = Vec<PriceRecord>> + Clone {
    let record = (product_id(), cents()).prop_map(|(object_id, amount_cents)| PriceRecord {
        object_id,
        amount_cents,
    });
    prop::collection::vec(record, 1..=3)
}

fn ids_of(rows: &[Product]) -> Vec<i64> {
    rows.iter().map(|p| p.id).collect()
}

/// Every id a product can have: what an unsynced bulk write may have changed.
fn every_id() -> Vec<i64> {
    (1..=SEEDED).chain(NEW).collect()
}

/// A write on the inner connection, which nothing captures, followed by the `mark_changed` of
/// what it may have changed: the way an application registers writes the connection cannot see.
fn unsynced() -> BoxedStrategy<Vec<Step>> {
    let marked = |write: Step, ids: Vec<i64>| vec![write, Step::MarkChanged { ids }];
    prop_oneof![
        (product_id(), cents()).prop_map(move |(id, cents)| marked(
            Step::SetPrice {
                id,
                cents,
                write: Write::Unsynced
            },
            vec![id]
        )),
        product_id().prop_map(move |id| marked(
            Step::DeleteProduct {
                id,
                write: Write::Unsynced
            },
            vec![id]
        )),
        one_product().prop_map(move |rows| {
            let ids = ids_of(&rows);
            marked(
                Step::InsertProducts {
                    rows,
                    write: Insert::Unsynced,
                },
                ids,
            )
        }),
        (one_product(), cents()).prop_map(move |(rows, cents)| {
            let ids = ids_of(&rows);
            marked(
                Step::UpsertProducts {
                    rows,
                    cents,
                    write: Write::Unsynced,
                },
                ids,
            )
        }),
        (product_id(), cents()).prop_map(move |(object_id, cents)| marked(
            Step::SetAmount {
                object_id,
                cents,
                write: Write::Unsynced
            },
            vec![object_id]
        )),
        (1..=STORES, -50..=50_i64).prop_map(move |(store, cents)| marked(
            Step::RaisePrices {
                scope: Scope::Store(store),
                cents,
                write: Write::Unsynced
            },
            every_id()
        )),
    ]
    .boxed()
}

/// One step that is not a transaction, as the few steps it takes (an unsynced write and its
/// `mark_changed` shrink away together).
fn leaf() -> BoxedStrategy<Vec<Step>> {
    let one = |strategy: BoxedStrategy<Step>| strategy.prop_map(|step| vec![step]).boxed();
    let scope = prop_oneof![Just(Scope::All), (1..=STORES).prop_map(Scope::Store)];
    Union::new_weighted(vec![
        (
            6,
            one((product_id(), cents(), write())
                .prop_map(|(id, cents, write)| Step::SetPrice { id, cents, write })
                .boxed()),
        ),
        (
            1,
            one((product_id(), cents(), write())
                .prop_map(|(id, cents, write)| Step::SetPriceFromForm { id, cents, write })
                .boxed()),
        ),
        (
            1,
            one((product_id(), cents())
                .prop_map(|(id, cents)| Step::SavePrice { id, cents })
                .boxed()),
        ),
        (
            2,
            one((scope, -50..=50_i64, write())
                .prop_map(|(scope, cents, write)| Step::RaisePrices {
                    scope,
                    cents,
                    write,
                })
                .boxed()),
        ),
        (
            2,
            one((products(), insert())
                .prop_map(|(rows, write)| Step::InsertProducts { rows, write })
                .boxed()),
        ),
        (
            2,
            one((products(), cents(), write())
                .prop_map(|(rows, cents, write)| Step::UpsertProducts { rows, cents, write })
                .boxed()),
        ),
        (
            2,
            one((product_id(), write())
                .prop_map(|(id, write)| Step::DeleteProduct { id, write })
                .boxed()),
        ),
        (
            2,
            one((price_records(), insert())
                .prop_map(|(rows, write)| Step::InsertPriceRecords { rows, write })
                .boxed()),
        ),
        (
            1,
            one((product_id(), cents(), write())
                .prop_map(|(object_id, cents, write)| Step::SetAmount {
                    object_id,
                    cents,
                    write,
                })
                .boxed()),
        ),
        (
            1,
            one((1..=SEEDED, write())
                .prop_map(|(up_to, write)| Step::DeletePriceRecords { up_to, write })
                .boxed()),
        ),
        (2, unsynced()),
        (
            1,
            one(prop::collection::vec(product_id(), 1..=3)
                .prop_map(|ids| Step::MarkChanged { ids })
                .boxed()),
        ),
        (
            1,
            one(prop_oneof![3 => Just(MISSING), 1 => product_id()]
                .prop_map(|product_id| Step::InsertNote { product_id })
                .boxed()),
        ),
        (1, one(Just(Step::Fail).boxed())),
        (1, one(Just(Step::Checkpoint).boxed())),
    ])
    .boxed()
}

/// Whether a nested transaction may panic or be abandoned, its panic caught (or its future
/// dropped) inside the enclosing closure, which goes on: the enclosing `transaction()` must roll
/// the abandoned level back and still commit its own work.
const NESTED_ABANDON: bool = true;

/// How a transaction ends: mostly a commit, shrinking towards one. `unfinished` allows a panic
/// and (where futures can be dropped) an abandoned future.
fn end(caps: Caps, unfinished: bool) -> BoxedStrategy<End> {
    let mut ends = vec![
        (6, Just(End::Commit).boxed()),
        (2, Just(End::Rollback).boxed()),
    ];
    if unfinished {
        ends.push((1, Just(End::Panic).boxed()));
        if caps.abandon {
            ends.push((1, Just(End::Abandon).boxed()));
        }
    }
    Union::new_weighted(ends).boxed()
}

fn transaction(
    steps: impl Strategy<Value = Vec<Step>> + 'static,
    end: BoxedStrategy<End>,
) -> BoxedStrategy<Vec<Step>> {
    (prop::collection::vec(steps, 0..=4), end)
        .prop_map(|(steps, end)| {
            vec![Step::Transaction {
                steps: steps.concat(),
                end,
            }]
        })
        .boxed()
}

/// A step outside any transaction, or a transaction with savepoints nested up to four deep.
fn item(caps: Caps) -> BoxedStrategy<Vec<Step>> {
    let nested = leaf().prop_recursive(3, 24, 4, move |inner| {
        transaction(inner, end(caps, NESTED_ABANDON))
    });
    prop_oneof![
        1 => leaf(),
        2 => transaction(nested, end(caps, true)),
    ]
    .boxed()
}

fn program(caps: Caps) -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(item(caps), 1..=5).prop_map(|items| items.concat())
}

// --- The oracle -------------------------------------------------------------------------------

/// What the runs of one combination added up to.
#[derive(Debug, Default)]
struct Totals {
    programs: usize,
    transactions: usize,
    committed: usize,
    keys: usize,
    removals: usize,
    leaked: usize,
    missed: usize,
}

impl Totals {
    fn count(&mut self, trace: &Trace) {
        self.programs += 1;
        self.transactions += trace.transactions.len();
    }
}

/// Checks what the handlers received against the database, for the programs of `traces`.
/// A committed delete of a product that is gone reaches its store as a removal, last; one that
/// ran unseen on the inner connection was registered as a change, and is skipped. Returns the
/// missed and the leaked removals.
fn check_removals(
    calls: &[Call],
    last: &BTreeMap<i64, Option<&Product>>,
    live: &BTreeMap<i64, Product>,
    marked: &BTreeSet<i64>,
    deletions: &BTreeSet<i64>,
    problems: &mut Vec<String>,
) -> (Vec<i64>, Vec<i64>) {
    let missed: Vec<i64> = deletions
        .iter()
        .filter(|id| !live.contains_key(id) && !marked.contains(id))
        .filter(|id| last.get(id) != Some(&None))
        .copied()
        .collect();
    let leaked: Vec<i64> = calls
        .iter()
        .flat_map(|call| call.removed.iter().copied())
        .filter(|id| !deletions.contains(id))
        .collect();
    if !missed.is_empty() {
        problems.push(format!(
            "deleted, not last delivered as a removal: {missed:?}"
        ));
    }
    if !leaked.is_empty() {
        problems.push(format!(
            "removed, deleted by no committed write: {leaked:?}"
        ));
    }
    (missed, leaked)
}

async fn check<K: Kind>(f: &mut K, traces: &[Trace], totals: &mut Totals) -> Result<(), String> {
    let audited: BTreeSet<i64> = f.audited().await.into_iter().collect();
    let live: BTreeMap<i64, Product> = f
        .all_products()
        .await
        .into_iter()
        .map(|p| (p.id, p))
        .collect();
    let marked: BTreeSet<i64> = traces.iter().flat_map(Trace::committed_marks).collect();
    let calls = f.capture().calls();
    let mut problems = Vec::new();

    let mut delivered = BTreeSet::new();
    for call in &calls {
        let ids = call.ids();
        if ids.windows(2).any(|pair| pair[0] == pair[1]) {
            problems.push(format!("an id twice in one call: {call:?}"));
        }
        if call.rows.iter().any(|p| p.store_id != call.store) {
            problems.push(format!("a row of another store: {call:?}"));
        }
        delivered.extend(ids);
    }
    let missed: Vec<i64> = audited
        .iter()
        .filter(|id| live.contains_key(id) && !delivered.contains(id))
        .copied()
        .collect();
    let leaked: Vec<i64> = delivered
        .iter()
        .filter(|id| !audited.contains(id) && !marked.contains(id))
        .copied()
        .collect();
    // What each product's store received last: a row, or its removal (`None`).
    let mut last: BTreeMap<i64, Option<&Product>> = BTreeMap::new();
    for call in &calls {
        for row in &call.rows {
            last.insert(row.id, Some(row));
        }
        for id in &call.removed {
            last.insert(*id, None);
        }
    }
    for (id, row) in &live {
        if !delivered.contains(id) {
            continue;
        }
        let received = last.get(id).copied().flatten();
        if received != Some(row) {
            problems.push(format!(
                "product {id}: its store last received {received:?}, the database has {row:?}"
            ));
        }
    }
    let deletions: BTreeSet<i64> = f.audited_deletions().await.into_iter().collect();
    let (missed_removals, leaked_removals) =
        check_removals(&calls, &last, &live, &marked, &deletions, &mut problems);
    if !missed.is_empty() {
        problems.push(format!("committed, never delivered: {missed:?}"));
    }
    if !leaked.is_empty() {
        problems.push(format!(
            "delivered, changed by no committed write: {leaked:?}"
        ));
    }
    let metrics = f.metrics();
    if metrics.pending != 0 || f.dead_letter_count() != 0 || f.pending_ids() != 0 {
        problems.push(format!(
            "left over: {} pending, {} dead letters, {} ids held",
            metrics.pending,
            f.dead_letter_count(),
            f.pending_ids()
        ));
    }
    let left_open: usize = traces.iter().map(|t| t.left_open).sum();
    if left_open != 0 {
        problems.push(format!(
            "{left_open} outermost transaction() returned Ok with a transaction still open"
        ));
    }

    totals.keys += audited.iter().filter(|id| live.contains_key(id)).count();
    totals.removals += deletions.iter().filter(|id| !live.contains_key(id)).count();
    totals.missed += missed.len() + missed_removals.len();
    totals.leaked += leaked.len() + leaked_removals.len();
    totals.committed += traces
        .iter()
        .flat_map(|t| &t.outcomes)
        .filter(|outcome| **outcome == Some(true))
        .count();
    if problems.is_empty() {
        Ok(())
    } else {
        // A deadlock makes MySQL roll back the whole transaction, savepoints and all: worth
        // knowing when reading a failure.
        let deadlocks = traces
            .iter()
            .filter(|t| format!("{t:?}").to_lowercase().contains("deadlock"))
            .count();
        problems.push(format!("programs that met a deadlock: {deadlocks}"));
        Err(problems.join("\n"))
    }
}

/// Runs a program, then one empty `transaction()`: it rolls back what an unfinished one left
/// open, as the application's next transaction would.
async fn run_program<K: Kind>(f: &mut K, program: &[Step]) -> (Trace, Trace) {
    let trace = f.run(program).await;
    let close = f.run(&close()).await;
    (trace, close)
}

/// One case of the single-connection property.
async fn one_program<K: Kind>(
    f: &mut K,
    program: &[Step],
    totals: &mut Totals,
) -> Result<(), TestCaseError> {
    f.reset_records().await;
    let (trace, close) = run_program(f, program).await;
    f.settle().await;
    totals.count(&trace);
    prop_assert!(
        close.transactions.iter().all(Result::is_ok),
        "the next transaction() failed: {close:?}"
    );
    check(f, &[trace], totals)
        .await
        .map_err(TestCaseError::fail)
}

/// How a combination waits for a future: on its tokio runtime, or (blocking) on none at all.
trait Driver {
    fn block_on<F: Future>(&self, future: F) -> F::Output;
}

impl Driver for tokio::runtime::Runtime {
    fn block_on<F: Future>(&self, future: F) -> F::Output {
        tokio::runtime::Runtime::block_on(self, future)
    }
}

/// The blocking kind: no runtime.
struct NoRuntime;

impl Driver for NoRuntime {
    fn block_on<F: Future>(&self, future: F) -> F::Output {
        common::kind::run_blocking(future)
    }
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 512,
        ..Config::default()
    })
}

/// The single-connection property: `cases` programs on one fixture.
fn programs_on_one_connection<K: Kind>(label: &str, driver: &impl Driver, caps: Caps) {
    let started = Instant::now();
    let fixture = RefCell::new(driver.block_on(K::open("chaos", setup())));
    let totals = RefCell::new(Totals::default());
    let result = runner(cases()).run(&program(caps), |program| {
        let mut f = fixture.borrow_mut();
        let mut totals = totals.borrow_mut();
        driver.block_on(one_program(&mut *f, &program, &mut totals))
    });
    report(label, &totals.borrow(), started);
    if let Err(error) = result {
        panic!("{label}: {error}");
    }
}

/// The pool property: each case runs rounds of programs on several pooled connections at once
/// (through `run_tasks`, which returns every program's trace and its closing transaction's),
/// then checks the oracle over all of them.
fn programs_on_a_pool<K: Kind>(
    label: &str,
    driver: &impl Driver,
    caps: Caps,
    f: K,
    run_tasks: impl Fn(Vec<Vec<Vec<Step>>>) -> Vec<(Trace, Trace)>,
) {
    let started = Instant::now();
    let fixture = RefCell::new(f);
    let totals = RefCell::new(Totals::default());
    let tasks = prop::collection::vec(prop::collection::vec(program(caps), 1..=3), 2..=4);
    let result = runner(cases().div_ceil(10)).run(&tasks, |tasks| {
        let mut f = fixture.borrow_mut();
        let mut totals = totals.borrow_mut();
        driver.block_on(f.reset_records());
        let ran = run_tasks(tasks);
        driver.block_on(f.settle());
        let mut traces = Vec::new();
        for (trace, close) in ran {
            prop_assert!(
                close.transactions.iter().all(Result::is_ok),
                "the next transaction() failed: {close:?}"
            );
            totals.count(&trace);
            traces.push(trace);
        }
        driver
            .block_on(check(&mut *f, &traces, &mut totals))
            .map_err(TestCaseError::fail)
    });
    report(label, &totals.borrow(), started);
    if let Err(error) = result {
        panic!("{label}: {error}");
    }
}

/// The smallest program the properties found for an abandoned nested transaction (see
/// [`NESTED_ABANDON`]), with a write on either side of the nested transaction that does not
/// finish as `end` says.
fn nested_unfinished(label: &str, driver: &impl Driver, f: &mut impl Kind, end: End) {
    let program = vec![Step::transaction(vec![
        Step::set_price(1, 111),
        Step::Transaction {
            steps: vec![Step::set_price(2, 222)],
            end,
        },
        Step::set_price(3, 333),
    ])];
    let mut totals = Totals::default();
    if let Err(problems) = driver.block_on(one_program(f, &program, &mut totals)) {
        panic!("{label}, nested {end:?}: {problems}\nprogram: {program:#?}");
    }
}

fn report(label: &str, totals: &Totals, started: Instant) {
    eprintln!(
        "chaos {label}: {} programs, {} transactions ({} returned Ok), {} committed keys and {} \
         removals checked, leaked {}, missed {}, in {:.1}s",
        totals.programs,
        totals.transactions,
        totals.committed,
        totals.keys,
        totals.removals,
        totals.leaked,
        totals.missed,
        started.elapsed().as_secs_f64()
    );
}

// --- The combinations -------------------------------------------------------------------------

/// Both properties on one diesel-async connection type, under a tokio runtime; the pool is
/// deadpool's.
macro_rules! async_chaos {
    ($name:ident, $conn:ty) => {
        mod $name {
            use diesel_async::SimpleAsyncConnection;
            use diesel_sync::SyncedConnection;

            use super::async_kind::AsyncKind;
            use super::*;

            type Fixture = AsyncKind<$conn>;
            const CAPS: Caps = Caps { abandon: true };
            const LABEL: &str = stringify!($name);

            fn runtime() -> tokio::runtime::Runtime {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("runtime")
            }

            #[test]
            fn programs_on_one_connection_deliver_what_the_database_committed() {
                programs_on_one_connection::<Fixture>(LABEL, &runtime(), CAPS);
            }

            #[test]
            fn a_nested_transaction_that_never_finished_leaves_no_outer_one_uncommitted() {
                let runtime = runtime();
                let mut f = runtime.block_on(Fixture::open("chaos_nested", setup()));
                nested_unfinished(LABEL, &runtime, &mut f, End::Abandon);
                nested_unfinished(LABEL, &runtime, &mut f, End::Panic);
            }

            #[test]
            fn programs_on_a_pool_deliver_what_the_database_committed() {
                use diesel_async::pooled_connection::deadpool::Pool;
                let runtime = runtime();
                let f = runtime.block_on(Fixture::open("chaos_pool", setup()));
                let backend = <Fixture as Kind>::BACKEND;
                let manager =
                    SyncedConnection::<$conn>::pool_manager(f.url.clone(), f.registry.clone());
                let pool = Pool::builder(manager).max_size(4).build().expect("pool");
                let capture = f.capture.clone();
                let label = format!("{LABEL} pool");
                programs_on_a_pool(&label, &runtime, CAPS, f, |tasks| {
                    runtime.block_on(async {
                        let tasks: Vec<_> = tasks
                            .into_iter()
                            .map(|programs| {
                                let pool = pool.clone();
                                let capture = capture.clone();
                                tokio::spawn(async move {
                                    let mut conn = pool.get().await.expect("pooled connection");
                                    if backend == Backend::Sqlite {
                                        conn.batch_execute(SQLITE_POOLED).await.expect("pragmas");
                                    }
                                    let mut ran = Vec::new();
                                    for program in programs {
                                        let trace =
                                            Fixture::run_on(&mut conn, &capture, &program).await;
                                        let close =
                                            Fixture::run_on(&mut conn, &capture, &close()).await;
                                        ran.push((trace, close));
                                    }
                                    ran
                                })
                            })
                            .collect();
                        let mut ran = Vec::new();
                        for task in tasks {
                            ran.extend(task.await.expect("task"));
                        }
                        ran
                    })
                });
            }
        }
    };
}

/// Both properties on one synchronous Diesel connection type, with no tokio runtime; the pool
/// is r2d2's, one thread per connection.
macro_rules! blocking_chaos {
    ($name:ident, $conn:ty) => {
        mod $name {
            use diesel::connection::SimpleConnection;
            use diesel_sync::blocking::SyncedConnection;

            use super::common_blocking::BlockingKind;
            use super::*;

            type Fixture = BlockingKind<$conn>;
            const CAPS: Caps = Caps { abandon: false };
            const LABEL: &str = stringify!($name);

            #[test]
            fn programs_on_one_connection_deliver_what_the_database_committed() {
                programs_on_one_connection::<Fixture>(LABEL, &NoRuntime, CAPS);
            }

            #[test]
            fn a_nested_transaction_that_never_finished_leaves_no_outer_one_uncommitted() {
                let mut f = Fixture::fixture("chaos_nested", setup());
                nested_unfinished(LABEL, &NoRuntime, &mut f, End::Panic);
            }

            #[test]
            fn programs_on_a_pool_deliver_what_the_database_committed() {
                use diesel::r2d2::Pool;
                let f = Fixture::fixture("chaos_pool", setup());
                let backend = <Fixture as Kind>::BACKEND;
                let manager =
                    SyncedConnection::<$conn>::pool_manager(f.url.clone(), f.registry.clone());
                let pool = Pool::builder().max_size(4).build(manager).expect("pool");
                let capture = f.capture.clone();
                let label = format!("{LABEL} pool");
                programs_on_a_pool(&label, &NoRuntime, CAPS, f, |tasks| {
                    std::thread::scope(|scope| {
                        let threads: Vec<_> = tasks
                            .into_iter()
                            .map(|programs| {
                                let (pool, capture) = (&pool, &capture);
                                scope.spawn(move || {
                                    let mut conn = pool.get().expect("pooled connection");
                                    if backend == Backend::Sqlite {
                                        conn.batch_execute(SQLITE_POOLED).expect("pragmas");
                                    }
                                    programs
                                        .iter()
                                        .map(|program| {
                                            let trace =
                                                Fixture::run_on(&mut conn, capture, program);
                                            let close =
                                                Fixture::run_on(&mut conn, capture, &close());
                                            (trace, close)
                                        })
                                        .collect::<Vec<_>>()
                                })
                            })
                            .collect();
                        threads
                            .into_iter()
                            .flat_map(|thread| thread.join().expect("thread"))
                            .collect()
                    })
                });
            }
        }
    };
}

/// What a pooled `SQLite` connection needs that the fixture's got from the schema: waiting for
/// the other writers, and the deferred foreign key checked.
const SQLITE_POOLED: &str = "PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;";

/// The empty transaction run after each program.
fn close() -> Vec<Step> {
    vec![Step::transaction(Vec::new())]
}

async_chaos!(
    async_sqlite,
    diesel_async::sync_connection_wrapper::SyncConnectionWrapper<diesel::SqliteConnection>
);
#[cfg(diesel_sync_postgres)]
async_chaos!(async_postgres, diesel_async::AsyncPgConnection);
#[cfg(diesel_sync_mysql)]
async_chaos!(async_mysql, diesel_async::AsyncMysqlConnection);
blocking_chaos!(blocking_sqlite, diesel::SqliteConnection);
#[cfg(all(diesel_sync_postgres, feature = "blocking-postgres"))]
blocking_chaos!(blocking_postgres, diesel::PgConnection);
#[cfg(all(diesel_sync_mysql, feature = "blocking-mysql"))]
blocking_chaos!(blocking_mysql, diesel::MysqlConnection);
