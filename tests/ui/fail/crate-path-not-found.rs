// `crate` names a path that does not exist in this crate.
use diesel::prelude::*;
use diesel_sync::Synced;

diesel::table! {
    products (id) {
        id -> BigInt,
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Synced)]
#[diesel(table_name = products)]
#[synced(crate = "my_sync")]
pub struct Product {
    pub id: i64,
}

fn main() {}
