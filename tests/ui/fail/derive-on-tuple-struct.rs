// `Synced` on a tuple struct: `#[synced]` has no field names to name.
use diesel_sync::{Batch, HandlerError, Registry, Synced};

#[derive(Debug, Synced)]
pub struct Product(i64, String);

fn main() {
    // Code that uses `Product` reports nothing more.
    let _registry = Registry::<()>::builder()
        .handler(|batch: Batch<Product>| async move {
            let _rows: &[Product] = batch.rows();
            Ok::<(), HandlerError>(())
        })
        .build();
}
