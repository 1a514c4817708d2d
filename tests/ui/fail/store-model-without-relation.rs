// `store = Store` names neither a field nor a `belongs_to` parent.
use diesel::prelude::*;
use diesel_sync::Synced;

diesel::table! {
    products (id) {
        id -> BigInt,
        store_id -> BigInt,
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Synced)]
#[diesel(table_name = products)]
#[synced(store = Store)]
pub struct Product {
    pub id: i64,
    pub store_id: i64,
}

fn main() {}
