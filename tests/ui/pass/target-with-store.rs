//! A target model: its rows are sent to handlers, in one batch per `store_id`.
use diesel::prelude::*;
use diesel_sync::{Batch, HandlerError, Registry, Synced};

diesel::table! {
    products (id) {
        id -> BigInt,
        store_id -> BigInt,
        name -> Text,
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable, Synced)]
#[diesel(table_name = products)]
#[synced(store = store_id)]
pub struct Product {
    pub id: i64,
    pub store_id: i64,
    pub name: String,
}

fn main() {
    let registry = Registry::<()>::builder()
        .handler(|batch: Batch<Product>| async move {
            let _store: i64 = *batch.store();
            let _ids: Vec<i64> = batch.ids().collect();
            Ok::<(), HandlerError>(())
        })
        .build();
    assert!(registry.handles::<Product>());
}
