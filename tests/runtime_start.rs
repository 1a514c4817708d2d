//! No panic may follow a COMMIT, even when the registry's own runtime cannot start. A
//! synchronous connection has no tokio runtime of its own to deliver on, so its first COMMIT
//! starts the registry's; here every file descriptor is taken, so tokio cannot build its I/O
//! driver. The COMMIT still returns `Ok`, and the batch it could not hand to a runtime is
//! dead-lettered with the reason.

mod common;

use std::fs::File;

use diesel::connection::SimpleConnection;
use diesel::{Connection, ExpressionMethods, QueryDsl, RunQueryDsl, SqliteConnection};
use diesel_sync::blocking::SyncedConnection;
use diesel_sync::{Batch, HandlerError, Registry};

use common::{audit, products, Backend, Product};

#[test]
fn a_commit_whose_delivery_runtime_cannot_start_returns_and_dead_letters_its_batch() {
    let registry: Registry<SyncedConnection<SqliteConnection>> = Registry::builder()
        .handler(async |_: Batch<Product>| Ok::<_, HandlerError>(()))
        .build();
    let inner = SqliteConnection::establish(":memory:").unwrap();
    let mut conn = SyncedConnection::new(inner, registry.clone());
    conn.inner_mut()
        .batch_execute(Backend::Sqlite.schema())
        .unwrap();
    conn.inner_mut()
        .batch_execute(
            "INSERT INTO products (id, store_id, name, price_cents) VALUES (1, 1, 'one', 100);
             DELETE FROM audit",
        )
        .unwrap();

    // Every descriptor the process may still open, held until the COMMIT returned.
    let held: Vec<File> = std::iter::from_fn(|| File::open("/dev/null").ok()).collect();
    let committed = conn.transaction(|conn| {
        diesel::update(products::table.find(1))
            .set(products::price_cents.eq(7))
            .execute(conn)
    });
    let descriptors = held.len();
    drop(held);

    assert!(descriptors > 0);
    assert_eq!(committed, Ok(1), "the COMMIT returns as committed");
    let price: i64 = products::table
        .find(1)
        .select(products::price_cents)
        .first(conn.inner_mut())
        .unwrap();
    assert_eq!(price, 7);
    let letters = registry.dead_letters().drain();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].ids(), ["1"]);
    let committed: Vec<String> = audit::table
        .select(audit::target_id)
        .load::<i64>(conn.inner_mut())
        .unwrap()
        .iter()
        .map(i64::to_string)
        .collect();
    assert_eq!(letters[0].ids(), committed, "what the audit says committed");
    assert!(
        letters[0].error().contains("runtime could not start"),
        "{}",
        letters[0].error()
    );
}
