// No `table_name`, and the struct's name starts with a non-ASCII letter, which Diesel's derives
// cannot infer a table name from.
use diesel_sync::{Batch, HandlerError, Registry, Synced};

diesel::table! {
    uebungen (id) {
        id -> BigInt,
    }
}

#[derive(Debug, Clone, Synced)]
pub struct Übung {
    pub id: i64,
}

fn main() {
    // Code that uses `Übung` reports nothing more.
    let _registry = Registry::<()>::builder()
        .handler(|batch: Batch<Übung>| async move {
            let _ids: Vec<i64> = batch.ids().collect();
            Ok::<(), HandlerError>(())
        })
        .build();
}
