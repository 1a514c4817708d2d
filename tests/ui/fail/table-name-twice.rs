// Two `table_name`s: Diesel's `Insertable` accepts that, a synced model has one table.
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
    archived_products (id) {
        id -> BigInt,
        store_id -> BigInt,
        name -> Text,
    }
}

#[derive(Debug, Clone, Insertable, Synced)]
#[diesel(table_name = products)]
#[diesel(table_name = archived_products)]
pub struct Product {
    pub id: i64,
    pub store_id: i64,
    pub name: String,
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
