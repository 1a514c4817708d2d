// No `table_name`, and the name Diesel would infer from `A` is `as`, a keyword.
use diesel_sync::{Batch, HandlerError, Registry, Synced};

diesel::table! {
    a_rows (id) {
        id -> BigInt,
    }
}

#[derive(Debug, Clone, Synced)]
pub struct A {
    pub id: i64,
}

fn main() {
    // Code that uses `A` reports nothing more.
    let _registry = Registry::<()>::builder()
        .handler(|batch: Batch<A>| async move {
            let _ids: Vec<i64> = batch.ids().collect();
            Ok::<(), HandlerError>(())
        })
        .build();
}
