// `Synced` on a unit struct: no primary key.
use diesel_sync::{Batch, HandlerError, Registry, Synced};

#[derive(Debug, Synced)]
pub struct Product;

fn main() {
    // Code that uses `Product` reports nothing more.
    let _registry = Registry::<()>::builder()
        .handler(|batch: Batch<Product>| async move {
            let _rows: &[Product] = batch.rows();
            Ok::<(), HandlerError>(())
        })
        .build();
}
