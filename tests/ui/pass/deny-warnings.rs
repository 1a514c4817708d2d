//! The generated code compiles without a warning in a crate that denies every warning and the
//! strictest allow-by-default lints.
#![deny(warnings)]
#![deny(
    future_incompatible,
    let_underscore,
    nonstandard_style,
    rust_2018_idioms,
    unused,
    elided_lifetimes_in_paths,
    explicit_outlives_requirements,
    macro_use_extern_crate,
    meta_variable_misuse,
    missing_copy_implementations,
    missing_debug_implementations,
    missing_docs,
    non_ascii_idents,
    single_use_lifetimes,
    trivial_casts,
    trivial_numeric_casts,
    unit_bindings,
    unreachable_pub,
    unsafe_code,
    unused_crate_dependencies,
    unused_import_braces,
    unused_lifetimes,
    unused_qualifications,
    unused_results,
    variant_size_differences
)]
#![allow(unused_crate_dependencies)] // the test crate has every dev-dependency of diesel-sync

use diesel::prelude::*;
use diesel_sync::Synced;

/// The schema.
pub mod schema {
    diesel::table! {
        /// Products.
        products (id) {
            /// The id.
            id -> BigInt,
            /// The store.
            store_id -> BigInt,
        }
    }

    diesel::table! {
        /// Price records.
        price_records (id) {
            /// The id.
            id -> BigInt,
            /// The product.
            object_id -> BigInt,
        }
    }
}

/// A product.
#[derive(Debug, Clone, Copy, Queryable, Selectable, Insertable, Synced)]
#[diesel(table_name = schema::products)]
#[synced(store = store_id)]
pub struct Product {
    /// The id.
    pub id: i64,
    /// The store.
    pub store_id: i64,
}

/// A price record.
#[derive(Debug, Clone, Copy, Insertable, Synced)]
#[diesel(table_name = schema::price_records)]
#[synced(target = Product, key = object_id)]
pub struct PriceRecord {
    /// The product.
    pub object_id: i64,
}

fn main() {}
