//! The workloads' data: 100 stores, products (the target model, batched by
//! store) and price records (a reference model whose writes sync the product in `object_id`).

use diesel::prelude::*;
use diesel_sync::Synced;

diesel::table! {
    stores (id) {
        id -> BigInt,
        name -> Text,
        sync_enabled -> Bool,
    }
}

diesel::table! {
    products (id) {
        id -> BigInt,
        store_id -> BigInt,
        name -> Text,
        price_cents -> BigInt,
    }
}

diesel::table! {
    price_records (id) {
        id -> BigInt,
        object_id -> BigInt,
        amount_cents -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(stores, products, price_records);

/// A product: what handlers receive, one call per store.
#[derive(Debug, Clone, Queryable, Selectable, Insertable, Synced)]
#[diesel(table_name = products)]
#[synced(store = store_id)]
pub(crate) struct Product {
    pub(crate) id: i64,
    pub(crate) store_id: i64,
    pub(crate) name: String,
    pub(crate) price_cents: i64,
}

/// A price record: writing one syncs the product in `object_id`.
#[derive(Debug, Clone, Insertable, Synced)]
#[diesel(table_name = price_records)]
#[synced(target = Product, key = object_id)]
pub(crate) struct PriceRecord {
    pub(crate) object_id: i64,
    pub(crate) amount_cents: i64,
}

/// The stores every workload has.
pub(crate) const STORES: i64 = 100;

/// Which database a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
    Mysql,
}

impl Backend {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
            Backend::Mysql => "mysql",
        }
    }

    /// The tables, in this backend's dialect. SQLite runs in WAL mode, as the tests do.
    /// The outbox table of durable delivery, as its migration creates it.
    pub(crate) fn outbox(self) -> &'static str {
        match self {
            Backend::Sqlite => include_str!("../../sync-runtime/migrations/sqlite/2026-12-01-000000_create_diesel_sync_outbox/up.sql"),
            Backend::Postgres => include_str!("../../sync-runtime/migrations/postgres/2026-12-01-000000_create_diesel_sync_outbox/up.sql"),
            Backend::Mysql => include_str!("../../sync-runtime/migrations/mysql/2026-12-01-000000_create_diesel_sync_outbox/up.sql"),
        }
    }

    pub(crate) fn schema(self) -> &'static str {
        match self {
            Backend::Sqlite => {
                "PRAGMA journal_mode = WAL;
                 CREATE TABLE stores (id BIGINT PRIMARY KEY, name TEXT NOT NULL, sync_enabled BOOLEAN NOT NULL);
                 CREATE TABLE products (id BIGINT PRIMARY KEY, store_id BIGINT NOT NULL, name TEXT NOT NULL, price_cents BIGINT NOT NULL);
                 CREATE TABLE price_records (id INTEGER PRIMARY KEY AUTOINCREMENT, object_id BIGINT NOT NULL, amount_cents BIGINT NOT NULL);"
            }
            Backend::Postgres => {
                "CREATE TABLE stores (id BIGINT PRIMARY KEY, name TEXT NOT NULL, sync_enabled BOOLEAN NOT NULL);
                 CREATE TABLE products (id BIGINT PRIMARY KEY, store_id BIGINT NOT NULL, name TEXT NOT NULL, price_cents BIGINT NOT NULL);
                 CREATE TABLE price_records (id BIGSERIAL PRIMARY KEY, object_id BIGINT NOT NULL, amount_cents BIGINT NOT NULL);"
            }
            Backend::Mysql => {
                "CREATE TABLE stores (id BIGINT PRIMARY KEY, name VARCHAR(255) NOT NULL, sync_enabled BOOLEAN NOT NULL);
                 CREATE TABLE products (id BIGINT PRIMARY KEY, store_id BIGINT NOT NULL, name VARCHAR(255) NOT NULL, price_cents BIGINT NOT NULL);
                 CREATE TABLE price_records (id BIGINT AUTO_INCREMENT PRIMARY KEY, object_id BIGINT NOT NULL, amount_cents BIGINT NOT NULL);"
            }
        }
    }

    /// Empties `price_records` between runs that share a seeded database (the scale run).
    pub(crate) fn clear_price_records(self) -> &'static str {
        match self {
            Backend::Sqlite => "DELETE FROM price_records",
            Backend::Postgres => "TRUNCATE price_records",
            Backend::Mysql => "TRUNCATE TABLE price_records",
        }
    }
}

/// `INSERT` of the 100 stores: `name = "store-{id}"`, `sync_enabled = true`.
pub(crate) fn stores_sql() -> String {
    let rows: Vec<String> = (1..=STORES)
        .map(|id| format!("({id}, 'store-{id}', TRUE)"))
        .collect();
    format!(
        "INSERT INTO stores (id, name, sync_enabled) VALUES {}",
        rows.join(", ")
    )
}

/// Product with index `i`: `id = i+1`, `store_id = i/per_store + 1`, `name = "product-{i+1}"`,
/// `price_cents = 100 + (i*7919) % 99900`. The standard data has `per_store = 100`.
pub(crate) fn product(i: usize, per_store: usize) -> Product {
    let i = i64::try_from(i).expect("product index fits in i64");
    let per_store = i64::try_from(per_store).expect("per_store fits in i64");
    Product {
        id: i + 1,
        store_id: i / per_store + 1,
        name: format!("product-{}", i + 1),
        price_cents: 100 + (i * 7919) % 99_900,
    }
}

/// The store of product id `id`.
pub(crate) fn store_of(id: i64, per_store: usize) -> i64 {
    (id - 1) / i64::try_from(per_store).expect("per_store fits in i64") + 1
}

/// The `k`-th price record written in a run (0-based, rolled-back writes included), for the
/// product with index `i`: `amount_cents = 100 + (k*31337) % 99900`.
pub(crate) fn price_record(k: usize, i: usize) -> PriceRecord {
    let k = i64::try_from(k).expect("k fits in i64");
    PriceRecord {
        object_id: i64::try_from(i).expect("index fits in i64") + 1,
        amount_cents: 100 + (k * 31_337) % 99_900,
    }
}
