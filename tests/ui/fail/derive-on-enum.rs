// `Synced` on an enum: there is no row to sync.
use diesel_sync::{Batch, HandlerError, Registry, Synced};

#[derive(Debug, Synced)]
pub enum Product {
    Book { id: i64 },
    Pen { id: i64 },
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
