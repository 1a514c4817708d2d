// The same option twice.
use diesel::prelude::*;
use diesel_sync::{Batch, HandlerError, Registry, Synced};

diesel::table! {
    products (id) {
        id -> BigInt,
        store_id -> BigInt,
        name -> Text,
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Synced)]
#[diesel(table_name = products)]
#[synced(store = store_id)]
#[synced(store = name)]
pub struct Product {
    pub id: i64,
    pub store_id: i64,
    pub name: String,
}

fn main() {
    // Code that uses `Product` reports nothing more.
    let _registry = Registry::<()>::builder()
        .handler(|batch: Batch<Product>| async move {
            let _store: i64 = *batch.store();
            let _ids: Vec<i64> = batch.ids().collect();
            Ok::<(), HandlerError>(())
        })
        .build();
}
