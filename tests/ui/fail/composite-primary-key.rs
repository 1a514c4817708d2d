// A composite primary key cannot be collected as one id.
use diesel::prelude::*;
use diesel_sync::{Batch, HandlerError, Registry, Synced};

diesel::table! {
    products (store_id, sku) {
        store_id -> BigInt,
        sku -> Text,
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Synced)]
#[diesel(table_name = products, primary_key(store_id, sku))]
pub struct Product {
    pub store_id: i64,
    pub sku: String,
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
