//! No `table_name`: the table is inferred as Diesel's derives infer it, `PriceRecord` →
//! `price_records`.
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
pub struct Product {
    pub id: i64,
}

#[derive(Debug, Clone, Insertable, Synced)]
#[synced(target = Product, key = object_id)]
pub struct PriceRecord {
    pub object_id: i64,
}

fn main() {
    let record = PriceRecord { object_id: 1 };
    let _insert = diesel_sync::insert_into(price_records::table).values(&record);
    let _update = diesel_sync::update(products::table);
}
