// An `f64` id cannot be deduplicated: it is neither `Eq` nor `Hash`.
use diesel::prelude::*;
use diesel_sync::Synced;

diesel::table! {
    readings (id) {
        id -> Double,
        value -> Double,
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Synced)]
#[diesel(table_name = readings)]
pub struct Reading {
    pub id: f64,
    pub value: f64,
}

fn main() {}
