//! Options may be split over several `#[synced]` attributes, as serde's may.
use diesel::prelude::*;
use diesel_sync::Synced;

diesel::table! {
    products (id) {
        id -> BigInt,
    }
}

diesel::table! {
    price_records (id) {
        id -> BigInt,
        object_id -> BigInt,
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Synced)]
#[diesel(table_name = products)]
pub struct Product {
    pub id: i64,
}

#[derive(Debug, Clone, Insertable, Synced)]
#[diesel(table_name = price_records)]
#[synced(target = Product)]
#[synced(key = object_id)]
pub struct PriceRecord {
    pub object_id: i64,
}

fn main() {}
