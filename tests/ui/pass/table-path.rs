//! `#[diesel(table_name = schema::products)]`: the table is named by a path, from a module
//! other than the schema's.
pub mod schema {
    diesel::table! {
        products (id) {
            id -> BigInt,
            name -> Text,
        }
    }
}

pub mod models {
    use diesel::prelude::*;
    use diesel_sync::Synced;

    use crate::schema;

    #[derive(Debug, Clone, Queryable, Selectable, Synced)]
    #[diesel(table_name = schema::products)]
    pub struct Product {
        pub id: i64,
        pub name: String,
    }
}

fn main() {
    let _update = diesel_sync::update(schema::products::table);
    assert!(diesel_sync::Registry::<()>::empty().handles::<models::Product>() == false);
}
