// `store = Shop` names a `belongs_to` parent that is not a store model: it has no
// `Identifiable`, so its key cannot be told.
use diesel::prelude::*;
use diesel_sync::Synced;

diesel::table! {
    shops (id) {
        id -> BigInt,
    }
}

diesel::table! {
    products (id) {
        id -> BigInt,
        shop_id -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(shops, products);

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = shops)]
pub struct Shop {
    pub id: i64,
}

impl diesel::associations::HasTable for Shop {
    type Table = shops::table;
    fn table() -> shops::table {
        shops::table
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Synced)]
#[diesel(table_name = products, belongs_to(Shop))]
#[synced(store = Shop)]
pub struct Product {
    pub id: i64,
    pub shop_id: i64,
}

fn main() {}
