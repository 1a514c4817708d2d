// A durable registry needs a connection kind whose COMMIT can write the outbox.
use diesel::prelude::*;
use diesel_sync::{Batch, Durable, HandlerError, Registry, Synced};

diesel::table! {
    products (id) {
        id -> BigInt,
        store_id -> BigInt,
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Synced)]
#[diesel(table_name = products)]
#[synced(store = store_id)]
pub struct Product {
    pub id: i64,
    pub store_id: i64,
}

fn main() {
    let _registry = Registry::<()>::builder()
        .handler(|_: Batch<Product>| async move { Ok::<(), HandlerError>(()) })
        .durable(Durable::new("shop.db"))
        .build();
}
