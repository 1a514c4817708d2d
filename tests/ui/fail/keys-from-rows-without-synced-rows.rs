// `keys_from_rows` on values that are not rows of a `Synced` model: their keys are unknown.
use diesel::prelude::*;
use diesel_sync::Synced;

diesel::table! {
    products (id) {
        id -> BigInt,
        price_cents -> BigInt,
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Synced)]
#[diesel(table_name = products)]
pub struct Product {
    pub id: i64,
    pub price_cents: i64,
}

#[derive(Insertable)]
#[diesel(table_name = products)]
pub struct NewProduct {
    pub price_cents: i64,
}

fn main() {
    let _ = diesel_sync::insert_into(products::table)
        .values(&NewProduct { price_cents: 100 })
        .keys_from_rows();
}
