//! Capture at the connection: what a statement does to synced tables, decided once per
//! statement type (raw SQL: once per text), and the statement the connection runs instead, one
//! that returns the key of every row it writes.
//!
//! The plan is pure: SQL text in, [`Plan`] out. The connection kinds only run what it says.

use std::any::TypeId;
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use diesel::backend::{Backend, DieselReserveSpecialization};
use diesel::query_builder::{
    AstPass, CollectedQuery, MoveableBindCollector, Query, QueryBuilder, QueryFragment, QueryId,
};
use diesel::result::Error;
use diesel::sql_types::Untyped;
use diesel::QueryResult;

use crate::catalog::{Catalog, Deletes, DynKey, KeyCodec, KeyKind, ModelFacts, Removal};
use crate::classify::{self, Dialect, InsertedKey, Statement, WriteKind};
use crate::error::CaptureRefused;

/// What the connection does with one statement.
#[derive(Debug, Clone)]
pub(crate) enum Plan {
    /// Writes no synced table: runs as it is.
    Pass,
    /// Writes a synced table: runs with the key column returned, and the keys are registered.
    Capture(Capture),
    /// Writes a synced table in a way the connection cannot read exactly: refused before it runs.
    Refuse(CaptureRefused),
    /// A raw batch of several statements, some of them captured: runs one statement at a time,
    /// each with its own plan, in order.
    Batch(Vec<(String, Plan)>),
}

/// A write to a synced table that the connection captures.
#[derive(Debug, Clone)]
pub(crate) struct Capture {
    pub(crate) model: ModelFacts,
    pub(crate) codec: KeyCodec,
    /// Whether the statement has its own `RETURNING` list, which the key column extends.
    pub(crate) returning: bool,
    /// Where the keys of the rows it writes are read.
    pub(crate) keys: KeysFrom,
    /// Set for a DELETE of a target's rows: each key is read with its store, and registered as
    /// a removal.
    pub(crate) removal: Option<Removal>,
}

impl Capture {
    /// The store column read after the key, for a delete of a target grouped by a column.
    pub(crate) fn store_column(&self) -> Option<&'static str> {
        self.removal.and_then(Removal::store_column)
    }
}

/// Where a captured write's keys are read.
#[derive(Debug, Clone)]
pub(crate) enum KeysFrom {
    /// The rows it returns, its key column added (`RETURNING`).
    Returning,
    /// A `SELECT … FOR UPDATE` run before it, in the same transaction, with the same bind
    /// values: an UPDATE on MySQL, which has no `UPDATE … RETURNING`, or a DELETE on a
    /// connection that reads no returned rows.
    SelectedFirst(Arc<str>),
    /// Its own bind values and literals: a plain INSERT on a connection that reads no returned
    /// rows.
    Inserted(Arc<[InsertedKey]>),
}

/// What a connection can read back from a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reads {
    pub(crate) dialect: Dialect,
    /// Whether it reads the rows a write returns (`RETURNING`).
    pub(crate) returning: bool,
}

/// Plans cached by statement type, for one connection. Raw SQL (`sql_query`, `batch_execute`)
/// is one type whatever its text, so its plans are cached by text instead.
#[derive(Debug)]
pub(crate) struct Plans {
    reads: Reads,
    /// The targets the connection's registry has handlers for.
    handled: Vec<TypeId>,
    by_type: HashMap<std::any::TypeId, Plan>,
    by_text: HashMap<Box<str>, Plan>,
}

/// The most raw SQL texts whose plans a connection keeps; a program that builds texts with
/// values spliced in would otherwise grow the cache without end.
const TEXTS_KEPT: usize = 256;

impl Plans {
    /// No plans yet, for a connection that reads what `reads` says.
    pub(crate) fn new(reads: Reads, handled: Vec<TypeId>) -> Self {
        Self {
            reads,
            handled,
            by_type: HashMap::new(),
            by_text: HashMap::new(),
        }
    }

    /// The plan of a raw SQL text.
    pub(crate) fn text(&mut self, sql: &str) -> Plan {
        if let Some(plan) = self.by_text.get(sql) {
            return plan.clone();
        }
        let planned = plan(sql, self.reads, &self.handled, Catalog::get());
        if self.by_text.len() >= TEXTS_KEPT {
            self.by_text.clear();
        }
        self.by_text.insert(sql.into(), planned.clone());
        planned
    }

    /// The plan of `query`, from the cache when its type has been planned before.
    pub(crate) fn get<T, DB>(&mut self, query: &T) -> Plan
    where
        T: QueryFragment<DB>,
        DB: CaptureBackend,
    {
        if is_raw_sql::<T>() {
            return match render(query) {
                Ok(sql) => self.text(&sql),
                Err(_) => Plan::Pass,
            };
        }
        let (reads, handled) = (self.reads, &self.handled);
        let planned =
            self.by_type
                .entry(typeid::of::<T>())
                .or_insert_with(|| match render(query) {
                    Ok(sql) => plan(&sql, reads, handled, Catalog::get()),
                    // A statement Diesel cannot render fails the same way when it runs.
                    Err(_) => Plan::Pass,
                });
        match planned {
            // Where an INSERT's keys sit among its binds depends on its rows (how many, which
            // columns default), which one statement type does not fix: planned per text.
            Plan::Capture(Capture {
                keys: KeysFrom::Inserted(_),
                ..
            }) => match render(query) {
                Ok(sql) => self.text(&sql),
                Err(_) => Plan::Pass,
            },
            planned => planned.clone(),
        }
    }
}

/// `sql_query` and its bound forms: the statement's text is a value, not part of its type.
fn is_raw_sql<T>() -> bool {
    std::any::type_name::<T>().starts_with("diesel::query_builder::sql_query::")
}

/// The SQL of `query`, as the backend renders it.
pub(crate) fn render<T: QueryFragment<DB>, DB: CaptureBackend>(query: &T) -> QueryResult<String> {
    let mut builder = DB::query_builder();
    query.to_sql(&mut builder, &DB::default())?;
    Ok(builder.finish())
}

/// What to do with `sql`, a single statement or a batch.
pub(crate) fn plan(sql: &str, reads: Reads, handled: &[TypeId], catalog: &Catalog) -> Plan {
    let statements = match classify::split(sql, reads.dialect) {
        Ok(statements) => statements,
        Err(error) => {
            return plan_unparsed(sql, reads.dialect, handled, catalog, &error.to_string())
        }
    };
    let mut plans = Vec::with_capacity(statements.len());
    for (text, statement) in statements {
        match plan_statement(text, &statement, reads, handled, catalog) {
            // One statement refused refuses the batch, before any of it runs.
            Plan::Refuse(refusal) => return Plan::Refuse(refusal),
            plan => plans.push((text.to_owned(), plan)),
        }
    }
    if plans.len() == 1 {
        return plans.pop().map_or(Plan::Pass, |(_, plan)| plan);
    }
    if plans.iter().all(|(_, plan)| matches!(plan, Plan::Pass)) {
        return Plan::Pass;
    }
    Plan::Batch(plans)
}

/// What to do with one parsed statement.
fn plan_statement(
    text: &str,
    statement: &Statement,
    reads: Reads,
    handled: &[TypeId],
    catalog: &Catalog,
) -> Plan {
    match statement {
        Statement::Other => Plan::Pass,
        Statement::Opaque { tables } => match named_model(tables, handled, catalog) {
            Some(table) => Plan::Refuse(CaptureRefused::opaque(table)),
            None => Plan::Pass,
        },
        Statement::Write(write) => {
            let model = match catalog.model(&write.table, handled) {
                Ok(Some(model)) => model,
                Ok(None) => return Plan::Pass,
                Err(models) => {
                    return Plan::Refuse(CaptureRefused::ambiguous(&write.table, &models))
                }
            };
            let Some(codec) = model.key else {
                return Plan::Refuse(CaptureRefused::unreadable_key(model));
            };
            if write.returning && !reads.returning {
                return Plan::Refuse(CaptureRefused::no_returning(model));
            }
            let removal = match (write.kind, model.deletes) {
                (WriteKind::Delete, Deletes::Removal(removal)) => Some(removal),
                (WriteKind::Delete, Deletes::Unreadable) => {
                    return Plan::Refuse(CaptureRefused::unreadable_store(model))
                }
                _ => None,
            };
            let store_column = removal.and_then(Removal::store_column);
            let keys = match write.kind {
                WriteKind::Update if reads.dialect == Dialect::Mysql || !reads.returning => {
                    select_first(text, reads, model, None)
                }
                WriteKind::Delete if !reads.returning => {
                    select_first(text, reads, model, store_column)
                }
                WriteKind::Insert if !reads.returning => {
                    match classify::keys_in_insert(text, reads.dialect, model.key_column) {
                        Some(keys) => Ok(KeysFrom::Inserted(keys.into())),
                        None => Err(CaptureRefused::no_returning(model)),
                    }
                }
                _ => Ok(KeysFrom::Returning),
            };
            let keys = match keys {
                Ok(keys) => keys,
                Err(refusal) => return Plan::Refuse(refusal),
            };
            Plan::Capture(Capture {
                model: *model,
                codec,
                returning: write.returning,
                keys,
                removal,
            })
        }
    }
}

/// The `SELECT … FOR UPDATE` that reads an UPDATE's or DELETE's keys (and a deleted target's
/// stores) before it runs.
fn select_first(
    text: &str,
    reads: Reads,
    model: &ModelFacts,
    store_column: Option<&str>,
) -> Result<KeysFrom, CaptureRefused> {
    classify::keys_before_write(text, reads.dialect, model.key_column, store_column)
        .map(|select| KeysFrom::SelectedFirst(select.into()))
        .ok_or_else(|| CaptureRefused::keys_not_selectable(model))
}

/// A text the parser rejected: schema changes and session settings run; anything else that
/// names a synced table is refused, since what it writes cannot be told.
fn plan_unparsed(
    sql: &str,
    dialect: Dialect,
    handled: &[TypeId],
    catalog: &Catalog,
    error: &str,
) -> Plan {
    let tokens = classify::tokens(sql, dialect);
    let schema_change = matches!(
        tokens.leading_keyword.as_deref(),
        Some("CREATE" | "ALTER" | "DROP" | "PRAGMA" | "SET" | "GRANT" | "REVOKE" | "COMMENT")
    );
    if schema_change {
        return Plan::Pass;
    }
    match named_model(&tokens.identifiers, handled, catalog) {
        Some(table) => Plan::Refuse(CaptureRefused::unparsed(table, error)),
        None => Plan::Pass,
    }
}

/// The first of `names` that is the table of a synced model, for a refusal's message.
fn named_model<'n>(names: &'n [String], handled: &[TypeId], catalog: &Catalog) -> Option<&'n str> {
    names
        .iter()
        .find(|name| !matches!(catalog.model(name, handled), Ok(None)))
        .map(String::as_str)
}

/// A backend capture runs on: its SQL dialect, how a statement is made independent of the
/// borrowed values it was built from, and how a returned key is read.
pub trait CaptureBackend: Backend + DieselReserveSpecialization + Default + OwnedBinds {
    /// The dialect its SQL is parsed in.
    #[doc(hidden)]
    const DIALECT: Dialect;

    /// The statement's text and bind values, owned, so the connection can run it later.
    #[doc(hidden)]
    fn own<T: QueryFragment<Self>>(query: &T) -> QueryResult<OwnedStatement<Self>>;

    /// `query`'s bind values, owned, with `sql` as the statement's text.
    #[doc(hidden)]
    fn own_as<T: QueryFragment<Self>>(query: &T, sql: String) -> QueryResult<OwnedStatement<Self>>;

    /// An empty query builder.
    #[doc(hidden)]
    fn query_builder() -> Self::QueryBuilder;

    /// The keys a plain INSERT takes from its bind values and literals, read before it runs.
    #[doc(hidden)]
    fn inserted_keys<T: QueryFragment<Self>>(
        query: &T,
        keys: &[InsertedKey],
        kind: KeyKind,
    ) -> QueryResult<Vec<DynKey>>;

    /// A key of kind `kind` from a returned column.
    #[doc(hidden)]
    fn read_key(
        kind: KeyKind,
        value: Option<Self::RawValue<'_>>,
    ) -> diesel::deserialize::Result<DynKey>;
}

/// A statement rendered with its bind values, owning both. Not public API.
#[doc(hidden)]
pub type OwnedStatement<DB> = Box<dyn QueryFragment<DB> + Send>;

/// The owned form of a backend's bind values.
type BindData<DB> =
    <<DB as Backend>::BindCollector<'static> as MoveableBindCollector<DB>>::BindData;

/// The owned bind values of a backend. Not public API.
#[doc(hidden)]
pub trait OwnedBinds {
    /// The owned form of the backend's bind collector.
    type Data: Send + 'static;
}

fn collect<DB, T>(
    query: &T,
    sql: Option<String>,
    lookup: &mut DB::MetadataLookup,
) -> QueryResult<OwnedStatement<DB>>
where
    DB: CaptureBackend,
    for<'a> DB::BindCollector<'a>: MoveableBindCollector<DB, BindData = DB::Data> + Default,
    T: QueryFragment<DB>,
    CollectedQuery<DB::Data>: QueryFragment<DB>,
{
    let backend = DB::default();
    let sql = match sql {
        Some(sql) => sql,
        None => render(query)?,
    };
    let mut binds = <DB::BindCollector<'_> as Default>::default();
    query.collect_binds(&mut binds, lookup, &backend)?;
    let data = binds.moveable();
    let safe = query.is_safe_to_cache_prepared(&backend)?;
    Ok(Box::new(CollectedQuery::new(sql, safe, data)))
}

/// A write with the key column added to what it returns: ` RETURNING <key>`, or `, <key>` after
/// the statement's own list. The key is the last column of each row.
///
/// Its rows are `ST`: untyped, or the key's SQL type where the connection must be told what it
/// reads (Diesel's synchronous MySQL connection binds its result columns by type).
#[derive(Debug)]
pub(crate) struct ReturningKey<Q, ST = Untyped> {
    pub(crate) query: Q,
    pub(crate) key_column: &'static str,
    /// A deleted target's store column, returned after the key.
    pub(crate) store_column: Option<&'static str>,
    pub(crate) extends: bool,
    pub(crate) rows: PhantomData<ST>,
}

impl<Q> ReturningKey<Q> {
    /// `query` returning the key column of `capture`'s model.
    pub(crate) fn new(query: Q, capture: &Capture) -> Self {
        Self {
            query,
            key_column: capture.model.key_column,
            store_column: capture.store_column(),
            extends: capture.returning,
            rows: PhantomData,
        }
    }

    /// The same statement, its rows declared as `ST`.
    pub(crate) fn typed<ST>(self) -> ReturningKey<Q, ST> {
        ReturningKey {
            query: self.query,
            key_column: self.key_column,
            store_column: self.store_column,
            extends: self.extends,
            rows: PhantomData,
        }
    }
}

impl<Q, ST> Query for ReturningKey<Q, ST> {
    type SqlType = ST;
}

// An id of its own, derived from the statement's: reusing the statement's id would let a
// prepared-statement cache run the bare statement instead, and no id at all would make the
// cache render the SQL of every execution to look it up. A statement type always writes the
// same table, so its key column and `RETURNING` shape are part of its type too.
impl<Q: QueryId, ST> QueryId for ReturningKey<Q, ST> {
    // The rows' declared type changes no SQL: one prepared statement serves every `ST`.
    type QueryId = ReturningKey<Q::QueryId, ()>;
    const HAS_STATIC_QUERY_ID: bool = Q::HAS_STATIC_QUERY_ID;
}

impl<Q: QueryFragment<DB>, DB: Backend, ST> QueryFragment<DB> for ReturningKey<Q, ST> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        self.query.walk_ast(out.reborrow())?;
        out.push_sql(if self.extends { ", " } else { " RETURNING " });
        out.push_identifier(self.key_column)?;
        if let Some(store) = self.store_column {
            out.push_sql(", ");
            out.push_identifier(store)?;
        }
        Ok(())
    }
}

/// A statement run for its rows, whatever their types (the keys a captured UPDATE selects
/// first).
#[derive(Debug)]
pub(crate) struct Rows<Q>(pub(crate) Q);

impl<Q> Query for Rows<Q> {
    type SqlType = Untyped;
}

impl<Q> QueryId for Rows<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q: QueryFragment<DB>, DB: Backend> QueryFragment<DB> for Rows<Q> {
    fn walk_ast<'b>(&'b self, out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        self.0.walk_ast(out)
    }
}

/// A statement that fails to render with a refusal: run in place of a refused statement, so
/// the refusal comes back through the inner connection's own future type.
#[derive(Debug)]
pub(crate) struct Refused(pub(crate) CaptureRefused);

impl Query for Refused {
    type SqlType = Untyped;
}

impl QueryId for Refused {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<DB: Backend> QueryFragment<DB> for Refused {
    fn walk_ast<'b>(&'b self, _: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        Err(refused(self.0.clone()))
    }
}

/// The refusal of a prepared statement (`sql_query`) holding several statements, one of
/// them captured: a prepared statement returns one statement's rows.
pub(crate) fn in_batch(statements: &[(String, Plan)]) -> CaptureRefused {
    let model = statements
        .iter()
        .find_map(|(_, plan)| match plan {
            Plan::Capture(capture) => Some(capture.model),
            _ => None,
        })
        .expect("a batch plan holds a captured statement");
    CaptureRefused::in_batch(&model)
}

/// Where a returned row holds the key (and a deleted target's store after it): at the end of a
/// captured write's `RETURNING` list, at the start of the `SELECT` that reads keys first.
#[derive(Debug, Clone, Copy)]
pub(crate) enum KeyColumn {
    First,
    Last,
}

/// The keys a captured write's rows returned, and for a deleted target grouped by a column,
/// the store of each, in step.
#[derive(Debug, Default)]
pub(crate) struct Captured {
    pub(crate) keys: Vec<DynKey>,
    pub(crate) stores: Vec<DynKey>,
}

impl Captured {
    /// Keys that are known without reading any row (an INSERT's own).
    pub(crate) fn known(keys: Vec<DynKey>) -> Self {
        Self {
            keys,
            stores: Vec::new(),
        }
    }

    /// How many rows were read.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Reads the key (and store) at `column` of a row a captured write, or its key `SELECT`,
    /// returned.
    pub(crate) fn read<'a, DB: CaptureBackend, R: diesel::row::Row<'a, DB>>(
        &mut self,
        row: &R,
        capture: &Capture,
        column: KeyColumn,
    ) -> QueryResult<()> {
        use diesel::row::Field;
        let store = capture.removal.and_then(|removal| removal.store);
        let width = 1 + usize::from(store.is_some());
        let at = match column {
            KeyColumn::First => 0,
            KeyColumn::Last => row.field_count().checked_sub(width).ok_or_else(|| {
                Error::DeserializationError("a captured write returned no key column".into())
            })?,
        };
        let value = |index: usize, kind: KeyKind| {
            let field = row.get(index).ok_or_else(|| {
                Error::DeserializationError("a captured write returned no key column".into())
            })?;
            DB::read_key(kind, field.value()).map_err(Error::DeserializationError)
        };
        self.keys.push(value(at, capture.codec.kind)?);
        if let Some((_, kind)) = store {
            self.stores.push(value(at + 1, kind)?);
        }
        Ok(())
    }
}

/// How a connection reads a captured write's keys, made ready from the statement itself: the
/// key `SELECT` with the statement's bind values, or the keys an INSERT binds.
pub(crate) enum ReadKeys<DB: Backend> {
    Returning,
    SelectedFirst(OwnedStatement<DB>),
    Known(Captured),
}

impl<DB: CaptureBackend> ReadKeys<DB> {
    pub(crate) fn of<T: QueryFragment<DB>>(statement: &T, capture: &Capture) -> QueryResult<Self> {
        Ok(match &capture.keys {
            KeysFrom::Returning => Self::Returning,
            KeysFrom::SelectedFirst(select) => {
                Self::SelectedFirst(DB::own_as(statement, select.to_string())?)
            }
            KeysFrom::Inserted(keys) => Self::Known(Captured::known(DB::inserted_keys(
                statement,
                keys,
                capture.codec.kind,
            )?)),
        })
    }
}

/// A refusal as the error a statement returns.
pub(crate) fn refused(refusal: CaptureRefused) -> Error {
    tracing::error!(%refusal, "write to a synced table refused");
    Error::QueryBuilderError(Box::new(refusal))
}

/// Reads keys of `kind` through `FromSql` for `$ty` as `$sql`.
macro_rules! read_key {
    ($backend:ty, $kind:expr, $value:expr) => {{
        use diesel::deserialize::FromSql;
        use diesel::sql_types::{BigInt, Integer, SmallInt, Text};
        let value = $value;
        match $kind {
            KeyKind::SmallInt => <i16 as FromSql<SmallInt, $backend>>::from_nullable_sql(value)
                .map(|v| DynKey::Int(v.into())),
            KeyKind::Integer => <i32 as FromSql<Integer, $backend>>::from_nullable_sql(value)
                .map(|v| DynKey::Int(v.into())),
            KeyKind::BigInt => {
                <i64 as FromSql<BigInt, $backend>>::from_nullable_sql(value).map(DynKey::Int)
            }
            KeyKind::Text => {
                <String as FromSql<Text, $backend>>::from_nullable_sql(value).map(DynKey::Text)
            }
        }
    }};
}

/// Implements [`CaptureBackend`] for a backend: its dialect, and the type lookup its bind values
/// are collected with (`()` where the backend has none).
macro_rules! capture_backend {
    ($backend:ty, $dialect:expr, $lookup:expr, $inserted_keys:path) => {
        impl OwnedBinds for $backend {
            type Data = BindData<$backend>;
        }

        impl CaptureBackend for $backend {
            const DIALECT: Dialect = $dialect;

            fn query_builder() -> Self::QueryBuilder {
                Self::QueryBuilder::default()
            }

            fn own<T: QueryFragment<Self>>(query: &T) -> QueryResult<OwnedStatement<Self>> {
                collect(query, None, &mut $lookup)
            }

            fn own_as<T: QueryFragment<Self>>(
                query: &T,
                sql: String,
            ) -> QueryResult<OwnedStatement<Self>> {
                collect(query, Some(sql), &mut $lookup)
            }

            fn inserted_keys<T: QueryFragment<Self>>(
                query: &T,
                keys: &[InsertedKey],
                kind: KeyKind,
            ) -> QueryResult<Vec<DynKey>> {
                $inserted_keys(query, keys, kind)
            }

            fn read_key(
                kind: KeyKind,
                value: Option<Self::RawValue<'_>>,
            ) -> diesel::deserialize::Result<DynKey> {
                read_key!($backend, kind, value)
            }
        }
    };
}

/// Backends whose connections read the rows a write returns never plan keys from an INSERT's
/// binds.
#[cfg(any(
    feature = "sqlite",
    feature = "postgres",
    feature = "blocking-postgres"
))]
fn keys_returned_instead<T>(_: &T, _: &[InsertedKey], _: KeyKind) -> QueryResult<Vec<DynKey>> {
    Err(Error::QueryBuilderError(
        "this backend reads the keys an INSERT returns, not its bind values".into(),
    ))
}

#[cfg(feature = "sqlite")]
capture_backend!(
    diesel::sqlite::Sqlite,
    Dialect::Sqlite,
    (),
    keys_returned_instead
);
#[cfg(any(feature = "postgres", feature = "blocking-postgres"))]
capture_backend!(
    diesel::pg::Pg,
    Dialect::Postgres,
    postgres::BuiltInTypes,
    keys_returned_instead
);
#[cfg(any(feature = "mysql", feature = "blocking-mysql"))]
capture_backend!(
    diesel::mysql::Mysql,
    Dialect::Mysql,
    (),
    mysql::inserted_keys
);

#[cfg(any(feature = "mysql", feature = "blocking-mysql"))]
mod mysql {
    use diesel::mysql::{Mysql, MysqlValue};
    use diesel::query_builder::bind_collector::RawBytesBindCollector;
    use diesel::query_builder::QueryFragment;
    use diesel::result::Error;
    use diesel::QueryResult;

    use super::{DynKey, InsertedKey, KeyKind};

    /// Reads an INSERT's keys from its bind values as Diesel collected them, each decoded with
    /// its own type, and from its literals.
    pub(super) fn inserted_keys<T: QueryFragment<Mysql>>(
        query: &T,
        keys: &[InsertedKey],
        kind: KeyKind,
    ) -> QueryResult<Vec<DynKey>> {
        let mut binds = RawBytesBindCollector::<Mysql>::new();
        query.collect_binds(&mut binds, &mut (), &Mysql)?;
        keys.iter()
            .map(|key| {
                let unreadable = || {
                    Error::QueryBuilderError(
                        format!("the key {key:?} of a captured INSERT cannot be read as {kind:?}")
                            .into(),
                    )
                };
                let InsertedKey::Bind(at) = key else {
                    return literal_key(key, kind).ok_or_else(unreadable);
                };
                let value = binds
                    .binds
                    .get(*at)
                    .zip(binds.metadata.get(*at))
                    .ok_or_else(unreadable)?;
                let raw = value
                    .0
                    .as_deref()
                    .map(|bytes| MysqlValue::new(bytes, *value.1));
                read_key!(Mysql, kind, raw).map_err(|_| unreadable())
            })
            .collect()
    }

    /// A literal key of an INSERT, as a key of `kind`.
    fn literal_key(key: &InsertedKey, kind: KeyKind) -> Option<DynKey> {
        match (key, kind) {
            (InsertedKey::Int(n), KeyKind::Text) => Some(DynKey::Text(n.to_string())),
            (InsertedKey::Int(n), _) => Some(DynKey::Int(*n)),
            (InsertedKey::Text(text), KeyKind::Text) => Some(DynKey::Text(text.clone())),
            (InsertedKey::Text(text), _) => text.parse().ok().map(DynKey::Int),
            (InsertedKey::Bind(_), _) => None,
        }
    }
}

#[cfg(any(feature = "postgres", feature = "blocking-postgres"))]
mod postgres {
    use diesel::pg::{
        FailedToLookupTypeError, PgMetadataCacheKey, PgMetadataLookup, PgTypeMetadata,
    };

    /// Capture owns a statement without a connection at hand, so it knows only the built-in
    /// types; a bind of a custom type makes the statement fail with diesel's lookup error.
    pub(super) struct BuiltInTypes;

    impl PgMetadataLookup for BuiltInTypes {
        fn lookup_type(&mut self, type_name: &str, schema: Option<&str>) -> PgTypeMetadata {
            let key = PgMetadataCacheKey::new(
                schema.map(|s| s.to_owned().into()),
                type_name.to_owned().into(),
            );
            PgTypeMetadata::from_result(Err(FailedToLookupTypeError::new(key)))
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Plan::Pass => f.write_str("pass"),
            Plan::Capture(capture) => write!(f, "capture {}", capture.model.table),
            Plan::Refuse(refusal) => write!(f, "refuse: {refusal}"),
            Plan::Batch(plans) => write!(f, "batch of {}", plans.len()),
        }
    }
}

/// Planning, without a database: which statements pass, are captured or are refused.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;

    fn no_insert(_: &mut crate::collector::Frame, _: Vec<DynKey>) -> bool {
        true
    }

    fn model(table: &'static str, key: Option<KeyCodec>) -> ModelFacts {
        ModelFacts {
            model: "shop::Product",
            table,
            key_column: "id",
            target: std::any::TypeId::of::<()>(),
            target_name: "shop::Product",
            key,
            deletes: crate::catalog::Deletes::Change,
        }
    }

    fn catalog() -> Catalog {
        let key = Some(KeyCodec {
            kind: KeyKind::BigInt,
            insert: no_insert,
            encode: |_| None,
        });
        Catalog::new([model("products", key), model("tags", None)])
    }

    fn reads(dialect: Dialect) -> Reads {
        Reads {
            dialect,
            returning: true,
        }
    }

    fn table(plan: &Plan) -> Option<&str> {
        match plan {
            Plan::Capture(capture) => Some(capture.model.table),
            _ => None,
        }
    }

    #[test]
    fn writes_to_synced_tables_are_captured_and_the_rest_passes() {
        let catalog = catalog();
        let update = r#"UPDATE "products" SET "price_cents" = $1 WHERE ("products"."id" = $2)"#;
        assert_eq!(
            table(&plan(update, reads(Dialect::Postgres), &[], &catalog)),
            Some("products")
        );
        let insert = "INSERT INTO `products` (`id`) VALUES (?) RETURNING `products`.`name`";
        match plan(insert, reads(Dialect::Sqlite), &[], &catalog) {
            Plan::Capture(capture) => assert!(capture.returning, "extends the statement's list"),
            other => panic!("{other}"),
        }
        for sql in [
            "UPDATE stores SET name = 'x'",
            "SELECT * FROM products",
            "CREATE TABLE t (id INT)",
        ] {
            assert!(
                matches!(
                    plan(sql, reads(Dialect::Postgres), &[], &catalog),
                    Plan::Pass
                ),
                "{sql}"
            );
        }
    }

    #[test]
    fn a_delete_of_a_target_reads_each_rows_store_and_one_of_a_reference_row_does_not() {
        fn no_remove(_: &mut crate::collector::Frame, _: Vec<DynKey>, _: Vec<DynKey>) -> bool {
            true
        }
        let key = Some(KeyCodec {
            kind: KeyKind::BigInt,
            insert: no_insert,
            encode: |_| None,
        });
        let removal = Removal {
            store: Some(("store_id", KeyKind::BigInt)),
            remove: no_remove,
            encode_stores: |_| None,
        };
        let catalog = Catalog::new([
            ModelFacts {
                deletes: Deletes::Removal(removal),
                ..model("products", key)
            },
            ModelFacts {
                deletes: Deletes::Unreadable,
                ..model("listings", key)
            },
            model("price_records", key),
        ]);
        let delete = "DELETE FROM `products` WHERE `products`.`id` = ?";
        let Plan::Capture(capture) = plan(delete, reads(Dialect::Sqlite), &[], &catalog) else {
            panic!("captured")
        };
        assert_eq!(capture.store_column(), Some("store_id"));
        let returning = render::<_, diesel::sqlite::Sqlite>(&ReturningKey::new(
            diesel::sql_query(delete),
            &capture,
        ))
        .unwrap();
        assert_eq!(returning, format!("{delete} RETURNING `id`, `store_id`"));
        let blocking_mysql = Reads {
            dialect: Dialect::Mysql,
            returning: false,
        };
        match plan(delete, blocking_mysql, &[], &catalog) {
            Plan::Capture(Capture {
                keys: KeysFrom::SelectedFirst(select),
                ..
            }) => assert_eq!(
                &*select,
                "SELECT `id`, `store_id` FROM `products` WHERE `products`.`id` = ? FOR UPDATE"
            ),
            other => panic!("{other}"),
        }
        let update = "UPDATE `products` SET `name` = ? WHERE `products`.`id` = ?";
        match plan(update, reads(Dialect::Sqlite), &[], &catalog) {
            Plan::Capture(capture) => assert_eq!(capture.store_column(), None, "a change"),
            other => panic!("{other}"),
        }
        match plan(
            "DELETE FROM price_records",
            reads(Dialect::Postgres),
            &[],
            &catalog,
        ) {
            Plan::Capture(capture) => assert!(capture.removal.is_none(), "changes its target"),
            other => panic!("{other}"),
        }
        match plan(
            "DELETE FROM listings",
            reads(Dialect::Postgres),
            &[],
            &catalog,
        ) {
            Plan::Refuse(refusal) => assert!(refusal.to_string().contains("store key type")),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn unreadable_writes_are_refused_with_the_table_and_the_fix() {
        let catalog = catalog();
        let refused = |sql: &str, reads: Reads| match plan(sql, reads, &[], &catalog) {
            Plan::Refuse(refusal) => refusal,
            other => panic!("{sql}: {other}"),
        };
        let join = "UPDATE products p JOIN stores s ON p.store_id = s.id SET p.price_cents = 1";
        let mysql_join = refused(join, reads(Dialect::Mysql));
        assert_eq!(mysql_join.table(), "products");
        assert!(mysql_join.to_string().contains("multi-table"));
        let cte = "WITH gone AS (DELETE FROM products RETURNING id) SELECT count(*) FROM gone";
        assert!(refused(cte, reads(Dialect::Postgres))
            .to_string()
            .contains("cannot be read back"));
        let no_key = refused("DELETE FROM tags", reads(Dialect::Postgres));
        assert_eq!(no_key.table(), "tags");
        let blocking_mysql = Reads {
            dialect: Dialect::Mysql,
            returning: false,
        };
        let insert = refused("INSERT INTO products (name) VALUES (?)", blocking_mysql);
        assert!(insert.to_string().contains("synchronous MySQL"));
        let unparsed = refused(
            "DELETE FROM products WHERE id = 1 FROBNICATE",
            reads(Dialect::Sqlite),
        );
        assert!(unparsed.to_string().contains("could not be parsed"));
    }

    #[test]
    fn a_mysql_update_is_captured_by_selecting_its_keys_first() {
        let update = "UPDATE `products` SET `price_cents` = ? WHERE (`products`.`store_id` = ?)";
        match plan(update, reads(Dialect::Mysql), &[], &catalog()) {
            Plan::Capture(Capture {
                keys: KeysFrom::SelectedFirst(select),
                ..
            }) => assert_eq!(
                &*select,
                "SELECT `id`, ? FROM `products` WHERE (`products`.`store_id` = ?) FOR UPDATE"
            ),
            other => panic!("{other}"),
        }
        let insert = plan(
            "INSERT INTO products (id) VALUES (1)",
            reads(Dialect::Mysql),
            &[],
            &catalog(),
        );
        assert!(matches!(
            insert,
            Plan::Capture(Capture {
                keys: KeysFrom::Returning,
                ..
            })
        ));
    }

    #[test]
    fn a_connection_that_reads_no_returned_rows_selects_or_binds_its_keys() {
        let blocking_mysql = Reads {
            dialect: Dialect::Mysql,
            returning: false,
        };
        let keys = |sql: &str| match plan(sql, blocking_mysql, &[], &catalog()) {
            Plan::Capture(capture) => capture.keys,
            other => panic!("{other}"),
        };
        assert!(matches!(
            keys("DELETE FROM `products` WHERE `products`.`id` = ?"),
            KeysFrom::SelectedFirst(select)
                if &*select == "SELECT `id` FROM `products` WHERE `products`.`id` = ? FOR UPDATE"
        ));
        assert!(matches!(
            keys("UPDATE products SET price_cents = 1"),
            KeysFrom::SelectedFirst(select) if &*select == "SELECT `id`, 1 FROM products FOR UPDATE"
        ));
        assert!(matches!(
            keys("INSERT INTO `products` (`id`, `name`) VALUES (?, ?), (?, ?)"),
            KeysFrom::Inserted(keys) if *keys == [InsertedKey::Bind(0), InsertedKey::Bind(2)]
        ));
        // Reading `RETURNING`, a MariaDB DELETE returns its keys instead.
        match plan(
            "DELETE FROM products WHERE id = 1",
            reads(Dialect::Mysql),
            &[],
            &catalog(),
        ) {
            Plan::Capture(capture) => assert!(matches!(capture.keys, KeysFrom::Returning)),
            other => panic!("{other}"),
        }
        for unreadable in [
            "INSERT INTO products (name) VALUES ('generated key')",
            "INSERT IGNORE INTO products (id) VALUES (1)",
            "REPLACE INTO products (id) VALUES (1)",
            "DELETE FROM products WHERE id = 1 RETURNING id",
        ] {
            assert!(
                matches!(
                    plan(unreadable, blocking_mysql, &[], &catalog()),
                    Plan::Refuse(_)
                ),
                "{unreadable}"
            );
        }
    }

    #[test]
    fn a_batch_is_planned_statement_by_statement_and_refused_whole() {
        let catalog = catalog();
        let batch = "INSERT INTO stores VALUES (1); DELETE FROM products WHERE id = 2; SELECT 1";
        match plan(batch, reads(Dialect::Sqlite), &[], &catalog) {
            Plan::Batch(statements) => {
                let texts: Vec<&str> = statements.iter().map(|(text, _)| text.as_str()).collect();
                assert_eq!(
                    texts,
                    [
                        "INSERT INTO stores VALUES (1)",
                        "DELETE FROM products WHERE id = 2",
                        "SELECT 1"
                    ]
                );
                assert_eq!(table(&statements[1].1), Some("products"));
            }
            other => panic!("{other}"),
        }
        let with_refused = "DELETE FROM products WHERE id = 2; TRUNCATE products";
        assert!(matches!(
            plan(with_refused, reads(Dialect::Mysql), &[], &catalog),
            Plan::Refuse(_)
        ));
        let unsynced = "INSERT INTO stores VALUES (1); SELECT 1";
        assert!(matches!(
            plan(unsynced, reads(Dialect::Sqlite), &[], &catalog),
            Plan::Pass
        ));
    }

    #[test]
    fn a_table_of_several_models_resolves_to_the_one_the_registry_handles() {
        struct Shop;
        struct Other;
        let (shop, other) = (TypeId::of::<Shop>(), TypeId::of::<Other>());
        let key = Some(KeyCodec {
            kind: KeyKind::BigInt,
            insert: no_insert,
            encode: |_| None,
        });
        let catalog = Catalog::new([
            ModelFacts {
                model: "shop::PriceRecord",
                target: shop,
                ..model("price_records", key)
            },
            ModelFacts {
                model: "other::PriceRecord",
                target: other,
                ..model("price_records", key)
            },
        ]);
        let insert = "INSERT INTO price_records (object_id) VALUES (1)";
        match plan(insert, reads(Dialect::Sqlite), &[shop], &catalog) {
            Plan::Capture(capture) => assert_eq!(capture.model.model, "shop::PriceRecord"),
            other => panic!("{other}"),
        }
        match plan(insert, reads(Dialect::Sqlite), &[shop, other], &catalog) {
            Plan::Refuse(refusal) => assert!(refusal.to_string().contains("several models")),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn raw_sql_types_are_planned_by_text_and_statement_types_by_type() {
        assert!(is_raw_sql::<diesel::query_builder::SqlQuery>());
        assert!(!is_raw_sql::<
            diesel::dsl::delete<crate::__private::fallback::fallback::table>,
        >());
    }
}
