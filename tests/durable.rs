//! Durable delivery through the outbox, on every backend and both connection kinds: committed
//! ids reach the handler through the outbox and leave it once delivered, the outbox row commits
//! and rolls back with the change, and a batch that runs out of retries stays in the outbox as a
//! dead row. What must arrive is read from the database's audit. (A process killed between
//! COMMIT and delivery: `tests/crash.rs`; four worker processes: `tests/workers.rs`.)
//!
//! `SQLite` always runs; `PostgreSQL` and `MySQL` when their URLs are set (see `build.rs`), the
//! synchronous connection on them with the `blocking-postgres` and `blocking-mysql` features.

mod common;

#[path = "common/outbox.rs"]
mod outbox;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use diesel::prelude::*;
use diesel::result::Error;
use diesel_sync::{Batch, HandlerError, Registry, RetryPolicy, SyncedConnection};

use common::{audit, products, Capture, Product};
use outbox::{diesel_sync_outbox, durable, Audit, OutboxRow};

/// Waits for `registry` to settle, failing the test instead of hanging.
async fn settle<Conn: 'static>(registry: &Registry<Conn>) {
    tokio::time::timeout(Duration::from_secs(60), registry.settled())
        .await
        .expect("the outbox was not drained within a minute");
}

macro_rules! durable_tests {
    ($module:ident, $conn:ty, $backend:expr) => {
        mod $module {
            use super::*;
            use diesel_async::{AsyncConnection, RunQueryDsl};

            type Conn = SyncedConnection<$conn>;

            /// A fresh database with the test schema, the outbox, and `count` products.
            async fn database(test: &str, count: i64) -> (String, $conn) {
                let url = outbox::database::<$conn>($backend, test, count).await;
                let mut conn = <$conn>::establish(&url).await.expect("connect");
                outbox::share_the_database(&mut conn, $backend).await;
                (url, conn)
            }

            async fn audited(conn: &mut $conn) -> Audit {
                let rows: Vec<(i64, bool)> = audit::table
                    .select((audit::target_id, audit::removed))
                    .load(conn)
                    .await
                    .expect("audit");
                Audit::from_rows(rows)
            }

            async fn outbox_rows(conn: &mut $conn) -> Vec<OutboxRow> {
                diesel_sync_outbox::table
                    .select(OutboxRow::as_select())
                    .order(diesel_sync_outbox::id)
                    .load(conn)
                    .await
                    .expect("outbox")
            }

            async fn set_prices(
                conn: &mut Conn,
                ids: std::ops::RangeInclusive<i64>,
                cents: i64,
            ) -> QueryResult<usize> {
                diesel::update(
                    products::table.filter(products::id.between(*ids.start(), *ids.end())),
                )
                .set(products::price_cents.eq(cents))
                .execute(conn)
                .await
            }

            #[tokio::test]
            async fn committed_ids_reach_the_handler_through_the_outbox_and_leave_it() {
                let (url, inner) = database(concat!(stringify!($module), "_through"), 40).await;
                let capture = Capture::default();
                let registry: Registry<Conn> =
                    capture.builder(false).durable(durable(&url)).build();
                assert!(registry.is_durable());
                let mut conn = SyncedConnection::new(inner, registry.clone());
                conn.transaction(async |conn| {
                    set_prices(conn, 1..=10, 500).await?;
                    set_prices(conn, 5..=12, 600).await
                })
                .await
                .expect("committed");
                let rolled_back = conn
                    .transaction(async |conn| {
                        set_prices(conn, 13..=20, 700).await?;
                        Err::<usize, _>(Error::RollbackTransaction)
                    })
                    .await;
                assert!(rolled_back.is_err());
                set_prices(&mut conn, 21..=22, 800)
                    .await
                    .expect("outside a transaction");
                let mut saved: Product = products::table
                    .find(25)
                    .select(Product::as_select())
                    .first(conn.inner_mut())
                    .await
                    .expect("product 25");
                saved.price_cents = 850;
                diesel_async::SaveChangesDsl::save_changes::<Product>(&saved, &mut conn)
                    .await
                    .expect("saved outside a transaction");
                // A plain insert, raw SQL outside a transaction, and a write the connection does
                // not see, marked by hand.
                let new = common::products(41, 5).pop().expect("product 41");
                conn.transaction(async |conn| {
                    diesel::insert_into(products::table)
                        .values(new)
                        .execute(conn)
                        .await
                })
                .await
                .expect("inserted");
                diesel_async::SimpleAsyncConnection::batch_execute(
                    &mut conn,
                    "UPDATE products SET price_cents = 860 WHERE id = 26",
                )
                .await
                .expect("raw SQL outside a transaction");
                diesel::update(products::table.find(27))
                    .set(products::price_cents.eq(870))
                    .execute(conn.inner_mut())
                    .await
                    .expect("unseen write");
                conn.mark_changed::<Product>([27]).await;
                conn.transaction(async |conn| {
                    diesel::delete(products::table.find(30)).execute(conn).await
                })
                .await
                .expect("deleted");
                settle(&registry).await;

                let audit = audited(conn.inner_mut()).await;
                assert_eq!(
                    audit.changed.len(),
                    18,
                    "the database committed 1..=12, 21, 22, 25, 26, 27, 41"
                );
                let delivered: BTreeSet<i64> = capture.ids().into_iter().collect();
                assert_eq!(delivered, audit.changed);
                assert_eq!(
                    capture.removed().into_iter().collect::<BTreeSet<_>>(),
                    audit.removed
                );
                // Each id's last delivery is its committed row.
                let current: Vec<Product> = products::table
                    .select(Product::as_select())
                    .filter(products::id.eq_any(audit.changed.iter().copied().collect::<Vec<_>>()))
                    .load(conn.inner_mut())
                    .await
                    .expect("products");
                let last = outbox::last_delivered(&capture);
                for product in current {
                    assert_eq!(last.get(&product.id), Some(&product), "id {}", product.id);
                }
                assert!(
                    outbox_rows(conn.inner_mut()).await.is_empty(),
                    "delivered rows leave the outbox"
                );
                assert_eq!(registry.metrics().dead_letters, 0);
            }

            #[tokio::test]
            async fn the_outbox_row_commits_with_the_change_and_rolls_back_with_it() {
                let (url, inner) = database(concat!(stringify!($module), "_atomic"), 20).await;
                let gate = Arc::new(tokio::sync::Semaphore::new(0));
                let capture = Capture::default();
                let calls = capture.clone();
                let held = Arc::clone(&gate);
                let registry: Registry<Conn> = Registry::builder()
                    .handler(move |batch: Batch<Product>| {
                        let (gate, calls) = (Arc::clone(&held), calls.clone());
                        async move {
                            gate.acquire().await.expect("gate").forget();
                            calls.record(&batch);
                            Ok::<(), HandlerError>(())
                        }
                    })
                    .durable(durable(&url))
                    .build();
                let mut conn = SyncedConnection::new(inner, registry.clone());
                conn.transaction(async |conn| set_prices(conn, 1..=5, 900).await)
                    .await
                    .expect("committed");
                let recorded = outbox_rows(conn.inner_mut()).await;
                assert_eq!(
                    recorded.len(),
                    1,
                    "one row for the model's keys: {recorded:?}"
                );
                assert_eq!(recorded[0].model, "products");
                let audit = audited(conn.inner_mut()).await;
                assert_eq!(
                    recorded[0].changed(),
                    audit.changed,
                    "the row holds what the database committed"
                );

                let rolled_back = conn
                    .transaction(async |conn| {
                        set_prices(conn, 6..=10, 901).await?;
                        Err::<usize, _>(Error::RollbackTransaction)
                    })
                    .await;
                assert!(rolled_back.is_err());
                assert_eq!(
                    outbox_rows(conn.inner_mut()).await.len(),
                    1,
                    "a rollback writes no outbox row"
                );
                assert!(capture.ids().is_empty(), "the handler has not returned yet");

                gate.add_permits(100);
                settle(&registry).await;
                assert_eq!(
                    capture.ids().into_iter().collect::<BTreeSet<_>>(),
                    audited(conn.inner_mut()).await.changed
                );
                assert!(outbox_rows(conn.inner_mut()).await.is_empty());
            }

            #[tokio::test]
            async fn a_batch_out_of_retries_stays_dead_across_a_restart_until_retried() {
                let (url, inner) = database(concat!(stringify!($module), "_dead"), 20).await;
                let calls = Arc::new(AtomicUsize::new(0));
                let counted = Arc::clone(&calls);
                let registry: Registry<Conn> = Registry::builder()
                    .handler_with_policy(
                        move |_: Batch<Product>| {
                            counted.fetch_add(1, Ordering::SeqCst);
                            async { Err::<(), _>(HandlerError::retryable("marketplace down")) }
                        },
                        RetryPolicy::default()
                            .max_attempts(2)
                            .initial_delay(Duration::from_millis(1)),
                    )
                    .durable(durable(&url))
                    .build();
                let mut conn = SyncedConnection::new(inner, registry.clone());
                conn.transaction(async |conn| set_prices(conn, 1..=3, 1_000).await)
                    .await
                    .expect("committed");
                settle(&registry).await;

                assert_eq!(
                    AtomicUsize::load(&calls, Ordering::SeqCst),
                    2,
                    "both attempts were made"
                );
                let rows = outbox_rows(conn.inner_mut()).await;
                assert_eq!(rows.len(), 1, "{rows:?}");
                let dead = &rows[0];
                assert!(dead.dead_at.is_some(), "{dead:?}");
                assert_eq!(dead.attempts, 2);
                assert!(
                    dead.last_error
                        .as_deref()
                        .is_some_and(|e| e.contains("marketplace down")),
                    "{dead:?}"
                );
                assert_eq!(dead.changed(), audited(conn.inner_mut()).await.changed);
                assert!(
                    registry.dead_letters().is_empty(),
                    "kept in the outbox, not in memory"
                );
                assert_eq!(registry.metrics().dead_letters, 1);

                // A dead row is not claimed again: a registry started later leaves it alone.
                registry.shutdown(Duration::ZERO).await;
                let capture = Capture::default();
                let restarted: Registry<Conn> = capture.builder(false).durable(durable(&url)).build();
                settle(&restarted).await;
                assert!(capture.ids().is_empty());
                let listed = restarted.dead_rows(&mut conn).await.expect("dead rows");
                assert_eq!(listed.len(), 1);
                assert_eq!((listed[0].id, listed[0].attempts), (dead.id, 2));
                assert!(listed[0].error.contains("marketplace down"));

                // Retried once the handler works: delivered, and gone from the outbox.
                assert!(restarted.retry_dead_row(&mut conn, dead.id).await.expect("retry"));
                settle(&restarted).await;
                assert_eq!(
                    capture.ids().into_iter().collect::<BTreeSet<_>>(),
                    audited(conn.inner_mut()).await.changed
                );
                assert!(outbox_rows(conn.inner_mut()).await.is_empty());
                assert!(!restarted.retry_dead_row(&mut conn, dead.id).await.expect("retry"), "no such dead row");
            }

            #[tokio::test]
            async fn a_failed_batch_waits_in_the_outbox_with_its_backoff_and_a_restart_continues_its_attempts() {
                let (url, inner) = database(concat!(stringify!($module), "_backoff"), 20).await;
                let registry: Registry<Conn> = Registry::builder()
                    .handler_with_policy(
                        |_: Batch<Product>| async { Err::<(), _>(HandlerError::retryable("marketplace down")) },
                        RetryPolicy::default()
                            .max_attempts(5)
                            .initial_delay(Duration::from_secs(3_600))
                            .jitter(false),
                    )
                    .durable(durable(&url))
                    .build();
                let mut conn = SyncedConnection::new(inner, registry.clone());
                let committed_at = outbox::now_ms();
                conn.transaction(async |conn| set_prices(conn, 1..=3, 1_100).await)
                    .await
                    .expect("committed");
                let waiting = outbox::wait_for(async || {
                    let rows = outbox_rows(conn.inner_mut()).await;
                    rows.into_iter().find(|row| row.last_error.is_some())
                })
                .await;
                assert_eq!(waiting.attempts, 1);
                assert!(waiting.dead_at.is_none(), "retried, not dead: {waiting:?}");
                assert!(
                    waiting.available_at >= committed_at + 3_600_000,
                    "the next attempt waits the backoff: {waiting:?}"
                );
                registry.shutdown(Duration::ZERO).await;

                // An hour later, a restarted process makes the second attempt.
                diesel::update(diesel_sync_outbox::table)
                    .set(diesel_sync_outbox::available_at.eq(outbox::now_ms()))
                    .execute(conn.inner_mut())
                    .await
                    .expect("an hour passes");
                let attempts = Arc::new(std::sync::Mutex::new(Vec::new()));
                let seen = Arc::clone(&attempts);
                let restarted: Registry<Conn> = Registry::builder()
                    .handler(move |batch: Batch<Product>| {
                        seen.lock().unwrap().push((batch.attempt(), batch.ids().collect::<BTreeSet<_>>()));
                        async { Ok::<(), HandlerError>(()) }
                    })
                    .durable(durable(&url))
                    .build();
                settle(&restarted).await;
                let attempts = attempts.lock().unwrap().clone();
                assert_eq!(attempts, [(2, audited(conn.inner_mut()).await.changed)]);
                assert!(outbox_rows(conn.inner_mut()).await.is_empty());
            }

            #[tokio::test]
            async fn dead_rows_can_be_discarded() {
                let (url, inner) = database(concat!(stringify!($module), "_discard"), 20).await;
                let registry: Registry<Conn> = Registry::builder()
                    .handler(|_: Batch<Product>| async { Err::<(), _>(HandlerError::permanent("rejected")) })
                    .durable(durable(&url))
                    .build();
                let mut conn = SyncedConnection::new(inner, registry.clone());
                conn.transaction(async |conn| set_prices(conn, 1..=10, 1_200).await)
                    .await
                    .expect("committed");
                settle(&registry).await;
                let dead = registry.dead_rows(&mut conn).await.expect("dead rows");
                assert_eq!(dead.len(), 2, "one per store: {dead:?}");
                assert!(dead.iter().all(|row| row.attempts == 1 && row.error.contains("rejected")));
                assert!(registry.discard_dead_row(&mut conn, dead[0].id).await.expect("discard"));
                assert_eq!(registry.discard_dead_rows(&mut conn).await.expect("discard"), 1);
                assert!(outbox_rows(conn.inner_mut()).await.is_empty());
            }
        }
    };
}

durable_tests!(
    sqlite,
    diesel_async::sync_connection_wrapper::SyncConnectionWrapper<diesel::SqliteConnection>,
    common::Backend::Sqlite
);
#[cfg(diesel_sync_postgres)]
durable_tests!(
    postgres,
    diesel_async::AsyncPgConnection,
    common::Backend::Postgres
);
#[cfg(diesel_sync_mysql)]
durable_tests!(
    mysql,
    diesel_async::AsyncMysqlConnection,
    common::Backend::Mysql
);

/// The synchronous connection's durable delivery: the same outbox, written by
/// `diesel_sync::blocking::SyncedConnection`, delivered by the registry's worker without a
/// tokio runtime of the application's.
macro_rules! blocking_durable_tests {
    ($module:ident, $conn:ty, $setup:ty, $backend:expr) => {
        mod $module {
            use super::*;
            use diesel::{Connection, RunQueryDsl};
            use diesel_sync::blocking::SyncedConnection;

            type Conn = SyncedConnection<$conn>;

            /// A fresh database with the test schema, the outbox and `count` products, set up
            /// over the async connection; then a synchronous connection to it.
            fn database(test: &str, count: i64) -> (String, $conn) {
                let runtime = tokio::runtime::Runtime::new().expect("runtime");
                let url = runtime.block_on(outbox::database::<$setup>($backend, test, count));
                let mut conn = <$conn>::establish(&url).expect("connect");
                if $backend == common::Backend::Sqlite {
                    diesel::connection::SimpleConnection::batch_execute(
                        &mut conn,
                        "PRAGMA busy_timeout = 5000",
                    )
                    .expect("busy timeout");
                }
                (url, conn)
            }

            fn audited(conn: &mut $conn) -> Audit {
                let rows: Vec<(i64, bool)> = audit::table
                    .select((audit::target_id, audit::removed))
                    .load(conn)
                    .expect("audit");
                Audit::from_rows(rows)
            }

            fn outbox_rows(conn: &mut $conn) -> Vec<OutboxRow> {
                diesel_sync_outbox::table
                    .select(OutboxRow::as_select())
                    .order(diesel_sync_outbox::id)
                    .load(conn)
                    .expect("outbox")
            }

            fn set_prices(
                conn: &mut Conn,
                ids: std::ops::RangeInclusive<i64>,
                cents: i64,
            ) -> QueryResult<usize> {
                diesel::update(
                    products::table.filter(products::id.between(*ids.start(), *ids.end())),
                )
                .set(products::price_cents.eq(cents))
                .execute(conn)
            }

            /// Waits for `registry` to settle, failing the test instead of hanging.
            fn settle(registry: &Registry<Conn>) {
                let registry = registry.clone();
                let (done, settled) = std::sync::mpsc::channel();
                std::thread::spawn(move || {
                    registry.settled_blocking();
                    let _ = done.send(());
                });
                settled
                    .recv_timeout(Duration::from_secs(60))
                    .expect("the outbox was not drained within a minute");
            }

            #[test]
            fn committed_ids_reach_the_handler_through_the_outbox_and_leave_it() {
                let (url, inner) =
                    database(concat!("blocking_", stringify!($module), "_through"), 40);
                let capture = Capture::default();
                let registry: Registry<Conn> =
                    capture.builder(false).durable(durable(&url)).build();
                let mut conn = SyncedConnection::new(inner, registry.clone());
                conn.transaction(|conn| {
                    set_prices(conn, 1..=10, 500)?;
                    set_prices(conn, 5..=12, 600)
                })
                .expect("committed");
                let rolled_back = conn.transaction(|conn| {
                    set_prices(conn, 13..=20, 700)?;
                    Err::<usize, _>(Error::RollbackTransaction)
                });
                assert!(rolled_back.is_err());
                set_prices(&mut conn, 21..=22, 800).expect("outside a transaction");
                let mut saved: Product = products::table
                    .find(25)
                    .select(Product::as_select())
                    .first(conn.inner_mut())
                    .expect("product 25");
                saved.price_cents = 850;
                diesel::SaveChangesDsl::save_changes::<Product>(&saved, &mut conn)
                    .expect("saved outside a transaction");
                // A plain insert, raw SQL outside a transaction, and a write the connection does
                // not see, marked by hand.
                let new = common::products(41, 5).pop().expect("product 41");
                conn.transaction(|conn| {
                    diesel::insert_into(products::table)
                        .values(new)
                        .execute(conn)
                })
                .expect("inserted");
                diesel::connection::SimpleConnection::batch_execute(
                    &mut conn,
                    "UPDATE products SET price_cents = 860 WHERE id = 26",
                )
                .expect("raw SQL outside a transaction");
                diesel::update(products::table.find(27))
                    .set(products::price_cents.eq(870))
                    .execute(conn.inner_mut())
                    .expect("unseen write");
                conn.mark_changed::<Product>([27]);
                conn.transaction(|conn| diesel::delete(products::table.find(30)).execute(conn))
                    .expect("deleted");
                settle(&registry);

                let audit = audited(conn.inner_mut());
                assert_eq!(
                    audit.changed.len(),
                    18,
                    "the database committed 1..=12, 21, 22, 25, 26, 27, 41"
                );
                assert_eq!(
                    capture.ids().into_iter().collect::<BTreeSet<_>>(),
                    audit.changed
                );
                assert_eq!(
                    capture.removed().into_iter().collect::<BTreeSet<_>>(),
                    audit.removed
                );
                assert!(
                    outbox_rows(conn.inner_mut()).is_empty(),
                    "delivered rows leave the outbox"
                );
            }

            #[test]
            fn the_outbox_row_commits_with_the_change_and_rolls_back_with_it() {
                let (url, inner) =
                    database(concat!("blocking_", stringify!($module), "_atomic"), 20);
                let gate = Arc::new(tokio::sync::Semaphore::new(0));
                let capture = Capture::default();
                let calls = capture.clone();
                let held = Arc::clone(&gate);
                let registry: Registry<Conn> = Registry::builder()
                    .handler(move |batch: Batch<Product>| {
                        let (gate, calls) = (Arc::clone(&held), calls.clone());
                        async move {
                            gate.acquire().await.expect("gate").forget();
                            calls.record(&batch);
                            Ok::<(), HandlerError>(())
                        }
                    })
                    .durable(durable(&url))
                    .build();
                let mut conn = SyncedConnection::new(inner, registry.clone());
                conn.transaction(|conn| set_prices(conn, 1..=5, 900))
                    .expect("committed");
                let recorded = outbox_rows(conn.inner_mut());
                assert_eq!(
                    recorded.len(),
                    1,
                    "one row for the model's keys: {recorded:?}"
                );
                assert_eq!(recorded[0].changed(), audited(conn.inner_mut()).changed);
                let rolled_back = conn.transaction(|conn| {
                    set_prices(conn, 6..=10, 901)?;
                    Err::<usize, _>(Error::RollbackTransaction)
                });
                assert!(rolled_back.is_err());
                assert_eq!(
                    outbox_rows(conn.inner_mut()).len(),
                    1,
                    "a rollback writes no outbox row"
                );
                assert!(capture.ids().is_empty(), "the handler has not returned yet");

                gate.add_permits(100);
                settle(&registry);
                assert_eq!(
                    capture.ids().into_iter().collect::<BTreeSet<_>>(),
                    audited(conn.inner_mut()).changed
                );
                assert!(outbox_rows(conn.inner_mut()).is_empty());
            }

            #[test]
            fn a_batch_out_of_retries_stays_dead_across_a_restart_until_retried() {
                let (url, inner) = database(concat!("blocking_", stringify!($module), "_dead"), 20);
                let registry: Registry<Conn> = Registry::builder()
                    .handler_with_policy(
                        |_: Batch<Product>| async {
                            Err::<(), _>(HandlerError::retryable("marketplace down"))
                        },
                        RetryPolicy::default()
                            .max_attempts(2)
                            .initial_delay(Duration::from_millis(1)),
                    )
                    .durable(durable(&url))
                    .build();
                let mut conn = SyncedConnection::new(inner, registry.clone());
                conn.transaction(|conn| set_prices(conn, 1..=3, 1_000))
                    .expect("committed");
                settle(&registry);
                let rows = outbox_rows(conn.inner_mut());
                assert_eq!(rows.len(), 1, "{rows:?}");
                assert!(rows[0].dead_at.is_some(), "{rows:?}");
                assert_eq!(rows[0].attempts, 2);
                assert!(rows[0]
                    .last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("marketplace down")));
                assert_eq!(rows[0].changed(), audited(conn.inner_mut()).changed);
                assert_eq!(registry.dead_rows(&mut conn).expect("dead rows").len(), 1);

                // After a restart with a working handler, the retry API delivers it.
                registry.shutdown_blocking(Duration::ZERO);
                let capture = Capture::default();
                let restarted: Registry<Conn> =
                    capture.builder(false).durable(durable(&url)).build();
                settle(&restarted);
                assert!(capture.ids().is_empty(), "a dead row is not claimed again");
                assert!(restarted
                    .retry_dead_row(&mut conn, rows[0].id)
                    .expect("retry"));
                settle(&restarted);
                assert_eq!(
                    capture.ids().into_iter().collect::<BTreeSet<_>>(),
                    audited(conn.inner_mut()).changed
                );
                assert!(outbox_rows(conn.inner_mut()).is_empty());
                assert_eq!(restarted.discard_dead_rows(&mut conn).expect("discard"), 0);
            }
        }
    };
}

blocking_durable_tests!(
    blocking_sqlite,
    diesel::SqliteConnection,
    diesel_async::sync_connection_wrapper::SyncConnectionWrapper<diesel::SqliteConnection>,
    common::Backend::Sqlite
);
#[cfg(all(diesel_sync_postgres, feature = "blocking-postgres"))]
blocking_durable_tests!(
    blocking_postgres,
    diesel::PgConnection,
    diesel_async::AsyncPgConnection,
    common::Backend::Postgres
);
#[cfg(all(diesel_sync_mysql, feature = "blocking-mysql"))]
blocking_durable_tests!(
    blocking_mysql,
    diesel::MysqlConnection,
    diesel_async::AsyncMysqlConnection,
    common::Backend::Mysql
);
