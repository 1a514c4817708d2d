//! The shop's schema and models, as any Diesel application has them, plus `#[derive(Synced)]`.

use diesel::prelude::{AsChangeset, Associations, Identifiable, Insertable, Queryable, Selectable};
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

diesel::joinable!(products -> stores (store_id));
diesel::allow_tables_to_appear_in_same_query!(stores, products, price_records);

/// A store of the shop, with its "sync prices" switch: the store model of products, loaded
/// with every batch of them.
#[derive(Debug, Clone, Queryable, Selectable, Insertable, Identifiable)]
#[diesel(table_name = stores)]
pub(crate) struct Store {
    pub(crate) id: i64,
    pub(crate) name: String,
    pub(crate) sync_enabled: bool,
}

/// A product: what the marketplace lists, grouped by the store it is sold in, whose row comes
/// with each batch.
#[derive(
    Debug, Clone, Queryable, Selectable, Insertable, Identifiable, Associations, AsChangeset, Synced,
)]
#[diesel(table_name = products, belongs_to(Store))]
#[synced(store = Store)]
pub(crate) struct Product {
    pub(crate) id: i64,
    pub(crate) store_id: i64,
    pub(crate) name: String,
    pub(crate) price_cents: i64,
}

/// One line of an imported price list: writing it syncs the product it prices.
#[derive(Debug, Clone, Insertable, Synced)]
#[diesel(table_name = price_records)]
#[synced(target = Product, key = object_id)]
pub(crate) struct PriceRecord {
    pub(crate) object_id: i64,
    pub(crate) amount_cents: i64,
}

pub(crate) const SQLITE_MIGRATIONS: diesel_migrations::EmbeddedMigrations =
    diesel_migrations::embed_migrations!("examples/marketplace/migrations/sqlite");
pub(crate) const POSTGRES_MIGRATIONS: diesel_migrations::EmbeddedMigrations =
    diesel_migrations::embed_migrations!("examples/marketplace/migrations/postgres");
pub(crate) const MYSQL_MIGRATIONS: diesel_migrations::EmbeddedMigrations =
    diesel_migrations::embed_migrations!("examples/marketplace/migrations/mysql");
