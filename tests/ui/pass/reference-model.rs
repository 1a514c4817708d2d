//! A reference model: writing a price record syncs the product in its `object_id`.
use diesel::prelude::*;
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, SimpleAsyncConnection};
use diesel_sync::{Batch, HandlerError, Registry, Synced, SyncedConnection};

diesel::table! {
    products (id) {
        id -> BigInt,
        store_id -> BigInt,
        name -> Text,
    }
}

diesel::table! {
    price_records (id) {
        id -> BigInt,
        object_id -> BigInt,
        amount_cents -> BigInt,
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Synced)]
#[diesel(table_name = products)]
#[synced(store = store_id)]
pub struct Product {
    pub id: i64,
    pub store_id: i64,
    pub name: String,
}

#[derive(Debug, Clone, Insertable, Synced)]
#[diesel(table_name = price_records)]
#[synced(target = Product, key = object_id)]
pub struct PriceRecord {
    pub object_id: i64,
    pub amount_cents: i64,
}

#[tokio::main]
async fn main() {
    let (sent, mut received) = tokio::sync::mpsc::unbounded_channel();
    let registry = Registry::builder()
        .handler(move |batch: Batch<Product>| {
            let sent = sent.clone();
            async move {
                let ids: Vec<i64> = batch.ids().collect();
                sent.send((*batch.store(), ids))
                    .map_err(HandlerError::permanent)
            }
        })
        .build();
    let inner = SyncConnectionWrapper::<diesel::SqliteConnection>::establish(":memory:")
        .await
        .unwrap();
    let mut conn = SyncedConnection::new(inner, registry.clone());
    conn.batch_execute(
        "CREATE TABLE products (id BIGINT PRIMARY KEY, store_id BIGINT NOT NULL, name TEXT NOT NULL);
         CREATE TABLE price_records (id INTEGER PRIMARY KEY AUTOINCREMENT, object_id BIGINT NOT NULL, amount_cents BIGINT NOT NULL);",
    )
    .await
    .unwrap();
    // Seed data goes to the inner connection, which is not synced.
    conn.inner_mut()
        .batch_execute("INSERT INTO products VALUES (1, 7, 'kettle')")
        .await
        .unwrap();

    let record = PriceRecord {
        object_id: 1,
        amount_cents: 2500,
    };
    diesel_sync::insert_into(price_records::table)
        .values(&record)
        .execute(&mut conn)
        .await
        .unwrap();

    registry.settled().await;
    assert_eq!(received.recv().await, Some((7, vec![1])));
}
