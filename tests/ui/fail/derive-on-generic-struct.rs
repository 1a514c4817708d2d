// `Synced` on a struct with a lifetime: a synced model owns its data.
use diesel::prelude::*;
use diesel_sync::Synced;

diesel::table! {
    products (id) {
        id -> BigInt,
        store_id -> BigInt,
        name -> Text,
    }
}

#[derive(Debug, Clone, Insertable, Synced)]
#[diesel(table_name = products)]
pub struct NewProduct<'a> {
    pub id: i64,
    pub store_id: i64,
    pub name: &'a str,
}

fn main() {}
