// The target is itself a reference model, whose rows are never sent.
use diesel::prelude::*;
use diesel_sync::Synced;

diesel::table! {
    products (id) {
        id -> BigInt,
        store_id -> BigInt,
        name -> Text,
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
    price_notes (id) {
        id -> BigInt,
        record_id -> BigInt,
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Synced)]
#[diesel(table_name = products)]
pub struct Product {
    pub id: i64,
    pub store_id: i64,
    pub name: String,
}

#[derive(Debug, Clone, Insertable, Synced)]
#[diesel(table_name = price_records)]
#[synced(target = Product, key = object_id)]
pub struct PriceRecord {
    pub object_id: i64,
    pub amount_cents: i64,
}

#[derive(Debug, Clone, Insertable, Synced)]
#[diesel(table_name = price_notes)]
#[synced(target = PriceRecord, key = record_id)]
pub struct PriceNote {
    pub record_id: i64,
}

fn main() {}
