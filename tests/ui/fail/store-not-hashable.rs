// An `f64` store key cannot group batches.
use diesel::prelude::*;
use diesel_sync::Synced;

diesel::table! {
    readings (id) {
        id -> BigInt,
        sensor -> Double,
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Synced)]
#[diesel(table_name = readings)]
#[synced(store = sensor)]
pub struct Reading {
    pub id: i64,
    pub sensor: f64,
}

fn main() {}
