//! The schema, models and fixtures the behaviour suite shares across backends.
#![allow(dead_code, unreachable_pub, missing_debug_implementations)]

pub mod kind;
pub mod suite;

use std::sync::{Arc, Mutex};

use diesel::prelude::*;
use diesel_sync::{Batch, HandlerError, Registry, RegistryBuilder, Resolves, RetryPolicy, Synced};

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

diesel::table! {
    product_notes (id) {
        id -> BigInt,
        product_id -> BigInt,
    }
}

// Listings get their ids from the database: the key only `RETURNING` can tell.
diesel::table! {
    listings (id) {
        id -> BigInt,
        store_id -> BigInt,
        title -> Text,
    }
}

// The database's own record of what each committed transaction changed: triggers on the
// synced tables write the target id of every row inserted, updated or deleted, `removed` for a
// deleted product. Rows of a rolled-back transaction vanish with it, so the capture suites
// compare deliveries with it.
diesel::table! {
    audit (target_id) {
        target_id -> BigInt,
        removed -> Bool,
    }
}

diesel::allow_tables_to_appear_in_same_query!(stores, products, price_records);

/// A store: the store model of products, loaded with each batch of them.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable, Identifiable)]
#[diesel(table_name = stores)]
pub struct Store {
    pub id: i64,
    pub name: String,
    pub sync_enabled: bool,
}

/// A product: the target model, batched by store, each batch with its store's row.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Queryable,
    Selectable,
    Insertable,
    AsChangeset,
    Identifiable,
    Associations,
    Synced,
)]
#[diesel(table_name = products, belongs_to(Store))]
#[synced(store = Store)]
pub struct Product {
    pub id: i64,
    pub store_id: i64,
    pub name: String,
    pub price_cents: i64,
}

/// A price record: a reference model whose changes sync the product in `object_id`.
#[derive(Debug, Clone, Insertable, Synced)]
#[diesel(table_name = price_records)]
#[synced(target = Product, key = object_id)]
pub struct PriceRecord {
    pub object_id: i64,
    pub amount_cents: i64,
}

/// A listing: a target model whose id the database generates.
#[derive(Debug, Clone, Queryable, Selectable, Synced)]
#[diesel(table_name = listings)]
#[synced(store = store_id)]
pub struct Listing {
    pub id: i64,
    pub store_id: i64,
    pub title: String,
}

/// A listing to insert: no id, the database assigns one.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = listings)]
pub struct NewListing {
    pub store_id: i64,
    pub title: String,
}

/// A changeset for the edit form: only the price.
#[derive(AsChangeset)]
#[diesel(table_name = products)]
pub struct PriceChange {
    pub price_cents: i64,
}

/// One handler call, as the capture handler saw it.
#[derive(Debug, Clone)]
pub struct Call {
    pub store: i64,
    /// The store's row, as the resolve query loaded it with the batch.
    pub store_row: Option<Store>,
    pub rows: Vec<Product>,
    pub removed: Vec<i64>,
}

impl Call {
    pub fn ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.rows.iter().map(|p| p.id).collect();
        ids.sort_unstable();
        ids
    }
}

/// Records every batch it receives.
#[derive(Clone, Default)]
pub struct Capture {
    calls: Arc<Mutex<Vec<Call>>>,
    listings: Arc<Mutex<Vec<Listing>>>,
}

impl Capture {
    /// A registry whose handlers record every batch.
    pub fn registry<Conn>(&self) -> Registry<Conn>
    where
        Conn: Resolves<Product> + Resolves<Listing>,
    {
        self.registry_with(false)
    }

    /// [`Capture::registry`], delivering products only to stores whose row has `sync_enabled`,
    /// as read with each batch.
    pub fn registry_with<Conn>(&self, sync_switch: bool) -> Registry<Conn>
    where
        Conn: Resolves<Product> + Resolves<Listing>,
    {
        self.builder(sync_switch).build()
    }

    /// The builder of [`Capture::registry_with`], to add to before it is built.
    pub fn builder<Conn>(&self, sync_switch: bool) -> RegistryBuilder<Conn, Listing>
    where
        Conn: Resolves<Product> + Resolves<Listing>,
    {
        let calls = self.clone();
        let listings = Arc::clone(&self.listings);
        let products = Registry::builder().handler(move |batch: Batch<Product>| {
            calls.record(&batch);
            async { Ok::<(), HandlerError>(()) }
        });
        let products = if sync_switch {
            products.when(|store: &Store| store.sync_enabled)
        } else {
            products
        };
        products
            .handler(move |batch: Batch<Listing>| {
                let listings = Arc::clone(&listings);
                async move {
                    listings
                        .lock()
                        .unwrap()
                        .extend(batch.rows().iter().cloned());
                    Ok::<(), HandlerError>(())
                }
            })
            .retry_policy(RetryPolicy::never())
    }

    /// Records one call of the products' handler.
    pub fn record(&self, batch: &Batch<Product>) {
        self.calls.lock().unwrap().push(Call {
            store: *batch.store(),
            store_row: batch.store_row().cloned(),
            rows: batch.rows().to_vec(),
            removed: batch.removed().to_vec(),
        });
    }

    /// Every delivered listing, by id.
    pub fn listings(&self) -> Vec<Listing> {
        let mut listings = self.listings.lock().unwrap().clone();
        listings.sort_unstable_by_key(|l| l.id);
        listings
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// Every delivered id, sorted (an id twice if it was delivered twice).
    pub fn ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.calls().iter().flat_map(Call::ids).collect();
        ids.sort_unstable();
        ids
    }

    /// Every id delivered as a removal, sorted (an id twice if it was removed twice).
    pub fn removed(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .calls()
            .iter()
            .flat_map(|call| call.removed.iter().copied())
            .collect();
        ids.sort_unstable();
        ids
    }

    pub fn clear(&self) {
        self.calls.lock().unwrap().clear();
    }
}

/// `count` products over stores of `per_store` products each, ids from 1.
pub fn products(count: i64, per_store: i64) -> Vec<Product> {
    (0..count)
        .map(|i| Product {
            id: i + 1,
            store_id: i / per_store + 1,
            name: format!("product-{}", i + 1),
            price_cents: 100 + (i * 7919) % 99_900,
        })
        .collect()
}

/// Which database a suite runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    Mysql,
}

impl Backend {
    /// The backend's name in database names.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
            Backend::Mysql => "mysql",
        }
    }

    /// The schema, in this backend's dialect. `product_notes` has a deferred foreign key where
    /// the backend supports one.
    pub fn schema(self) -> &'static str {
        match self {
            Backend::Sqlite => {
                "PRAGMA foreign_keys = ON;
                 PRAGMA journal_mode = WAL;
                 CREATE TABLE stores (id BIGINT PRIMARY KEY, name TEXT NOT NULL, sync_enabled BOOLEAN NOT NULL);
                 CREATE TABLE products (id BIGINT PRIMARY KEY, store_id BIGINT NOT NULL, name TEXT NOT NULL, price_cents BIGINT NOT NULL);
                 CREATE TABLE price_records (id INTEGER PRIMARY KEY AUTOINCREMENT, object_id BIGINT NOT NULL, amount_cents BIGINT NOT NULL);
                 CREATE TABLE product_notes (id INTEGER PRIMARY KEY, product_id BIGINT NOT NULL REFERENCES products (id) DEFERRABLE INITIALLY DEFERRED);
                 CREATE TABLE listings (id INTEGER PRIMARY KEY AUTOINCREMENT, store_id BIGINT NOT NULL, title TEXT NOT NULL);
                 CREATE TABLE audit (target_id BIGINT NOT NULL, removed BOOLEAN NOT NULL DEFAULT FALSE);
                 CREATE TRIGGER products_inserted AFTER INSERT ON products BEGIN INSERT INTO audit (target_id) VALUES (NEW.id); END;
                 CREATE TRIGGER products_updated AFTER UPDATE ON products BEGIN INSERT INTO audit (target_id) VALUES (NEW.id); END;
                 CREATE TRIGGER products_deleted AFTER DELETE ON products BEGIN INSERT INTO audit VALUES (OLD.id, TRUE); END;
                 CREATE TRIGGER price_records_inserted AFTER INSERT ON price_records BEGIN INSERT INTO audit (target_id) VALUES (NEW.object_id); END;
                 CREATE TRIGGER price_records_updated AFTER UPDATE ON price_records BEGIN INSERT INTO audit (target_id) VALUES (NEW.object_id); END;
                 CREATE TRIGGER price_records_deleted AFTER DELETE ON price_records BEGIN INSERT INTO audit (target_id) VALUES (OLD.object_id); END;"
            }
            Backend::Postgres => {
                "CREATE TABLE stores (id BIGINT PRIMARY KEY, name TEXT NOT NULL, sync_enabled BOOLEAN NOT NULL);
                 CREATE TABLE products (id BIGINT PRIMARY KEY, store_id BIGINT NOT NULL, name TEXT NOT NULL, price_cents BIGINT NOT NULL);
                 CREATE TABLE price_records (id BIGSERIAL PRIMARY KEY, object_id BIGINT NOT NULL, amount_cents BIGINT NOT NULL);
                 CREATE TABLE product_notes (id BIGSERIAL PRIMARY KEY, product_id BIGINT NOT NULL REFERENCES products (id) DEFERRABLE INITIALLY DEFERRED);
                 CREATE TABLE listings (id BIGSERIAL PRIMARY KEY, store_id BIGINT NOT NULL, title TEXT NOT NULL);
                 CREATE TABLE audit (target_id BIGINT NOT NULL, removed BOOLEAN NOT NULL DEFAULT FALSE);
                 CREATE FUNCTION audit_product() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN
                     IF TG_OP = 'DELETE' THEN INSERT INTO audit VALUES (OLD.id, TRUE); ELSE INSERT INTO audit (target_id) VALUES (NEW.id); END IF;
                     RETURN NULL;
                 END $$;
                 CREATE TRIGGER products_audited AFTER INSERT OR UPDATE OR DELETE ON products FOR EACH ROW EXECUTE FUNCTION audit_product();
                 CREATE FUNCTION audit_price_record() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN
                     IF TG_OP = 'DELETE' THEN INSERT INTO audit (target_id) VALUES (OLD.object_id); ELSE INSERT INTO audit (target_id) VALUES (NEW.object_id); END IF;
                     RETURN NULL;
                 END $$;
                 CREATE TRIGGER price_records_audited AFTER INSERT OR UPDATE OR DELETE ON price_records FOR EACH ROW EXECUTE FUNCTION audit_price_record();"
            }
            Backend::Mysql => {
                "CREATE TABLE stores (id BIGINT PRIMARY KEY, name VARCHAR(255) NOT NULL, sync_enabled BOOLEAN NOT NULL);
                 CREATE TABLE products (id BIGINT PRIMARY KEY, store_id BIGINT NOT NULL, name VARCHAR(255) NOT NULL, price_cents BIGINT NOT NULL);
                 CREATE TABLE price_records (id BIGINT AUTO_INCREMENT PRIMARY KEY, object_id BIGINT NOT NULL, amount_cents BIGINT NOT NULL);
                 CREATE TABLE product_notes (id BIGINT AUTO_INCREMENT PRIMARY KEY, product_id BIGINT NOT NULL);
                 CREATE TABLE listings (id BIGINT AUTO_INCREMENT PRIMARY KEY, store_id BIGINT NOT NULL, title VARCHAR(255) NOT NULL);
                 CREATE TABLE audit (target_id BIGINT NOT NULL, removed BOOLEAN NOT NULL DEFAULT FALSE);
                 CREATE TRIGGER products_inserted AFTER INSERT ON products FOR EACH ROW INSERT INTO audit (target_id) VALUES (NEW.id);
                 CREATE TRIGGER products_updated AFTER UPDATE ON products FOR EACH ROW INSERT INTO audit (target_id) VALUES (NEW.id);
                 CREATE TRIGGER products_deleted AFTER DELETE ON products FOR EACH ROW INSERT INTO audit VALUES (OLD.id, TRUE);
                 CREATE TRIGGER price_records_inserted AFTER INSERT ON price_records FOR EACH ROW INSERT INTO audit (target_id) VALUES (NEW.object_id);
                 CREATE TRIGGER price_records_updated AFTER UPDATE ON price_records FOR EACH ROW INSERT INTO audit (target_id) VALUES (NEW.object_id);
                 CREATE TRIGGER price_records_deleted AFTER DELETE ON price_records FOR EACH ROW INSERT INTO audit (target_id) VALUES (OLD.object_id);"
            }
        }
    }

    /// How many products one multi-row insert may carry under the backend's bind limit.
    pub fn insert_chunk(self) -> usize {
        match self {
            Backend::Sqlite => 8_000,
            Backend::Postgres | Backend::Mysql => 10_000,
        }
    }
}

/// Creates an empty database (a file, a schema or a database) named after the test; returns
/// the URL to connect to it. Each test gets its own, so tests run in parallel without meeting.
pub async fn create_database(backend: Backend, name: &str) -> String {
    use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    let name = format!("diesel_sync_{name}");
    match backend {
        Backend::Sqlite => {
            let dir = std::env::temp_dir().join("diesel-sync-tests");
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(format!("{name}.db"));
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
            path.display().to_string()
        }
        Backend::Postgres => {
            let base = std::env::var("DIESEL_SYNC_POSTGRES_URL").expect("DIESEL_SYNC_POSTGRES_URL");
            let mut admin = diesel_async::AsyncPgConnection::establish(&base)
                .await
                .unwrap_or_else(|e| panic!("PostgreSQL at {base} is unreachable: {e}"));
            admin
                .batch_execute(&format!(
                    "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name};"
                ))
                .await
                .unwrap();
            let separator = if base.contains('?') { '&' } else { '?' };
            format!("{base}{separator}options=-csearch_path%3D{name}")
        }
        Backend::Mysql => {
            let base = std::env::var("DIESEL_SYNC_MYSQL_URL").expect("DIESEL_SYNC_MYSQL_URL");
            let mut admin = diesel_async::AsyncMysqlConnection::establish(&base)
                .await
                .unwrap_or_else(|e| panic!("MySQL at {base} is unreachable: {e}"));
            admin
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name};"
                ))
                .await
                .unwrap();
            let server = base
                .rsplit_once('/')
                .map_or(base.as_str(), |(server, _)| server);
            format!("{server}/{name}")
        }
    }
}

/// Inserts rows without syncing them, in as few statements as the connection allows.
pub trait Seed {
    async fn seed_products(&mut self, rows: Vec<Product>, backend: Backend);
    async fn seed_price_records(&mut self, rows: Vec<PriceRecord>, backend: Backend);
}

/// `SQLite` over diesel-async has no multi-row insert: seed through the synchronous connection.
impl Seed
    for diesel_async::sync_connection_wrapper::SyncConnectionWrapper<diesel::SqliteConnection>
{
    async fn seed_products(&mut self, rows: Vec<Product>, backend: Backend) {
        self.spawn_blocking(move |conn| {
            conn.transaction(|conn| {
                for chunk in rows.chunks(backend.insert_chunk()) {
                    diesel::insert_into(products::table)
                        .values(chunk)
                        .execute(conn)?;
                }
                Ok(())
            })
        })
        .await
        .expect("seed products");
    }

    async fn seed_price_records(&mut self, rows: Vec<PriceRecord>, _: Backend) {
        self.spawn_blocking(move |conn| {
            diesel::insert_into(price_records::table)
                .values(&rows)
                .execute(conn)
                .map(drop)
        })
        .await
        .expect("seed price records");
    }
}

macro_rules! seed_async {
    ($($conn:ty),*) => {$(
        impl Seed for $conn {
            async fn seed_products(&mut self, rows: Vec<Product>, backend: Backend) {
                use diesel_async::AsyncConnection;
                self.transaction(async |conn| {
                    for chunk in rows.chunks(backend.insert_chunk()) {
                        diesel_async::RunQueryDsl::execute(diesel::insert_into(products::table).values(chunk), conn).await?;
                    }
                    Ok::<_, diesel::result::Error>(())
                })
                .await
                .expect("seed products");
            }

            async fn seed_price_records(&mut self, rows: Vec<PriceRecord>, _: Backend) {
                diesel_async::RunQueryDsl::execute(diesel::insert_into(price_records::table).values(&rows), self).await.expect("seed price records");
            }
        }
    )*};
}

seed_async!(
    diesel_async::AsyncPgConnection,
    diesel_async::AsyncMysqlConnection
);
