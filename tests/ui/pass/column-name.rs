//! Fields named unlike their columns, with `#[diesel(column_name = …)]`: `#[synced]` names
//! fields, the derive maps them to their columns, as Diesel does. A column whose name is a Rust
//! keyword is given as a string.
use diesel::prelude::*;
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, SimpleAsyncConnection};
use diesel_sync::{Batch, HandlerError, Registry, Synced, SyncedConnection};

diesel::table! {
    products (id) {
        id -> BigInt,
        store_id -> BigInt,
        #[sql_name = "type"]
        r#type -> Text,
    }
}

diesel::table! {
    price_records (id) {
        id -> BigInt,
        object_id -> BigInt,
        amount_cents -> BigInt,
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable, Synced)]
#[diesel(table_name = products)]
#[synced(store = shop)]
pub struct Product {
    #[diesel(column_name = id)]
    pub code: i64,
    #[diesel(column_name = store_id)]
    pub shop: i64,
    #[diesel(column_name = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, Insertable, Synced)]
#[diesel(table_name = price_records)]
#[synced(target = Product, key = product)]
pub struct PriceRecord {
    #[diesel(column_name = object_id)]
    pub product: i64,
    pub amount_cents: i64,
}

#[tokio::main]
async fn main() {
    let (sent, mut received) = tokio::sync::mpsc::unbounded_channel();
    let registry = Registry::builder()
        .handler(move |batch: Batch<Product>| {
            let sent = sent.clone();
            async move {
                let kinds: Vec<(i64, String)> = batch
                    .rows()
                    .iter()
                    .map(|p| (p.code, p.kind.clone()))
                    .collect();
                sent.send((*batch.store(), kinds))
                    .map_err(HandlerError::permanent)
            }
        })
        .build();
    let inner = SyncConnectionWrapper::<diesel::SqliteConnection>::establish(":memory:")
        .await
        .unwrap();
    let mut conn = SyncedConnection::new(inner, registry.clone());
    conn.batch_execute(
        "CREATE TABLE products (id BIGINT PRIMARY KEY, store_id BIGINT NOT NULL, type TEXT NOT NULL);
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
        product: 1,
        amount_cents: 2500,
    };
    diesel_sync::insert_into(price_records::table)
        .values(&record)
        .execute(&mut conn)
        .await
        .unwrap();

    registry.settled().await;
    assert_eq!(
        received.recv().await,
        Some((7, vec![(1, "kettle".to_owned())]))
    );
}
