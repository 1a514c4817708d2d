// A model with an `Rc` field cannot be collected and sent on other threads.
use std::rc::Rc;

use diesel::prelude::*;
use diesel_sync::Synced;

diesel::table! {
    products (id) {
        id -> BigInt,
        name -> Text,
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Synced)]
#[diesel(table_name = products)]
pub struct Product {
    pub id: i64,
    #[diesel(deserialize_as = String)]
    pub name: Rc<str>,
}

fn main() {}
