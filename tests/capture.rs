//! Capture at the connection: plain Diesel and raw SQL written through a `SyncedConnection`
//! register exactly what they change, with nothing added at the write site; what cannot be
//! captured exactly is refused before it runs. Expected ids come from the database.

mod common;

use common::*;

/// A key a raw write returned.
#[derive(diesel::QueryableByName, Debug)]
struct Returned {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    id: i64,
}

/// The suite, for one backend: `$conn` is the diesel-async connection.
macro_rules! capture_suite {
    ($suite:ident, $backend:expr, $conn:ty, $conflict:expr) => {
        mod $suite {
            use super::*;

            use diesel::result::Error;
            use diesel::{ExpressionMethods, QueryDsl};
            use diesel_async::{AsyncConnection, RunQueryDsl, SimpleAsyncConnection};
            use diesel_sync::{CaptureRefused, Registry, SyncedConnection};

            type Conn = SyncedConnection<$conn>;

            const BACKEND: Backend = $backend;

            pub(crate) struct Fixture {
                pub(crate) conn: Conn,
                pub(crate) capture: Capture,
                pub(crate) registry: Registry<Conn>,
                pub(crate) url: String,
            }

            /// A fresh database with 300 products in 3 stores (ids 1–100 in store 1, …).
            pub(crate) async fn fixture(test: &str) -> Fixture {
                let url = create_database(BACKEND, &format!("{}_{test}", stringify!($suite))).await;
                let capture = Capture::default();
                let registry = capture.registry();
                let inner = <$conn>::establish(&url).await.expect("connect");
                let mut conn = SyncedConnection::new(inner, registry.clone());
                conn.batch_execute(BACKEND.schema()).await.expect("schema");
                conn.inner_mut().seed_products(common::products(300, 100), BACKEND).await;
                diesel::delete(audit::table).execute(conn.inner_mut()).await.expect("clear the audit");
                Fixture { conn, capture, registry, url }
            }

            /// The target ids the committed transactions changed, as the audit triggers
            /// recorded them: what must have been delivered.
            pub(crate) async fn audited(conn: &mut Conn) -> Vec<i64> {
                audit::table
                    .select(audit::target_id)
                    .distinct()
                    .order(audit::target_id)
                    .load(conn.inner_mut())
                    .await
                    .unwrap()
            }

            /// The ids of a store's products, as the database has them.
            pub(crate) async fn ids_in_store(conn: &mut Conn, store: i64) -> Vec<i64> {
                let mut ids: Vec<i64> = products::table
                    .filter(products::store_id.eq(store))
                    .select(products::id)
                    .load(conn.inner_mut())
                    .await
                    .unwrap();
                ids.sort_unstable();
                ids
            }

            pub(crate) async fn price_of(conn: &mut Conn, id: i64) -> i64 {
                products::table
                    .find(id)
                    .select(products::price_cents)
                    .first(conn.inner_mut())
                    .await
                    .unwrap()
            }

            pub(crate) fn refusal(error: &Error) -> &CaptureRefused {
                match error {
                    Error::QueryBuilderError(source) => source
                        .downcast_ref::<CaptureRefused>()
                        .unwrap_or_else(|| panic!("not a refusal: {error}")),
                    other => panic!("not a refusal: {other}"),
                }
            }

            #[tokio::test]
            async fn plain_diesel_update_by_filter_registers_every_row_it_changes() {
                let mut f = fixture("plain_update").await;
                let expected = ids_in_store(&mut f.conn, 2).await;
                let before = price_of(&mut f.conn, expected[0]).await;
                let result = f
                    .conn
                    .transaction(async |conn| {
                        diesel::update(products::table.filter(products::store_id.eq(2)))
                            .set(products::price_cents.eq(products::price_cents + 1))
                            .execute(conn)
                            .await
                    })
                    .await;
                f.registry.settled().await;
                // MySQL has no `UPDATE … RETURNING`: the keys are selected first, in the same
                // transaction.
                assert_eq!(result.unwrap(), expected.len());
                assert_eq!(audited(&mut f.conn).await, expected);
                assert_eq!(f.capture.ids(), expected);
                assert_ne!(price_of(&mut f.conn, expected[0]).await, before);
            }

            #[tokio::test]
            async fn plain_diesel_insert_of_a_reference_model_registers_its_target() {
                let mut f = fixture("plain_insert_reference").await;
                f.conn
                    .transaction(async |conn| {
                        for object_id in [7, 150, 7] {
                            diesel::insert_into(price_records::table)
                                .values(&PriceRecord { object_id, amount_cents: 990 })
                                .execute(conn)
                                .await?;
                        }
                        Ok::<_, Error>(())
                    })
                    .await
                    .unwrap();
                f.registry.settled().await;
                let expected = audited(&mut f.conn).await;
                assert_eq!(expected, [7, 150]);
                assert_eq!(f.capture.ids(), expected);
            }

            #[tokio::test]
            async fn plain_diesel_insert_and_delete_outside_a_transaction_are_handed_on_at_once() {
                let mut f = fixture("plain_autocommit").await;
                let written = diesel::insert_into(products::table)
                    .values(&Product { id: 1001, store_id: 1, name: "new".into(), price_cents: 5 })
                    .execute(&mut f.conn)
                    .await
                    .unwrap();
                assert_eq!(written, 1);
                assert_eq!(f.conn.pending_ids(), 0);
                f.registry.settled().await;
                assert_eq!(audited(&mut f.conn).await, [1001]);
                assert_eq!(f.capture.ids(), vec![1001]);
                // A deleted target reaches its store's handler as a removal, at once too.
                diesel::delete(products::table.find(1001)).execute(&mut f.conn).await.unwrap();
                f.registry.settled().await;
                assert_eq!(f.capture.removed(), [1001]);
                assert_eq!(f.capture.calls().last().map(|call| call.store), Some(1));
                assert_eq!(f.registry.metrics().ids_stale, 0);
            }

            #[tokio::test]
            async fn plain_diesel_upserts_register_the_rows_they_insert_or_update() {
                let mut f = fixture("plain_upsert").await;
                f.conn
                    .transaction(async |conn| {
                        // Product 5 exists: updated. Product 1002 does not: inserted.
                        for id in [5, 1002] {
                            diesel::insert_into(products::table)
                                .values(&Product { id, store_id: 1, name: "up".into(), price_cents: 9 })
                                .on_conflict($conflict)
                                .do_update()
                                .set(products::price_cents.eq(777))
                                .execute(conn)
                                .await?;
                        }
                        // Product 6 exists: nothing is written, nothing registered.
                        diesel::insert_into(products::table)
                            .values(&Product { id: 6, store_id: 1, name: "skip".into(), price_cents: 1 })
                            .on_conflict_do_nothing()
                            .execute(conn)
                            .await?;
                        Ok::<_, Error>(())
                    })
                    .await
                    .unwrap();
                f.registry.settled().await;
                let expected = audited(&mut f.conn).await;
                assert_eq!(f.capture.ids(), expected);
                // Diesel writes `on_conflict_do_nothing` on MySQL as `ON DUPLICATE KEY UPDATE
                // id = id`: the row counts as updated there, its triggers fire, it is sent.
                let skipped_row_written = BACKEND == Backend::Mysql;
                let written: &[i64] = if skipped_row_written { &[5, 6, 1002] } else { &[5, 1002] };
                assert_eq!(expected, written);
            }

            /// SQLite over diesel-async inserts one row per statement: outside a transaction
            /// the typed insert runs in one of its own, so a row that fails takes the rows
            /// before it back too, and what was delivered matches what committed.
            #[tokio::test]
            async fn a_typed_insert_outside_a_transaction_that_fails_part_way_commits_nothing() {
                let mut f = fixture("typed_insert_fails").await;
                let rows: Vec<Product> = [(2001, "new"), (5, "taken")]
                    .into_iter()
                    .map(|(id, name)| Product { id, store_id: 1, name: name.into(), price_cents: 1 })
                    .collect();
                let result = diesel_sync::insert_into(products::table)
                    .values(&rows)
                    .execute(&mut f.conn)
                    .await;
                assert!(result.is_err(), "product 5 exists");
                f.registry.settled().await;
                assert_eq!(audited(&mut f.conn).await, Vec::<i64>::new(), "nothing committed");
                assert!(f.capture.ids().is_empty());
                assert_eq!(f.conn.pending_ids(), 0);
                // The connection is left with no transaction open: the next write commits.
                diesel::update(products::table.find(6))
                    .set(products::price_cents.eq(6))
                    .execute(&mut f.conn)
                    .await
                    .unwrap();
                f.registry.settled().await;
                assert_eq!(audited(&mut f.conn).await, [6]);
                assert_eq!(f.capture.ids(), [6]);
            }

            /// A `transaction()` that never finishes (its future dropped by a timeout, its
            /// closure panicking) leaves the database transaction open on an unpooled
            /// connection. The next `transaction()` rolls it back first: otherwise it would run
            /// as a savepoint inside it and return `Ok` with nothing ever committed.
            #[tokio::test]
            async fn a_transaction_that_never_finished_is_rolled_back_before_the_next_one() {
                use futures_util::FutureExt;
                let mut f = fixture("abandoned").await;
                let timed_out = tokio::time::timeout(
                    std::time::Duration::from_millis(50),
                    f.conn.transaction(async |conn| {
                        diesel::update(products::table.find(1))
                            .set(products::price_cents.eq(1))
                            .execute(conn)
                            .await?;
                        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                        Ok::<_, Error>(())
                    }),
                )
                .await;
                assert!(timed_out.is_err());
                let panicked = std::panic::AssertUnwindSafe(f.conn.transaction(async |conn| {
                    diesel::update(products::table.find(2))
                        .set(products::price_cents.eq(2))
                        .execute(conn)
                        .await?;
                    if conn.pending_ids() > 0 {
                        panic!("a bug in the closure");
                    }
                    Ok::<_, Error>(())
                }))
                .catch_unwind()
                .await;
                assert!(panicked.is_err());
                f.conn
                    .transaction(async |conn| {
                        diesel::update(products::table.find(3))
                            .set(products::price_cents.eq(3))
                            .execute(conn)
                            .await
                    })
                    .await
                    .unwrap();
                f.registry.settled().await;
                // Read on a connection of its own: only what committed.
                let mut other = SyncedConnection::new(<$conn>::establish(&f.url).await.unwrap(), Registry::empty());
                assert_eq!(audited(&mut other).await, [3]);
                assert_eq!(price_of(&mut other, 3).await, 3);
                assert_ne!(price_of(&mut other, 1).await, 1);
                assert_eq!(f.capture.ids(), [3]);
            }

            #[tokio::test]
            async fn a_rolled_back_plain_write_delivers_nothing() {
                let mut f = fixture("plain_rollback").await;
                let result = f
                    .conn
                    .transaction(async |conn| {
                        diesel::delete(price_records::table).execute(conn).await?;
                        diesel::insert_into(price_records::table)
                            .values(&PriceRecord { object_id: 3, amount_cents: 1 })
                            .execute(conn)
                            .await?;
                        assert_eq!(conn.pending_ids(), 1);
                        Err::<(), _>(Error::RollbackTransaction)
                    })
                    .await;
                assert!(result.is_err());
                f.registry.settled().await;
                assert!(audited(&mut f.conn).await.is_empty(), "the database kept nothing");
                assert!(f.capture.ids().is_empty());
            }

            #[tokio::test]
            async fn raw_sql_writing_a_synced_table_is_captured_or_refused() {
                let mut f = fixture("raw_sql").await;
                let expected = ids_in_store(&mut f.conn, 3).await;
                let result = f
                    .conn
                    .batch_execute("UPDATE products SET price_cents = 1 WHERE store_id = 3")
                    .await;
                f.registry.settled().await;
                // Outside a transaction: on MySQL the key select and the update run in one
                // transaction the connection opens.
                result.unwrap();
                assert_eq!(audited(&mut f.conn).await, expected);
                assert_eq!(f.capture.ids(), expected);
                assert_eq!(price_of(&mut f.conn, expected[0]).await, 1);
                f.capture.clear();
                diesel::sql_query("DELETE FROM price_records WHERE object_id = 9")
                    .execute(&mut f.conn)
                    .await
                    .unwrap();
                f.registry.settled().await;
                assert!(f.capture.ids().is_empty(), "no row deleted, no id registered");
            }

            #[tokio::test]
            async fn a_raw_update_with_bind_values_registers_the_rows_it_matches() {
                use diesel::sql_types::BigInt;
                let mut f = fixture("raw_binds").await;
                let expected = ids_in_store(&mut f.conn, 2).await;
                // MySQL reads the keys first: its `SELECT` binds the same values in order.
                let sql = match BACKEND {
                    Backend::Postgres => "UPDATE products SET price_cents = $1 WHERE store_id = $2",
                    _ => "UPDATE products SET price_cents = ? WHERE store_id = ?",
                };
                let written = f
                    .conn
                    .transaction(async |conn| {
                        diesel::sql_query(sql)
                            .bind::<BigInt, _>(77_i64)
                            .bind::<BigInt, _>(2_i64)
                            .execute(conn)
                            .await
                    })
                    .await
                    .unwrap();
                assert_eq!(written, expected.len());
                f.registry.settled().await;
                assert_eq!(audited(&mut f.conn).await, expected);
                assert_eq!(f.capture.ids(), expected);
                assert_eq!(price_of(&mut f.conn, expected[0]).await, 77);
            }

            #[tokio::test]
            async fn a_batch_runs_one_statement_at_a_time_and_captures_each_synced_write() {
                let mut f = fixture("raw_batch").await;
                f.conn
                    .transaction(async |conn| {
                        conn.batch_execute(
                            "INSERT INTO stores (id, name, sync_enabled) VALUES (9, 'x', TRUE);
                             INSERT INTO price_records (object_id, amount_cents) VALUES (11, 1), (12, 2);
                             INSERT INTO price_records (object_id, amount_cents) VALUES (12, 3)",
                        )
                        .await
                    })
                    .await
                    .unwrap();
                // One transaction: each target once.
                f.registry.settled().await;
                let expected = audited(&mut f.conn).await;
                assert_eq!(expected, [11, 12]);
                assert_eq!(f.capture.ids(), expected);
                let stores: i64 = stores::table.count().get_result(f.conn.inner_mut()).await.unwrap();
                assert_eq!(stores, 1);
            }

            #[tokio::test]
            async fn a_batch_that_cannot_be_read_is_refused_before_any_of_it_runs() {
                let mut f = fixture("raw_batch_refused").await;
                let error = f
                    .conn
                    .batch_execute(
                        "INSERT INTO stores (id, name, sync_enabled) VALUES (9, 'x', TRUE);
                         DELETE FROM products WHERE id = 1 FROBNICATE",
                    )
                    .await
                    .unwrap_err();
                assert_eq!(refusal(&error).table(), "products");
                assert!(error.to_string().contains("could not be parsed"), "{error}");
                let stores: i64 = stores::table.count().get_result(f.conn.inner_mut()).await.unwrap();
                assert_eq!(stores, 0, "nothing ran");
                assert_eq!(ids_in_store(&mut f.conn, 1).await.len(), 100);
            }

            #[tokio::test]
            async fn writes_to_tables_without_a_synced_model_pass_through() {
                let mut f = fixture("unsynced").await;
                f.conn
                    .transaction(async |conn| {
                        diesel::insert_into(stores::table)
                            .values((stores::id.eq(1), stores::name.eq("one"), stores::sync_enabled.eq(true)))
                            .execute(conn)
                            .await?;
                        conn.batch_execute("UPDATE stores SET name = 'uno' WHERE id = 1").await
                    })
                    .await
                    .unwrap();
                f.registry.settled().await;
                assert_eq!(f.registry.metrics().ids_committed, 0);
            }

            #[tokio::test]
            async fn raw_sql_that_returns_rows_in_a_transaction_registers_every_row() {
                let mut f = fixture("raw_returning").await;
                let returned = f
                    .conn
                    .transaction(async |conn| {
                        let inserted = diesel::sql_query(
                            "INSERT INTO price_records (object_id, amount_cents) VALUES (41, 1), (42, 1) RETURNING id",
                        )
                        .load::<Returned>(conn)
                        .await?;
                        let deleted = diesel::sql_query("DELETE FROM products WHERE id = 7 RETURNING id")
                            .load::<Returned>(conn)
                            .await?;
                        Ok::<_, Error>((inserted, deleted))
                    })
                    .await
                    .unwrap();
                assert_eq!(returned.0.len(), 2);
                assert_eq!(returned.1.iter().map(|row| row.id).collect::<Vec<_>>(), [7]);
                f.registry.settled().await;
                assert_eq!(audited(&mut f.conn).await, [7, 41, 42]);
                // The recorded products are sent as changes, the deleted one as a removal.
                assert_eq!(f.capture.ids(), [41, 42]);
                assert_eq!(f.capture.removed(), [7]);
                assert_eq!(f.registry.metrics().ids_stale, 0);
            }

            #[tokio::test]
            async fn schema_changes_run_through_a_synced_connection() {
                let mut f = fixture("ddl").await;
                f.conn
                    .batch_execute("CREATE TABLE audit_note (id BIGINT PRIMARY KEY); DROP TABLE audit_note")
                    .await
                    .unwrap();
                f.conn.batch_execute("CREATE INDEX products_by_price ON products (price_cents)").await.unwrap();
            }
        }
    };
}

/// Multi-row inserts, on the backends whose diesel-async connection runs them (not SQLite).
#[cfg_attr(
    not(any(diesel_sync_postgres, diesel_sync_mysql)),
    allow(unused_macros)
)]
macro_rules! multi_row_suite {
    ($suite:ident, $base:ident) => {
        mod $suite {
            use diesel_async::{AsyncConnection, RunQueryDsl};

            use super::$base::{audited, fixture};
            use super::*;

            #[tokio::test]
            async fn a_plain_multi_row_insert_registers_every_row() {
                let mut f = fixture("multi_row").await;
                let records: Vec<PriceRecord> = [31, 32, 31, 33]
                    .into_iter()
                    .map(|object_id| PriceRecord {
                        object_id,
                        amount_cents: 5,
                    })
                    .collect();
                let new: Vec<Product> = (2001..=2003)
                    .map(|id| Product {
                        id,
                        store_id: 2,
                        name: format!("new-{id}"),
                        price_cents: 1,
                    })
                    .collect();
                f.conn
                    .transaction(async |conn| {
                        diesel::insert_into(price_records::table)
                            .values(&records)
                            .execute(conn)
                            .await?;
                        diesel::insert_into(products::table)
                            .values(&new)
                            .execute(conn)
                            .await
                    })
                    .await
                    .unwrap();
                f.registry.settled().await;
                assert_eq!(audited(&mut f.conn).await, [31, 32, 33, 2001, 2002, 2003]);
                // Price records sync products 31–33 (existing) and the new products are sent.
                assert_eq!(f.capture.ids(), [31, 32, 33, 2001, 2002, 2003]);
            }
        }
    };
}

/// `insert_or_ignore_into` and `replace_into`, on the backends that have them.
macro_rules! replace_suite {
    ($suite:ident, $base:ident) => {
        mod $suite {
            use diesel::result::Error;
            use diesel_async::{AsyncConnection, RunQueryDsl};

            use super::$base::{audited, fixture};
            use super::*;

            #[tokio::test]
            async fn replace_into_and_insert_or_ignore_register_the_rows_they_write() {
                let mut f = fixture("replace").await;
                f.conn
                    .transaction(async |conn| {
                        diesel::replace_into(products::table)
                            .values(&Product {
                                id: 8,
                                store_id: 1,
                                name: "r".into(),
                                price_cents: 2,
                            })
                            .execute(conn)
                            .await?;
                        // Product 9 exists: ignored, nothing registered. 3001 is inserted.
                        for id in [9, 3001] {
                            diesel::insert_or_ignore_into(products::table)
                                .values(&Product {
                                    id,
                                    store_id: 1,
                                    name: "i".into(),
                                    price_cents: 3,
                                })
                                .execute(conn)
                                .await?;
                        }
                        Ok::<_, Error>(())
                    })
                    .await
                    .unwrap();
                f.registry.settled().await;
                assert_eq!(f.capture.ids(), [8, 3001]);
                // The audit also holds 8 for the row REPLACE deleted before inserting it anew.
                assert_eq!(audited(&mut f.conn).await, [8, 3001]);
            }
        }
    };
}

/// Writes that return rows, on the backends whose Diesel has `RETURNING`.
macro_rules! returning_suite {
    ($suite:ident, $base:ident) => {
        mod $suite {
            use diesel::result::Error;
            use diesel::{ExpressionMethods, QueryDsl};
            use diesel_async::{AsyncConnection, RunQueryDsl};

            use super::$base::{audited, fixture, ids_in_store, price_of, refusal};
            use super::*;

            #[tokio::test]
            async fn a_write_that_returns_rows_in_a_transaction_registers_every_row() {
                let mut f = fixture("returning").await;
                let expected = ids_in_store(&mut f.conn, 2).await;
                let (first, record) = f
                    .conn
                    .transaction(async |conn| {
                        // `get_result` reads one row: every row's key is registered anyway.
                        let first: (i64, i64, String, i64) =
                            diesel::update(products::table.filter(products::store_id.eq(2)))
                                .set(products::price_cents.eq(products::price_cents + 1))
                                .get_result(conn)
                                .await?;
                        let record: i64 = diesel::insert_into(price_records::table)
                            .values(&PriceRecord {
                                object_id: 250,
                                amount_cents: 1,
                            })
                            .returning(price_records::id)
                            .get_result(conn)
                            .await?;
                        Ok::<_, Error>((first, record))
                    })
                    .await
                    .unwrap();
                assert_eq!(first.1, 2, "the caller's row is the statement's own");
                assert!(record > 0);
                f.registry.settled().await;
                let mut delivered = expected;
                delivered.push(250);
                assert_eq!(audited(&mut f.conn).await, delivered);
                assert_eq!(f.capture.ids(), delivered);
            }

            #[tokio::test]
            async fn a_delete_that_returns_rows_in_a_transaction_sends_removals() {
                let mut f = fixture("returning_delete").await;
                let expected = ids_in_store(&mut f.conn, 1).await;
                let names: Vec<String> = f
                    .conn
                    .transaction(async |conn| {
                        diesel::delete(products::table.filter(products::store_id.eq(1)))
                            .returning(products::name)
                            .get_results(conn)
                            .await
                    })
                    .await
                    .unwrap();
                assert_eq!(names.len(), expected.len(), "the caller gets every row");
                assert!(names.iter().all(|name| name.starts_with("product-")));
                f.registry.settled().await;
                assert_eq!(audited(&mut f.conn).await, expected);
                assert!(f.capture.ids().is_empty());
                assert_eq!(f.capture.removed(), expected);
                assert!(f.capture.calls().iter().all(|call| call.store == 1));
            }

            #[tokio::test]
            async fn a_write_with_its_own_returning_run_with_execute_registers_every_row() {
                let mut f = fixture("returning_execute").await;
                let expected = ids_in_store(&mut f.conn, 3).await;
                let written = diesel::delete(products::table.filter(products::store_id.eq(3)))
                    .returning(products::name)
                    .execute(&mut f.conn)
                    .await
                    .unwrap();
                assert_eq!(written, expected.len());
                f.registry.settled().await;
                assert_eq!(audited(&mut f.conn).await, expected);
                // Every deleted row reaches the handler as a removal from store 3.
                assert_eq!(f.registry.metrics().ids_removed, expected.len() as u64);
                assert_eq!(f.registry.metrics().ids_stale, 0);
                assert!(f.capture.ids().is_empty());
                assert_eq!(f.capture.removed(), expected);
            }

            #[tokio::test]
            async fn a_write_that_returns_rows_outside_a_transaction_is_refused_and_changes_nothing(
            ) {
                let mut f = fixture("returning_outside").await;
                let error = diesel::update(products::table.find(1))
                    .set(products::price_cents.eq(1))
                    .get_result::<(i64, i64, String, i64)>(&mut f.conn)
                    .await
                    .unwrap_err();
                assert_eq!(refusal(&error).table(), "products");
                assert!(error.to_string().contains("conn.transaction"), "{error}");
                assert_ne!(price_of(&mut f.conn, 1).await, 1);
                assert!(audited(&mut f.conn).await.is_empty());
            }
        }
    };
}

capture_suite!(
    sqlite,
    Backend::Sqlite,
    diesel_async::sync_connection_wrapper::SyncConnectionWrapper<diesel::SqliteConnection>,
    products::id
);
replace_suite!(sqlite_replace, sqlite);
returning_suite!(sqlite_returning, sqlite);
#[cfg(diesel_sync_postgres)]
returning_suite!(postgres_returning, postgres);

#[cfg(diesel_sync_postgres)]
capture_suite!(
    postgres,
    Backend::Postgres,
    diesel_async::AsyncPgConnection,
    products::id
);
#[cfg(diesel_sync_postgres)]
multi_row_suite!(postgres_multi_row, postgres);

#[cfg(diesel_sync_mysql)]
capture_suite!(
    mysql,
    Backend::Mysql,
    diesel_async::AsyncMysqlConnection,
    diesel::dsl::DuplicatedKeys
);
#[cfg(diesel_sync_mysql)]
multi_row_suite!(mysql_multi_row, mysql);
#[cfg(diesel_sync_mysql)]
replace_suite!(mysql_replace, mysql);

/// MySQL has no `UPDATE … RETURNING`: an UPDATE loaded for rows cannot have its keys read.
#[cfg(diesel_sync_mysql)]
mod mysql_update_for_rows {
    use diesel::result::Error;
    use diesel_async::{AsyncConnection, RunQueryDsl};

    use super::mysql::{audited, fixture, price_of, refusal};
    use super::*;

    #[tokio::test]
    async fn an_update_loaded_for_rows_is_refused_and_changes_nothing() {
        let mut f = fixture("update_for_rows").await;
        let error = f
            .conn
            .transaction(async |conn| {
                diesel::sql_query("UPDATE products SET price_cents = 1 WHERE id = 1")
                    .load::<Returned>(conn)
                    .await?;
                Ok::<_, Error>(())
            })
            .await
            .unwrap_err();
        assert_eq!(refusal(&error).table(), "products");
        assert!(error.to_string().contains(".execute(conn)"), "{error}");
        assert_ne!(price_of(&mut f.conn, 1).await, 1);
        assert!(audited(&mut f.conn).await.is_empty());
    }
}

/// When `InnoDB` resolves a deadlock it rolls the victim's whole transaction back, savepoints
/// included: nothing of it may be delivered, and no `transaction()` may begin inside the calls
/// still running, or the enclosing call's COMMIT would commit a new transaction in its name.
#[cfg(diesel_sync_mysql)]
mod mysql_deadlock {
    use diesel::result::{DatabaseErrorKind, Error};
    use diesel::{ExpressionMethods, QueryDsl};
    use diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl};
    use tokio::sync::oneshot;

    use super::mysql::{audited, fixture, price_of};
    use super::*;

    /// Another session that locks products 2–300, says so, and once told the synced session
    /// waits for product 2, asks for product 1: a deadlock. It holds the heavier transaction,
    /// which `InnoDB` keeps, so the synced one is the victim; it then rolls back.
    async fn other_session(
        url: &str,
    ) -> (
        tokio::task::JoinHandle<Result<(), Error>>,
        oneshot::Receiver<()>,
        oneshot::Sender<()>,
    ) {
        let (b_locked, b_has_locked) = oneshot::channel();
        let (a_waits, a_is_waiting) = oneshot::channel::<()>();
        let mut other = AsyncMysqlConnection::establish(url).await.unwrap();
        let other = tokio::spawn(async move {
            other
                .transaction(async |other| {
                    diesel::update(products::table.filter(products::id.ge(2)))
                        .set(products::price_cents.eq(2))
                        .execute(other)
                        .await?;
                    b_locked.send(()).unwrap();
                    a_is_waiting.await.unwrap();
                    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                    diesel::update(products::table.find(1))
                        .set(products::price_cents.eq(2))
                        .execute(other)
                        .await?;
                    Err::<(), _>(Error::RollbackTransaction)
                })
                .await
        });
        (other, b_has_locked, a_waits)
    }

    #[tokio::test]
    async fn a_transaction_the_database_rolled_back_delivers_nothing_and_begins_nothing_more() {
        let mut f = fixture("deadlock").await;
        let (other, b_has_locked, a_waits) = other_session(&f.url).await;
        let mut a_waits = Some(a_waits);
        let mut b_has_locked = Some(b_has_locked);
        let mut began_after = None;
        let result = f
            .conn
            .transaction(async |conn| {
                let nested = conn
                    .transaction(async |conn| {
                        diesel::update(products::table.find(1))
                            .set(products::price_cents.eq(1))
                            .execute(conn)
                            .await?;
                        b_has_locked.take().unwrap().await.unwrap();
                        a_waits.take().unwrap().send(()).unwrap();
                        // Waits for product 2, which the other session holds: the deadlock.
                        diesel::update(products::table.find(2))
                            .set(products::price_cents.eq(1))
                            .execute(conn)
                            .await?;
                        Ok::<_, Error>(())
                    })
                    .await;
                assert!(nested.is_err(), "the deadlock ends the savepoint");
                // The caller carries on, as code that catches an error may.
                began_after = Some(conn.transaction(async |_| Ok::<_, Error>(())).await);
                Ok::<_, Error>(())
            })
            .await;
        assert_eq!(other.await.unwrap(), Err(Error::RollbackTransaction));
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
        f.registry.settled().await;
        assert_ne!(
            price_of(&mut f.conn, 1).await,
            1,
            "rolled back by the database"
        );
        assert!(audited(&mut f.conn).await.is_empty());
        assert!(f.capture.ids().is_empty(), "{:?}", f.capture.calls());
        // The connection is whole again.
        f.conn
            .transaction(async |conn| {
                diesel::update(products::table.find(1))
                    .set(products::price_cents.eq(1))
                    .execute(conn)
                    .await
            })
            .await
            .unwrap();
        f.registry.settled().await;
        assert_eq!(f.capture.ids(), audited(&mut f.conn).await);
        assert_eq!(f.capture.ids(), [1]);
    }

    /// The deadlock's error caught at the outermost level, the closure going on: what ran
    /// before it was rolled back and is not sent, a synced write after it is refused (it would
    /// need a transaction of its own), and the call reports the loss instead of a COMMIT that
    /// MySQL would accept with no transaction open.
    #[tokio::test]
    async fn a_deadlock_caught_by_the_caller_sends_nothing_and_refuses_what_follows() {
        let mut f = fixture("deadlock_caught").await;
        let (other, b_has_locked, a_waits) = other_session(&f.url).await;
        let mut a_waits = Some(a_waits);
        let mut b_has_locked = Some(b_has_locked);
        let mut seen = None;
        let result = f
            .conn
            .transaction(async |conn| {
                diesel::update(products::table.find(1))
                    .set(products::price_cents.eq(1))
                    .execute(conn)
                    .await?;
                b_has_locked.take().unwrap().await.unwrap();
                a_waits.take().unwrap().send(()).unwrap();
                let deadlock = diesel::update(products::table.find(2))
                    .set(products::price_cents.eq(1))
                    .execute(conn)
                    .await;
                let after = diesel::update(products::table.find(250))
                    .set(products::price_cents.eq(1))
                    .execute(conn)
                    .await;
                seen = Some((deadlock, after));
                Ok::<_, Error>(())
            })
            .await;
        assert_eq!(other.await.unwrap(), Err(Error::RollbackTransaction));
        let (deadlock, after) = seen.expect("the closure ran on");
        match deadlock {
            Err(Error::DatabaseError(_, info)) => {
                assert!(
                    info.message().starts_with("Deadlock found"),
                    "{}",
                    info.message()
                );
            }
            other => panic!("{other:?}"),
        }
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
        f.registry.settled().await;
        assert!(audited(&mut f.conn).await.is_empty(), "nothing committed");
        assert!(f.capture.ids().is_empty(), "{:?}", f.capture.calls());
    }
}

/// The models the derive registered and the handlers of a registry are compared at `build()`.
#[test]
fn the_registry_reports_a_synced_model_whose_target_has_no_handler() {
    use diesel_sync::{Batch, HandlerError, Mismatch, Registry, SyncedConnection};
    type Conn = SyncedConnection<
        diesel_async::sync_connection_wrapper::SyncConnectionWrapper<diesel::SqliteConnection>,
    >;
    let builder = Registry::<Conn>::builder()
        .handler(async |_: Batch<Product>| -> Result<(), HandlerError> { Ok(()) });
    let found = builder.mismatches();
    let mut tables: Vec<&str> = found
        .iter()
        .map(|m| match m {
            Mismatch::NoHandler { table, .. } => *table,
            other => panic!("{other}"),
        })
        .collect();
    // Products and price records sync `Product`, which has a handler; listings, the renamed
    // items below (and, with PostgreSQL, the gadgets) have none.
    tables.sort_unstable();
    for unhandled in ["catalogue_items", "listings"] {
        assert!(tables.contains(&unhandled), "{found:?}");
    }
    for handled in ["products", "price_records"] {
        assert!(!tables.contains(&handled), "{found:?}");
    }
    assert!(found[0].to_string().contains(".handler::<"), "{}", found[0]);
}

/// A table whose SQL name differs from its Rust name, and its target model.
mod renamed {
    diesel::table! {
        #[sql_name = "catalogue_items"]
        items (id) {
            id -> BigInt,
            store_id -> BigInt,
        }
    }

    #[derive(Debug, Clone, diesel::Queryable, diesel::Selectable, diesel_sync::Synced)]
    #[diesel(table_name = items)]
    #[synced(store = store_id)]
    pub(crate) struct Item {
        pub(crate) id: i64,
        pub(crate) store_id: i64,
    }
}

/// The catalog knows a table by the name `table!` gives it in SQL, so a write to a renamed
/// table is captured, not missed.
#[tokio::test]
async fn a_table_renamed_with_sql_name_is_captured_by_its_sql_name() {
    use std::sync::{Arc, Mutex};

    use diesel::ExpressionMethods;
    use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
    use diesel_async::{AsyncConnection, RunQueryDsl, SimpleAsyncConnection};
    use diesel_sync::{Batch, HandlerError, Registry, SyncedConnection};
    use renamed::{items, Item};

    let delivered: Arc<Mutex<Vec<i64>>> = Arc::default();
    let seen = Arc::clone(&delivered);
    let registry = Registry::builder()
        .handler(move |batch: Batch<Item>| {
            let seen = Arc::clone(&seen);
            async move {
                seen.lock()
                    .unwrap()
                    .extend(batch.rows().iter().map(|i| i.id));
                Ok::<(), HandlerError>(())
            }
        })
        .build();
    let inner = SyncConnectionWrapper::<diesel::SqliteConnection>::establish(":memory:")
        .await
        .unwrap();
    let mut conn = SyncedConnection::new(inner, registry.clone());
    conn.batch_execute(
        "CREATE TABLE catalogue_items (id BIGINT PRIMARY KEY, store_id BIGINT NOT NULL)",
    )
    .await
    .unwrap();
    diesel::insert_into(items::table)
        .values((items::id.eq(7), items::store_id.eq(1)))
        .execute(&mut conn)
        .await
        .unwrap();
    registry.settled().await;
    assert_eq!(*delivered.lock().unwrap(), [7]);
}

/// A model with a column of a PostgreSQL type of its own (an enum).
#[cfg(diesel_sync_postgres)]
#[allow(unreachable_pub)]
mod custom_type {
    use std::io::Write;

    use diesel::deserialize::{self, FromSql};
    use diesel::pg::{Pg, PgValue};
    use diesel::serialize::{self, IsNull, Output, ToSql};

    #[derive(Debug, diesel::SqlType, diesel::QueryId)]
    #[diesel(postgres_type(name = "gadget_state"))]
    pub struct GadgetStateType;

    #[derive(Debug, Clone, Copy, PartialEq, diesel::AsExpression, diesel::FromSqlRow)]
    #[diesel(sql_type = GadgetStateType)]
    pub enum GadgetState {
        Draft,
        Live,
    }

    impl ToSql<GadgetStateType, Pg> for GadgetState {
        fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
            out.write_all(match self {
                GadgetState::Draft => b"draft",
                GadgetState::Live => b"live",
            })?;
            Ok(IsNull::No)
        }
    }

    impl FromSql<GadgetStateType, Pg> for GadgetState {
        fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
            match value.as_bytes() {
                b"draft" => Ok(GadgetState::Draft),
                b"live" => Ok(GadgetState::Live),
                other => Err(format!("unknown gadget state {other:?}").into()),
            }
        }
    }

    diesel::table! {
        use diesel::sql_types::BigInt;
        use super::GadgetStateType;

        gadgets (id) {
            id -> BigInt,
            store_id -> BigInt,
            state -> GadgetStateType,
        }
    }

    #[derive(Debug, Clone, diesel::Queryable, diesel::Selectable, diesel_sync::Synced)]
    #[diesel(table_name = gadgets)]
    #[synced(store = store_id)]
    pub struct Gadget {
        pub id: i64,
        pub store_id: i64,
        pub state: GadgetState,
    }
}

/// Inside a transaction a captured write runs as the caller built it, so a bind of a type the
/// database defines is looked up by the connection as usual.
#[cfg(diesel_sync_postgres)]
#[tokio::test]
async fn a_write_binding_a_custom_postgres_type_is_captured_in_a_transaction() {
    use std::sync::{Arc, Mutex};

    use custom_type::{gadgets, Gadget, GadgetState};
    use diesel::result::Error;
    use diesel::{ExpressionMethods, QueryDsl};
    use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
    use diesel_sync::{Batch, HandlerError, Registry, SyncedConnection};

    let delivered: Arc<Mutex<Vec<(i64, GadgetState)>>> = Arc::default();
    let seen = Arc::clone(&delivered);
    let registry = Registry::builder()
        .handler(move |batch: Batch<Gadget>| {
            seen.lock()
                .unwrap()
                .extend(batch.rows().iter().map(|g| (g.id, g.state)));
            async { Ok::<(), HandlerError>(()) }
        })
        .build();
    let url = create_database(Backend::Postgres, "custom_type").await;
    let mut conn = SyncedConnection::new(
        AsyncPgConnection::establish(&url).await.unwrap(),
        registry.clone(),
    );
    conn.batch_execute(
        "CREATE TYPE gadget_state AS ENUM ('draft', 'live');
         CREATE TABLE gadgets (id BIGINT PRIMARY KEY, store_id BIGINT NOT NULL, state gadget_state NOT NULL)",
    )
    .await
    .unwrap();
    conn.transaction(async |conn| {
        diesel::insert_into(gadgets::table)
            .values((
                gadgets::id.eq(1),
                gadgets::store_id.eq(1),
                gadgets::state.eq(GadgetState::Draft),
            ))
            .execute(conn)
            .await?;
        diesel::update(gadgets::table.find(1))
            .set(gadgets::state.eq(GadgetState::Live))
            .execute(conn)
            .await
    })
    .await
    .map_err(|error: Error| error)
    .unwrap();
    registry.settled().await;
    assert_eq!(*delivered.lock().unwrap(), [(1, GadgetState::Live)]);
}
