// `store` on a reference model: the target's store groups batches.
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

#[derive(Debug, Clone, Queryable, Selectable, Synced)]
#[diesel(table_name = products)]
pub struct Product {
    pub id: i64,
    pub store_id: i64,
    pub name: String,
}

#[derive(Debug, Clone, Insertable, Synced)]
#[diesel(table_name = price_records)]
#[synced(target = Product, key = object_id, store = amount_cents)]
pub struct PriceRecord {
    pub object_id: i64,
    pub amount_cents: i64,
}

fn main() {
    // Code that uses `PriceRecord` reports nothing more.
    let record = PriceRecord {
        object_id: 1,
        amount_cents: 100,
    };
    let _insert = diesel_sync::insert_into(price_records::table).values(&record);
}
