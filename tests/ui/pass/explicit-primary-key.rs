//! `#[diesel(primary_key(sku))]`: the target's id is the `sku` column, as Diesel's
//! `Identifiable` reads it.
use diesel::prelude::*;
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, SimpleAsyncConnection};
use diesel_sync::{Batch, HandlerError, Registry, Synced, SyncedConnection};

diesel::table! {
    products (sku) {
        sku -> Text,
        price_cents -> BigInt,
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable, Synced)]
#[diesel(table_name = products, primary_key(sku))]
pub struct Product {
    pub sku: String,
    pub price_cents: i64,
}

#[tokio::main]
async fn main() {
    let (sent, mut received) = tokio::sync::mpsc::unbounded_channel();
    let registry = Registry::builder()
        .handler(move |batch: Batch<Product>| {
            let sent = sent.clone();
            async move {
                let skus: Vec<String> = batch.ids().collect();
                sent.send(skus).map_err(HandlerError::permanent)
            }
        })
        .build();
    let inner = SyncConnectionWrapper::<diesel::SqliteConnection>::establish(":memory:")
        .await
        .unwrap();
    let mut conn = SyncedConnection::new(inner, registry.clone());
    conn.batch_execute("CREATE TABLE products (sku TEXT PRIMARY KEY, price_cents BIGINT NOT NULL)")
        .await
        .unwrap();

    let mug = Product {
        sku: "mug".into(),
        price_cents: 900,
    };
    diesel_sync::insert_into(products::table)
        .values(&mug)
        .execute(&mut conn)
        .await
        .unwrap();

    registry.settled().await;
    assert_eq!(received.recv().await, Some(vec!["mug".to_owned()]));
}
