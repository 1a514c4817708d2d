// `key` names no field of the reference model.
use diesel::prelude::*;
use diesel_sync::{Batch, HandlerError, Registry, Synced};

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
#[synced(target = Product, key = product_id)]
pub struct PriceRecord {
    pub object_id: i64,
    pub amount_cents: i64,
}

fn main() {
    // Code that uses `Product` reports nothing more.
    let _registry = Registry::<()>::builder()
        .handler(|batch: Batch<Product>| async move {
            let _rows: &[Product] = batch.rows();
            Ok::<(), HandlerError>(())
        })
        .build();
}
