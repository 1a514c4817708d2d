//! The synchronous side: the same derive, collector, resolve and dispatch over Diesel's own
//! connections ([`diesel::SqliteConnection`], `PgConnection`, `MysqlConnection`) and r2d2 pools.
//!
//! Wrap a connection in [`SyncedConnection`] and write through it as on the async side: plain
//! Diesel statements and raw SQL are captured. Diesel's synchronous `MysqlConnection` cannot
//! read the rows a write returns, so there an UPDATE or DELETE has its keys selected first, a
//! plain INSERT takes them from its bind values, and an INSERT whose keys the database
//! generates is refused before it runs. The statement-level writes (`diesel_sync::update(…)` and
//! the others) run with `execute_blocking` instead of `.execute(conn).await`:
//!
//! ```
//! # use diesel_sync_runtime as diesel_sync;
//! # diesel::table! { products { id -> BigInt, store_id -> BigInt, price_cents -> BigInt } }
//! # #[derive(Debug, Clone, Queryable, Selectable, diesel_sync_derive::Synced)]
//! # #[diesel(table_name = products)]
//! # #[synced(crate = "diesel_sync_runtime", store = store_id)]
//! # struct Product { id: i64, store_id: i64, price_cents: i64 }
//! use diesel::connection::SimpleConnection;
//! use diesel::prelude::*;
//! use diesel_sync::blocking::SyncedConnection;
//! use diesel_sync::{Batch, HandlerError, Registry};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = Registry::builder()
//!     .handler(async |batch: Batch<Product>| -> Result<(), HandlerError> {
//!         println!("store {}: {} products", batch.store(), batch.rows().len());
//!         Ok(())
//!     })
//!     .build();
//! let mut conn = SyncedConnection::new(SqliteConnection::establish(":memory:")?, registry.clone());
//! conn.batch_execute(
//!     "CREATE TABLE products (id BIGINT PRIMARY KEY, store_id BIGINT NOT NULL, price_cents BIGINT NOT NULL)",
//! )?;
//! // Seed data goes to the inner connection, which is not synced.
//! conn.inner_mut().batch_execute("INSERT INTO products VALUES (1, 7, 2500), (2, 7, 900)")?;
//! conn.transaction(|conn| {
//!     // Plain Diesel: the connection captures both rows.
//!     diesel::update(products::table.filter(products::store_id.eq(7)))
//!         .set(products::price_cents.eq(products::price_cents + 100))
//!         .execute(conn)
//! })?;
//! // After COMMIT the batch is on its way; no tokio runtime is needed to wait for it.
//! registry.settled_blocking();
//! assert_eq!(registry.metrics().delivered, 1);
//! # Ok(()) }
//! ```
//!
//! Transactions follow the async side exactly: ids are collected per transaction level, a
//! released savepoint merges into its parent, a rollback drops its ids, a failed COMMIT hands on
//! nothing, and a write outside a transaction is handed on at once. After COMMIT the ids are
//! loaded on the committing thread (one query per chunk per target model), and the batches go to
//! the [`Registry`](crate::Registry)'s dispatcher: on the caller's tokio runtime if the thread
//! is inside one, otherwise on the registry's own background runtime. Handlers stay async.
//!
//! Features: `sqlite` (bundled, as for the async side), `blocking-postgres` and `blocking-mysql`
//! (link libpq and libmysqlclient), `r2d2` for `SyncedConnection::pool_manager`.

mod backend;
mod connection;
mod outbox;
#[cfg(feature = "r2d2")]
mod pool;
mod resolve;
mod write;

pub use backend::WriteIds;
pub use connection::{
    AsSynced, CaptureConnection, SyncedConnection, SyncedCursor, SyncedTransactionManager,
};
pub use outbox::BlockingOutbox;
#[cfg(feature = "r2d2")]
pub use pool::SyncedConnectionManager;
pub use resolve::Resolve;

pub(crate) use connection::{append_entries_blocking, resolve_frame, AppendBlocking};
