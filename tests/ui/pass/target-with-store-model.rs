//! A target naming its store model through Diesel's `belongs_to`: each batch carries the
//! store's row, and `when` filters batches by it.
use diesel::prelude::*;
use diesel_sync::{Batch, HandlerError, Registry, Synced};

diesel::table! {
    shops (id) {
        id -> BigInt,
        sync_enabled -> Bool,
    }
}

diesel::table! {
    products (id) {
        id -> BigInt,
        shop -> BigInt,
        name -> Text,
    }
}

diesel::allow_tables_to_appear_in_same_query!(shops, products);

#[derive(Debug, Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = shops)]
pub struct Shop {
    pub id: i64,
    pub sync_enabled: bool,
}

#[derive(Debug, Clone, Queryable, Selectable, Identifiable, Associations, Synced)]
#[diesel(table_name = products, belongs_to(Shop, foreign_key = shop))]
#[synced(store = Shop)]
pub struct Product {
    pub id: i64,
    pub shop: i64,
    pub name: String,
}

fn main() {
    let registry = Registry::<()>::builder()
        .handler(|batch: Batch<Product>| async move {
            let _store: i64 = *batch.store();
            let _row: Option<&Shop> = batch.store_row();
            Ok::<(), HandlerError>(())
        })
        .when(|shop: &Shop| shop.sync_enabled)
        .build();
    assert!(registry.handles::<Product>());
}
