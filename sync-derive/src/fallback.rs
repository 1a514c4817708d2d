//! The stand-ins the impls are written with when the derive reported an error and could not
//! tell a part of the model: a table and key column that always exist, an id type, and no
//! query. As thiserror's fallback, they exist so that the model's other uses compile and the
//! user sees only the derive's error. Their bodies never run: the crate does not compile.

use proc_macro2::TokenStream;
use quote::quote;

/// The runtime's stand-in table and its column.
pub(crate) fn table_and_key(rt: &TokenStream) -> (TokenStream, TokenStream) {
    (quote!(#rt::fallback::table), quote!(#rt::fallback::id))
}

/// The stand-in id type.
pub(crate) fn id_ty(rt: &TokenStream) -> TokenStream {
    quote!(#rt::fallback::Id)
}

/// A value of the stand-in id type.
pub(crate) fn id(rt: &TokenStream) -> TokenStream {
    quote!(#rt::fallback::Id)
}

/// No query: `ByIds = ()`.
pub(crate) fn by_ids() -> (TokenStream, TokenStream) {
    (quote!(()), quote!(::core::mem::drop(ids)))
}
