//! `#[derive(Synced)]`: the derive half of [diesel-sync](https://docs.rs/diesel-sync).
//!
//! Depend on `diesel-sync`, which re-exports this macro; its documentation lives there.
//! The macro runs in three stages: [`ast`] reads the struct and its attributes into a
//! [`ast::Model`], checking what it can as it goes (errors are collected, not returned one by
//! one), and [`expand`] writes the impls.

mod ast;
mod attr;
mod ctxt;
mod expand;

use proc_macro::TokenStream;

/// Derives `diesel_sync::Synced`; see the `diesel-sync` crate for the attributes.
#[proc_macro_derive(Synced, attributes(synced))]
pub fn derive_synced(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    expand::derive(&input).into()
}
