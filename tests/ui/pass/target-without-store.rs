//! A target model without `store`: every batch belongs to the one store `()`.
use diesel::prelude::*;
use diesel_sync::{Batch, HandlerError, Registry, Synced};

diesel::table! {
    products (id) {
        id -> BigInt,
        name -> Text,
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Synced)]
#[diesel(table_name = products)]
pub struct Product {
    pub id: i64,
    pub name: String,
}

fn main() {
    let registry = Registry::<()>::builder()
        .handler(|batch: Batch<Product>| async move {
            let () = *batch.store();
            Ok::<(), HandlerError>(())
        })
        .build();
    assert!(registry.handles::<Product>());
}
