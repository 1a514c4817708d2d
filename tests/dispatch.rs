//! Delivery after commit, with faults injected into the handler: retries, backoff, dead letters,
//! panics, per-store order, merging, shutdown. Tokio's clock is paused, so backoff costs no wall
//! time. Runs on SQLite, and on PostgreSQL when `DIESEL_SYNC_POSTGRES_URL` is set.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use diesel_sync::{Batch, HandlerError, Registry, Resolves, RetryPolicy};
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// What the scripted handler does on one call.
#[derive(Debug, Clone)]
enum Outcome {
    Deliver,
    Fail,
    Reject,
    RetryAfter(Duration),
    Panic,
    /// Deliver once the gate lets the call through. A gate, not a timer: the paused clock
    /// jumps ahead whenever the runtime waits on database I/O.
    Gated(Arc<Semaphore>),
}

#[derive(Debug, Clone)]
struct Seen {
    store: i64,
    rows: Vec<(i64, i64)>,
    attempt: u32,
    at: Instant,
    delivered: bool,
}

type Script = dyn Fn(usize, &Batch<Product>) -> Outcome + Send + Sync;

/// A handler that follows a script, call by call, and records every call.
#[derive(Clone)]
struct Scripted {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Scripted {
    fn registry<Conn: Resolves<Product>>(
        policy: RetryPolicy,
        script: impl Fn(usize, &Batch<Product>) -> Outcome + Send + Sync + 'static,
    ) -> (Self, Registry<Conn>) {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let script: Arc<Script> = Arc::new(script);
        let recorder = Arc::clone(&seen);
        let registry = Registry::builder()
            .handler(move |batch: Batch<Product>| {
                let seen = Arc::clone(&recorder);
                let script = Arc::clone(&script);
                async move {
                    let call = seen.lock().unwrap().len();
                    let outcome = script(call, &batch);
                    let mut rows: Vec<(i64, i64)> =
                        batch.rows().iter().map(|p| (p.id, p.price_cents)).collect();
                    rows.sort_unstable();
                    let record = |delivered| Seen {
                        store: *batch.store(),
                        rows: rows.clone(),
                        attempt: batch.attempt(),
                        at: Instant::now(),
                        delivered,
                    };
                    match outcome {
                        Outcome::Deliver => {
                            seen.lock().unwrap().push(record(true));
                            Ok(())
                        }
                        Outcome::Gated(gate) => {
                            seen.lock().unwrap().push(record(true));
                            drop(gate.acquire().await.expect("gates stay open"));
                            Ok(())
                        }
                        Outcome::Fail => {
                            seen.lock().unwrap().push(record(false));
                            Err(HandlerError::retryable("marketplace answered 503"))
                        }
                        Outcome::Reject => {
                            seen.lock().unwrap().push(record(false));
                            Err(HandlerError::permanent(
                                "price below the marketplace minimum",
                            ))
                        }
                        Outcome::RetryAfter(delay) => {
                            seen.lock().unwrap().push(record(false));
                            Err(HandlerError::retry_after("rate limited", delay))
                        }
                        Outcome::Panic => {
                            seen.lock().unwrap().push(record(false));
                            panic!("handler bug");
                        }
                    }
                }
            })
            .retry_policy(policy)
            .build();
        (Self { seen }, registry)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn delivered(&self) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.delivered).collect()
    }
}

/// A policy whose delays are exact: 1 s, 2 s, 4 s, … (no jitter).
fn exact(attempts: u32) -> RetryPolicy {
    RetryPolicy::default()
        .max_attempts(attempts)
        .initial_delay(Duration::from_secs(1))
        .jitter(false)
}

macro_rules! dispatch_suite {
    ($suite:ident, $backend:expr, $conn:ty) => {
        mod $suite {
            use super::*;

            use diesel::result::Error;
            use diesel::{ExpressionMethods, QueryDsl};
            use diesel_async::{AsyncConnection, SimpleAsyncConnection};
            use diesel_sync::SyncedConnection;

            const BACKEND: Backend = $backend;

            type Conn = SyncedConnection<$conn>;

            /// A database with 2,000 products, 100 per store (stores 1–20).
            async fn connect(test: &str, registry: &Registry<Conn>) -> Conn {
                let url = create_database(BACKEND, &format!("{}_{test}", stringify!($suite))).await;
                let mut inner = <$conn>::establish(&url).await.expect("connect");
                inner.batch_execute(BACKEND.schema()).await.expect("schema");
                inner.seed_products(common::products(2_000, 100), BACKEND).await;
                SyncedConnection::new(inner, registry.clone())
            }

            async fn set_prices(conn: &mut Conn, prices: &[(i64, i64)]) {
                conn.transaction(async |conn| {
                    for &(id, cents) in prices {
                        diesel_sync::update(products::table.find(id))
                            .set(products::price_cents.eq(cents))
                            .execute(conn)
                            .await?;
                    }
                    Ok::<_, Error>(())
                })
                .await
                .expect("commit");
            }

            #[tokio::test(start_paused = true)]
            async fn a_handler_that_fails_twice_is_delivered_once_on_the_third_attempt() {
                let (handler, registry) = Scripted::registry(exact(4), |call, _| if call < 2 { Outcome::Fail } else { Outcome::Deliver });
                let mut conn = connect("fails_twice", &registry).await;
                set_prices(&mut conn, &[(1, 10), (2, 20)]).await;
                registry.settled().await;
                let seen = handler.seen();
                assert_eq!(seen.iter().map(|s| s.attempt).collect::<Vec<_>>(), vec![1, 2, 3]);
                assert_eq!(handler.delivered().len(), 1);
                assert_eq!(handler.delivered()[0].rows, vec![(1, 10), (2, 20)]);
                let metrics = registry.metrics();
                assert_eq!((metrics.calls, metrics.retries, metrics.failures, metrics.delivered), (3, 2, 2, 1));
                assert_eq!(seen[1].at - seen[0].at, Duration::from_secs(1), "first backoff delay");
                assert_eq!(seen[2].at - seen[1].at, Duration::from_secs(2), "second backoff delay doubles");
                assert!(registry.dead_letters().is_empty());
            }

            #[tokio::test(start_paused = true)]
            async fn a_handler_that_always_fails_is_dead_lettered_with_its_batch_and_error() {
                let (handler, registry) = Scripted::registry(exact(3), |_, _| Outcome::Fail);
                let mut conn = connect("always_fails", &registry).await;
                set_prices(&mut conn, &[(5, 50), (6, 60)]).await;
                registry.settled().await;
                assert_eq!(handler.seen().len(), 3);
                let letters = registry.dead_letters().drain();
                assert_eq!(letters.len(), 1);
                let letter = &letters[0];
                assert_eq!((letter.attempts(), letter.error(), letter.store()), (3, "marketplace answered 503", Some("1")));
                let batch = letter.batch::<Product>().expect("the typed batch");
                assert_eq!(batch.ids().collect::<BTreeSet<_>>(), BTreeSet::from([5, 6]));
                assert_eq!(registry.metrics().dead_letters, 1);
            }

            #[tokio::test(start_paused = true)]
            async fn a_permanent_error_is_dead_lettered_after_one_attempt() {
                let (handler, registry) = Scripted::registry(exact(5), |_, _| Outcome::Reject);
                let mut conn = connect("permanent", &registry).await;
                set_prices(&mut conn, &[(7, 70)]).await;
                registry.settled().await;
                assert_eq!(handler.seen().len(), 1);
                let letters = registry.dead_letters().drain();
                assert_eq!((letters.len(), letters[0].attempts()), (1, 1));
                assert_eq!(letters[0].error(), "price below the marketplace minimum");
            }

            #[tokio::test(start_paused = true)]
            async fn retry_after_waits_as_long_as_the_handler_asked() {
                let (handler, registry) = Scripted::registry(exact(3), |call, _| {
                    if call == 0 { Outcome::RetryAfter(Duration::from_secs(30)) } else { Outcome::Deliver }
                });
                let mut conn = connect("retry_after", &registry).await;
                set_prices(&mut conn, &[(8, 80)]).await;
                registry.settled().await;
                let seen = handler.seen();
                assert_eq!(seen.len(), 2);
                assert_eq!(seen[1].at - seen[0].at, Duration::from_secs(30));
            }

            #[tokio::test(start_paused = true)]
            async fn a_panicking_handler_is_caught_and_retried() {
                let (handler, registry) = Scripted::registry(exact(3), |call, _| if call == 0 { Outcome::Panic } else { Outcome::Deliver });
                let mut conn = connect("panic", &registry).await;
                set_prices(&mut conn, &[(9, 90)]).await;
                registry.settled().await;
                assert_eq!(handler.seen().len(), 2);
                assert_eq!(handler.delivered()[0].rows, vec![(9, 90)]);
                assert_eq!(registry.metrics().failures, 1);

                // A handler that always panics ends in the dead letters, with the panic message.
                let (_, registry) = Scripted::registry(exact(2), |_, _| Outcome::Panic);
                let mut conn = connect("panic_always", &registry).await;
                set_prices(&mut conn, &[(9, 91)]).await;
                registry.settled().await;
                let letters = registry.dead_letters().drain();
                assert_eq!(letters[0].error(), "handler panicked: handler bug");
            }

            #[tokio::test(start_paused = true)]
            async fn a_slow_handler_does_not_slow_commits_keeps_store_order_and_merges_waiting_batches() {
                let gate = Arc::new(Semaphore::new(0));
                let held = Arc::clone(&gate);
                let (handler, registry) = Scripted::registry(exact(1), move |_, _| Outcome::Gated(Arc::clone(&held)));
                let mut conn = connect("slow", &registry).await;
                set_prices(&mut conn, &[(1, 1)]).await;
                set_prices(&mut conn, &[(1, 2), (2, 2)]).await;
                set_prices(&mut conn, &[(2, 3), (3, 3)]).await;
                set_prices(&mut conn, &[(150, 4)]).await;
                // Every commit returned while store 1's first call is still held at the gate.
                assert_eq!(registry.metrics().delivered, 0);
                assert_eq!(registry.metrics().pending, 3, "store 1: one in flight, one merged waiting; store 2: one");
                gate.add_permits(Semaphore::MAX_PERMITS);
                registry.settled().await;
                let mut seen = handler.seen();
                seen.sort_by_key(|s| (s.store, s.at));
                let calls: Vec<(i64, Vec<(i64, i64)>)> = seen.into_iter().map(|s| (s.store, s.rows)).collect();
                assert_eq!(
                    calls,
                    vec![
                        (1, vec![(1, 1)]),
                        // The second and third commits waited behind the first call, merged:
                        // each id once, with its latest committed price.
                        (1, vec![(1, 2), (2, 3), (3, 3)]),
                        (2, vec![(150, 4)]),
                    ]
                );
                assert_eq!(registry.metrics().batches, 4);
            }

            #[tokio::test(start_paused = true)]
            async fn a_global_call_limit_caps_calls_in_flight() {
                let in_flight = Arc::new(Mutex::new((0_usize, 0_usize)));
                let gauge = Arc::clone(&in_flight);
                let registry = Registry::builder()
                    .handler(move |_: Batch<Product>| {
                        let gauge = Arc::clone(&gauge);
                        async move {
                            {
                                let mut g = gauge.lock().unwrap();
                                g.0 += 1;
                                g.1 = g.1.max(g.0);
                            }
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            gauge.lock().unwrap().0 -= 1;
                            Ok::<(), HandlerError>(())
                        }
                    })
                    .max_concurrent_calls(2)
                    .build();
                let mut conn = connect("call_limit", &registry).await;
                let prices: Vec<(i64, i64)> = (0..10).map(|store| (store * 100 + 1, 1)).collect();
                set_prices(&mut conn, &prices).await;
                registry.settled().await;
                assert_eq!(registry.metrics().delivered, 10);
                assert_eq!(in_flight.lock().unwrap().1, 2);
            }

            #[tokio::test(start_paused = true)]
            async fn shutdown_drains_pending_batches_and_dead_letters_what_misses_the_deadline() {
                let (handler, registry) = Scripted::registry(exact(4), |call, _| if call == 0 { Outcome::Fail } else { Outcome::Deliver });
                let mut conn = connect("shutdown", &registry).await;
                set_prices(&mut conn, &[(11, 11), (111, 111)]).await;
                let report = registry.shutdown(Duration::from_secs(60)).await;
                assert_eq!((report.delivered, report.dead_lettered, report.abandoned), (2, 0, 0));
                assert_eq!(handler.delivered().len(), 2);

                let closed = Arc::new(Semaphore::new(0));
                let (_, registry) = Scripted::registry(exact(1), move |_, _| Outcome::Gated(Arc::clone(&closed)));
                let mut conn = connect("shutdown_deadline", &registry).await;
                set_prices(&mut conn, &[(12, 12)]).await;
                set_prices(&mut conn, &[(13, 13)]).await;
                let report = registry.shutdown(Duration::from_secs(5)).await;
                assert_eq!((report.delivered, report.dead_lettered, report.abandoned), (0, 2, 2));
                let letters = registry.dead_letters().drain();
                let ids: BTreeSet<String> = letters.iter().flat_map(|l| l.ids().to_vec()).collect();
                assert_eq!(ids, BTreeSet::from(["12".to_owned(), "13".to_owned()]));
                assert_eq!(registry.metrics().pending, 0);
            }

            /// A batch whose handler failed twice and is waiting to retry at the deadline keeps
            /// its history in the dead letter.
            #[tokio::test(start_paused = true)]
            async fn a_dead_letter_made_at_the_shutdown_deadline_keeps_the_attempts_and_the_last_error() {
                let (handler, registry) = Scripted::registry(
                    RetryPolicy::default().max_attempts(5).initial_delay(Duration::from_secs(30)).jitter(false),
                    |_, _| Outcome::Fail,
                );
                let mut conn = connect("shutdown_history", &registry).await;
                set_prices(&mut conn, &[(14, 14)]).await;
                // The first call fails at once and the second after 30 s; the third would come
                // 60 s later, past the deadline.
                let report = registry.shutdown(Duration::from_secs(45)).await;
                assert_eq!((report.delivered, report.dead_lettered, report.abandoned), (0, 1, 1));
                assert_eq!(handler.seen().len(), 2);
                let letters = registry.dead_letters().drain();
                assert_eq!(letters.len(), 1);
                assert_eq!(letters[0].attempts(), 2, "{letters:?}");
                assert!(letters[0].error().contains("shutdown deadline"), "{}", letters[0].error());
                assert!(letters[0].error().contains("marketplace answered 503"), "{}", letters[0].error());
            }

            /// 1,000 commits over 20 stores; a tenth of calls fail at random; every seventh
            /// transaction rolls back. Every committed id is delivered or dead-lettered, and
            /// nothing of a rolled-back transaction is.
            #[tokio::test(start_paused = true)]
            async fn a_thousand_commits_with_random_failures_lose_nothing() {
                let random = Arc::new(Mutex::new(SplitMix(42)));
                let coin = Arc::clone(&random);
                let (handler, registry) = Scripted::registry(
                    RetryPolicy::default().max_attempts(3).initial_delay(Duration::from_millis(100)),
                    move |_, _| if coin.lock().unwrap().below(10) == 0 { Outcome::Fail } else { Outcome::Deliver },
                );
                let mut conn = connect("random_failures", &registry).await;
                let mut committed = BTreeSet::new();
                let mut rolled_back = BTreeSet::new();
                for tx in 1..=1_000_i64 {
                    let store = random.lock().unwrap().below(20);
                    let count = 1 + random.lock().unwrap().below(3);
                    // Rolled-back transactions write ids 51–100 of a store; committed ones 1–50.
                    let rolls_back = tx % 7 == 0;
                    let offset = if rolls_back { 51 } else { 1 };
                    let ids: Vec<i64> = (0..count).map(|_| store * 100 + offset + random.lock().unwrap().below(50)).collect();
                    let result = conn
                        .transaction(async |conn| {
                            for &id in &ids {
                                diesel_sync::update(products::table.find(id))
                                    .set(products::price_cents.eq(tx))
                                    .execute(conn)
                                    .await?;
                            }
                            if rolls_back { Err(Error::RollbackTransaction) } else { Ok(()) }
                        })
                        .await;
                    assert_eq!(result.is_err(), rolls_back);
                    if rolls_back { rolled_back.extend(ids) } else { committed.extend(ids) }
                }
                registry.settled().await;
                let delivered: BTreeSet<i64> = handler.delivered().iter().flat_map(|s| s.rows.iter().map(|r| r.0)).collect();
                let dead: BTreeSet<i64> = registry
                    .dead_letters()
                    .drain()
                    .iter()
                    .flat_map(|l| l.batch::<Product>().unwrap().ids().collect::<Vec<_>>())
                    .collect();
                let reached: BTreeSet<i64> = delivered.union(&dead).copied().collect();
                assert_eq!(reached, committed, "every committed id delivered or dead-lettered");
                assert!(reached.is_disjoint(&rolled_back), "nothing of a rolled-back transaction");
                let metrics = registry.metrics();
                assert!(metrics.failures > 0 && metrics.retries > 0, "faults were injected: {metrics:?}");
                assert_eq!(metrics.pending, 0);
            }
        }
    };
}

/// splitmix64: a small deterministic generator for the fault schedule.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: i64) -> i64 {
        i64::try_from(self.next() % n.unsigned_abs()).expect("below n")
    }
}

dispatch_suite!(
    sqlite,
    Backend::Sqlite,
    diesel_async::sync_connection_wrapper::SyncConnectionWrapper<diesel::SqliteConnection>
);

#[cfg(diesel_sync_postgres)]
dispatch_suite!(postgres, Backend::Postgres, diesel_async::AsyncPgConnection);

/// A key column the database does not keep unique: resolve loads several rows for one id.
mod key_not_unique {
    use std::sync::{Arc, Mutex};

    use diesel::prelude::*;
    use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
    use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    use diesel_sync::{Batch, HandlerError, Registry, Synced, SyncedConnection};

    diesel::table! {
        twins (id) {
            id -> BigInt,
            store_id -> BigInt,
        }
    }

    #[derive(Debug, Clone, Queryable, Selectable, Synced)]
    #[diesel(table_name = twins)]
    #[synced(store = store_id)]
    struct Twin {
        id: i64,
        store_id: i64,
    }

    type Conn = SyncedConnection<SyncConnectionWrapper<diesel::SqliteConnection>>;

    #[tokio::test]
    async fn rows_that_share_a_key_are_sent_once_and_counted_neither_stale_nor_lost() {
        let sent: Arc<Mutex<Vec<i64>>> = Arc::default();
        let record = Arc::clone(&sent);
        let registry: Registry<Conn> = Registry::builder()
            .handler(move |batch: Batch<Twin>| {
                record.lock().unwrap().extend(batch.ids());
                async { Ok::<_, HandlerError>(()) }
            })
            .build();
        let inner = SyncConnectionWrapper::establish(":memory:").await.unwrap();
        let mut conn = SyncedConnection::new(inner, registry.clone());
        conn.batch_execute("CREATE TABLE twins (id BIGINT NOT NULL, store_id BIGINT NOT NULL)")
            .await
            .unwrap();
        // Captured outside a transaction: resolved at once, and id 1 loads two rows.
        conn.batch_execute("INSERT INTO twins VALUES (1, 1), (1, 1), (2, 1)")
            .await
            .unwrap();
        registry.settled().await;
        let mut sent = sent.lock().unwrap().clone();
        sent.sort_unstable();
        assert_eq!(sent, [1, 2]);
        let metrics = registry.metrics();
        assert_eq!(
            (metrics.ids_stale, metrics.dead_letters),
            (0, 0),
            "{metrics:?}"
        );
    }
}

/// The flush after COMMIT is cancelled when the future driving `transaction()` is dropped while
/// it loads the committed rows: a timeout, a `select!` branch that lost, a client gone.
#[cfg(diesel_sync_postgres)]
mod cancelled_flush {
    use std::time::Duration;

    use diesel::result::Error;
    use diesel::QueryDsl;
    use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
    use diesel_sync::SyncedConnection;

    use super::*;

    #[tokio::test]
    async fn ids_whose_flush_was_dropped_after_commit_are_dead_lettered_not_lost() {
        let (handler, registry) = Scripted::registry(exact(1), |_, _| Outcome::Deliver);
        let url = create_database(Backend::Postgres, "cancelled_flush").await;
        let mut inner = AsyncPgConnection::establish(&url).await.unwrap();
        inner
            .batch_execute(Backend::Postgres.schema())
            .await
            .unwrap();
        inner
            .seed_products(common::products(100, 10), Backend::Postgres)
            .await;
        let mut conn = SyncedConnection::new(inner, registry.clone());
        // Another session locks the products: the price records commit, then the load of the
        // products they sync waits.
        let mut locker = AsyncPgConnection::establish(&url).await.unwrap();
        locker
            .batch_execute("BEGIN; LOCK TABLE products IN ACCESS EXCLUSIVE MODE")
            .await
            .unwrap();
        let records = [
            PriceRecord {
                object_id: 5,
                amount_cents: 1,
            },
            PriceRecord {
                object_id: 6,
                amount_cents: 1,
            },
        ];
        let committing = conn.transaction(async |conn| {
            diesel::insert_into(price_records::table)
                .values(&records)
                .execute(conn)
                .await?;
            Ok::<_, Error>(())
        });
        let outcome = tokio::time::timeout(Duration::from_millis(500), committing).await;
        assert!(outcome.is_err(), "the flush was still waiting on the lock");
        locker.batch_execute("ROLLBACK").await.unwrap();
        let committed: Vec<i64> = price_records::table
            .select(price_records::object_id)
            .order(price_records::object_id)
            .load(&mut locker)
            .await
            .unwrap();
        assert_eq!(committed, [5, 6], "the transaction committed");
        registry.settled().await;
        assert!(handler.seen().is_empty());
        let letters = registry.dead_letters().drain();
        assert_eq!(letters.len(), 1, "{letters:?}");
        let mut ids = letters[0].unresolved_ids::<Product>().unwrap().to_vec();
        ids.sort_unstable();
        assert_eq!(ids, committed);
        assert!(
            letters[0].error().contains("flush after COMMIT"),
            "{}",
            letters[0].error()
        );
    }
}

/// A synced connection to a fresh SQLite database with 100 products in 10 stores.
async fn sqlite_connection(test: &str, registry: Registry<SqliteConn>) -> SqliteConn {
    use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    let url = create_database(Backend::Sqlite, test).await;
    let mut inner = diesel_async::sync_connection_wrapper::SyncConnectionWrapper::establish(&url)
        .await
        .unwrap();
    inner.batch_execute(Backend::Sqlite.schema()).await.unwrap();
    inner
        .seed_products(common::products(100, 10), Backend::Sqlite)
        .await;
    diesel_sync::SyncedConnection::new(inner, registry)
}

type SqliteConn = diesel_sync::SyncedConnection<
    diesel_async::sync_connection_wrapper::SyncConnectionWrapper<diesel::SqliteConnection>,
>;

/// A store's delivery running on a runtime that shuts down before the handler returns: a
/// per-test runtime, or a command-line tool's `block_on`.
mod runtime_dropped {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::Semaphore;

    use super::*;

    #[test]
    fn a_store_whose_runtime_shut_down_mid_call_is_delivered_on_the_registrys_own() {
        let gate = Arc::new(Semaphore::new(0));
        let first_call = Arc::clone(&gate);
        let (handler, registry) = Scripted::registry(exact(3), move |call, _| {
            if call == 0 {
                Outcome::Gated(Arc::clone(&first_call))
            } else {
                Outcome::Deliver
            }
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut conn = sqlite_connection("runtime_dropped", registry.clone()).await;
            conn.mark_changed::<Product>([11]).await;
            // The handler's first call has started, and waits on the gate.
            while handler.seen().is_empty() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        drop(runtime);
        gate.add_permits(1);
        let settled = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(10), registry.settled()).await
            });
        assert!(
            settled.is_ok(),
            "the store stayed in flight: {:?}",
            registry.metrics()
        );
        let delivered: Vec<i64> = handler
            .delivered()
            .iter()
            .flat_map(|s| s.rows.iter().map(|r| r.0))
            .collect();
        assert!(delivered.contains(&11), "{:?}", handler.seen());
        assert_eq!(registry.metrics().dead_letters, 0);
    }
}

/// Misuse of the registry at startup, and a registry dropped with work pending.
mod registry_lifecycle {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::Semaphore;

    use super::*;

    #[test]
    #[should_panic(expected = "already has a handler: register one handler per target model")]
    fn a_second_handler_for_one_model_is_refused_at_startup() {
        let _: Registry<SqliteConn> = Registry::builder()
            .handler(async |_: Batch<Product>| Ok::<_, HandlerError>(()))
            .handler(async |_: Batch<Product>| Ok::<_, HandlerError>(()))
            .build();
    }

    #[tokio::test]
    async fn batches_pending_when_the_registry_is_dropped_are_still_delivered() {
        let gate = Arc::new(Semaphore::new(0));
        let first_call = Arc::clone(&gate);
        let (handler, registry) = Scripted::registry(exact(3), move |_, _| {
            Outcome::Gated(Arc::clone(&first_call))
        });
        let mut conn = sqlite_connection("registry_dropped", registry).await;
        conn.mark_changed::<Product>([11, 21]).await;
        // Every clone of the registry goes: the connection held the last one.
        drop(conn);
        gate.add_permits(2);
        let delivered = tokio::time::timeout(Duration::from_secs(10), async {
            while handler.delivered().len() < 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(delivered.is_ok(), "{:?}", handler.seen());
        let mut ids: Vec<i64> = handler
            .delivered()
            .iter()
            .flat_map(|seen| seen.rows.iter().map(|row| row.0))
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, [11, 21]);
    }
}

/// The application's code that runs right after a COMMIT, on the committing connection: a store
/// filter and a dead-letter sink. Their panics never unwind into the caller's commit.
mod user_code_after_commit {
    use diesel::{ExpressionMethods, QueryDsl};
    use diesel_async::{AsyncConnection, RunQueryDsl, SimpleAsyncConnection};
    use diesel_sync::{DeadLetter, DeadLetterSink};

    use super::*;

    #[tokio::test]
    async fn a_store_filter_that_panics_dead_letters_its_batch_and_the_commit_returns() {
        let calls = Arc::new(Mutex::new(0));
        let counted = Arc::clone(&calls);
        let registry: Registry<SqliteConn> = Registry::builder()
            .handler(move |_: Batch<Product>| {
                *counted.lock().unwrap() += 1;
                async { Ok::<_, HandlerError>(()) }
            })
            .when(|_: &Store| panic!("a bug in the store filter"))
            .build();
        let mut conn = sqlite_connection("filter_panics", registry.clone()).await;
        conn.batch_execute("INSERT INTO stores (id, name, sync_enabled) VALUES (2, 'two', TRUE)")
            .await
            .unwrap();
        conn.transaction(async |conn| {
            diesel::update(products::table.find(11))
                .set(products::price_cents.eq(1))
                .execute(conn)
                .await
        })
        .await
        .expect("committed, and the commit says so");
        registry.settled().await;
        assert_eq!(*calls.lock().unwrap(), 0);
        let letters = registry.dead_letters().drain();
        assert_eq!(letters.len(), 1, "{letters:?}");
        assert_eq!(letters[0].ids(), ["11"]);
        assert_eq!(letters[0].store(), Some("2"));
        assert!(
            letters[0]
                .error()
                .contains("the store filter panicked: a bug in the store filter"),
            "{}",
            letters[0].error()
        );
    }

    /// A sink whose storage is broken.
    struct PanickingSink;

    impl DeadLetterSink for PanickingSink {
        fn put(&self, _: DeadLetter) {
            panic!("the dead-letter store is down");
        }
    }

    #[tokio::test]
    async fn a_dead_letter_sink_that_panics_does_not_unwind_into_the_write() {
        let registry: Registry<SqliteConn> = Registry::builder()
            .handler(async |_: Batch<Product>| Ok::<_, HandlerError>(()))
            .dead_letter_sink(PanickingSink)
            .build();
        let mut conn = sqlite_connection("sink_panics", registry.clone()).await;
        // The committed rows cannot be loaded: their ids become a dead letter at once.
        conn.batch_execute("ALTER TABLE products RENAME TO products_gone")
            .await
            .unwrap();
        conn.mark_changed::<Product>([11]).await;
        registry.settled().await;
        assert_eq!(registry.metrics().dead_letters, 1);
    }
}
