//! `#[synced(crate = "…")]`: the generated code names the runtime through the given path, for a
//! crate that depends on `diesel-sync` under another name, or re-exports it.
use diesel::prelude::*;
// As `my_sync = { package = "diesel-sync", … }` in `[dependencies]` would name it.
use diesel_sync as my_sync;

diesel::table! {
    products (id) {
        id -> BigInt,
        name -> Text,
    }
}

diesel::table! {
    price_records (id) {
        id -> BigInt,
        object_id -> BigInt,
    }
}

/// A crate's own facade over diesel-sync.
pub mod sync {
    pub use diesel_sync::*;
}

#[derive(Debug, Clone, Queryable, Selectable, my_sync::Synced)]
#[diesel(table_name = products)]
#[synced(crate = "my_sync")]
pub struct Product {
    pub id: i64,
    pub name: String,
}

#[derive(Debug, Clone, Insertable, sync::Synced)]
#[diesel(table_name = price_records)]
#[synced(crate = "crate::sync", target = Product, key = object_id)]
pub struct PriceRecord {
    pub object_id: i64,
}

fn main() {
    let registry = my_sync::Registry::<()>::builder()
        .handler(|_: my_sync::Batch<Product>| async { Ok::<(), my_sync::HandlerError>(()) })
        .build();
    assert!(registry.handles::<Product>());
}
