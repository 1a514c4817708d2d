// The target does not derive `Synced`.
use diesel::prelude::*;
use diesel_sync::Synced;

diesel::table! {
    price_records (id) {
        id -> BigInt,
        object_id -> BigInt,
        amount_cents -> BigInt,
    }
}

#[derive(Debug, Clone)]
pub struct Product {
    pub id: i64,
}

#[derive(Debug, Clone, Insertable, Synced)]
#[diesel(table_name = price_records)]
#[synced(target = Product, key = object_id)]
pub struct PriceRecord {
    pub object_id: i64,
    pub amount_cents: i64,
}

fn main() {}
