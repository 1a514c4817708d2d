//! The behaviour suite over synchronous Diesel connections (`diesel_sync::blocking`): the same
//! tests as `behaviour.rs`, by the same names, with `execute_blocking` and plain `#[test]`s. No
//! test body runs inside a tokio runtime: batches are dispatched on the registry's own.
//!
//! `SQLite` always runs. `PostgreSQL` and `MySQL` run when their URLs are set at build time (see
//! `build.rs`) and the `blocking-postgres` / `blocking-mysql` features link their C clients.

mod common;
#[path = "common/blocking.rs"]
mod common_blocking;

use common::*;
use common_blocking::*;

/// The suite, for one backend: `$conn` is the synchronous Diesel connection, `$async_conn` the
/// diesel-async connection of the same backend (for the shared-registry test), `$conflict` the
/// upsert conflict target the backend accepts.
macro_rules! blocking_suite {
    ($suite:ident, $backend:expr, $conn:ty, $async_conn:ty, $conflict:expr) => {
        mod $suite {
            use super::*;

            use std::sync::{Arc, Barrier};
            use std::time::Duration;

            use diesel::connection::SimpleConnection;
            use diesel::result::Error;
            use diesel::{
                Connection, ExpressionMethods, QueryDsl, RunQueryDsl, SaveChangesDsl,
                SelectableHelper,
            };
            use diesel_sync::blocking::SyncedConnection;
            use diesel_sync::Registry;

            type Conn = SyncedConnection<$conn>;

            const BACKEND: Backend = $backend;

            struct Fixture {
                conn: Conn,
                capture: Capture,
                registry: Registry<Conn>,
                url: String,
            }

            /// A fresh database with 300 products in 3 stores (ids 1–100 in store 1, …).
            fn fixture(test: &str) -> Fixture {
                fixture_with(test, 300, 100)
            }

            fn fixture_with(test: &str, products: i64, per_store: i64) -> Fixture {
                let url = create_database_blocking(
                    BACKEND,
                    &format!("blocking_{}_{test}", stringify!($suite)),
                );
                assert!(
                    tokio::runtime::Handle::try_current().is_err(),
                    "a synchronous test has no runtime"
                );
                let capture = Capture::default();
                let registry = capture.registry();
                let inner = <$conn>::establish(&url).expect("connect");
                let mut conn = SyncedConnection::new(inner, registry.clone());
                conn.batch_execute(BACKEND.schema()).expect("schema");
                conn.inner_mut()
                    .seed_products(common::products(products, per_store), BACKEND);
                Fixture {
                    conn,
                    capture,
                    registry,
                    url,
                }
            }

            fn price(
                id: i64,
                price_cents: i64,
            ) -> diesel_sync::SyncedUpdate<
                diesel::dsl::Find<products::table, i64>,
                diesel::dsl::Eq<products::price_cents, i64>,
                Product,
            > {
                diesel_sync::update(products::table.find(id))
                    .set(products::price_cents.eq(price_cents))
            }

            fn load(conn: &mut Conn, id: i64) -> Product {
                products::table
                    .find(id)
                    .select(Product::as_select())
                    .first(conn)
                    .unwrap()
            }

            fn new_product(id: i64, store_id: i64) -> Product {
                Product {
                    id,
                    store_id,
                    name: format!("new-{id}"),
                    price_cents: 500,
                }
            }

            #[test]
            fn ids_are_deduplicated_within_a_transaction() {
                let mut f = fixture("dedup");
                f.conn
                    .transaction(|conn| {
                        for cents in [101, 102, 103] {
                            price(1, cents).execute_blocking(conn)?;
                        }
                        price(2, 200).execute_blocking(conn)?;
                        assert_eq!(conn.pending_ids(), 2);
                        Ok::<_, Error>(())
                    })
                    .unwrap();
                f.registry.settled_blocking();
                let calls = f.capture.calls();
                assert_eq!(calls.len(), 1, "{calls:?}");
                assert_eq!(calls[0].ids(), vec![1, 2]);
                let latest = calls[0].rows.iter().find(|p| p.id == 1).unwrap();
                assert_eq!(latest.price_cents, 103, "the committed row is sent");
            }

            #[test]
            fn rollback_drops_every_id() {
                let mut f = fixture("rollback");
                let result = f.conn.transaction(|conn| {
                    price(1, 1).execute_blocking(conn)?;
                    diesel_sync::insert_into(products::table)
                        .values(&new_product(1001, 1))
                        .execute_blocking(conn)?;
                    Err::<(), _>(Error::RollbackTransaction)
                });
                assert!(result.is_err());
                assert_eq!(f.conn.pending_ids(), 0);
                // The next commit must not carry the rolled-back ids along.
                f.conn
                    .transaction(|conn| price(5, 5).execute_blocking(conn))
                    .unwrap();
                f.registry.settled_blocking();
                assert_eq!(f.capture.ids(), vec![5]);
            }

            #[test]
            fn user_error_rolls_back_and_drops_ids() {
                #[derive(Debug)]
                struct Rejected;
                impl From<Error> for Rejected {
                    fn from(_: Error) -> Self {
                        Rejected
                    }
                }
                let mut f = fixture("user_error");
                let result = f.conn.transaction(|conn| {
                    price(3, 3).execute_blocking(conn)?;
                    Err::<(), _>(Rejected)
                });
                assert!(matches!(result, Err(Rejected)));
                f.registry.settled_blocking();
                assert!(f.capture.calls().is_empty());
                assert_eq!(
                    load(&mut f.conn, 3).price_cents,
                    common::products(3, 100)[2].price_cents
                );
            }

            #[test]
            fn rolled_back_savepoint_drops_only_its_ids() {
                let mut f = fixture("savepoint_rollback");
                f.conn
                    .transaction(|conn| {
                        price(1, 11).execute_blocking(conn)?;
                        let inner = conn.transaction(|conn| {
                            price(2, 22).execute_blocking(conn)?;
                            price(1, 99).execute_blocking(conn)?;
                            Err::<(), _>(Error::RollbackTransaction)
                        });
                        assert!(inner.is_err());
                        price(3, 33).execute_blocking(conn)?;
                        Ok::<_, Error>(())
                    })
                    .unwrap();
                f.registry.settled_blocking();
                assert_eq!(f.capture.ids(), vec![1, 3]);
                let one = f.capture.calls()[0]
                    .rows
                    .iter()
                    .find(|p| p.id == 1)
                    .cloned()
                    .unwrap();
                assert_eq!(
                    one.price_cents, 11,
                    "the savepoint's write to 1 was rolled back"
                );
            }

            #[test]
            fn released_savepoint_merges_into_its_parent() {
                let mut f = fixture("savepoint_release");
                f.conn
                    .transaction(|conn| {
                        price(1, 11).execute_blocking(conn)?;
                        conn.transaction(|conn| {
                            price(2, 22).execute_blocking(conn)?;
                            conn.transaction(|conn| price(1, 12).execute_blocking(conn))
                        })?;
                        assert_eq!(conn.pending_ids(), 2);
                        Ok::<_, Error>(())
                    })
                    .unwrap();
                f.registry.settled_blocking();
                let calls = f.capture.calls();
                assert_eq!(
                    calls.len(),
                    1,
                    "one call for the store, after the outer commit"
                );
                assert_eq!(calls[0].ids(), vec![1, 2]);
            }

            #[test]
            fn nothing_is_handed_on_before_the_outermost_commit() {
                let mut f = fixture("before_commit");
                let registry = f.registry.clone();
                let capture = f.capture.clone();
                f.conn
                    .transaction(|conn| {
                        conn.transaction(|conn| price(1, 1).execute_blocking(conn))?;
                        registry.settled_blocking();
                        assert!(
                            capture.calls().is_empty(),
                            "a released savepoint is not a commit"
                        );
                        Ok::<_, Error>(())
                    })
                    .unwrap();
                f.registry.settled_blocking();
                assert_eq!(f.capture.ids(), vec![1]);
            }

            #[test]
            fn write_outside_a_transaction_is_handed_on_at_once() {
                let mut f = fixture("autocommit");
                price(7, 70).execute_blocking(&mut f.conn).unwrap();
                f.registry.settled_blocking();
                assert_eq!(f.capture.ids(), vec![7]);
                assert_eq!(f.capture.calls()[0].rows[0].price_cents, 70);
            }

            #[test]
            fn insert_one_registers_its_id() {
                let mut f = fixture("insert_one");
                f.conn
                    .transaction(|conn| {
                        diesel_sync::insert_into(products::table)
                            .values(&new_product(1001, 2))
                            .execute_blocking(conn)
                    })
                    .unwrap();
                f.registry.settled_blocking();
                let calls = f.capture.calls();
                assert_eq!(calls.len(), 1);
                assert_eq!((calls[0].store, calls[0].ids()), (2, vec![1001]));
            }

            #[test]
            fn insert_many_registers_every_id() {
                let mut f = fixture("insert_many");
                let rows = vec![
                    new_product(1001, 1),
                    new_product(1002, 1),
                    new_product(1003, 3),
                ];
                let inserted = f
                    .conn
                    .transaction(|conn| {
                        diesel_sync::insert_into(products::table)
                            .values(&rows)
                            .execute_blocking(conn)
                    })
                    .unwrap();
                assert_eq!(inserted, 3);
                f.registry.settled_blocking();
                assert_eq!(f.capture.ids(), vec![1001, 1002, 1003]);
                assert_eq!(f.capture.calls().len(), 2, "stores 1 and 3");
            }

            #[test]
            fn keys_from_rows_insert_registers_the_keys_its_rows_carry() {
                let mut f = fixture("keys_from_rows");
                let rows = vec![new_product(1001, 1), new_product(1002, 3)];
                let records = vec![
                    PriceRecord {
                        object_id: 142,
                        amount_cents: 999,
                    },
                    PriceRecord {
                        object_id: 1001,
                        amount_cents: 5,
                    },
                ];
                let inserted = f
                    .conn
                    .transaction(|conn| {
                        diesel_sync::insert_into(products::table)
                            .values(&rows)
                            .keys_from_rows()
                            .execute_blocking(conn)?;
                        diesel_sync::insert_into(price_records::table)
                            .values(&records)
                            .keys_from_rows()
                            .execute_blocking(conn)
                    })
                    .unwrap();
                assert_eq!(inserted, 2);
                assert_eq!(f.conn.pending_ids(), 0);
                f.registry.settled_blocking();
                assert_eq!(f.capture.ids(), vec![142, 1001, 1002]);
                assert_eq!(f.capture.calls().len(), 3, "stores 1, 2 and 3");
            }

            #[test]
            fn save_changes_registers_the_saved_row() {
                let mut f = fixture("save_changes");
                let mut product = load(&mut f.conn, 12);
                product.price_cents = 1_212;
                f.conn
                    .transaction(|conn| product.save_changes::<Product>(conn))
                    .unwrap();
                f.registry.settled_blocking();
                let calls = f.capture.calls();
                assert_eq!(calls[0].ids(), vec![12]);
                assert_eq!(calls[0].rows[0].price_cents, 1_212);
            }

            #[test]
            fn changeset_update_registers_the_row() {
                let mut f = fixture("changeset");
                diesel_sync::update(products::table.find(6))
                    .set(&PriceChange { price_cents: 66 })
                    .execute_blocking(&mut f.conn)
                    .unwrap();
                f.registry.settled_blocking();
                assert_eq!(f.capture.ids(), vec![6]);
            }

            #[test]
            fn bulk_update_by_filter_registers_every_affected_id() {
                let mut f = fixture("bulk_update");
                let affected = f
                    .conn
                    .transaction(|conn| {
                        diesel_sync::update(products::table.filter(products::store_id.eq(2)))
                            .set(products::price_cents.eq(products::price_cents * 2))
                            .execute_blocking(conn)
                    })
                    .unwrap();
                assert_eq!(affected, 100);
                f.registry.settled_blocking();
                assert_eq!(f.capture.ids(), (101..=200).collect::<Vec<_>>());
                assert_eq!(f.capture.calls().len(), 1);
            }

            #[test]
            fn bulk_delete_by_filter_registers_every_affected_target() {
                let mut f = fixture("bulk_delete");
                let records: Vec<PriceRecord> = (1..=10)
                    .map(|id| PriceRecord {
                        object_id: id,
                        amount_cents: id * 10,
                    })
                    .collect();
                f.conn.inner_mut().seed_price_records(records, BACKEND);
                let deleted = f
                    .conn
                    .transaction(|conn| {
                        diesel_sync::delete(
                            price_records::table.filter(price_records::object_id.le(4)),
                        )
                        .execute_blocking(conn)
                    })
                    .unwrap();
                assert_eq!(deleted, 4);
                f.registry.settled_blocking();
                assert_eq!(f.capture.ids(), vec![1, 2, 3, 4]);
            }

            /// Unlike SQLite over diesel-async, every synchronous backend upserts many rows in one
            /// statement.
            #[test]
            fn upsert_registers_inserted_and_updated_ids() {
                let mut f = fixture("upsert");
                let rows = vec![new_product(3, 1), new_product(1001, 1)];
                f.conn
                    .transaction(|conn| {
                        diesel_sync::insert_into(products::table)
                            .values(&rows)
                            .upsert(|insert| {
                                insert
                                    .on_conflict($conflict)
                                    .do_update()
                                    .set(products::price_cents.eq(777))
                            })
                            .execute_blocking(conn)
                    })
                    .unwrap();
                f.registry.settled_blocking();
                assert_eq!(f.capture.ids(), vec![3, 1001]);
                let three = f.capture.calls()[0]
                    .rows
                    .iter()
                    .find(|p| p.id == 3)
                    .cloned()
                    .unwrap();
                assert_eq!(three.price_cents, 777);
            }

            #[test]
            fn delete_one_registers_its_id_and_the_gone_row_is_skipped() {
                let mut f = fixture("delete_one");
                f.conn
                    .transaction(|conn| {
                        let deleted =
                            diesel_sync::delete(products::table.find(9)).execute_blocking(conn)?;
                        assert_eq!((deleted, conn.pending_ids()), (1, 1));
                        Ok::<_, Error>(())
                    })
                    .unwrap();
                f.registry.settled_blocking();
                let metrics = f.registry.metrics();
                assert_eq!((metrics.ids_committed, metrics.ids_stale), (1, 1));
                assert!(f.capture.calls().is_empty());
            }

            #[test]
            fn mark_changed_registers_writes_run_on_the_inner_connection() {
                let mut f = fixture("mark_changed");
                f.conn
                    .transaction(|conn| {
                        // The inner connection is neither captured nor refused: the caller
                        // registers what it changed.
                        diesel::sql_query("UPDATE products SET price_cents = 4444 WHERE id = 4")
                            .execute(conn.inner_mut())?;
                        conn.mark_changed::<Product>([4]);
                        Ok::<_, Error>(())
                    })
                    .unwrap();
                f.registry.settled_blocking();
                assert_eq!(f.capture.calls()[0].rows[0].price_cents, 4444);
            }

            #[test]
            fn reference_model_registers_its_targets_id() {
                let mut f = fixture("reference");
                f.conn
                    .transaction(|conn| {
                        diesel_sync::insert_into(price_records::table)
                            .values(&PriceRecord {
                                object_id: 142,
                                amount_cents: 999,
                            })
                            .execute_blocking(conn)?;
                        diesel_sync::update(
                            price_records::table.filter(price_records::object_id.eq(142)),
                        )
                        .set(price_records::amount_cents.eq(1_000))
                        .execute_blocking(conn)
                    })
                    .unwrap();
                f.registry.settled_blocking();
                let calls = f.capture.calls();
                assert_eq!(calls.len(), 1);
                assert_eq!((calls[0].store, calls[0].ids()), (2, vec![142]));
            }

            #[test]
            fn stale_ids_are_skipped() {
                let mut f = fixture("stale");
                f.conn
                    .transaction(|conn| {
                        price(8, 80).execute_blocking(conn)?;
                        price(10, 100).execute_blocking(conn)?;
                        // Gone by resolve time, as if another process deleted it.
                        diesel::delete(products::table.find(8)).execute(conn.inner_mut())?;
                        Ok::<_, Error>(())
                    })
                    .unwrap();
                f.registry.settled_blocking();
                assert_eq!(f.capture.ids(), vec![10]);
                assert_eq!(f.registry.metrics().ids_stale, 1);
                assert!(
                    f.registry.dead_letters().is_empty(),
                    "a stale id is not an error"
                );
            }

            #[test]
            fn one_handler_call_per_store_holding_the_committed_rows() {
                let mut f = fixture("per_store");
                f.conn
                    .transaction(|conn| {
                        for (id, cents) in
                            [(1, 1), (2, 2), (3, 3), (150, 150), (250, 250), (251, 251)]
                        {
                            price(id, cents).execute_blocking(conn)?;
                        }
                        Ok::<_, Error>(())
                    })
                    .unwrap();
                f.registry.settled_blocking();
                let mut calls = f.capture.calls();
                calls.sort_by_key(|c| c.store);
                let shape: Vec<(i64, Vec<i64>)> =
                    calls.iter().map(|c| (c.store, c.ids())).collect();
                assert_eq!(
                    shape,
                    vec![(1, vec![1, 2, 3]), (2, vec![150]), (3, vec![250, 251])]
                );
                for call in &calls {
                    for row in &call.rows {
                        assert_eq!(row.store_id, call.store);
                        assert_eq!(row.price_cents, row.id, "committed price of {}", row.id);
                    }
                }
                assert_eq!(f.registry.metrics().resolve_queries, 1);
            }

            #[test]
            fn a_hundred_thousand_ids_in_one_transaction() {
                let mut f = fixture_with("hundred_thousand", 100_000, 1_000);
                let affected = f
                    .conn
                    .transaction(|conn| {
                        diesel_sync::update(products::table)
                            .set(products::price_cents.eq(products::price_cents + 1))
                            .execute_blocking(conn)
                    })
                    .unwrap();
                assert_eq!(affected, 100_000);
                f.registry.settled_blocking();
                let ids = f.capture.ids();
                assert_eq!(ids.len(), 100_000);
                assert_eq!(ids, (1..=100_000).collect::<Vec<_>>());
                assert_eq!(f.capture.calls().len(), 100);
                let chunk =
                    <<$conn as Connection>::Backend as diesel_sync::SyncBackend>::MAX_IDS_PER_QUERY;
                assert_eq!(
                    f.registry.metrics().resolve_queries,
                    100_000_u64.div_ceil(chunk.min(100_000) as u64)
                );
            }

            #[test]
            fn test_transaction_is_treated_as_the_outermost() {
                let mut f = fixture("test_transaction");
                f.conn.begin_test_transaction().unwrap();
                f.conn
                    .transaction(|conn| price(2, 2).execute_blocking(conn))
                    .unwrap();
                f.registry.settled_blocking();
                assert_eq!(f.capture.ids(), vec![2]);
            }

            /// For a synchronous caller the registry's own runtime runs retries and dead letters: a
            /// handler that fails once is called again after its backoff, and rows that cannot be
            /// loaded after a write are dead-lettered with their ids.
            #[test]
            fn retries_and_dead_letters_need_no_runtime() {
                use diesel_sync::{Batch, HandlerError, RetryPolicy};
                use std::sync::atomic::{AtomicUsize, Ordering};
                let f = fixture("retries");
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
                let f = fixture_with("pool_r2d2", 3_200, 100);
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
            }

            /// The r2d2 counterpart of the async suite's bb8 test: autocommit writes,
            /// `save_changes` and `mark_changed` through pooled connections.
            #[test]
            fn r2d2_pooled_connections_route_through_the_collector() {
                use diesel::r2d2::Pool;
                let f = fixture("pool_r2d2_routes");
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
                            // Plain Diesel on the pooled connection (refused on MySQL, whose
                            // synchronous connection cannot read the keys).
                            let plain = diesel::update(products::table.find(store * 100 - 3))
                                .set(products::price_cents.eq(4))
                                .execute(&mut *conn);
                            assert_eq!(plain.is_ok(), BACKEND != Backend::Mysql);
                        })
                    })
                    .collect();
                for thread in threads {
                    thread.join().unwrap();
                }
                f.registry.settled_blocking();
                let plain: &[i64] = if BACKEND == Backend::Mysql { &[] } else { &[3] };
                let mut expected: Vec<i64> = (1..=3)
                    .flat_map(|s| {
                        let plain = plain.iter().map(move |back| s * 100 - back);
                        [s * 100 - 2, s * 100 - 1, s * 100].into_iter().chain(plain)
                    })
                    .collect();
                expected.sort_unstable();
                assert_eq!(f.capture.ids(), expected);
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

            /// Called from async code through `spawn_blocking`, the connection dispatches on the
            /// caller's runtime and `settled().await` sees it.
            #[test]
            fn works_from_spawn_blocking_inside_a_runtime() {
                let f = fixture("spawn_blocking");
                let Fixture {
                    mut conn,
                    capture,
                    registry,
                    ..
                } = f;
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
        }
    };
}

/// A COMMIT rejected by a deferred foreign key hands nothing on (`PostgreSQL` and `SQLite` check
/// deferred constraints; `MySQL` has none).
macro_rules! deferred_commit_suite {
    ($suite:ident, $backend:expr, $conn:ty) => {
        mod $suite {
            use super::*;
            use diesel::connection::SimpleConnection;
            use diesel::result::Error;
            use diesel::{Connection, ExpressionMethods, RunQueryDsl};
            use diesel_sync::blocking::SyncedConnection;

            #[test]
            fn a_commit_that_fails_on_a_deferred_constraint_hands_on_nothing() {
                let backend = $backend;
                let url = create_database_blocking(
                    backend,
                    concat!("blocking_", stringify!($suite), "_deferred"),
                );
                let capture = Capture::default();
                let registry = capture.registry();
                let mut conn =
                    SyncedConnection::new(<$conn>::establish(&url).unwrap(), registry.clone());
                conn.batch_execute(backend.schema()).unwrap();
                conn.inner_mut()
                    .seed_products(common::products(3, 100), backend);
                let result = conn.transaction(|conn| {
                    diesel_sync::update(products::table)
                        .set(products::price_cents.eq(1))
                        .execute_blocking(conn)?;
                    // Checked only at COMMIT: product 404 does not exist.
                    diesel::insert_into(product_notes::table)
                        .values(product_notes::product_id.eq(404_i64))
                        .execute(conn)?;
                    Ok::<_, Error>(())
                });
                assert!(result.is_err(), "COMMIT must fail");
                assert_eq!(conn.pending_ids(), 0);
                // The connection is usable and later commits carry nothing of the failed one.
                diesel_sync::insert_into(products::table)
                    .values(&Product {
                        id: 77,
                        store_id: 1,
                        name: "ok".into(),
                        price_cents: 1,
                    })
                    .execute_blocking(&mut conn)
                    .unwrap();
                registry.settled_blocking();
                assert_eq!(capture.ids(), vec![77]);
            }
        }
    };
}

blocking_suite!(
    sqlite,
    Backend::Sqlite,
    diesel::SqliteConnection,
    diesel_async::sync_connection_wrapper::SyncConnectionWrapper<diesel::SqliteConnection>,
    products::id
);
deferred_commit_suite!(sqlite_deferred, Backend::Sqlite, diesel::SqliteConnection);

#[cfg(all(diesel_sync_postgres, feature = "blocking-postgres"))]
blocking_suite!(
    postgres,
    Backend::Postgres,
    diesel::PgConnection,
    diesel_async::AsyncPgConnection,
    products::id
);
#[cfg(all(diesel_sync_postgres, feature = "blocking-postgres"))]
deferred_commit_suite!(postgres_deferred, Backend::Postgres, diesel::PgConnection);

#[cfg(all(diesel_sync_mysql, feature = "blocking-mysql"))]
blocking_suite!(
    mysql,
    Backend::Mysql,
    diesel::MysqlConnection,
    diesel_async::AsyncMysqlConnection,
    diesel::dsl::DuplicatedKeys
);

/// Capture at the synchronous connection: plain Diesel and raw SQL through a
/// `blocking::SyncedConnection`, expected ids read from the database. Diesel's synchronous MySQL
/// connection cannot read rows a write returns, so there every write to a synced table is
/// refused before it runs.
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

            /// Whether the connection captures writes (Diesel's synchronous MySQL cannot).
            const CAPTURES: bool = !matches!(BACKEND, Backend::Mysql);

            pub(crate) struct Fixture {
                pub(crate) conn: Conn,
                pub(crate) capture: Capture,
                pub(crate) registry: Registry<Conn>,
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
                Fixture { conn, capture, registry }
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
                if CAPTURES {
                    assert_eq!(result.unwrap(), expected.len());
                    assert_eq!(audited(&mut f.conn), expected);
                    assert_eq!(f.capture.ids(), expected);
                } else {
                    let error = result.unwrap_err();
                    assert_eq!(refusal(&error).table(), "products");
                    assert!(error.to_string().contains("diesel_sync::insert_into"), "{error}");
                    assert!(f.capture.ids().is_empty());
                }
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
                if CAPTURES {
                    assert_eq!(result.unwrap(), 3);
                    assert_eq!(f.capture.ids(), written);
                } else {
                    assert_eq!(refusal(&result.unwrap_err()).table(), "price_records");
                    assert!(written.is_empty(), "nothing ran");
                }
            }

            #[test]
            fn a_plain_write_outside_a_transaction_is_handed_on_at_once() {
                let mut f = fixture("plain_autocommit");
                let result = diesel::insert_into(products::table)
                    .values(&Product { id: 1001, store_id: 1, name: "new".into(), price_cents: 5 })
                    .execute(&mut f.conn);
                f.registry.settled_blocking();
                if CAPTURES {
                    assert_eq!(result.unwrap(), 1);
                    assert_eq!(audited(&mut f.conn), [1001]);
                    assert_eq!(f.capture.ids(), vec![1001]);
                } else {
                    assert!(result.is_err());
                }
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
                if CAPTURES {
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
                if CAPTURES {
                    result.unwrap();
                    assert_eq!(audited(&mut f.conn), expected);
                    assert_eq!(f.capture.ids(), expected);
                    assert_eq!(stores, 1);
                } else {
                    assert_eq!(refusal(&result.unwrap_err()).table(), "products");
                    assert_eq!(stores, 0, "refused before any of it ran");
                }
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
