// A malformed `#[diesel]` attribute is Diesel's to report: `Synced` adds nothing to it.
use diesel::prelude::*;
use diesel_sync::{Batch, HandlerError, Registry, Synced};

diesel::table! {
    products (id) {
        id -> BigInt,
        name -> Text,
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Synced)]
#[diesel(table_name = products, primary_key = id)]
pub struct Product {
    pub id: i64,
    pub name: String,
}

fn main() {
    // Code that uses `Product` reports nothing more.
    let _registry = Registry::<()>::builder()
        .handler(|batch: Batch<Product>| async move {
            let _ids: Vec<i64> = batch.ids().collect();
            Ok::<(), HandlerError>(())
        })
        .build();
}
