//! A process killed with SIGKILL after its COMMITs and before delivery loses nothing: another
//! process with a durable registry on the same database delivers every committed id, as the
//! database's audit records them, once the dead process's lease ends.
//!
//! This test runs itself as the process it kills: the parent starts this binary again with
//! `DIESEL_SYNC_CRASH_URL` set; the child commits transactions through a durable registry whose
//! handler never returns (on the async connection, then on the synchronous one), says so on
//! stdout, and waits to be killed. The synchronous children on `PostgreSQL` and `MySQL` run with
//! the `blocking-postgres` and `blocking-mysql` features. (`harness = false`: the
//! child is a mode of this program, not a test of its own.)

mod common;

#[path = "common/outbox.rs"]
mod outbox;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::result::Error;
use diesel_async::{AsyncConnection, RunQueryDsl};
use diesel_sync::{Batch, HandlerError, Registry, SyncedConnection};

use common::{audit, products, Backend, Capture, Product};
use outbox::{diesel_sync_outbox, durable, share_the_database, Audit};

const CHILD_URL: &str = "DIESEL_SYNC_CRASH_URL";
const CHILD_BACKEND: &str = "DIESEL_SYNC_CRASH_BACKEND";
/// The child's connection kind: `async` or `blocking`.
const CHILD_KIND: &str = "DIESEL_SYNC_CRASH_KIND";
/// What the child prints once every transaction returned.
const COMMITTED: &str = "diesel-sync crash child: committed";
const PRODUCTS: i64 = 60;

fn main() {
    if let Ok(url) = std::env::var(CHILD_URL) {
        let backend = std::env::var(CHILD_BACKEND).expect(CHILD_BACKEND);
        let kind = std::env::var(CHILD_KIND).expect(CHILD_KIND);
        child(&backend, &kind, &url);
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cases = [
        Some((Backend::Sqlite, "async")),
        Some((Backend::Sqlite, "blocking")),
        cfg!(diesel_sync_postgres).then_some((Backend::Postgres, "async")),
        cfg!(all(diesel_sync_postgres, feature = "blocking-postgres"))
            .then_some((Backend::Postgres, "blocking")),
        cfg!(diesel_sync_mysql).then_some((Backend::Mysql, "async")),
        cfg!(all(diesel_sync_mysql, feature = "blocking-mysql"))
            .then_some((Backend::Mysql, "blocking")),
    ];
    let cases: Vec<(Backend, &str)> = cases.into_iter().flatten().collect();
    println!("\nrunning {} tests", cases.len());
    for (backend, kind) in &cases {
        runtime.block_on(parent(*backend, kind));
    }
    println!("\ntest result: ok. {} passed; 0 failed\n", cases.len());
}

/// Runs the parent's part on `backend`, with a child of connection kind `kind`.
async fn parent(backend: Backend, kind: &str) {
    match backend {
        Backend::Sqlite => sqlite::kill_and_recover(kind).await,
        #[cfg(diesel_sync_postgres)]
        Backend::Postgres => postgres::kill_and_recover(kind).await,
        #[cfg(diesel_sync_mysql)]
        Backend::Mysql => mysql::kill_and_recover(kind).await,
        #[allow(unreachable_patterns)]
        other => panic!("{other:?} is not configured"),
    }
}

/// Runs the child's part on the backend and connection kind the parent named.
fn child(backend: &str, kind: &str, url: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match (backend, kind) {
        ("sqlite", "async") => runtime.block_on(sqlite::commit_then_wait(url)),
        ("sqlite", "blocking") => blocking_sqlite::commit_then_wait(url),
        #[cfg(diesel_sync_postgres)]
        ("postgres", "async") => runtime.block_on(postgres::commit_then_wait(url)),
        #[cfg(all(diesel_sync_postgres, feature = "blocking-postgres"))]
        ("postgres", "blocking") => blocking_postgres::commit_then_wait(url),
        #[cfg(diesel_sync_mysql)]
        ("mysql", "async") => runtime.block_on(mysql::commit_then_wait(url)),
        #[cfg(all(diesel_sync_mysql, feature = "blocking-mysql"))]
        ("mysql", "blocking") => blocking_mysql::commit_then_wait(url),
        other => panic!("{other:?} is not configured"),
    }
}

/// The transactions each child commits: four price changes each, one in five rolled back, then
/// one deleting products 1 to 3.
const ROUNDS: i64 = 30;

/// The product a child's round `round` changes at step `step`.
fn product_of(round: i64, step: i64) -> i64 {
    (round * 7 + step * 13) % PRODUCTS + 1
}

macro_rules! crash_case {
    ($module:ident, $conn:ty, $backend:expr) => {
        mod $module {
            use super::*;

            type Conn = $conn;

            /// The parent: starts the child, kills it once it committed, then delivers from the
            /// outbox and compares with the audit.
            pub(super) async fn kill_and_recover(kind: &str) {
                let backend = $backend;
                let name = format!("crash::{}_{kind}", backend.name());
                let url = outbox::database::<Conn>(backend, &format!("crash_{}_{kind}", backend.name()), PRODUCTS).await;
                let mut child = Command::new(std::env::current_exe().expect("this test's path"))
                    .env(CHILD_URL, &url)
                    .env(CHILD_BACKEND, backend.name())
                    .env(CHILD_KIND, kind)
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("start the child");
                let stdout = child.stdout.take().expect("piped");
                let said = tokio::task::spawn_blocking(move || {
                    BufReader::new(stdout)
                        .lines()
                        .map_while(Result::ok)
                        .any(|line| line == COMMITTED)
                });
                let said = tokio::time::timeout(Duration::from_secs(60), said)
                    .await
                    .unwrap_or_else(|_| panic!("{name}: the child did not commit within a minute"))
                    .expect("read the child");
                assert!(said, "{name}: the child exited before it committed");
                child.kill().expect("SIGKILL");
                let status = child.wait().expect("reap the child");
                assert_eq!(status.signal(), Some(9), "{name}: killed by SIGKILL");

                let mut conn = Conn::establish(&url).await.expect("connect");
                let audit = Audit::from_rows(
                    audit::table
                        .select((audit::target_id, audit::removed))
                        .load(&mut conn)
                        .await
                        .expect("audit"),
                );
                let waiting: i64 = diesel_sync_outbox::table
                    .count()
                    .get_result(&mut conn)
                    .await
                    .expect("outbox");
                assert!(waiting > 0, "{name}: the killed process left rows in the outbox");
                assert!(!audit.changed.is_empty() && !audit.removed.is_empty());

                let started = Instant::now();
                let capture = Capture::default();
                let registry: Registry<SyncedConnection<Conn>> =
                    capture.builder(false).durable(durable(&url)).build();
                tokio::time::timeout(Duration::from_secs(60), registry.settled())
                    .await
                    .unwrap_or_else(|_| panic!("{name}: the outbox was not drained within a minute"));
                let delivered: BTreeSet<i64> = capture.ids().into_iter().collect();
                let removed: BTreeSet<i64> = capture.removed().into_iter().collect();
                assert_eq!(delivered, audit.still_present(), "{name}: every committed change arrives");
                assert_eq!(removed, audit.removed, "{name}: every committed removal arrives");
                let left: i64 = diesel_sync_outbox::table
                    .count()
                    .get_result(&mut conn)
                    .await
                    .expect("outbox");
                assert_eq!(left, 0, "{name}: delivered rows leave the outbox");
                println!(
                    "test {name} ... ok ({} changed and {} removed ids committed by the killed process, {waiting} outbox rows left behind, delivered by another process in {:.1?})",
                    audit.changed.len(),
                    audit.removed.len(),
                    started.elapsed()
                );
            }

            /// The child: commits transactions (some rolled back, one deleting products)
            /// through a durable registry whose handler never returns, says so, and waits to be
            /// killed.
            pub(super) async fn commit_then_wait(url: &str) {
                let registry: Registry<SyncedConnection<Conn>> = Registry::builder()
                    .handler(|_: Batch<Product>| async {
                        std::future::pending::<()>().await;
                        Ok::<(), HandlerError>(())
                    })
                    .durable(durable(url))
                    .build();
                let mut inner = Conn::establish(url).await.expect("connect");
                share_the_database(&mut inner, $backend).await;
                let mut conn = SyncedConnection::new(inner, registry);
                for round in 0..ROUNDS {
                    let result = conn
                        .transaction(async |conn| {
                            for step in 0..4 {
                                let id = product_of(round, step);
                                diesel::update(products::table.find(id))
                                    .set(products::price_cents.eq(round * 100 + step))
                                    .execute(conn)
                                    .await?;
                            }
                            if round % 5 == 4 {
                                return Err(Error::RollbackTransaction);
                            }
                            Ok(())
                        })
                        .await;
                    assert_eq!(result.is_ok(), round % 5 != 4);
                }
                conn.transaction(async |conn| {
                    diesel::delete(products::table.filter(products::id.le(3)))
                        .execute(conn)
                        .await
                })
                .await
                .expect("delete");
                println!("{COMMITTED}");
                std::future::pending::<()>().await;
            }
        }
    };
}

crash_case!(
    sqlite,
    diesel_async::sync_connection_wrapper::SyncConnectionWrapper<diesel::SqliteConnection>,
    Backend::Sqlite
);
#[cfg(diesel_sync_postgres)]
crash_case!(postgres, diesel_async::AsyncPgConnection, Backend::Postgres);
#[cfg(diesel_sync_mysql)]
crash_case!(mysql, diesel_async::AsyncMysqlConnection, Backend::Mysql);

/// The child on the synchronous connection: the same transactions through
/// `diesel_sync::blocking::SyncedConnection`, whose durable registry's worker runs on the
/// registry's own runtime.
macro_rules! blocking_child {
    ($module:ident, $conn:ty, $backend:expr) => {
        mod $module {
            use super::*;
            use diesel::{Connection, RunQueryDsl};

            type Conn = diesel_sync::blocking::SyncedConnection<$conn>;

            pub(super) fn commit_then_wait(url: &str) {
                let registry: Registry<Conn> = Registry::builder()
                    .handler(|_: Batch<Product>| async {
                        std::future::pending::<()>().await;
                        Ok::<(), HandlerError>(())
                    })
                    .durable(durable(url))
                    .build();
                let mut inner = <$conn>::establish(url).expect("connect");
                if $backend == Backend::Sqlite {
                    diesel::connection::SimpleConnection::batch_execute(
                        &mut inner,
                        "PRAGMA busy_timeout = 5000",
                    )
                    .expect("busy timeout");
                }
                let mut conn = Conn::new(inner, registry);
                for round in 0..ROUNDS {
                    let result = conn.transaction(|conn| {
                        for step in 0..4 {
                            diesel::update(products::table.find(product_of(round, step)))
                                .set(products::price_cents.eq(round * 100 + step))
                                .execute(conn)?;
                        }
                        if round % 5 == 4 {
                            return Err(Error::RollbackTransaction);
                        }
                        Ok(())
                    });
                    assert_eq!(result.is_ok(), round % 5 != 4);
                }
                conn.transaction(|conn| {
                    diesel::delete(products::table.filter(products::id.le(3))).execute(conn)
                })
                .expect("delete");
                println!("{COMMITTED}");
                loop {
                    std::thread::park();
                }
            }
        }
    };
}

blocking_child!(blocking_sqlite, diesel::SqliteConnection, Backend::Sqlite);
#[cfg(all(diesel_sync_postgres, feature = "blocking-postgres"))]
blocking_child!(blocking_postgres, diesel::PgConnection, Backend::Postgres);
#[cfg(all(diesel_sync_mysql, feature = "blocking-mysql"))]
blocking_child!(blocking_mysql, diesel::MysqlConnection, Backend::Mysql);
