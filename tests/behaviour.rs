//! The behaviour suite: every semantic of the library, run against every backend.
//!
//! `SQLite` always runs. `PostgreSQL` and `MySQL` run when `DIESEL_SYNC_POSTGRES_URL` and
//! `DIESEL_SYNC_MYSQL_URL` are set at build time (see `build.rs`); otherwise their suites are
//! not compiled, so they are never counted as passed.

mod common;

use common::*;

/// The suite, for one backend: `$conn` is the diesel-async connection, `$conflict` the upsert
/// conflict target the backend accepts.
macro_rules! behaviour_suite {
    ($suite:ident, $backend:expr, $conn:ty, $conflict:expr) => {
        mod $suite {
            use super::*;

            use diesel::result::Error;
            use diesel::{ExpressionMethods, QueryDsl, SelectableHelper};
            use diesel_async::{AsyncConnection, RunQueryDsl, SaveChangesDsl, SimpleAsyncConnection};
            use diesel_sync::{Registry, SyncedConnection};

            type Conn = SyncedConnection<$conn>;

            const BACKEND: Backend = $backend;

            struct Fixture {
                conn: Conn,
                capture: Capture,
                registry: Registry<Conn>,
                url: String,
            }

            /// A fresh database with 300 products in 3 stores (ids 1–100 in store 1, …).
            async fn fixture(test: &str) -> Fixture {
                fixture_with(test, 300, 100).await
            }

            async fn fixture_with(test: &str, products: i64, per_store: i64) -> Fixture {
                let url = create_database(BACKEND, &format!("{}_{test}", stringify!($suite))).await;
                let capture = Capture::default();
                let registry = capture.registry();
                let inner = <$conn>::establish(&url).await.expect("connect");
                let mut conn = SyncedConnection::new(inner, registry.clone());
                conn.batch_execute(BACKEND.schema()).await.expect("schema");
                seed(conn.inner_mut(), products, per_store).await;
                Fixture { conn, capture, registry, url }
            }

            async fn seed(conn: &mut $conn, count: i64, per_store: i64) {
                conn.seed_products(common::products(count, per_store), BACKEND).await;
            }

            fn price(id: i64, price_cents: i64) -> diesel_sync::SyncedUpdate<
                diesel::dsl::Find<products::table, i64>,
                diesel::dsl::Eq<products::price_cents, i64>,
                Product,
            > {
                diesel_sync::update(products::table.find(id)).set(products::price_cents.eq(price_cents))
            }

            async fn load(conn: &mut Conn, id: i64) -> Product {
                products::table.find(id).select(Product::as_select()).first(conn).await.unwrap()
            }

            fn new_product(id: i64, store_id: i64) -> Product {
                Product { id, store_id, name: format!("new-{id}"), price_cents: 500 }
            }

            #[tokio::test]
            async fn ids_are_deduplicated_within_a_transaction() {
                let mut f = fixture("dedup").await;
                f.conn
                    .transaction(async |conn| {
                        for cents in [101, 102, 103] {
                            price(1, cents).execute(conn).await?;
                        }
                        price(2, 200).execute(conn).await?;
                        assert_eq!(conn.pending_ids(), 2);
                        Ok::<_, Error>(())
                    })
                    .await
                    .unwrap();
                f.registry.settled().await;
                let calls = f.capture.calls();
                assert_eq!(calls.len(), 1, "{calls:?}");
                assert_eq!(calls[0].ids(), vec![1, 2]);
                let latest = calls[0].rows.iter().find(|p| p.id == 1).unwrap();
                assert_eq!(latest.price_cents, 103, "the committed row is sent");
            }

            #[tokio::test]
            async fn rollback_drops_every_id() {
                let mut f = fixture("rollback").await;
                let result = f
                    .conn
                    .transaction(async |conn| {
                        price(1, 1).execute(conn).await?;
                        diesel_sync::insert_into(products::table)
                            .values(&new_product(1001, 1))
                            .execute(conn)
                            .await?;
                        Err::<(), _>(Error::RollbackTransaction)
                    })
                    .await;
                assert!(result.is_err());
                assert_eq!(f.conn.pending_ids(), 0);
                // The next commit must not carry the rolled-back ids along.
                f.conn
                    .transaction(async |conn| price(5, 5).execute(conn).await)
                    .await
                    .unwrap();
                f.registry.settled().await;
                assert_eq!(f.capture.ids(), vec![5]);
            }

            #[tokio::test]
            async fn user_error_rolls_back_and_drops_ids() {
                #[derive(Debug)]
                struct Rejected;
                impl From<Error> for Rejected {
                    fn from(_: Error) -> Self {
                        Rejected
                    }
                }
                let mut f = fixture("user_error").await;
                let result = f
                    .conn
                    .transaction(async |conn| {
                        price(3, 3).execute(conn).await?;
                        Err::<(), _>(Rejected)
                    })
                    .await;
                assert!(matches!(result, Err(Rejected)));
                f.registry.settled().await;
                assert!(f.capture.calls().is_empty());
                assert_eq!(load(&mut f.conn, 3).await.price_cents, common::products(3, 100)[2].price_cents);
            }

            #[tokio::test]
            async fn rolled_back_savepoint_drops_only_its_ids() {
                let mut f = fixture("savepoint_rollback").await;
                f.conn
                    .transaction(async |conn| {
                        price(1, 11).execute(conn).await?;
                        let inner = conn
                            .transaction(async |conn| {
                                price(2, 22).execute(conn).await?;
                                price(1, 99).execute(conn).await?;
                                Err::<(), _>(Error::RollbackTransaction)
                            })
                            .await;
                        assert!(inner.is_err());
                        price(3, 33).execute(conn).await?;
                        Ok::<_, Error>(())
                    })
                    .await
                    .unwrap();
                f.registry.settled().await;
                assert_eq!(f.capture.ids(), vec![1, 3]);
                let one = f.capture.calls()[0].rows.iter().find(|p| p.id == 1).cloned().unwrap();
                assert_eq!(one.price_cents, 11, "the savepoint's write to 1 was rolled back");
            }

            #[tokio::test]
            async fn released_savepoint_merges_into_its_parent() {
                let mut f = fixture("savepoint_release").await;
                f.conn
                    .transaction(async |conn| {
                        price(1, 11).execute(conn).await?;
                        conn.transaction(async |conn| {
                            price(2, 22).execute(conn).await?;
                            conn.transaction(async |conn| price(1, 12).execute(conn).await).await
                        })
                        .await?;
                        assert_eq!(conn.pending_ids(), 2);
                        Ok::<_, Error>(())
                    })
                    .await
                    .unwrap();
                f.registry.settled().await;
                let calls = f.capture.calls();
                assert_eq!(calls.len(), 1, "one call for the store, after the outer commit");
                assert_eq!(calls[0].ids(), vec![1, 2]);
            }

            #[tokio::test]
            async fn nothing_is_handed_on_before_the_outermost_commit() {
                let mut f = fixture("before_commit").await;
                let registry = f.registry.clone();
                let capture = f.capture.clone();
                f.conn
                    .transaction(async |conn| {
                        conn.transaction(async |conn| price(1, 1).execute(conn).await).await?;
                        registry.settled().await;
                        assert!(capture.calls().is_empty(), "a released savepoint is not a commit");
                        Ok::<_, Error>(())
                    })
                    .await
                    .unwrap();
                f.registry.settled().await;
                assert_eq!(f.capture.ids(), vec![1]);
            }

            #[tokio::test]
            async fn write_outside_a_transaction_is_handed_on_at_once() {
                let mut f = fixture("autocommit").await;
                price(7, 70).execute(&mut f.conn).await.unwrap();
                f.registry.settled().await;
                assert_eq!(f.capture.ids(), vec![7]);
                assert_eq!(f.capture.calls()[0].rows[0].price_cents, 70);
            }

            #[tokio::test]
            async fn insert_one_registers_its_id() {
                let mut f = fixture("insert_one").await;
                f.conn
                    .transaction(async |conn| {
                        diesel_sync::insert_into(products::table)
                            .values(&new_product(1001, 2))
                            .execute(conn)
                            .await
                    })
                    .await
                    .unwrap();
                f.registry.settled().await;
                let calls = f.capture.calls();
                assert_eq!(calls.len(), 1);
                assert_eq!((calls[0].store, calls[0].ids()), (2, vec![1001]));
            }

            #[tokio::test]
            async fn insert_many_registers_every_id() {
                let mut f = fixture("insert_many").await;
                let rows = vec![new_product(1001, 1), new_product(1002, 1), new_product(1003, 3)];
                let inserted = f
                    .conn
                    .transaction(async |conn| {
                        diesel_sync::insert_into(products::table).values(&rows).execute(conn).await
                    })
                    .await
                    .unwrap();
                assert_eq!(inserted, 3);
                f.registry.settled().await;
                assert_eq!(f.capture.ids(), vec![1001, 1002, 1003]);
                assert_eq!(f.capture.calls().len(), 2, "stores 1 and 3");
            }

            #[tokio::test]
            async fn keys_from_rows_insert_registers_the_keys_its_rows_carry() {
                let mut f = fixture("keys_from_rows").await;
                let rows = vec![new_product(1001, 1), new_product(1002, 3)];
                let records = vec![
                    PriceRecord { object_id: 142, amount_cents: 999 },
                    PriceRecord { object_id: 1001, amount_cents: 5 },
                ];
                let inserted = f
                    .conn
                    .transaction(async |conn| {
                        diesel_sync::insert_into(products::table)
                            .values(&rows)
                            .keys_from_rows()
                            .execute(conn)
                            .await?;
                        diesel_sync::insert_into(price_records::table)
                            .values(&records)
                            .keys_from_rows()
                            .execute(conn)
                            .await
                    })
                    .await
                    .unwrap();
                assert_eq!(inserted, 2);
                assert_eq!(f.conn.pending_ids(), 0);
                f.registry.settled().await;
                assert_eq!(f.capture.ids(), vec![142, 1001, 1002]);
                assert_eq!(f.capture.calls().len(), 3, "stores 1, 2 and 3");
            }

            #[tokio::test]
            async fn save_changes_registers_the_saved_row() {
                let mut f = fixture("save_changes").await;
                let mut product = load(&mut f.conn, 12).await;
                product.price_cents = 1_212;
                f.conn
                    .transaction(async |conn| product.save_changes::<Product>(conn).await)
                    .await
                    .unwrap();
                f.registry.settled().await;
                let calls = f.capture.calls();
                assert_eq!(calls[0].ids(), vec![12]);
                assert_eq!(calls[0].rows[0].price_cents, 1_212);
            }

            #[tokio::test]
            async fn changeset_update_registers_the_row() {
                let mut f = fixture("changeset").await;
                diesel_sync::update(products::table.find(6))
                    .set(&PriceChange { price_cents: 66 })
                    .execute(&mut f.conn)
                    .await
                    .unwrap();
                f.registry.settled().await;
                assert_eq!(f.capture.ids(), vec![6]);
            }

            #[tokio::test]
            async fn bulk_update_by_filter_registers_every_affected_id() {
                let mut f = fixture("bulk_update").await;
                let affected = f
                    .conn
                    .transaction(async |conn| {
                        diesel_sync::update(products::table.filter(products::store_id.eq(2)))
                            .set(products::price_cents.eq(products::price_cents * 2))
                            .execute(conn)
                            .await
                    })
                    .await
                    .unwrap();
                assert_eq!(affected, 100);
                f.registry.settled().await;
                assert_eq!(f.capture.ids(), (101..=200).collect::<Vec<_>>());
                assert_eq!(f.capture.calls().len(), 1);
            }

            #[tokio::test]
            async fn bulk_delete_by_filter_registers_every_affected_target() {
                let mut f = fixture("bulk_delete").await;
                let records: Vec<PriceRecord> =
                    (1..=10).map(|id| PriceRecord { object_id: id, amount_cents: id * 10 }).collect();
                f.conn.inner_mut().seed_price_records(records, BACKEND).await;
                let deleted = f
                    .conn
                    .transaction(async |conn| {
                        diesel_sync::delete(price_records::table.filter(price_records::object_id.le(4)))
                            .execute(conn)
                            .await
                    })
                    .await
                    .unwrap();
                assert_eq!(deleted, 4);
                f.registry.settled().await;
                assert_eq!(f.capture.ids(), vec![1, 2, 3, 4]);
            }

            #[tokio::test]
            async fn upsert_registers_inserted_and_updated_ids() {
                let mut f = fixture("upsert").await;
                f.conn
                    .transaction(async |conn| {
                        // One row per statement: SQLite over diesel-async upserts one row at a time.
                        for row in [new_product(3, 1), new_product(1001, 1)] {
                            diesel_sync::insert_into(products::table)
                                .values(row)
                                .upsert(|insert| {
                                    insert.on_conflict($conflict).do_update().set(products::price_cents.eq(777))
                                })
                                .execute(conn)
                                .await?;
                        }
                        Ok::<_, Error>(())
                    })
                    .await
                    .unwrap();
                f.registry.settled().await;
                assert_eq!(f.capture.ids(), vec![3, 1001]);
                let three = f.capture.calls()[0].rows.iter().find(|p| p.id == 3).cloned().unwrap();
                assert_eq!(three.price_cents, 777);
            }

            #[tokio::test]
            async fn delete_one_registers_its_id_and_the_gone_row_is_skipped() {
                let mut f = fixture("delete_one").await;
                f.conn
                    .transaction(async |conn| {
                        let deleted = diesel_sync::delete(products::table.find(9)).execute(conn).await?;
                        assert_eq!((deleted, conn.pending_ids()), (1, 1));
                        Ok::<_, Error>(())
                    })
                    .await
                    .unwrap();
                f.registry.settled().await;
                let metrics = f.registry.metrics();
                assert_eq!((metrics.ids_committed, metrics.ids_stale), (1, 1));
                assert!(f.capture.calls().is_empty());
            }

            #[tokio::test]
            async fn mark_changed_registers_writes_run_on_the_inner_connection() {
                let mut f = fixture("mark_changed").await;
                f.conn
                    .transaction(async |conn| {
                        // The inner connection is neither captured nor refused: the caller
                        // registers what it changed.
                        diesel::sql_query("UPDATE products SET price_cents = 4444 WHERE id = 4")
                            .execute(conn.inner_mut())
                            .await?;
                        conn.mark_changed::<Product>([4]).await;
                        Ok::<_, Error>(())
                    })
                    .await
                    .unwrap();
                f.registry.settled().await;
                assert_eq!(f.capture.calls()[0].rows[0].price_cents, 4444);
            }

            #[tokio::test]
            async fn reference_model_registers_its_targets_id() {
                let mut f = fixture("reference").await;
                f.conn
                    .transaction(async |conn| {
                        diesel_sync::insert_into(price_records::table)
                            .values(&PriceRecord { object_id: 142, amount_cents: 999 })
                            .execute(conn)
                            .await?;
                        diesel_sync::update(price_records::table.filter(price_records::object_id.eq(142)))
                            .set(price_records::amount_cents.eq(1_000))
                            .execute(conn)
                            .await
                    })
                    .await
                    .unwrap();
                f.registry.settled().await;
                let calls = f.capture.calls();
                assert_eq!(calls.len(), 1);
                assert_eq!((calls[0].store, calls[0].ids()), (2, vec![142]));
            }

            #[tokio::test]
            async fn stale_ids_are_skipped() {
                let mut f = fixture("stale").await;
                f.conn
                    .transaction(async |conn| {
                        price(8, 80).execute(conn).await?;
                        price(10, 100).execute(conn).await?;
                        diesel::delete(products::table.find(8)).execute(conn).await?;
                        Ok::<_, Error>(())
                    })
                    .await
                    .unwrap();
                f.registry.settled().await;
                assert_eq!(f.capture.ids(), vec![10]);
                assert_eq!(f.registry.metrics().ids_stale, 1);
                assert!(f.registry.dead_letters().is_empty(), "a stale id is not an error");
            }

            #[tokio::test]
            async fn one_handler_call_per_store_holding_the_committed_rows() {
                let mut f = fixture("per_store").await;
                f.conn
                    .transaction(async |conn| {
                        for (id, cents) in [(1, 1), (2, 2), (3, 3), (150, 150), (250, 250), (251, 251)] {
                            price(id, cents).execute(conn).await?;
                        }
                        Ok::<_, Error>(())
                    })
                    .await
                    .unwrap();
                f.registry.settled().await;
                let mut calls = f.capture.calls();
                calls.sort_by_key(|c| c.store);
                let shape: Vec<(i64, Vec<i64>)> = calls.iter().map(|c| (c.store, c.ids())).collect();
                assert_eq!(shape, vec![(1, vec![1, 2, 3]), (2, vec![150]), (3, vec![250, 251])]);
                for call in &calls {
                    for row in &call.rows {
                        assert_eq!(row.store_id, call.store);
                        assert_eq!(row.price_cents, row.id, "committed price of {}", row.id);
                    }
                }
                assert_eq!(f.registry.metrics().resolve_queries, 1);
            }

            #[tokio::test]
            async fn a_hundred_thousand_ids_in_one_transaction() {
                let mut f = fixture_with("hundred_thousand", 100_000, 1_000).await;
                let affected = f
                    .conn
                    .transaction(async |conn| {
                        diesel_sync::update(products::table)
                            .set(products::price_cents.eq(products::price_cents + 1))
                            .execute(conn)
                            .await
                    })
                    .await
                    .unwrap();
                assert_eq!(affected, 100_000);
                f.registry.settled().await;
                let ids = f.capture.ids();
                assert_eq!(ids.len(), 100_000);
                assert_eq!(ids, (1..=100_000).collect::<Vec<_>>());
                assert_eq!(f.capture.calls().len(), 100);
                let chunk = <<$conn as diesel_async::AsyncConnectionCore>::Backend as diesel_sync::SyncBackend>::MAX_IDS_PER_QUERY;
                assert_eq!(f.registry.metrics().resolve_queries, 100_000_u64.div_ceil(chunk.min(100_000) as u64));
            }

            #[tokio::test]
            async fn test_transaction_is_treated_as_the_outermost() {
                let mut f = fixture("test_transaction").await;
                f.conn.begin_test_transaction().await.unwrap();
                f.conn
                    .transaction(async |conn| price(2, 2).execute(conn).await)
                    .await
                    .unwrap();
                f.registry.settled().await;
                assert_eq!(f.capture.ids(), vec![2]);
            }

            /// 32 tasks on a pool, each committing or rolling back writes to its own store.
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn concurrent_transactions_on_pooled_connections_do_not_cross_talk() {
                use diesel_async::pooled_connection::deadpool::Pool;
                let f = fixture_with("pool_deadpool", 3_200, 100).await;
                let manager = SyncedConnection::<$conn>::pool_manager(f.url.clone(), f.registry.clone());
                let pool = Pool::builder(manager).max_size(32).build().unwrap();
                let tasks = (0..32_i64).map(|task| {
                    let pool = pool.clone();
                    tokio::spawn(async move {
                        let mut conn = pool.get().await.unwrap();
                        if BACKEND == Backend::Sqlite {
                            conn.batch_execute("PRAGMA busy_timeout = 30000").await.unwrap();
                        }
                        let store = task + 1;
                        let ids: Vec<i64> = (0..10).map(|k| (store - 1) * 100 + 1 + k * 7).collect();
                        let rolls_back = task % 4 == 3;
                        let result = conn
                            .transaction(async |conn| {
                                for &id in &ids {
                                    // Half typed, half plain Diesel: both route through the pool's
                                    // synced connections.
                                    if id % 2 == 0 {
                                        price(id, id * 3).execute(conn).await?;
                                    } else {
                                        diesel::update(products::table.find(id))
                                            .set(products::price_cents.eq(id * 3))
                                            .execute(conn)
                                            .await?;
                                    }
                                }
                                if rolls_back { Err(Error::RollbackTransaction) } else { Ok(()) }
                            })
                            .await;
                        assert_eq!(result.is_err(), rolls_back);
                        (store, ids, rolls_back)
                    })
                });
                let mut expected = Vec::new();
                for task in tasks {
                    let (store, ids, rolled_back) = task.await.unwrap();
                    if !rolled_back {
                        expected.push((store, ids));
                    }
                }
                f.registry.settled().await;
                let mut calls: Vec<(i64, Vec<i64>)> = f.capture.calls().iter().map(|c| (c.store, c.ids())).collect();
                calls.sort();
                expected.sort();
                assert_eq!(calls, expected);
                for call in f.capture.calls() {
                    assert!(call.rows.iter().all(|p| p.store_id == call.store && p.price_cents == p.id * 3));
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn bb8_pooled_connections_route_through_the_collector() {
                use diesel_async::pooled_connection::bb8::Pool;
                let f = fixture("pool_bb8").await;
                let manager = SyncedConnection::<$conn>::pool_manager(f.url.clone(), f.registry.clone());
                let pool = Pool::builder().max_size(4).build(manager).await.unwrap();
                let tasks = (1..=3_i64).map(|store| {
                    let pool = pool.clone();
                    tokio::spawn(async move {
                        let mut conn = pool.get().await.unwrap();
                        if BACKEND == Backend::Sqlite {
                            conn.batch_execute("PRAGMA busy_timeout = 30000").await.unwrap();
                        }
                        conn.transaction(async |conn| price(store * 100, 1).execute(conn).await)
                            .await
                            .unwrap();
                        // Plain Diesel, outside a transaction, on the pooled connection.
                        diesel::update(products::table.find(store * 100 - 1))
                            .set(products::price_cents.eq(2))
                            .execute(&mut conn)
                            .await
                            .unwrap();
                    })
                });
                for task in tasks {
                    task.await.unwrap();
                }
                f.registry.settled().await;
                assert_eq!(f.capture.ids(), vec![99, 100, 199, 200, 299, 300]);
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
            use diesel::result::Error;
            use diesel::ExpressionMethods;
            use diesel_async::{AsyncConnection, RunQueryDsl, SimpleAsyncConnection};
            use diesel_sync::SyncedConnection;

            #[tokio::test]
            async fn a_commit_that_fails_on_a_deferred_constraint_hands_on_nothing() {
                let backend = $backend;
                let url = create_database(backend, concat!(stringify!($suite), "_deferred")).await;
                let capture = Capture::default();
                let registry = capture.registry();
                let mut conn = SyncedConnection::new(
                    <$conn>::establish(&url).await.unwrap(),
                    registry.clone(),
                );
                conn.batch_execute(backend.schema()).await.unwrap();
                conn.inner_mut()
                    .seed_products(common::products(3, 100), backend)
                    .await;
                let result = conn
                    .transaction(async |conn| {
                        diesel_sync::update(products::table)
                            .set(products::price_cents.eq(1))
                            .execute(conn)
                            .await?;
                        // Checked only at COMMIT: product 404 does not exist.
                        diesel::insert_into(product_notes::table)
                            .values(product_notes::product_id.eq(404_i64))
                            .execute(conn)
                            .await?;
                        Ok::<_, Error>(())
                    })
                    .await;
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
                    .execute(&mut conn)
                    .await
                    .unwrap();
                registry.settled().await;
                assert_eq!(capture.ids(), vec![77]);
            }
        }
    };
}

/// Backends with `RETURNING`: an insert learns keys the database generates.
macro_rules! returning_suite {
    ($suite:ident, $backend:expr, $conn:ty) => {
        mod $suite {
            use super::*;
            use diesel::QueryDsl;
            use diesel_async::{AsyncConnection, RunQueryDsl, SimpleAsyncConnection};
            use diesel_sync::SyncedConnection;

            #[tokio::test]
            async fn a_key_the_database_generates_is_registered_from_returning() {
                let url =
                    create_database($backend, concat!(stringify!($suite), "_generated")).await;
                let capture = Capture::default();
                let registry = capture.registry();
                let mut conn = SyncedConnection::new(
                    <$conn>::establish(&url).await.unwrap(),
                    registry.clone(),
                );
                conn.batch_execute($backend.schema()).await.unwrap();
                let new = [
                    NewListing {
                        store_id: 4,
                        title: "first".into(),
                    },
                    NewListing {
                        store_id: 4,
                        title: "second".into(),
                    },
                ];
                let inserted = conn
                    .transaction(async |conn| {
                        diesel_sync::insert_into(listings::table)
                            .values(&new[..])
                            .execute(conn)
                            .await
                    })
                    .await
                    .unwrap();
                assert_eq!(inserted, 2);
                registry.settled().await;
                let stored: Vec<i64> = listings::table
                    .select(listings::id)
                    .order(listings::id)
                    .load(&mut conn)
                    .await
                    .unwrap();
                let delivered = capture.listings();
                assert_eq!(delivered.iter().map(|l| l.id).collect::<Vec<_>>(), stored);
                assert_eq!(
                    delivered
                        .iter()
                        .map(|l| l.title.as_str())
                        .collect::<Vec<_>>(),
                    ["first", "second"]
                );
            }
        }
    };
}

behaviour_suite!(
    sqlite,
    Backend::Sqlite,
    diesel_async::sync_connection_wrapper::SyncConnectionWrapper<diesel::SqliteConnection>,
    products::id
);
deferred_commit_suite!(
    sqlite_deferred,
    Backend::Sqlite,
    diesel_async::sync_connection_wrapper::SyncConnectionWrapper<diesel::SqliteConnection>
);

#[cfg(diesel_sync_postgres)]
behaviour_suite!(
    postgres,
    Backend::Postgres,
    diesel_async::AsyncPgConnection,
    products::id
);
#[cfg(diesel_sync_postgres)]
deferred_commit_suite!(
    postgres_deferred,
    Backend::Postgres,
    diesel_async::AsyncPgConnection
);

returning_suite!(
    sqlite_returning,
    Backend::Sqlite,
    diesel_async::sync_connection_wrapper::SyncConnectionWrapper<diesel::SqliteConnection>
);
#[cfg(diesel_sync_postgres)]
returning_suite!(
    postgres_returning,
    Backend::Postgres,
    diesel_async::AsyncPgConnection
);

#[cfg(diesel_sync_mysql)]
behaviour_suite!(
    mysql,
    Backend::Mysql,
    diesel_async::AsyncMysqlConnection,
    diesel::dsl::DuplicatedKeys
);
