//! The behaviour suite on the synchronous connection (`diesel_sync::blocking`) over Diesel's own
//! connections: the shared tests of `common/suite.rs`, by the same names as on the async side,
//! plus what only this kind has (r2d2 pools, no runtime at all, a caller's runtime), and capture
//! at the synchronous connection. No test body runs inside a tokio runtime: batches are
//! dispatched on the registry's own.
//!
//! `SQLite` always runs. `PostgreSQL` and `MySQL` run when their URLs are set at build time (see
//! `build.rs`) and the `blocking-postgres` / `blocking-mysql` features link their C clients.

mod common;
#[path = "common/blocking.rs"]
mod common_blocking;

use common::kind::{run_blocking, Kind, Setup};
use common::suite::{self, behaviour_suite, commit_and_returning_suite, committed_targets};
use common::*;
use common_blocking::*;

/// One test of the shared suite on the blocking kind: a plain `#[test]`, with no runtime.
macro_rules! blocking_test {
    ($kind:ty, $name:ident) => {
        #[test]
        fn $name() {
            run_blocking(suite::$name::<$kind>());
        }
    };
}

/// The blocking kind's own tests, for one synchronous Diesel connection.
macro_rules! blocking_tests {
    ($conn:ty) => {
        use std::sync::{Arc, Barrier};
        use std::time::Duration;

        use diesel::connection::SimpleConnection;
        use diesel::result::Error;
        use diesel::{
            Connection, ExpressionMethods, QueryDsl, RunQueryDsl, SaveChangesDsl, SelectableHelper,
        };
        use diesel_sync::blocking::SyncedConnection;
        use diesel_sync::Registry;

        type Fixture = BlockingKind<$conn>;

        const BACKEND: Backend = <Fixture as Kind>::BACKEND;

        fn price(
            id: i64,
            price_cents: i64,
        ) -> diesel_sync::SyncedUpdate<
            diesel::dsl::Find<products::table, i64>,
            diesel::dsl::Eq<products::price_cents, i64>,
            Product,
        > {
            diesel_sync::update(products::table.find(id)).set(products::price_cents.eq(price_cents))
        }

        /// For a synchronous caller the registry's own runtime runs retries and dead letters: a
        /// handler that fails once is called again after its backoff, and rows that cannot be
        /// loaded after a write are dead-lettered with their ids.
        #[test]
        fn retries_and_dead_letters_need_no_runtime() {
            use diesel_sync::{Batch, HandlerError, RetryPolicy};
            use std::sync::atomic::{AtomicUsize, Ordering};
            let f = Fixture::fixture("retries", Setup::default());
            let calls = Arc::new(AtomicUsize::new(0));
            let counted = Arc::clone(&calls);
            let registry = Registry::builder()
                .handler(move |_: Batch<Product>| {
                    let call = counted.fetch_add(1, Ordering::SeqCst);
                    async move {
                        if call == 0 {
                            Err(HandlerError::retryable("flaky"))
                        } else {
                            Ok(())
                        }
                    }
                })
                .retry_policy(
                    RetryPolicy::default()
                        .max_attempts(3)
                        .initial_delay(Duration::from_millis(50))
                        .jitter(false),
                )
                .build();
            let mut conn =
                SyncedConnection::new(<$conn>::establish(&f.url).unwrap(), registry.clone());
            price(1, 1).execute_blocking(&mut conn).unwrap();
            registry.settled_blocking();
            let metrics = registry.metrics();
            assert_eq!(
                (
                    calls.load(Ordering::SeqCst),
                    metrics.retries,
                    metrics.delivered
                ),
                (2, 1, 1)
            );
            conn.batch_execute("ALTER TABLE products RENAME TO products_gone")
                .unwrap();
            conn.mark_changed::<Product>([2, 3]);
            registry.settled_blocking();
            let letters = registry.dead_letters().drain();
            assert_eq!(letters.len(), 1, "{letters:?}");
            let mut ids = letters[0]
                .unresolved_ids::<Product>()
                .expect("unresolved ids")
                .to_vec();
            ids.sort_unstable();
            assert_eq!(ids, vec![2, 3]);
        }

        /// 32 threads on an r2d2 pool, all holding a connection at once, each committing or
        /// rolling back writes to its own store.
        #[test]
        fn concurrent_transactions_on_pooled_connections_do_not_cross_talk() {
            use diesel::r2d2::Pool;
            let setup = Setup {
                products: 3_200,
                per_store: 100,
                ..Setup::default()
            };
            let mut f = Fixture::fixture("pool_r2d2", setup);
            let manager =
                SyncedConnection::<$conn>::pool_manager(f.url.clone(), f.registry.clone());
            let pool = Pool::builder().max_size(32).build(manager).unwrap();
            let together = Arc::new(Barrier::new(32));
            let threads: Vec<_> = (0..32_i64)
                .map(|task| {
                    let pool = pool.clone();
                    let together = Arc::clone(&together);
                    std::thread::spawn(move || {
                        let mut conn = pool.get().unwrap();
                        if BACKEND == Backend::Sqlite {
                            conn.batch_execute("PRAGMA busy_timeout = 30000").unwrap();
                        }
                        together.wait();
                        let store = task + 1;
                        let ids: Vec<i64> =
                            (0..10).map(|k| (store - 1) * 100 + 1 + k * 7).collect();
                        let rolls_back = task % 4 == 3;
                        let result = conn.transaction(|conn| {
                            for &id in &ids {
                                price(id, id * 3).execute_blocking(conn)?;
                            }
                            if rolls_back {
                                Err(Error::RollbackTransaction)
                            } else {
                                Ok(())
                            }
                        });
                        assert_eq!(result.is_err(), rolls_back);
                        assert_eq!(conn.pending_ids(), 0);
                        (store, ids, rolls_back)
                    })
                })
                .collect();
            let mut expected = Vec::new();
            for thread in threads {
                let (store, ids, rolled_back) = thread.join().unwrap();
                if !rolled_back {
                    expected.push((store, ids));
                }
            }
            f.registry.settled_blocking();
            let mut calls: Vec<(i64, Vec<i64>)> = f
                .capture
                .calls()
                .iter()
                .map(|c| (c.store, c.ids()))
                .collect();
            calls.sort();
            expected.sort();
            assert_eq!(calls, expected);
            for call in f.capture.calls() {
                assert!(call
                    .rows
                    .iter()
                    .all(|p| p.store_id == call.store && p.price_cents == p.id * 3));
            }
            assert_eq!(f.capture.ids(), run_blocking(committed_targets(&mut f)));
        }

        /// The r2d2 counterpart of the async suite's bb8 test: autocommit writes,
        /// `save_changes` and `mark_changed` through pooled connections.
        #[test]
        fn r2d2_pooled_connections_route_through_the_collector() {
            use diesel::r2d2::Pool;
            let mut f = Fixture::fixture("pool_r2d2_routes", Setup::default());
            let manager =
                SyncedConnection::<$conn>::pool_manager(f.url.clone(), f.registry.clone());
            let pool = Pool::builder().max_size(4).build(manager).unwrap();
            let threads: Vec<_> = (1..=3_i64)
                .map(|store| {
                    let pool = pool.clone();
                    std::thread::spawn(move || {
                        let mut conn = pool.get().unwrap();
                        if BACKEND == Backend::Sqlite {
                            conn.batch_execute("PRAGMA busy_timeout = 30000").unwrap();
                        }
                        price(store * 100, 1).execute_blocking(&mut conn).unwrap();
                        let mut product: Product = products::table
                            .find(store * 100 - 1)
                            .select(Product::as_select())
                            .first(&mut conn)
                            .unwrap();
                        product.price_cents = 2;
                        conn.transaction(|conn| product.save_changes::<Product>(conn))
                            .unwrap();
                        diesel::sql_query(format!(
                            "UPDATE products SET price_cents = 3 WHERE id = {}",
                            store * 100 - 2
                        ))
                        .execute(conn.inner_mut())
                        .unwrap();
                        conn.mark_changed::<Product>([store * 100 - 2]);
                        // Plain Diesel on the pooled connection.
                        diesel::update(products::table.find(store * 100 - 3))
                            .set(products::price_cents.eq(4))
                            .execute(&mut *conn)
                            .unwrap();
                    })
                })
                .collect();
            for thread in threads {
                thread.join().unwrap();
            }
            f.registry.settled_blocking();
            let mut expected: Vec<i64> = (1..=3)
                .flat_map(|s| [s * 100 - 3, s * 100 - 2, s * 100 - 1, s * 100])
                .collect();
            expected.sort_unstable();
            assert_eq!(f.capture.ids(), expected);
            assert_eq!(f.capture.ids(), run_blocking(committed_targets(&mut f)));
            for call in f.capture.calls() {
                for row in &call.rows {
                    let written = match row.id % 100 {
                        0 => 1,  // execute_blocking outside a transaction
                        99 => 2, // save_changes
                        98 => 3, // raw SQL and mark_changed
                        _ => 4,  // plain Diesel
                    };
                    assert_eq!(row.price_cents, written, "row {}", row.id);
                }
            }
        }

        /// The r2d2 counterpart of the async suite's test: a pooled connection's COMMIT hands
        /// its ids to the registry's own connection. A temporary `stores` table shadows the
        /// real one on the committing connection only, so a resolve there would load the
        /// shadow's row with the batch.
        #[test]
        fn a_pooled_commit_is_resolved_on_the_registrys_own_connection() {
            use diesel::r2d2::Pool;
            let mut f = Fixture::fixture("pool_r2d2_own_resolve", Setup::default());
            let manager =
                SyncedConnection::<$conn>::pool_manager(f.url.clone(), f.registry.clone());
            let pool = Pool::builder().max_size(1).build(manager).unwrap();
            let mut conn = pool.get().unwrap();
            for sql in [
                "INSERT INTO stores (id, name, sync_enabled) VALUES (1, 'real', TRUE)",
                "CREATE TEMPORARY TABLE stores AS SELECT * FROM stores",
                "UPDATE stores SET name = 'shadow'",
            ] {
                conn.inner_mut().batch_execute(sql).unwrap();
            }
            let queries_before = f.registry.metrics().resolve_queries;
            conn.transaction(|conn| price(1, 77).execute_blocking(conn))
                .unwrap();
            f.registry.settled_blocking();
            let calls = f.capture.calls();
            assert_eq!(calls.len(), 1, "{calls:?}");
            assert_eq!(calls[0].ids(), [1]);
            assert_eq!(calls[0].rows[0].price_cents, 77);
            let store = calls[0].store_row.as_ref().expect("store 1 has a row");
            assert_eq!(store.name, "real", "loaded on the committing connection");
            assert_eq!(f.registry.metrics().resolve_queries, queries_before + 1);
            assert_eq!(f.capture.ids(), run_blocking(committed_targets(&mut f)));
        }

        /// Called from async code through `spawn_blocking`, the connection dispatches on the
        /// caller's runtime and `settled().await` sees it.
        #[test]
        fn works_from_spawn_blocking_inside_a_runtime() {
            let BlockingKind {
                mut conn,
                capture,
                registry,
                ..
            } = Fixture::fixture("spawn_blocking", Setup::default());
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                tokio::task::spawn_blocking(move || {
                    conn.transaction(|conn| price(42, 4).execute_blocking(conn))
                        .unwrap();
                })
                .await
                .unwrap();
                registry.settled().await;
            });
            assert_eq!(capture.ids(), vec![42]);
        }
    };
}

mod sqlite {
    use super::*;

    behaviour_suite!(blocking_test, BlockingKind<diesel::SqliteConnection>);
    commit_and_returning_suite!(blocking_test, BlockingKind<diesel::SqliteConnection>);
    blocking_tests!(diesel::SqliteConnection);
}

#[cfg(all(diesel_sync_postgres, feature = "blocking-postgres"))]
mod postgres {
    use super::*;

    behaviour_suite!(blocking_test, BlockingKind<diesel::PgConnection>);
    commit_and_returning_suite!(blocking_test, BlockingKind<diesel::PgConnection>);
    blocking_tests!(diesel::PgConnection);
}

#[cfg(all(diesel_sync_mysql, feature = "blocking-mysql"))]
mod mysql {
    use super::*;

    behaviour_suite!(blocking_test, BlockingKind<diesel::MysqlConnection>);
    blocking_tests!(diesel::MysqlConnection);
}

/// Capture at the synchronous connection: plain Diesel and raw SQL through a
/// `blocking::SyncedConnection`, expected ids read from the database. Diesel's synchronous MySQL
/// connection cannot read rows a write returns, so there an update or delete selects its keys
/// first, an insert takes them from its binds, and an upsert is refused before it runs.
macro_rules! blocking_capture_suite {
    ($suite:ident, $backend:expr, $conn:ty, $conflict:expr) => {
        mod $suite {
            use super::*;

            use diesel::connection::SimpleConnection;
            use diesel::result::Error;
            use diesel::{Connection, ExpressionMethods, QueryDsl, RunQueryDsl};
            use diesel_sync::blocking::SyncedConnection;
            use diesel_sync::{CaptureRefused, Registry};

            type Conn = SyncedConnection<$conn>;

            const BACKEND: Backend = $backend;

            /// Whether the connection captures upserts (Diesel's synchronous MySQL cannot).
            const CAPTURES_UPSERTS: bool = !matches!(BACKEND, Backend::Mysql);

            pub(crate) struct Fixture {
                pub(crate) conn: Conn,
                pub(crate) capture: Capture,
                pub(crate) registry: Registry<Conn>,
                pub(crate) url: String,
            }

            pub(crate) fn fixture(test: &str) -> Fixture {
                let url = create_database_blocking(
                    BACKEND,
                    &format!("bc_{}_{test}", stringify!($suite)),
                );
                let capture = Capture::default();
                let registry = capture.registry();
                let inner = <$conn>::establish(&url).expect("connect");
                let mut conn = SyncedConnection::new(inner, registry.clone());
                conn.batch_execute(BACKEND.schema()).expect("schema");
                conn.inner_mut()
                    .seed_products(common::products(300, 100), BACKEND);
                diesel::delete(audit::table)
                    .execute(conn.inner_mut())
                    .expect("clear the audit");
                Fixture { conn, capture, registry, url }
            }

            /// The target ids the committed transactions changed, as the audit triggers
            /// recorded them: what must have been delivered.
            pub(crate) fn audited(conn: &mut Conn) -> Vec<i64> {
                audit::table
                    .select(audit::target_id)
                    .distinct()
                    .order(audit::target_id)
                    .load(conn.inner_mut())
                    .unwrap()
            }

            pub(crate) fn ids_in_store(conn: &mut Conn, store: i64) -> Vec<i64> {
                let mut ids: Vec<i64> = products::table
                    .filter(products::store_id.eq(store))
                    .select(products::id)
                    .load(conn.inner_mut())
                    .unwrap();
                ids.sort_unstable();
                ids
            }

            pub(crate) fn refusal(error: &Error) -> &CaptureRefused {
                match error {
                    Error::QueryBuilderError(source) => source
                        .downcast_ref::<CaptureRefused>()
                        .unwrap_or_else(|| panic!("not a refusal: {error}")),
                    other => panic!("not a refusal: {other}"),
                }
            }

            #[test]
            fn plain_diesel_update_by_filter_registers_every_row_it_changes() {
                let mut f = fixture("plain_update");
                let expected = ids_in_store(&mut f.conn, 2);
                let result = f.conn.transaction(|conn| {
                    diesel::update(products::table.filter(products::store_id.eq(2)))
                        .set(products::price_cents.eq(products::price_cents + 1))
                        .execute(conn)
                });
                f.registry.settled_blocking();
                assert_eq!(result.unwrap(), expected.len());
                assert_eq!(audited(&mut f.conn), expected);
                assert_eq!(f.capture.ids(), expected);
            }

            #[test]
            fn plain_diesel_multi_row_insert_of_a_reference_model_registers_its_targets() {
                let mut f = fixture("plain_insert_reference");
                let rows: Vec<PriceRecord> = [7, 150, 7]
                    .into_iter()
                    .map(|object_id| PriceRecord { object_id, amount_cents: 990 })
                    .collect();
                let result = f.conn.transaction(|conn| {
                    diesel::insert_into(price_records::table).values(&rows).execute(conn)
                });
                f.registry.settled_blocking();
                let written = audited(&mut f.conn);
                assert_eq!(result.unwrap(), 3);
                assert_eq!(written, [7, 150]);
                assert_eq!(f.capture.ids(), written);
            }

            #[test]
            fn inserts_of_one_statement_type_with_different_row_counts_register_every_row() {
                let mut f = fixture("row_counts");
                let records = |objects: &[i64]| -> Vec<PriceRecord> {
                    objects
                        .iter()
                        .map(|&object_id| PriceRecord { object_id, amount_cents: 1 })
                        .collect()
                };
                let (two, four) = (records(&[11, 12]), records(&[21, 22, 23, 24]));
                let result = f.conn.transaction(|conn| {
                    let mut written = 0;
                    for rows in [&two, &four, &two] {
                        written += diesel::insert_into(price_records::table).values(rows).execute(conn)?;
                    }
                    Ok::<_, Error>(written)
                });
                f.registry.settled_blocking();
                assert_eq!(result.unwrap(), 8);
                assert_eq!(audited(&mut f.conn), [11, 12, 21, 22, 23, 24]);
                assert_eq!(f.capture.ids(), [11, 12, 21, 22, 23, 24]);
            }

            #[test]
            fn a_raw_sql_query_write_registers_the_rows_it_writes() {
                use diesel::sql_types::BigInt;
                let mut f = fixture("sql_query");
                let delete = match BACKEND {
                    Backend::Postgres => "DELETE FROM price_records WHERE object_id = $1",
                    _ => "DELETE FROM price_records WHERE object_id = ?",
                };
                let result = f.conn.transaction(|conn| {
                    diesel::sql_query(
                        "INSERT INTO price_records (object_id, amount_cents) VALUES (31, 1), (32, 1)",
                    )
                    .execute(conn)?;
                    diesel::sql_query(delete).bind::<BigInt, _>(32_i64).execute(conn)
                });
                f.registry.settled_blocking();
                assert_eq!(result.unwrap(), 1);
                assert_eq!(audited(&mut f.conn), [31, 32]);
                assert_eq!(f.capture.ids(), [31, 32]);
            }

            #[test]
            fn an_insert_that_skips_conflicting_rows_registers_only_the_rows_it_inserted() {
                let mut f = fixture("do_nothing");
                let rows: Vec<Product> = [(5, "taken"), (1005, "new")]
                    .into_iter()
                    .map(|(id, name)| Product { id, store_id: 1, name: name.into(), price_cents: 1 })
                    .collect();
                let result = f.conn.transaction(|conn| {
                    let mut written = 0;
                    for row in &rows {
                        written += diesel::insert_into(products::table)
                            .values(row)
                            .on_conflict_do_nothing()
                            .execute(conn)?;
                    }
                    Ok::<_, Error>(written)
                });
                f.registry.settled_blocking();
                if CAPTURES_UPSERTS {
                    assert_eq!(result.unwrap(), 1);
                    assert_eq!(audited(&mut f.conn), [1005]);
                    assert_eq!(f.capture.ids(), [1005]);
                } else {
                    // `INSERT IGNORE` on MySQL: which rows it skipped cannot be read.
                    assert_eq!(refusal(&result.unwrap_err()).table(), "products");
                    assert!(audited(&mut f.conn).is_empty(), "nothing ran");
                }
            }

            /// A `transaction()` whose closure panics, the panic caught, leaves the database
            /// transaction open. The next `transaction()` rolls it back first: otherwise it
            /// would run as a savepoint inside it and return `Ok` with nothing committed.
            #[test]
            fn a_transaction_whose_closure_panicked_is_rolled_back_before_the_next_one() {
                let mut f = fixture("abandoned");
                let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    f.conn.transaction(|conn| {
                        diesel::update(products::table.find(1))
                            .set(products::price_cents.eq(1))
                            .execute(conn)?;
                        if conn.pending_ids() > 0 {
                            panic!("a bug in the closure");
                        }
                        Ok::<_, Error>(())
                    })
                }));
                assert!(panicked.is_err());
                f.conn
                    .transaction(|conn| {
                        diesel::update(products::table.find(3))
                            .set(products::price_cents.eq(3))
                            .execute(conn)
                    })
                    .unwrap();
                f.registry.settled_blocking();
                let mut other = SyncedConnection::new(
                    <$conn>::establish(&f.url).unwrap(),
                    Registry::empty(),
                );
                assert_eq!(audited(&mut other), [3]);
                assert_eq!(f.capture.ids(), [3]);
            }

            #[test]
            fn a_plain_write_outside_a_transaction_is_handed_on_at_once() {
                let mut f = fixture("plain_autocommit");
                let result = diesel::insert_into(products::table)
                    .values(&Product { id: 1001, store_id: 1, name: "new".into(), price_cents: 5 })
                    .execute(&mut f.conn);
                f.registry.settled_blocking();
                assert_eq!(result.unwrap(), 1);
                assert_eq!(audited(&mut f.conn), [1001]);
                assert_eq!(f.capture.ids(), vec![1001]);
            }

            #[test]
            fn plain_diesel_upserts_register_the_rows_they_insert_or_update() {
                let mut f = fixture("plain_upsert");
                let result = f.conn.transaction(|conn| {
                    // Product 5 exists: updated. Product 1002 does not: inserted.
                    for id in [5, 1002] {
                        diesel::insert_into(products::table)
                            .values(&Product { id, store_id: 1, name: "up".into(), price_cents: 9 })
                            .on_conflict($conflict)
                            .do_update()
                            .set(products::price_cents.eq(777))
                            .execute(conn)?;
                    }
                    Ok::<_, Error>(())
                });
                f.registry.settled_blocking();
                if CAPTURES_UPSERTS {
                    result.unwrap();
                    assert_eq!(audited(&mut f.conn), [5, 1002]);
                    assert_eq!(f.capture.ids(), [5, 1002]);
                } else {
                    assert_eq!(refusal(&result.unwrap_err()).table(), "products");
                    assert!(audited(&mut f.conn).is_empty(), "nothing ran");
                }
            }

            #[test]
            fn a_rolled_back_plain_write_delivers_nothing() {
                let mut f = fixture("plain_rollback");
                let result = f.conn.transaction(|conn| {
                    diesel::update(products::table.find(3))
                        .set(products::price_cents.eq(1))
                        .execute(conn)?;
                    Err::<(), _>(Error::RollbackTransaction)
                });
                assert!(result.is_err());
                f.registry.settled_blocking();
                assert!(audited(&mut f.conn).is_empty(), "the database kept nothing");
                assert!(f.capture.ids().is_empty());
            }

            #[test]
            fn a_raw_batch_runs_one_statement_at_a_time_and_captures_each_synced_write() {
                let mut f = fixture("raw_batch");
                let expected = ids_in_store(&mut f.conn, 3);
                let result = f.conn.transaction(|conn| {
                    conn.batch_execute(
                        "INSERT INTO stores (id, name, sync_enabled) VALUES (9, 'x', TRUE);
                         UPDATE products SET price_cents = 1 WHERE store_id = 3",
                    )
                });
                f.registry.settled_blocking();
                let stores: i64 = stores::table.count().get_result(f.conn.inner_mut()).unwrap();
                result.unwrap();
                assert_eq!(audited(&mut f.conn), expected);
                assert_eq!(f.capture.ids(), expected);
                assert_eq!(stores, 1);
            }

            #[test]
            fn writes_to_tables_without_a_synced_model_and_schema_changes_pass_through() {
                let mut f = fixture("unsynced");
                f.conn
                    .batch_execute(
                        "INSERT INTO stores (id, name, sync_enabled) VALUES (1, 'one', TRUE);
                         CREATE TABLE audit_note (id BIGINT PRIMARY KEY); DROP TABLE audit_note",
                    )
                    .unwrap();
                diesel::delete(stores::table).execute(&mut f.conn).unwrap();
                f.registry.settled_blocking();
                assert_eq!(f.registry.metrics().ids_committed, 0);
            }
        }
    };
}

/// Writes that return rows, on the backends whose Diesel has `RETURNING`: captured inside a
/// transaction, every row read before the caller sees the first.
macro_rules! blocking_returning_suite {
    ($suite:ident, $base:ident) => {
        mod $suite {
            use diesel::result::Error;
            use diesel::{Connection, ExpressionMethods, QueryDsl, RunQueryDsl};

            use super::$base::{fixture, ids_in_store, refusal};
            use super::*;

            #[test]
            fn a_write_that_returns_rows_in_a_transaction_registers_every_row() {
                let mut f = fixture("returning");
                let expected = ids_in_store(&mut f.conn, 2);
                let (first, record) = f
                    .conn
                    .transaction(|conn| {
                        // `get_result` reads one row: every row's key is registered anyway.
                        let first: (i64, i64, String, i64) =
                            diesel::update(products::table.filter(products::store_id.eq(2)))
                                .set(products::price_cents.eq(products::price_cents + 1))
                                .get_result(conn)?;
                        let record: i64 = diesel::insert_into(price_records::table)
                            .values(&PriceRecord {
                                object_id: 250,
                                amount_cents: 1,
                            })
                            .returning(price_records::id)
                            .get_result(conn)?;
                        Ok::<_, Error>((first, record))
                    })
                    .unwrap();
                assert_eq!(first.1, 2, "the caller's row is the statement's own");
                assert!(record > 0);
                f.registry.settled_blocking();
                let mut delivered = expected;
                delivered.push(250);
                assert_eq!(super::$base::audited(&mut f.conn), delivered);
                assert_eq!(f.capture.ids(), delivered);
            }

            #[test]
            fn a_delete_that_returns_rows_in_a_transaction_sends_removals() {
                let mut f = fixture("returning_delete");
                let expected = ids_in_store(&mut f.conn, 1);
                let names: Vec<String> = f
                    .conn
                    .transaction(|conn| {
                        diesel::delete(products::table.filter(products::store_id.eq(1)))
                            .returning(products::name)
                            .get_results(conn)
                    })
                    .unwrap();
                assert_eq!(names.len(), expected.len(), "the caller gets every row");
                assert!(names.iter().all(|name| name.starts_with("product-")));
                f.registry.settled_blocking();
                assert_eq!(super::$base::audited(&mut f.conn), expected);
                assert!(f.capture.ids().is_empty());
                assert_eq!(f.capture.removed(), expected);
                assert!(f.capture.calls().iter().all(|call| call.store == 1));
            }

            #[test]
            fn a_write_with_its_own_returning_run_with_execute_registers_every_row() {
                let mut f = fixture("returning_execute");
                let expected = ids_in_store(&mut f.conn, 3);
                let written = diesel::delete(products::table.filter(products::store_id.eq(3)))
                    .returning(products::name)
                    .execute(&mut f.conn)
                    .unwrap();
                assert_eq!(written, expected.len());
                f.registry.settled_blocking();
                assert_eq!(super::$base::audited(&mut f.conn), expected);
                // Every deleted row reaches the handler as a removal from store 3.
                let metrics = f.registry.metrics();
                assert_eq!(metrics.ids_removed, expected.len() as u64);
                assert_eq!(metrics.ids_stale, 0);
                assert_eq!(f.capture.removed(), expected);
            }

            #[test]
            fn raw_sql_that_returns_rows_in_a_transaction_registers_every_row() {
                #[derive(diesel::QueryableByName)]
                struct Returned {
                    #[diesel(sql_type = diesel::sql_types::BigInt)]
                    id: i64,
                }
                let mut f = fixture("raw_returning");
                let returned = f
                    .conn
                    .transaction(|conn| {
                        diesel::sql_query(
                            "INSERT INTO price_records (object_id, amount_cents) VALUES (41, 1), (42, 1) RETURNING id",
                        )
                        .load::<Returned>(conn)
                    })
                    .unwrap();
                assert_eq!(returned.len(), 2);
                assert!(returned.iter().all(|row| row.id > 0));
                f.registry.settled_blocking();
                assert_eq!(super::$base::audited(&mut f.conn), [41, 42]);
                assert_eq!(f.capture.ids(), [41, 42]);
            }

            #[test]
            fn a_write_that_returns_rows_outside_a_transaction_is_refused_and_changes_nothing() {
                let mut f = fixture("returning_outside");
                let error = diesel::update(products::table.find(1))
                    .set(products::price_cents.eq(1))
                    .get_result::<(i64, i64, String, i64)>(&mut f.conn)
                    .unwrap_err();
                assert_eq!(refusal(&error).table(), "products");
                assert!(error.to_string().contains("conn.transaction"), "{error}");
                let price: i64 = products::table
                    .find(1)
                    .select(products::price_cents)
                    .first(f.conn.inner_mut())
                    .unwrap();
                assert_ne!(price, 1);
            }
        }
    };
}

blocking_capture_suite!(
    sqlite_capture,
    Backend::Sqlite,
    diesel::SqliteConnection,
    products::id
);

/// `replace_into` and `insert_or_ignore_into` on synchronous SQLite.
mod sqlite_replace {
    use diesel::result::Error;
    use diesel::{Connection, RunQueryDsl};

    use super::sqlite_capture::{audited, fixture};
    use super::*;

    #[test]
    fn replace_into_and_insert_or_ignore_register_the_rows_they_write() {
        let mut f = fixture("replace");
        f.conn
            .transaction(|conn| {
                diesel::replace_into(products::table)
                    .values(&Product {
                        id: 8,
                        store_id: 1,
                        name: "r".into(),
                        price_cents: 2,
                    })
                    .execute(conn)?;
                // Product 9 exists: ignored, nothing registered. 3001 is inserted.
                for id in [9, 3001] {
                    diesel::insert_or_ignore_into(products::table)
                        .values(&Product {
                            id,
                            store_id: 1,
                            name: "i".into(),
                            price_cents: 3,
                        })
                        .execute(conn)?;
                }
                Ok::<_, Error>(())
            })
            .unwrap();
        f.registry.settled_blocking();
        assert_eq!(f.capture.ids(), [8, 3001]);
        assert_eq!(audited(&mut f.conn), [8, 3001]);
    }
}
blocking_returning_suite!(sqlite_returning, sqlite_capture);
#[cfg(all(diesel_sync_postgres, feature = "blocking-postgres"))]
blocking_returning_suite!(postgres_returning, postgres_capture);
#[cfg(all(diesel_sync_postgres, feature = "blocking-postgres"))]
blocking_capture_suite!(
    postgres_capture,
    Backend::Postgres,
    diesel::PgConnection,
    products::id
);
#[cfg(all(diesel_sync_mysql, feature = "blocking-mysql"))]
blocking_capture_suite!(
    mysql_capture,
    Backend::Mysql,
    diesel::MysqlConnection,
    diesel::dsl::DuplicatedKeys
);

/// What Diesel's synchronous MySQL connection cannot capture: it reads no rows a write returns,
/// so an INSERT whose keys the database generates, or a write with its own `RETURNING`, is
/// refused before it runs.
#[cfg(all(diesel_sync_mysql, feature = "blocking-mysql"))]
mod mysql_refusals {
    use diesel::{Connection, QueryDsl, RunQueryDsl};

    use super::mysql_capture::{audited, fixture, refusal};
    use super::*;

    #[test]
    fn writes_whose_keys_only_returning_could_tell_are_refused_and_change_nothing() {
        #[derive(diesel::QueryableByName)]
        struct Returned {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            _id: i64,
        }
        let mut f = fixture("refusals");
        let generated = f.conn.transaction(|conn| {
            diesel::sql_query("INSERT INTO listings (store_id, title) VALUES (1, 'new')")
                .execute(conn)
        });
        let error = generated.unwrap_err();
        assert_eq!(refusal(&error).table(), "listings");
        assert!(error.to_string().contains("synchronous MySQL"), "{error}");
        let listings: i64 = listings::table
            .count()
            .get_result(f.conn.inner_mut())
            .unwrap();
        assert_eq!(listings, 0, "the insert did not run");
        let returning = f.conn.transaction(|conn| {
            diesel::sql_query("DELETE FROM price_records WHERE object_id = 1 RETURNING id")
                .load::<Returned>(conn)
        });
        assert_eq!(
            refusal(&returning.err().expect("refused")).table(),
            "price_records"
        );
        f.registry.settled_blocking();
        assert!(audited(&mut f.conn).is_empty(), "nothing ran");
        assert!(f.capture.ids().is_empty());
    }
}

/// A deadlock on the synchronous connection: `InnoDB` rolls the victim's whole transaction
/// back; nothing of it is delivered, and no `transaction()` begins inside the calls still
/// running.
#[cfg(all(diesel_sync_mysql, feature = "blocking-mysql"))]
mod mysql_deadlock {
    use std::sync::mpsc;

    use diesel::result::{DatabaseErrorKind, Error};
    use diesel::{Connection, ExpressionMethods, MysqlConnection, QueryDsl, RunQueryDsl};

    use super::mysql_capture::{audited, fixture};
    use super::*;

    /// Another session that locks products 2–300, says so, and once told the synced session
    /// waits for product 2, asks for product 1: a deadlock. It holds the heavier transaction,
    /// which `InnoDB` keeps, so the synced one is the victim; it then rolls back.
    fn other_session(
        url: &str,
    ) -> (
        std::thread::JoinHandle<Result<(), Error>>,
        mpsc::Receiver<()>,
        mpsc::Sender<()>,
    ) {
        let (b_locked, b_has_locked) = mpsc::channel();
        let (a_waits, a_is_waiting) = mpsc::channel::<()>();
        let mut other = MysqlConnection::establish(url).unwrap();
        let other = std::thread::spawn(move || {
            other.transaction(|other| {
                diesel::update(products::table.filter(products::id.ge(2)))
                    .set(products::price_cents.eq(2))
                    .execute(other)?;
                b_locked.send(()).unwrap();
                a_is_waiting.recv().unwrap();
                std::thread::sleep(std::time::Duration::from_millis(300));
                diesel::update(products::table.find(1))
                    .set(products::price_cents.eq(2))
                    .execute(other)?;
                Err::<(), _>(Error::RollbackTransaction)
            })
        });
        (other, b_has_locked, a_waits)
    }

    #[test]
    fn a_transaction_the_database_rolled_back_delivers_nothing_and_begins_nothing_more() {
        let mut f = fixture("deadlock");
        let (other, b_has_locked, a_waits) = other_session(&f.url);
        let mut began_after = None;
        let result = f.conn.transaction(|conn| {
            let nested = conn.transaction(|conn| {
                diesel::update(products::table.find(1))
                    .set(products::price_cents.eq(1))
                    .execute(conn)?;
                b_has_locked.recv().unwrap();
                a_waits.send(()).unwrap();
                // Waits for product 2, which the other session holds: the deadlock.
                diesel::update(products::table.find(2))
                    .set(products::price_cents.eq(1))
                    .execute(conn)?;
                Ok::<_, Error>(())
            });
            assert!(nested.is_err(), "the deadlock ends the savepoint");
            began_after = Some(conn.transaction(|_| Ok::<_, Error>(())));
            Ok::<_, Error>(())
        });
        assert_eq!(other.join().unwrap(), Err(Error::RollbackTransaction));
        let began_after = began_after.expect("the closure ran on");
        assert!(
            matches!(
                began_after,
                Err(Error::DatabaseError(
                    DatabaseErrorKind::SerializationFailure,
                    _
                ))
            ),
            "{began_after:?}"
        );
        assert!(
            result.is_err(),
            "the outermost call reports the loss: {result:?}"
        );
        f.registry.settled_blocking();
        let price: i64 = products::table
            .find(1)
            .select(products::price_cents)
            .first(f.conn.inner_mut())
            .unwrap();
        assert_ne!(price, 1, "rolled back by the database");
        assert!(audited(&mut f.conn).is_empty());
        assert!(f.capture.ids().is_empty(), "{:?}", f.capture.calls());
        // The connection is whole again.
        f.conn
            .transaction(|conn| {
                diesel::update(products::table.find(1))
                    .set(products::price_cents.eq(1))
                    .execute(conn)
            })
            .unwrap();
        f.registry.settled_blocking();
        assert_eq!(f.capture.ids(), audited(&mut f.conn));
        assert_eq!(f.capture.ids(), [1]);
    }

    /// The deadlock met by a statement the application ran on the inner connection, in a
    /// nested transaction whose failure the enclosing closure catches. Diesel lets the failed
    /// savepoint rollback pass as if it had worked; the connection saw the statement's error,
    /// so the enclosing level does not commit what the database rolled back.
    #[test]
    fn a_deadlock_met_on_the_inner_connection_is_seen_and_nothing_is_sent() {
        let mut f = fixture("deadlock_inner");
        let (other, b_has_locked, a_waits) = other_session(&f.url);
        let result = f.conn.transaction(|conn| {
            diesel::update(products::table.find(1))
                .set(products::price_cents.eq(1))
                .execute(conn)?;
            let nested = conn.transaction(|conn| {
                b_has_locked.recv().unwrap();
                a_waits.send(()).unwrap();
                // Unsynced, on the inner connection: waits for product 2, the deadlock.
                diesel::update(products::table.find(2))
                    .set(products::price_cents.eq(1))
                    .execute(conn.inner_mut())
            });
            assert!(nested.is_err(), "the deadlock ends the savepoint");
            Ok::<_, Error>(())
        });
        assert_eq!(other.join().unwrap(), Err(Error::RollbackTransaction));
        assert!(
            result.is_err(),
            "the outermost call reports the loss: {result:?}"
        );
        f.registry.settled_blocking();
        assert!(audited(&mut f.conn).is_empty(), "nothing committed");
        assert!(f.capture.ids().is_empty(), "{:?}", f.capture.calls());
    }

    /// The same at the outermost level: the closure catches the inner connection's deadlock and
    /// returns `Ok`, and the COMMIT MySQL would accept with no transaction open is refused.
    #[test]
    fn a_deadlock_met_on_the_inner_connection_and_caught_fails_the_commit() {
        let mut f = fixture("deadlock_inner_caught");
        let (other, b_has_locked, a_waits) = other_session(&f.url);
        let result = f.conn.transaction(|conn| {
            diesel::update(products::table.find(1))
                .set(products::price_cents.eq(1))
                .execute(conn)?;
            b_has_locked.recv().unwrap();
            a_waits.send(()).unwrap();
            let deadlock = diesel::update(products::table.find(2))
                .set(products::price_cents.eq(1))
                .execute(conn.inner_mut());
            assert!(deadlock.is_err(), "the deadlock: {deadlock:?}");
            Ok::<_, Error>(())
        });
        assert_eq!(other.join().unwrap(), Err(Error::RollbackTransaction));
        assert!(
            matches!(
                result,
                Err(Error::DatabaseError(
                    DatabaseErrorKind::SerializationFailure,
                    _
                ))
            ),
            "{result:?}"
        );
        f.registry.settled_blocking();
        assert!(audited(&mut f.conn).is_empty(), "nothing committed");
        assert!(f.capture.ids().is_empty(), "{:?}", f.capture.calls());
    }

    /// The deadlock's error caught at the outermost level, the closure going on: what ran
    /// before it was rolled back and is not sent, a synced write after it is refused (it would
    /// need a transaction of its own), and the call reports the loss.
    #[test]
    fn a_deadlock_caught_by_the_caller_sends_nothing_and_refuses_what_follows() {
        let mut f = fixture("deadlock_caught");
        let (other, b_has_locked, a_waits) = other_session(&f.url);
        let result = f.conn.transaction(|conn| {
            diesel::update(products::table.find(1))
                .set(products::price_cents.eq(1))
                .execute(conn)?;
            b_has_locked.recv().unwrap();
            a_waits.send(()).unwrap();
            let deadlock = diesel::update(products::table.find(2))
                .set(products::price_cents.eq(1))
                .execute(conn);
            assert!(
                matches!(
                    deadlock,
                    Err(Error::DatabaseError(
                        DatabaseErrorKind::SerializationFailure,
                        _
                    ))
                ),
                "{deadlock:?}"
            );
            let after = diesel::update(products::table.find(250))
                .set(products::price_cents.eq(1))
                .execute(conn);
            assert!(
                matches!(
                    after,
                    Err(Error::DatabaseError(
                        DatabaseErrorKind::SerializationFailure,
                        _
                    ))
                ),
                "{after:?}"
            );
            Ok::<_, Error>(())
        });
        assert_eq!(other.join().unwrap(), Err(Error::RollbackTransaction));
        assert!(
            matches!(
                result,
                Err(Error::DatabaseError(
                    DatabaseErrorKind::SerializationFailure,
                    _
                ))
            ),
            "{result:?}"
        );
        f.registry.settled_blocking();
        assert!(audited(&mut f.conn).is_empty(), "nothing committed");
        assert!(f.capture.ids().is_empty(), "{:?}", f.capture.calls());
    }
}
