//! The behaviour suite on the async connection (diesel-async), on every backend: the shared
//! tests of `common/suite.rs`, plus what only the async kind has (its pools).
//!
//! `SQLite` always runs. `PostgreSQL` and `MySQL` run when `DIESEL_SYNC_POSTGRES_URL` and
//! `DIESEL_SYNC_MYSQL_URL` are set at build time (see `build.rs`); otherwise their suites are
//! not compiled, so they are never counted as passed.

#[path = "common/async_kind.rs"]
mod async_kind;
mod common;

use async_kind::AsyncKind;
use common::kind::{Kind, Setup};
use common::suite::{self, behaviour_suite, commit_and_returning_suite, committed_targets};
use common::*;

/// One test of the shared suite on the async kind, under the test's tokio runtime.
macro_rules! async_test {
    ($kind:ty, $name:ident) => {
        #[tokio::test]
        async fn $name() {
            suite::$name::<$kind>().await;
        }
    };
}

/// The async kind's own tests, for one diesel-async connection: deadpool and bb8 pools.
macro_rules! async_pool_tests {
    ($conn:ty) => {
        use diesel::result::Error;
        use diesel::{ExpressionMethods, QueryDsl};
        use diesel_async::{AsyncConnection, RunQueryDsl, SimpleAsyncConnection};
        use diesel_sync::SyncedConnection;

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

        /// 32 tasks on a pool, each committing or rolling back writes to its own store.
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn concurrent_transactions_on_pooled_connections_do_not_cross_talk() {
            use diesel_async::pooled_connection::deadpool::Pool;
            let setup = Setup {
                products: 3_200,
                per_store: 100,
                ..Setup::default()
            };
            let mut f = AsyncKind::<$conn>::open("pool_deadpool", setup).await;
            let backend = <AsyncKind<$conn> as Kind>::BACKEND;
            let manager =
                SyncedConnection::<$conn>::pool_manager(f.url.clone(), f.registry.clone());
            let pool = Pool::builder(manager).max_size(32).build().unwrap();
            let tasks = (0..32_i64).map(|task| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    let mut conn = pool.get().await.unwrap();
                    if backend == Backend::Sqlite {
                        conn.batch_execute("PRAGMA busy_timeout = 30000")
                            .await
                            .unwrap();
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
                            if rolls_back {
                                Err(Error::RollbackTransaction)
                            } else {
                                Ok(())
                            }
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
            assert_eq!(f.capture.ids(), committed_targets(&mut f).await);
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn bb8_pooled_connections_route_through_the_collector() {
            use diesel_async::pooled_connection::bb8::Pool;
            let mut f = AsyncKind::<$conn>::open("pool_bb8", Setup::default()).await;
            let backend = <AsyncKind<$conn> as Kind>::BACKEND;
            let manager =
                SyncedConnection::<$conn>::pool_manager(f.url.clone(), f.registry.clone());
            let pool = Pool::builder().max_size(4).build(manager).await.unwrap();
            let tasks = (1..=3_i64).map(|store| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    let mut conn = pool.get().await.unwrap();
                    if backend == Backend::Sqlite {
                        conn.batch_execute("PRAGMA busy_timeout = 30000")
                            .await
                            .unwrap();
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
            assert_eq!(f.capture.ids(), committed_targets(&mut f).await);
        }

        /// A pooled connection's COMMIT hands its ids to the registry's own connection, and
        /// `transaction()` returns without a resolve query of its own: a temporary `stores`
        /// table shadows the real one on the committing connection only, so a resolve there
        /// would load the shadow's row with the batch.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_pooled_commit_is_resolved_on_the_registrys_own_connection() {
            use diesel_async::pooled_connection::deadpool::Pool;
            let mut f = AsyncKind::<$conn>::open("pool_own_resolve", Setup::default()).await;
            let manager =
                SyncedConnection::<$conn>::pool_manager(f.url.clone(), f.registry.clone());
            let pool = Pool::builder(manager).max_size(1).build().unwrap();
            let mut conn = pool.get().await.unwrap();
            conn.inner_mut()
                .batch_execute(
                    "INSERT INTO stores (id, name, sync_enabled) VALUES (1, 'real', TRUE)",
                )
                .await
                .unwrap();
            for sql in [
                "CREATE TEMPORARY TABLE stores AS SELECT * FROM stores",
                "UPDATE stores SET name = 'shadow'",
            ] {
                conn.inner_mut().batch_execute(sql).await.unwrap();
            }
            let queries_before = f.registry.metrics().resolve_queries;
            conn.transaction(async |conn| price(1, 77).execute(conn).await)
                .await
                .unwrap();
            f.registry.settled().await;
            let calls = f.capture.calls();
            assert_eq!(calls.len(), 1, "{calls:?}");
            assert_eq!(calls[0].ids(), [1]);
            assert_eq!(calls[0].rows[0].price_cents, 77);
            let store = calls[0].store_row.as_ref().expect("store 1 has a row");
            assert_eq!(store.name, "real", "loaded on the committing connection");
            assert_eq!(f.registry.metrics().resolve_queries, queries_before + 1);
            assert_eq!(f.capture.ids(), committed_targets(&mut f).await);
        }
    };
}

/// What a pool's registry does at the shutdown deadline with committed ids still queued for its
/// own connection, for a server whose locks can hold that connection's resolve query:
/// `$lock` (run on another connection) keeps the stores table from being read, and `$waiting`
/// counts the sessions waiting for it.
#[cfg(any(diesel_sync_postgres, diesel_sync_mysql))]
macro_rules! held_resolve_tests {
    ($conn:ty, $lock:expr, $waiting:expr) => {
        /// A round of the registry's connection waits on a lock; a commit queued behind it is
        /// still queued at the shutdown deadline: its ids are dead-lettered, and together with
        /// what the held round delivers once the lock goes, they are every audited id.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn ids_still_queued_at_the_shutdown_deadline_are_dead_lettered() {
            use diesel::sql_types::BigInt;
            use diesel::{ExpressionMethods, QueryDsl};
            use diesel_async::pooled_connection::deadpool::Pool;
            use diesel_async::{AsyncConnection, RunQueryDsl, SimpleAsyncConnection};
            use diesel_sync::SyncedConnection;

            let mut f = AsyncKind::<$conn>::open("pool_held_resolve", Setup::default()).await;
            let manager =
                SyncedConnection::<$conn>::pool_manager(f.url.clone(), f.registry.clone());
            let pool = Pool::builder(manager).max_size(1).build().unwrap();
            let mut conn = pool.get().await.unwrap();
            let mut holder = <$conn>::establish(&f.url).await.unwrap();
            holder.batch_execute($lock).await.unwrap();
            let set = async |conn: &mut SyncedConnection<$conn>, id: i64| {
                conn.transaction(async |conn| {
                    diesel::update(products::table.find(id))
                        .set(products::price_cents.eq(id * 11))
                        .execute(conn)
                        .await
                })
                .await
                .unwrap();
            };
            set(&mut conn, 1).await;
            // The registry's connection now waits on the lock with product 1's round.
            let mut watcher = <$conn>::establish(&f.url).await.unwrap();
            let waited = tokio::time::timeout(std::time::Duration::from_secs(20), async {
                loop {
                    let waiting: i64 = diesel::select(diesel::dsl::sql::<BigInt>($waiting))
                        .get_result(&mut watcher)
                        .await
                        .unwrap();
                    if waiting > 0 {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            })
            .await;
            assert!(waited.is_ok(), "the resolve round never waited on the lock");
            set(&mut conn, 2).await;
            let report = f
                .registry
                .shutdown(std::time::Duration::from_millis(200))
                .await;
            assert!(report.abandoned >= 1, "{report:?}");
            let letters = f.registry.dead_letters().drain();
            assert_eq!(letters.len(), 1, "{letters:?}");
            assert_eq!(letters[0].unresolved_ids::<Product>(), Some(&[2][..]));
            assert!(
                letters[0].error().contains("shutdown deadline"),
                "{}",
                letters[0].error()
            );
            holder.batch_execute("ROLLBACK").await.unwrap();
            drop(holder);
            f.registry.settled().await;
            assert_eq!(
                f.capture.ids(),
                [1],
                "the held round, delivered once the lock went"
            );
            assert_eq!(committed_targets(&mut f).await, [1, 2]);
            // Delivered or dead-lettered: every committed id, by the audit.
            let mut accounted = f.capture.ids();
            accounted.extend(letters[0].unresolved_ids::<Product>().unwrap_or_default());
            accounted.sort_unstable();
            assert_eq!(accounted, committed_targets(&mut f).await);
        }
    };
}

mod sqlite {
    use super::*;

    type Conn =
        diesel_async::sync_connection_wrapper::SyncConnectionWrapper<diesel::SqliteConnection>;

    behaviour_suite!(async_test, AsyncKind<Conn>);
    commit_and_returning_suite!(async_test, AsyncKind<Conn>);
    async_pool_tests!(Conn);
}

#[cfg(diesel_sync_postgres)]
mod postgres {
    use super::*;

    type Conn = diesel_async::AsyncPgConnection;

    behaviour_suite!(async_test, AsyncKind<Conn>);
    commit_and_returning_suite!(async_test, AsyncKind<Conn>);
    async_pool_tests!(Conn);
    held_resolve_tests!(
        Conn,
        "BEGIN; LOCK TABLE stores IN ACCESS EXCLUSIVE MODE",
        "(SELECT COUNT(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
          WHERE c.relname = 'stores' AND NOT l.granted)"
    );
}

#[cfg(diesel_sync_mysql)]
mod mysql {
    use super::*;

    type Conn = diesel_async::AsyncMysqlConnection;

    behaviour_suite!(async_test, AsyncKind<Conn>);
    async_pool_tests!(Conn);
    held_resolve_tests!(
        Conn,
        "LOCK TABLES stores WRITE",
        "(SELECT COUNT(*) FROM information_schema.processlist \
          WHERE state LIKE 'Waiting for table%' AND db = DATABASE())"
    );
}
