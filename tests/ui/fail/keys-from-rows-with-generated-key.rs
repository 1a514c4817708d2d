// `keys_from_rows` on rows whose key the database generates (`skip_insertion`): the rows do not
// hold the keys that get written.
use diesel::prelude::*;
use diesel_sync::Synced;

diesel::table! {
    products (id) {
        id -> BigInt,
        price_cents -> BigInt,
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable, Synced)]
#[diesel(table_name = products)]
pub struct Product {
    #[diesel(skip_insertion)]
    pub id: i64,
    pub price_cents: i64,
}

fn main() {
    let rows = vec![Product { id: 0, price_cents: 100 }];
    let _ = diesel_sync::insert_into(products::table)
        .values(&rows)
        .keys_from_rows();
}
