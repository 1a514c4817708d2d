//! The attributes the derive reads: Diesel's own `#[diesel(table_name = …, primary_key(…))]`
//! and the new `#[synced(store = …, target = …, key = …, crate = …)]`.

use syn::meta::ParseNestedMeta;
use syn::{Attribute, Ident, LitStr, Path, Token};

use crate::ctxt::Ctxt;

/// What `#[diesel(…)]` says that the derive needs.
#[derive(Default)]
pub(crate) struct DieselAttrs {
    pub(crate) table_name: Option<Path>,
    pub(crate) primary_key: Option<Vec<Ident>>,
}

/// The `#[synced(…)]` options.
#[derive(Default)]
pub(crate) struct SyncedAttrs {
    pub(crate) store: Option<Ident>,
    pub(crate) target: Option<Path>,
    pub(crate) key: Option<Ident>,
    pub(crate) krate: Option<Path>,
}

const SYNCED_KEYS: &str = "`store`, `target`, `key` or `crate`";

impl DieselAttrs {
    /// Reads `table_name` and `primary_key`; every other Diesel option is Diesel's business.
    pub(crate) fn from_attrs(cx: &mut Ctxt, attrs: &[Attribute]) -> Self {
        let mut diesel = Self::default();
        for attr in attrs.iter().filter(|a| a.path().is_ident("diesel")) {
            let parsed = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("table_name") {
                    diesel.table_name = Some(meta.value()?.parse()?);
                } else if meta.path.is_ident("primary_key") {
                    let content;
                    syn::parenthesized!(content in meta.input);
                    let columns = content.parse_terminated(Ident::parse_any_ident, Token![,])?;
                    diesel.primary_key = Some(columns.into_iter().collect());
                } else {
                    skip_value(&meta)?;
                }
                Ok(())
            });
            // Diesel reports malformed `#[diesel]` attributes itself; repeating them would be noise.
            if let Err(error) = parsed {
                if attr.meta.require_list().is_ok() && !error.to_string().contains("unexpected") {
                    cx.push(error);
                }
            }
        }
        diesel
    }
}

impl SyncedAttrs {
    pub(crate) fn from_attrs(cx: &mut Ctxt, attrs: &[Attribute]) -> Self {
        let mut synced = Self::default();
        for attr in attrs.iter().filter(|a| a.path().is_ident("synced")) {
            if let Err(error) = attr.parse_nested_meta(|meta| synced.parse_one(cx, &meta)) {
                cx.push(error);
            }
        }
        synced
    }

    fn parse_one(&mut self, cx: &mut Ctxt, meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
        let path = &meta.path;
        if path.is_ident("store") {
            let value = parse_ident(meta, "store", "store = store_id")?;
            set_once(cx, &mut self.store, value, path, "store");
        } else if path.is_ident("target") {
            let value: Path = meta.value()?.parse().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    "expected a model type, like `#[synced(target = Product)]`",
                )
            })?;
            set_once(cx, &mut self.target, value, path, "target");
        } else if path.is_ident("key") {
            let value = parse_ident(meta, "key", "key = product_id")?;
            set_once(cx, &mut self.key, value, path, "key");
        } else if path.is_ident("crate") {
            let lit: LitStr = meta.value()?.parse().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    "expected a string, like `#[synced(crate = \"my_sync\")]`",
                )
            })?;
            let value: Path = lit.parse().map_err(|_| {
                syn::Error::new(
                    lit.span(),
                    "expected a crate path, like `#[synced(crate = \"my_sync\")]`",
                )
            })?;
            set_once(cx, &mut self.krate, value, path, "crate");
        } else {
            let name = path
                .get_ident()
                .map_or_else(|| quote::quote!(#path).to_string(), ToString::to_string);
            skip_value(meta)?;
            return Err(meta.error(format_args!(
                "unknown `synced` option `{name}`; expected {SYNCED_KEYS}"
            )));
        }
        Ok(())
    }
}

/// Parses `key = ident`, with an error that shows the expected form.
fn parse_ident(meta: &ParseNestedMeta<'_>, key: &str, example: &str) -> syn::Result<Ident> {
    let help = || format!("expected a field name, like `#[synced({example})]`");
    if !meta.input.peek(Token![=]) {
        return Err(meta.error(help()));
    }
    let value = meta.value()?;
    let _ = key;
    if value.peek(LitStr) {
        let lit: LitStr = value.parse()?;
        return Err(syn::Error::new(
            lit.span(),
            format!("{}, not a string", help()),
        ));
    }
    value
        .parse::<Ident>()
        .map_err(|e| syn::Error::new(e.span(), help()))
}

fn set_once<T>(cx: &mut Ctxt, slot: &mut Option<T>, value: T, path: &Path, name: &str) {
    if slot.is_some() {
        cx.error_spanned_by(
            path,
            format!("duplicate `synced` option `{name}`: give it once"),
        );
    } else {
        *slot = Some(value);
    }
}

/// Consumes an option's value (`= expr` or `(…)`) so parsing can go on after it.
fn skip_value(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(Token![=]) {
        meta.value()?.parse::<syn::Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        let _content;
        syn::parenthesized!(_content in meta.input);
    }
    Ok(())
}

trait ParseAnyIdent {
    fn parse_any_ident(input: syn::parse::ParseStream<'_>) -> syn::Result<Ident>;
}

impl ParseAnyIdent for Ident {
    fn parse_any_ident(input: syn::parse::ParseStream<'_>) -> syn::Result<Ident> {
        syn::ext::IdentExt::parse_any(input)
    }
}
