// A target model must be `Debug`: batches and dead letters print it.
use diesel::prelude::*;
use diesel_sync::Synced;

diesel::table! {
    products (id) {
        id -> BigInt,
        store_id -> BigInt,
        name -> Text,
    }
}

#[derive(Clone, Queryable, Selectable, Synced)]
#[diesel(table_name = products)]
pub struct Product {
    pub id: i64,
    pub store_id: i64,
    pub name: String,
}

fn main() {}
