#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub use diesel_sync_derive::Synced;
pub use diesel_sync_runtime::*;
