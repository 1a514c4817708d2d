//! What the synchronous suite adds to `common`: databases created without an ambient runtime,
//! and seeding over Diesel's synchronous connections.
#![allow(dead_code, unreachable_pub)]

use diesel::prelude::*;

use super::{price_records, products, Backend, PriceRecord, Product};

/// [`super::create_database`], for a test with no tokio runtime: the setup runs on a runtime of
/// its own that is gone before the test body starts.
pub fn create_database_blocking(backend: Backend, name: &str) -> String {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("setup runtime")
        .block_on(super::create_database(backend, name))
}

/// Inserts rows without syncing them, over a synchronous connection.
pub trait SeedBlocking {
    fn seed_products(&mut self, rows: Vec<Product>, backend: Backend);
    fn seed_price_records(&mut self, rows: Vec<PriceRecord>, backend: Backend);
}

macro_rules! seed_blocking {
    ($($conn:ty),*) => {$(
        impl SeedBlocking for $conn {
            fn seed_products(&mut self, rows: Vec<Product>, backend: Backend) {
                self.transaction(|conn| {
                    for chunk in rows.chunks(backend.insert_chunk()) {
                        diesel::insert_into(products::table).values(chunk).execute(conn)?;
                    }
                    Ok::<_, diesel::result::Error>(())
                })
                .expect("seed products");
            }

            fn seed_price_records(&mut self, rows: Vec<PriceRecord>, _: Backend) {
                diesel::insert_into(price_records::table)
                    .values(&rows)
                    .execute(self)
                    .expect("seed price records");
            }
        }
    )*};
}

seed_blocking!(diesel::SqliteConnection);
#[cfg(feature = "blocking-postgres")]
seed_blocking!(diesel::PgConnection);
#[cfg(feature = "blocking-mysql")]
seed_blocking!(diesel::MysqlConnection);
