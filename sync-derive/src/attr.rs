//! The attributes the derive reads: what it needs of Diesel's own `#[diesel(table_name = …,
//! primary_key(…))]` and field `#[diesel(column_name = …)]`, and the new
//! `#[synced(store = …, target = …, key = …, crate = …)]`.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::ext::IdentExt as _;
use syn::meta::ParseNestedMeta;
use syn::parse::ParseStream;
use syn::{Attribute, Ident, LitStr, Path, Token};

use crate::ctxt::Ctxt;
use crate::suggest;

/// An option and where the user wrote it: `name` is the key (`store`), `value` what follows `=`.
pub(crate) struct Opt<T> {
    pub(crate) name: Path,
    pub(crate) value: T,
}

impl<T: ToTokens> Opt<T> {
    /// `store = store_id`, for errors about the whole option.
    pub(crate) fn tokens(&self) -> TokenStream {
        let Opt { name, value } = self;
        quote::quote!(#name = #value)
    }
}

/// The `#[synced(…)]` options.
#[derive(Default)]
pub(crate) struct SyncedAttrs {
    pub(crate) store: Option<Opt<Ident>>,
    pub(crate) target: Option<Opt<Path>>,
    pub(crate) key: Option<Opt<Ident>>,
    pub(crate) krate: Option<Opt<Path>>,
    /// Options given with a value that could not be read (and was reported): the model is
    /// still told apart by them, so that no follow-on error says they are missing.
    pub(crate) malformed: Vec<&'static str>,
}

/// What `#[diesel(…)]` on the struct says that the derive needs.
#[derive(Default)]
pub(crate) struct DieselAttrs {
    /// Every `table_name`: Diesel's `Insertable` and `Queryable` accept several.
    pub(crate) table_names: Vec<Path>,
    /// `primary_key(a, b)`: the whole option, for errors, and its columns.
    pub(crate) primary_key: Option<(TokenStream, Vec<Ident>)>,
    /// Every `belongs_to(Parent)` and `belongs_to(Parent, foreign_key = column)`: the relations
    /// `#[synced(store = Parent)]` can name.
    pub(crate) belongs_to: Vec<BelongsTo>,
    /// Why an attribute could not be read. Diesel's derives report malformed `#[diesel]`
    /// attributes themselves, so this is reported only when nothing else explains a failure.
    pub(crate) malformed: Option<syn::Error>,
}

const SYNCED_OPTIONS: [&str; 4] = ["store", "target", "key", "crate"];
const DIESEL_OPTIONS: [&str; 3] = ["table_name", "primary_key", "column_name"];

impl SyncedAttrs {
    pub(crate) fn from_attrs(cx: &mut Ctxt, attrs: &[Attribute]) -> Self {
        let mut synced = Self::default();
        for attr in attrs.iter().filter(|a| a.path().is_ident("synced")) {
            if attr.meta.require_list().is_err() {
                cx.error_spanned_by(
                    attr,
                    "expected options in parentheses after `synced`\n\
                     help: `#[synced(store = store_id)]` on a target model, \
                     `#[synced(target = Product, key = product_id)]` on a reference model",
                );
                continue;
            }
            if let Err(error) = attr.parse_nested_meta(|meta| synced.parse_option(cx, &meta)) {
                cx.push(error);
            }
        }
        synced
    }

    fn parse_option(&mut self, cx: &mut Ctxt, meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
        let name = meta.path.clone();
        // A malformed value is reported and skipped, so the options after it are still read.
        if name.is_ident("store") {
            let value = field_name(meta, "store", "store_id");
            if let Some(value) = self.read(cx, meta, "store", value) {
                set_once(cx, &mut self.store, Opt { name, value });
            }
        } else if name.is_ident("key") {
            let value = field_name(meta, "key", "product_id");
            if let Some(value) = self.read(cx, meta, "key", value) {
                set_once(cx, &mut self.key, Opt { name, value });
            }
        } else if name.is_ident("target") {
            let value = target_path(meta);
            if let Some(value) = self.read(cx, meta, "target", value) {
                set_once(cx, &mut self.target, Opt { name, value });
            }
        } else if name.is_ident("crate") {
            let value = match crate_path(meta) {
                Ok(value) => Some(value),
                Err((error, meant)) => {
                    cx.push(error);
                    if meant.is_none() {
                        self.malformed.push("crate");
                        recover(meta.input);
                    }
                    meant
                }
            };
            if let Some(value) = value {
                set_once(cx, &mut self.krate, Opt { name, value });
            }
        } else {
            skip_value(meta.input)?;
            cx.push(unknown_option(&name));
        }
        Ok(())
    }

    /// The value, or `None` after reporting why it could not be read and skipping the rest of
    /// it.
    fn read<T>(
        &mut self,
        cx: &mut Ctxt,
        meta: &ParseNestedMeta<'_>,
        option: &'static str,
        value: syn::Result<T>,
    ) -> Option<T> {
        match value {
            Ok(value) => Some(value),
            Err(error) => {
                cx.push(error);
                self.malformed.push(option);
                recover(meta.input);
                None
            }
        }
    }

    /// Whether `option` was given, readable or not.
    pub(crate) fn given(&self, option: &str) -> bool {
        self.malformed.contains(&option)
            || match option {
                "store" => self.store.is_some(),
                "target" => self.target.is_some(),
                "key" => self.key.is_some(),
                _ => self.krate.is_some(),
            }
    }
}

/// Skips what is left of a malformed option, up to the next `,`.
fn recover(input: ParseStream<'_>) {
    let _ = if input.peek(Token![=]) || input.peek(syn::token::Paren) {
        skip_value(input)
    } else {
        take_value(input).map(drop)
    };
}

fn unknown_option(name: &Path) -> syn::Error {
    let shown = path_to_string(name);
    let mut message = format!("unknown `synced` option `{shown}`\n");
    if DIESEL_OPTIONS.contains(&shown.as_str()) {
        suggest::push(
            &mut message,
            format_args!(
                "help: `{shown}` is Diesel's option: write it in `#[diesel({shown} = …)]`, \
             where Diesel's derives read it too"
            ),
        );
    } else {
        suggest::push(
            &mut message,
            format_args!(
                "help: the options are {}",
                suggest::list(SYNCED_OPTIONS.iter().map(|o| format!("`{o}`")))
            ),
        );
        if let Some(close) = suggest::closest(&shown, SYNCED_OPTIONS) {
            suggest::push(&mut message, format_args!("; did you mean `{close}`?"));
        }
    }
    syn::Error::new_spanned(name, message)
}

/// The value of `store = …` or `key = …`: a field's name, unquoted.
fn field_name(meta: &ParseNestedMeta<'_>, option: &str, example: &str) -> syn::Result<Ident> {
    let what = match option {
        "store" => "the field whose value batches are grouped by",
        _ => "the field that holds the id of the target",
    };
    let usage = format!("`#[synced({option} = {example})]`");
    if !meta.input.peek(Token![=]) {
        let problem = if meta.input.is_empty() || meta.input.peek(Token![,]) {
            "needs a value"
        } else {
            "takes its value after `=`"
        };
        return Err(meta.error(format!(
            "`{option}` {problem}\nhelp: name {what}, like {usage}"
        )));
    }
    let value = meta.value()?;
    if value.peek(LitStr) {
        let lit: LitStr = value.parse()?;
        let bare = if syn::parse_str::<Ident>(&lit.value()).is_ok() {
            format!("`#[synced({option} = {})]`", lit.value())
        } else {
            usage
        };
        return Err(syn::Error::new(
            lit.span(),
            format!(
                "expected the name of a field, found a string\n\
                 help: write the field's name without quotes: {bare}"
            ),
        ));
    }
    let fork = value.fork();
    match fork.call(Ident::parse_any) {
        Ok(ident) if fork.is_empty() || fork.peek(Token![,]) => {
            value.call(Ident::parse_any)?;
            Ok(ident)
        }
        _ => {
            let rest = take_value(value)?;
            Err(syn::Error::new_spanned(
                rest,
                format!("expected the name of a field\nhelp: name {what}, like {usage}"),
            ))
        }
    }
}

/// The value of `target = …`: a type path, unquoted.
fn target_path(meta: &ParseNestedMeta<'_>) -> syn::Result<Path> {
    let usage = "`#[synced(target = Product, key = product_id)]`";
    if !meta.input.peek(Token![=]) {
        return Err(meta.error(format!(
            "`target` needs a value\nhelp: name the model this one syncs, like {usage}"
        )));
    }
    let value = meta.value()?;
    if value.peek(LitStr) {
        let lit: LitStr = value.parse()?;
        let bare = match lit.parse_with(Path::parse_mod_style) {
            Ok(path) => format!("`target = {}`", path_to_string(&path)),
            Err(_) => usage.to_owned(),
        };
        return Err(syn::Error::new(
            lit.span(),
            format!(
                "expected a model type, found a string\n\
                 help: write the type without quotes: {bare}"
            ),
        ));
    }
    let fork = value.fork();
    match fork.call(Path::parse_mod_style) {
        Ok(_) if fork.is_empty() || fork.peek(Token![,]) => value.call(Path::parse_mod_style),
        _ => {
            let rest = take_value(value)?;
            Err(syn::Error::new_spanned(
                rest,
                format!(
                    "expected the path of a model type, like `Product` or `crate::models::Product`\n\
                     help: name the model this one syncs, like {usage}"
                ),
            ))
        }
    }
}

/// The value of `crate = "…"`: a path in a string, as serde's `crate` option. When the value
/// is malformed but says which path was meant (`crate = my_sync`, `crate = "my-sync"`), the error
/// comes with that path, so the stand-in impls name the runtime as the fixed code will.
fn crate_path(meta: &ParseNestedMeta<'_>) -> Result<Path, (syn::Error, Option<Path>)> {
    let usage = "`#[synced(crate = \"my_sync\")]`";
    if !meta.input.peek(Token![=]) {
        let error = meta.error(format!(
            "`crate` needs a value\nhelp: give the path diesel-sync is known by, like {usage}"
        ));
        return Err((error, None));
    }
    let value = meta.value().map_err(|e| (e, None))?;
    if !value.peek(LitStr) {
        let rest = take_value(value).map_err(|e| (e, None))?;
        let meant = syn::parse2::<Path>(rest.clone()).ok();
        let quoted = format!(
            "`#[synced(crate = \"{}\")]`",
            rest.to_string().replace(' ', "")
        );
        let error = syn::Error::new_spanned(
            rest,
            format!("expected a string\nhelp: write the path in quotes: {quoted}"),
        );
        return Err((error, meant));
    }
    let lit: LitStr = value.parse().map_err(|e| (e, None))?;
    lit.parse_with(Path::parse_mod_style).map_err(|_| {
        let underscored = lit.value().replace('-', "_");
        let meant = LitStr::new(&underscored, lit.span())
            .parse_with(Path::parse_mod_style)
            .ok();
        let fix = match &meant {
            Some(_) => format!("write `\"{underscored}\"`"),
            None => format!("like {usage}"),
        };
        let error = syn::Error::new(
            lit.span(),
            format!(
                "`{}` is not a path\n\
                 help: give the path diesel-sync is known by in this crate, its name in \
                 `[dependencies]` with `-` written `_`: {fix}",
                lit.value()
            ),
        );
        (error, meant)
    })
}

fn set_once<T: ToTokens>(cx: &mut Ctxt, slot: &mut Option<Opt<T>>, option: Opt<T>) {
    match slot {
        Some(first) => {
            let name = path_to_string(&option.name);
            let first = first.value.to_token_stream().to_string().replace(' ', "");
            cx.error_spanned_by(
                option.tokens(),
                format!(
                    "duplicate `synced` option `{name}`: it is already `{name} = {first}`\n\
                     help: give `{name}` once; remove one of the two"
                ),
            );
        }
        None => *slot = Some(option),
    }
}

/// A `belongs_to` relation, as Diesel's `Associations` reads it.
pub(crate) struct BelongsTo {
    pub(crate) parent: Path,
    pub(crate) foreign_key: Option<Ident>,
}

impl BelongsTo {
    /// The parent's name: the last segment of its path.
    pub(crate) fn parent_name(&self) -> String {
        self.parent
            .segments
            .last()
            .map(|segment| segment.ident.unraw().to_string())
            .unwrap_or_default()
    }

    /// The foreign key column: as given, or Diesel's default, the parent's name in snake case
    /// followed by `_id` (`StoreAccount` → `store_account_id`).
    pub(crate) fn foreign_key(&self) -> String {
        if let Some(key) = &self.foreign_key {
            return key.unraw().to_string();
        }
        let mut key = String::new();
        for (i, c) in self.parent_name().chars().enumerate() {
            if c.is_uppercase() && i > 0 {
                key.push('_');
            }
            key.extend(c.to_lowercase());
        }
        key + "_id"
    }

    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let parent: Path = input.parse()?;
        let mut foreign_key = None;
        while input.parse::<Option<Token![,]>>()?.is_some() && !input.is_empty() {
            let option: Ident = input.call(Ident::parse_any)?;
            input.parse::<Token![=]>()?;
            if option == "foreign_key" {
                foreign_key = Some(input.call(Ident::parse_any)?);
            } else {
                take_value(input)?;
            }
        }
        Ok(Self {
            parent,
            foreign_key,
        })
    }
}

impl DieselAttrs {
    /// Reads `table_name`, `primary_key` and `belongs_to`; every other Diesel option is skipped.
    pub(crate) fn from_attrs(attrs: &[Attribute]) -> Self {
        let mut diesel = Self::default();
        for attr in attrs.iter().filter(|a| a.path().is_ident("diesel")) {
            let parsed = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("table_name") {
                    diesel.table_names.push(meta.value()?.parse()?);
                } else if meta.path.is_ident("primary_key") {
                    let content;
                    let paren = syn::parenthesized!(content in meta.input);
                    let columns =
                        content.parse_terminated(<Ident as syn::parse::Parse>::parse, Token![,])?;
                    let mut tokens = meta.path.to_token_stream();
                    paren.surround(&mut tokens, |inner| columns.to_tokens(inner));
                    diesel.primary_key = Some((tokens, columns.into_iter().collect()));
                } else if meta.path.is_ident("belongs_to") {
                    let content;
                    syn::parenthesized!(content in meta.input);
                    diesel.belongs_to.push(BelongsTo::parse(&content)?);
                } else {
                    skip_value(meta.input)?;
                }
                Ok(())
            });
            if let Err(error) = parsed {
                diesel.malformed.get_or_insert(error);
            }
        }
        diesel
    }
}

/// What a field's `#[diesel(…)]` says that the derive needs.
#[derive(Default)]
pub(crate) struct FieldOptions {
    /// `column_name = …`: an identifier or, as Diesel allows for names that are Rust keywords,
    /// a string.
    pub(crate) column_name: Option<Ident>,
    /// `skip_insertion`: inserts leave the column to the database, so the row does not hold
    /// the value that gets written.
    pub(crate) skip_insertion: bool,
}

/// Reads a field's `#[diesel(…)]` options. `Err` if an attribute could not be read.
pub(crate) fn field_options(attrs: &[Attribute]) -> syn::Result<FieldOptions> {
    let mut options = FieldOptions::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("diesel")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("skip_insertion") {
                options.skip_insertion = true;
            } else if meta.path.is_ident("column_name") {
                let value = meta.value()?;
                options.column_name = Some(if value.peek(LitStr) {
                    let lit: LitStr = value.parse()?;
                    let mut ident = syn::parse_str::<Ident>(&format!("r#{}", lit.value()))
                        .or_else(|_| syn::parse_str::<Ident>(&lit.value()))
                        .map_err(|e| syn::Error::new(lit.span(), e))?;
                    ident.set_span(lit.span());
                    ident
                } else {
                    value.parse()?
                });
            } else {
                skip_value(meta.input)?;
            }
            Ok(())
        })?;
    }
    Ok(options)
}

/// Whether `attrs` holds a `#[synced]` attribute, which belongs on the struct only.
pub(crate) fn misplaced_synced(cx: &mut Ctxt, attrs: &[Attribute], on: &str) {
    for attr in attrs.iter().filter(|a| a.path().is_ident("synced")) {
        cx.error_spanned_by(
            attr,
            format!(
                "`#[synced]` goes on the struct, not on {on}\n\
                 help: move it above `struct`; to group batches by this field, \
                 write `#[synced(store = <this field>)]` there"
            ),
        );
    }
}

/// Consumes an option's value (`= value` or `(…)`) so parsing goes on after it.
fn skip_value(input: ParseStream<'_>) -> syn::Result<()> {
    if input.peek(Token![=]) {
        input.parse::<Token![=]>()?;
        take_value(input)?;
    } else if input.peek(syn::token::Paren) {
        let _content;
        syn::parenthesized!(_content in input);
    }
    Ok(())
}

/// The tokens of a value, up to the next `,` outside `<…>`: a type such as
/// `Select<users::table, users::id>` is one value.
fn take_value(input: ParseStream<'_>) -> syn::Result<TokenStream> {
    let mut tokens = TokenStream::new();
    let mut depth = 0usize;
    while !input.is_empty() {
        if depth == 0 && input.peek(Token![,]) {
            break;
        }
        if input.peek(Token![->]) {
            input.parse::<Token![->]>()?.to_tokens(&mut tokens);
            continue;
        }
        if input.peek(Token![<]) {
            depth += 1;
        } else if input.peek(Token![>]) {
            depth = depth.saturating_sub(1);
        }
        input
            .parse::<proc_macro2::TokenTree>()?
            .to_tokens(&mut tokens);
    }
    Ok(tokens)
}

pub(crate) fn path_to_string(path: &Path) -> String {
    path.to_token_stream().to_string().replace(' ', "")
}

/// Parses a value that must be the whole of `tokens` (for unit tests of the skipper).
#[cfg(test)]
fn skip_all(tokens: TokenStream) -> syn::Result<TokenStream> {
    syn::parse::Parser::parse2(take_value, tokens)
}

#[cfg(test)]
mod tests {
    use quote::quote;

    #[test]
    fn a_value_ends_at_a_comma_outside_angle_brackets() {
        let value = super::skip_all(quote!(Select<users::table, (users::id,)>)).unwrap();
        assert_eq!(
            value.to_string(),
            "Select < users :: table , (users :: id ,) >"
        );
        let value = super::skip_all(quote!(fn(a, b) -> Vec<u8>)).unwrap();
        assert_eq!(value.to_string(), "fn (a , b) -> Vec < u8 >");
    }
}
