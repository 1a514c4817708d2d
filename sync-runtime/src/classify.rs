//! What one SQL text does to tables: which statements write which table, parsed with sqlparser
//! (never regexes), and a tokenizer fallback for texts sqlparser cannot parse.

use std::fmt;

use sqlparser::ast::{
    self, CopySource, Delete, FromTable, Insert, ObjectName, Query, SetExpr, SqliteOnConflict,
    TableFactor, TableObject, TableWithJoins, Update,
};
use sqlparser::dialect::{MySqlDialect, PostgreSqlDialect, SQLiteDialect};
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Location, Token, Tokenizer};

/// The SQL dialect a text is parsed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[doc(hidden)]
pub enum Dialect {
    /// PostgreSQL.
    Postgres,
    /// SQLite.
    Sqlite,
    /// MySQL and MariaDB.
    Mysql,
}

impl Dialect {
    fn parser_dialect(self) -> &'static dyn sqlparser::dialect::Dialect {
        match self {
            Self::Postgres => &PostgreSqlDialect {},
            Self::Sqlite => &SQLiteDialect {},
            Self::Mysql => &MySqlDialect {},
        }
    }
}

/// The kind of a single-table write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteKind {
    Insert,
    Update,
    Delete,
}

/// One statement's effect on tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Statement {
    /// A single INSERT / UPDATE / DELETE whose only written table is `table`: the shape a
    /// `RETURNING` clause can be appended to. INSERT … SELECT, INSERT OR IGNORE / INSERT IGNORE,
    /// REPLACE INTO (kind Insert, `replace: true`), ON CONFLICT / ON DUPLICATE KEY UPDATE all
    /// count, and so do read-only CTEs in front of the statement (`WITH s AS (SELECT …) INSERT …`).
    Write(Write),
    /// A statement that writes tables in a shape that cannot get one appended RETURNING:
    /// data-modifying CTEs, MERGE, TRUNCATE, COPY … FROM, multi-table UPDATE / DELETE, EXPLAIN
    /// ANALYZE of a write. `tables` lists every written table name (no schema, unquoted).
    Opaque { tables: Vec<String> },
    /// Writes nothing to table rows: SELECT, DDL (CREATE TRIGGER included), SET, PRAGMA,
    /// BEGIN / COMMIT / SAVEPOINT, SHOW, plain EXPLAIN, CALL (what a procedure writes is unknown).
    Other,
}

/// A single-table INSERT, UPDATE or DELETE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Write {
    pub(crate) kind: WriteKind,
    /// The table's name without schema and without quotes, exactly as written otherwise (case kept).
    pub(crate) table: String,
    /// The schema/database qualifier if the statement had one (`shop.products` → Some("shop")).
    pub(crate) schema: Option<String>,
    /// Whether the statement already has a RETURNING clause.
    pub(crate) returning: bool,
    /// REPLACE INTO (MySQL/SQLite), INSERT OR REPLACE and UPDATE OR REPLACE (SQLite): the
    /// statement may delete conflicting rows besides the ones it writes.
    pub(crate) replace: bool,
}

/// Why [`classify`] failed: sqlparser's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClassifyError(pub(crate) String);

impl fmt::Display for ClassifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ClassifyError {}

/// The words of a text [`classify`] could not parse, for a conservative decision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Tokens {
    /// The first word when it is an unquoted SQL keyword, uppercase (`CREATE`, `UPDATE`).
    pub(crate) leading_keyword: Option<String>,
    /// Every other word, quoted or not, unquoted and in text order. Unquoted keywords are kept:
    /// sqlparser's keyword list holds common table names (`items`, `data`, `logs`, `settings`),
    /// so match these against known table names rather than reading each one as a name.
    pub(crate) identifiers: Vec<String>,
}

/// Classifies every statement in `sql` (a `batch_execute` text may hold several, separated by
/// `;`). Bind placeholders (`$1`, `?`, `?1`) parse. Err when sqlparser cannot parse the text.
#[cfg(test)]
pub(crate) fn classify(sql: &str, dialect: Dialect) -> Result<Vec<Statement>, ClassifyError> {
    split(sql, dialect).map(|statements| statements.into_iter().map(|(_, s)| s).collect())
}

/// Every statement of `sql` with its own text, so a batch can be run one statement at a time.
/// The texts are exact slices of `sql`, without the `;` between them.
pub(crate) fn split(sql: &str, dialect: Dialect) -> Result<Vec<(&str, Statement)>, ClassifyError> {
    let error = |e: &dyn fmt::Display| ClassifyError(e.to_string());
    let tokens = Tokenizer::new(dialect.parser_dialect(), sql)
        .tokenize_with_location()
        .map_err(|e| error(&e))?;
    let mut parser = Parser::new(dialect.parser_dialect()).with_tokens_with_locations(tokens);
    let offsets = LineOffsets::new(sql);
    let mut statements = Vec::new();
    loop {
        while parser.consume_token(&Token::SemiColon) {}
        let next = parser.peek_token();
        if next.token == Token::EOF {
            break;
        }
        let start = offsets.byte(sql, next.span.start);
        let statement = parser.parse_statement().map_err(|e| error(&e))?;
        let next = parser.peek_token();
        let end = match next.token {
            Token::EOF => sql.len(),
            Token::SemiColon => offsets.byte(sql, next.span.start),
            other => {
                return Err(ClassifyError(format!(
                    "expected the end of a statement, found {other}"
                )))
            }
        };
        statements.push((sql[start..end].trim(), statement_effect(&statement)));
    }
    Ok(statements)
}

/// For an `UPDATE` or `DELETE` of one table, a `SELECT … FOR UPDATE` of the key of every row it
/// matches, for a connection that cannot read what the write returns. An UPDATE's SET values
/// are selected too, and ignored, so that the `SELECT` takes the write's bind values in the
/// same order. `None` for any other statement.
pub(crate) fn keys_before_write(
    sql: &str,
    dialect: Dialect,
    key_column: &str,
    store_column: Option<&str>,
) -> Option<String> {
    use std::fmt::Write as _;
    let statements = Parser::parse_sql(dialect.parser_dialect(), sql).ok()?;
    let (values, table, selection, order_by, limit) = match statements.as_slice() {
        [ast::Statement::Update(update)] => {
            if !update.table.joins.is_empty() || update.from.is_some() {
                return None;
            }
            let values: Vec<String> = update
                .assignments
                .iter()
                .map(|assignment| assignment.value.to_string())
                .collect();
            let table = update.table.relation.to_string();
            (
                values,
                table,
                &update.selection,
                &update.order_by,
                &update.limit,
            )
        }
        [ast::Statement::Delete(delete)] => {
            let (ast::FromTable::WithFromKeyword(from) | ast::FromTable::WithoutKeyword(from)) =
                &delete.from;
            let [only] = from.as_slice() else {
                return None;
            };
            if !delete.tables.is_empty() || delete.using.is_some() || !only.joins.is_empty() {
                return None;
            }
            let table = only.relation.to_string();
            (
                Vec::new(),
                table,
                &delete.selection,
                &delete.order_by,
                &delete.limit,
            )
        }
        _ => return None,
    };
    let quote = |column: &str| match dialect {
        Dialect::Mysql | Dialect::Sqlite => format!("`{}`", column.replace('`', "``")),
        Dialect::Postgres => format!("\"{}\"", column.replace('"', "\"\"")),
    };
    let mut select = format!("SELECT {}", quote(key_column));
    if let Some(store) = store_column {
        let _ = write!(select, ", {}", quote(store));
    }
    for value in values {
        let _ = write!(select, ", {value}");
    }
    let _ = write!(select, " FROM {table}");
    if let Some(selection) = selection {
        let _ = write!(select, " WHERE {selection}");
    }
    if !order_by.is_empty() {
        let order: Vec<String> = order_by.iter().map(ToString::to_string).collect();
        let _ = write!(select, " ORDER BY {}", order.join(", "));
    }
    if let Some(limit) = limit {
        let _ = write!(select, " LIMIT {limit}");
    }
    select.push_str(" FOR UPDATE");
    Some(select)
}

/// Where a plain INSERT takes each row's key: a bind value (its position among the statement's
/// placeholders) or a literal. Not public API.
#[derive(Debug, Clone, PartialEq, Eq)]
#[doc(hidden)]
pub enum InsertedKey {
    /// The bind value at this position.
    Bind(usize),
    /// An integer literal.
    Int(i64),
    /// A string literal.
    Text(String),
}

/// For a plain `INSERT … VALUES` that names the key column and gives it a placeholder or a
/// literal in every row, where each row's key comes from, for a connection that cannot read
/// what the write returns. Such an INSERT writes every row or none, so these are exactly its
/// keys. `None` for anything else: an INSERT that may skip or update rows (`IGNORE`,
/// `ON DUPLICATE KEY UPDATE`, `REPLACE`), takes its rows from a query, or leaves the key to the
/// database.
pub(crate) fn keys_in_insert(
    sql: &str,
    dialect: Dialect,
    key_column: &str,
) -> Option<Vec<InsertedKey>> {
    use sqlparser::ast::{Expr, Spanned, Value};
    let statements = Parser::parse_sql(dialect.parser_dialect(), sql).ok()?;
    let [ast::Statement::Insert(insert)] = statements.as_slice() else {
        return None;
    };
    let plain = !insert.ignore
        && !insert.replace_into
        && insert.or.is_none()
        && insert.on.is_none()
        && insert.returning.is_none()
        && insert.assignments.is_empty();
    if !plain {
        return None;
    }
    let column = insert.columns.iter().position(|name| {
        name.0
            .last()
            .and_then(|part| part.as_ident())
            .is_some_and(|ident| ident.value.eq_ignore_ascii_case(key_column))
    })?;
    let SetExpr::Values(values) = insert.source.as_deref()?.body.as_ref() else {
        return None;
    };
    // Bind values follow the placeholders in the order of the text.
    let mut buffer = Vec::new();
    Tokenizer::new(dialect.parser_dialect(), sql)
        .tokenize_with_location_into_buf(&mut buffer)
        .ok()?;
    let placeholders: Vec<Location> = buffer
        .iter()
        .filter(|token| matches!(token.token, Token::Placeholder(_)))
        .map(|token| token.span.start)
        .collect();
    values
        .rows
        .iter()
        .map(|row| {
            let expr = row.get(column)?;
            let Expr::Value(value) = expr else {
                return None;
            };
            match &value.value {
                Value::Placeholder(_) => {
                    let at = expr.span().start;
                    placeholders
                        .iter()
                        .position(|&start| start == at)
                        .map(InsertedKey::Bind)
                }
                Value::Number(number, _) => number.parse().ok().map(InsertedKey::Int),
                Value::SingleQuotedString(text) => Some(InsertedKey::Text(text.clone())),
                _ => None,
            }
        })
        .collect()
}

/// Where each line of a text starts, to turn the tokenizer's line and column into a byte offset.
struct LineOffsets(Vec<usize>);

impl LineOffsets {
    fn new(sql: &str) -> Self {
        let starts = std::iter::once(0)
            .chain(sql.match_indices('\n').map(|(at, _)| at + 1))
            .collect();
        Self(starts)
    }

    /// The byte offset of a 1-based line and column (columns count characters).
    fn byte(&self, sql: &str, at: Location) -> usize {
        let line = usize::try_from(at.line.max(1) - 1).unwrap_or(usize::MAX);
        let Some(&line_start) = self.0.get(line) else {
            return sql.len();
        };
        let column = usize::try_from(at.column.max(1) - 1).unwrap_or(usize::MAX);
        sql[line_start..]
            .char_indices()
            .nth(column)
            .map_or(sql.len(), |(at, _)| line_start + at)
    }
}

/// The leading keyword and the words of `sql`, from sqlparser's tokenizer. Never fails: when
/// the tokenizer stops (an unterminated string or quoted name), the words before that point are
/// returned.
pub(crate) fn tokens(sql: &str, dialect: Dialect) -> Tokens {
    let mut buffer = Vec::new();
    // On error the buffer keeps every token read before it, which is what we want.
    let _ =
        Tokenizer::new(dialect.parser_dialect(), sql).tokenize_with_location_into_buf(&mut buffer);
    let mut significant = buffer
        .iter()
        .map(|token| &token.token)
        .filter(|token| !matches!(token, Token::Whitespace(_) | Token::EOF))
        .skip_while(|token| matches!(token, Token::LParen | Token::SemiColon))
        .peekable();
    let leading_keyword = match significant.peek() {
        Some(Token::Word(word))
            if word.quote_style.is_none() && word.keyword != Keyword::NoKeyword =>
        {
            significant.next();
            Some(word.value.to_uppercase())
        }
        _ => None,
    };
    let identifiers = significant
        .filter_map(|token| match token {
            Token::Word(word) => Some(word.value.clone()),
            _ => None,
        })
        .collect();
    Tokens {
        leading_keyword,
        identifiers,
    }
}

fn statement_effect(statement: &ast::Statement) -> Statement {
    let tables = match statement {
        ast::Statement::Insert(insert) => return insert_effect(insert),
        ast::Statement::Update(update) => return update_effect(update),
        ast::Statement::Delete(delete) => return delete_effect(delete),
        ast::Statement::Query(query) => return query_effect(query),
        // The USING source is only read; the target is written by the WHEN clauses.
        ast::Statement::Merge(merge) => table_names([&merge.table]),
        ast::Statement::Truncate(truncate) => {
            let names = truncate.table_names.iter().map(|target| &target.name);
            names.map(|name| split_name(name).1).collect()
        }
        // COPY t FROM … loads rows into t (`to: false`); COPY … TO only reads.
        ast::Statement::Copy {
            source: CopySource::Table { table_name, .. },
            to: false,
            ..
        } => {
            vec![split_name(table_name).1]
        }
        // EXPLAIN ANALYZE runs the statement, so it writes what the statement writes, but its
        // result is the plan: an appended RETURNING would return nothing. Plain EXPLAIN only plans.
        ast::Statement::Explain {
            analyze,
            options,
            statement: explained,
            ..
        } if *analyze || analyze_option(options.as_deref()) => {
            written_tables(statement_effect(explained))
        }
        _ => Vec::new(),
    };
    opaque_or_other(tables)
}

/// PostgreSQL's `EXPLAIN (ANALYZE)` / `EXPLAIN (ANALYZE true)`, not `(ANALYZE false)`.
fn analyze_option(options: Option<&[ast::UtilityOption]>) -> bool {
    options.unwrap_or_default().iter().any(|option| {
        option.name.value.eq_ignore_ascii_case("analyze")
            && option.arg.as_ref().is_none_or(|arg| {
                let arg = arg.to_string();
                !["false", "off", "0"]
                    .iter()
                    .any(|no| arg.eq_ignore_ascii_case(no))
            })
    })
}

fn insert_effect(insert: &Insert) -> Statement {
    // MySQL's REPLACE sets `replace_into`; SQLite's REPLACE and INSERT OR REPLACE set `or`.
    let replace = insert.replace_into || insert.or == Some(SqliteOnConflict::Replace);
    // The source may itself hold data-modifying CTEs (`INSERT INTO t WITH d AS (DELETE …) …`).
    let mut tables = insert
        .source
        .as_deref()
        .map_or(Vec::new(), |source| written_tables(query_effect(source)));
    match &insert.table {
        TableObject::TableName(name) if tables.is_empty() => {
            single_write(WriteKind::Insert, name, insert.returning.is_some(), replace)
        }
        TableObject::TableName(name) => {
            tables.insert(0, split_name(name).1);
            Statement::Opaque { tables }
        }
        // INSERT INTO FUNCTION … (ClickHouse), INSERT INTO (subquery) (Oracle): no named target.
        TableObject::TableFunction(_) | TableObject::TableQuery(_) => Statement::Opaque { tables },
    }
}

fn update_effect(update: &Update) -> Statement {
    // UPDATE … FROM (PostgreSQL, SQLite) only reads its FROM list: still a plain write. MySQL's
    // `UPDATE a JOIN b … SET` writes only the tables whose columns are SET, but an unqualified
    // column does not say whose it is, so every joined table is listed (conservatively).
    let target = Some(&update.table).filter(|table| table.joins.is_empty());
    match target.and_then(|table| table_name(&table.relation)) {
        Some(name) => single_write(
            WriteKind::Update,
            name,
            update.returning.is_some(),
            update.or == Some(SqliteOnConflict::Replace),
        ),
        None => Statement::Opaque {
            tables: table_names(factors([&update.table])),
        },
    }
}

fn delete_effect(delete: &Delete) -> Statement {
    let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) = &delete.from;
    if delete.tables.is_empty() {
        // DELETE FROM t [USING …]: PostgreSQL's USING list is only read. Several FROM tables
        // (MySQL's `DELETE FROM a, b USING …`) are all written.
        let target = match from.as_slice() {
            [only] if only.joins.is_empty() => table_name(&only.relation),
            _ => None,
        };
        return match target {
            Some(name) => single_write(WriteKind::Delete, name, delete.returning.is_some(), false),
            None => Statement::Opaque {
                tables: table_names(factors(from)),
            },
        };
    }
    // MySQL's multi-table `DELETE p, s FROM products p JOIN stores s …`: the names before FROM
    // are written, and each may be an alias of a FROM / USING table.
    let sources = factors(from.iter().chain(delete.using.iter().flatten()));
    let mut tables = Vec::new();
    for name in &delete.tables {
        let written = split_name(name).1;
        let aliased = sources.iter().find_map(|factor| match factor {
            TableFactor::Table {
                name,
                alias: Some(alias),
                ..
            } if alias.name.value.eq_ignore_ascii_case(&written) => Some(split_name(name).1),
            _ => None,
        });
        extend_unique(&mut tables, [aliased.unwrap_or(written)]);
    }
    Statement::Opaque { tables }
}

/// A query writes through DML in its CTEs or body (`WITH … INSERT …`, PostgreSQL's
/// `WITH m AS (UPDATE … RETURNING …) SELECT …`). PostgreSQL, SQLite and MySQL reject DML nested
/// deeper (in FROM or WHERE subqueries), so it is not looked for.
fn query_effect(query: &Query) -> Statement {
    let mut tables = Vec::new();
    for cte in query.with.iter().flat_map(|with| &with.cte_tables) {
        extend_unique(&mut tables, written_tables(query_effect(&cte.query)));
    }
    let body = set_expr_effect(&query.body);
    // Read-only CTEs in front of one DML statement keep its shape: RETURNING still goes last.
    if tables.is_empty() {
        return body;
    }
    extend_unique(&mut tables, written_tables(body));
    Statement::Opaque { tables }
}

fn set_expr_effect(body: &SetExpr) -> Statement {
    match body {
        SetExpr::Insert(statement)
        | SetExpr::Update(statement)
        | SetExpr::Delete(statement)
        | SetExpr::Merge(statement) => statement_effect(statement),
        SetExpr::Query(query) => query_effect(query),
        SetExpr::SetOperation { left, right, .. } => {
            let mut tables = written_tables(set_expr_effect(left));
            extend_unique(&mut tables, written_tables(set_expr_effect(right)));
            opaque_or_other(tables)
        }
        // SELECT, VALUES, TABLE t: reads only.
        _ => Statement::Other,
    }
}

fn single_write(kind: WriteKind, name: &ObjectName, returning: bool, replace: bool) -> Statement {
    let (schema, table) = split_name(name);
    Statement::Write(Write {
        kind,
        table,
        schema,
        returning,
        replace,
    })
}

fn opaque_or_other(tables: Vec<String>) -> Statement {
    if tables.is_empty() {
        Statement::Other
    } else {
        Statement::Opaque { tables }
    }
}

fn written_tables(effect: Statement) -> Vec<String> {
    match effect {
        Statement::Write(write) => vec![write.table],
        Statement::Opaque { tables } => tables,
        Statement::Other => Vec::new(),
    }
}

/// The name of a plain named table; None for subqueries, parenthesised joins, table functions.
fn table_name(factor: &TableFactor) -> Option<&ObjectName> {
    match factor {
        TableFactor::Table {
            name, args: None, ..
        } => Some(name),
        _ => None,
    }
}

/// Every table factor of a FROM-like list: relations, joined ones, parenthesised joins opened.
fn factors<'a>(tables: impl IntoIterator<Item = &'a TableWithJoins>) -> Vec<&'a TableFactor> {
    let mut found = Vec::new();
    for table in tables {
        for factor in
            std::iter::once(&table.relation).chain(table.joins.iter().map(|join| &join.relation))
        {
            match factor {
                TableFactor::NestedJoin {
                    table_with_joins, ..
                } => found.extend(factors([&**table_with_joins])),
                other => found.push(other),
            }
        }
    }
    found
}

/// The distinct table names (no schema) of `factors`, in order.
fn table_names<'a>(factors: impl IntoIterator<Item = &'a TableFactor>) -> Vec<String> {
    let mut tables = Vec::new();
    for factor in factors {
        if let TableFactor::Table { name, .. } = factor {
            extend_unique(&mut tables, [split_name(name).1]);
        }
    }
    tables
}

/// `shop.products` → (Some("shop"), "products"); the parser has already unquoted each part. Of
/// `db.schema.table`, the part before the table is the schema.
fn split_name(name: &ObjectName) -> (Option<String>, String) {
    let mut parts = name.0.iter().rev().map(|part| {
        part.as_ident()
            .map_or_else(|| part.to_string(), |ident| ident.value.clone())
    });
    let table = parts.next().unwrap_or_default();
    (parts.next(), table)
}

fn extend_unique(tables: &mut Vec<String>, more: impl IntoIterator<Item = String>) {
    for table in more {
        if !tables.contains(&table) {
            tables.push(table);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Dialect::{Mysql, Postgres, Sqlite};
    use WriteKind::{Delete, Insert, Update};

    /// Asserts that each of `sqls` is one statement classified as `expected`.
    fn assert_each(dialect: Dialect, expected: &Statement, sqls: &[&str]) {
        let expected = std::slice::from_ref(expected);
        for sql in sqls {
            assert_eq!(classify(sql, dialect).as_deref(), Ok(expected), "{sql}");
        }
    }

    fn write(kind: WriteKind, table: &str) -> Statement {
        flagged(kind, table, false, false)
    }

    fn flagged(kind: WriteKind, table: &str, returning: bool, replace: bool) -> Statement {
        let (table, schema) = (table.to_owned(), None);
        Statement::Write(Write {
            kind,
            table,
            schema,
            returning,
            replace,
        })
    }

    fn opaque(tables: &[&str]) -> Statement {
        let tables = tables.iter().map(ToString::to_string).collect();
        Statement::Opaque { tables }
    }

    #[test]
    fn postgres_diesel_statements_are_writes_of_their_table() {
        let inserts = [
            r#"INSERT INTO "products" ("id", "store_id", "name", "price_cents") VALUES ($1, $2, $3, $4), ($5, $6, $7, $8)"#,
            r#"INSERT INTO "products" ("id", "price_cents") VALUES ($1, $2) ON CONFLICT ("id") DO UPDATE SET "price_cents" = excluded."price_cents""#,
            r#"INSERT INTO "products" ("id", "price_cents") VALUES ($1, $2) ON CONFLICT DO NOTHING"#,
        ];
        assert_each(Postgres, &write(Insert, "products"), &inserts);
        let update = r#"UPDATE "products" SET "price_cents" = $1 WHERE ("products"."id" = $2)"#;
        assert_each(Postgres, &write(Update, "products"), &[update]);
        let delete = r#"DELETE FROM "products" WHERE ("products"."store_id" = $1)"#;
        assert_each(Postgres, &write(Delete, "products"), &[delete]);
    }

    #[test]
    fn an_existing_returning_clause_is_reported() {
        let update = r#"UPDATE "products" SET "price_cents" = $1 WHERE ("products"."id" = $2) RETURNING "products"."id", "products"."store_id""#;
        let expected = flagged(Update, "products", true, false);
        assert_each(Postgres, &expected, &[update]);
        let delete = "DELETE FROM `products` WHERE (`products`.`id` = ?) RETURNING `products`.`id`";
        let expected = flagged(Delete, "products", true, false);
        assert_each(Sqlite, &expected, &[delete]);
    }

    #[test]
    fn a_schema_qualifier_is_split_from_the_table_name() {
        let mut expected = write(Update, "products");
        if let Statement::Write(write) = &mut expected {
            write.schema = Some("shop".to_owned());
        }
        let sqls = [
            r#"UPDATE "shop"."products" SET "price_cents" = $1"#,
            "UPDATE shop.products SET price_cents = 1",
        ];
        assert_each(Postgres, &expected, &sqls);
        let sql = "UPDATE `shop`.`products` SET `price_cents` = ?";
        assert_each(Mysql, &expected, &[sql]);
    }

    #[test]
    fn quoted_and_unquoted_names_yield_the_same_table_with_its_case_kept() {
        let products = write(Delete, "products");
        let (plain, backticks) = ("DELETE FROM products", "DELETE FROM `products`");
        let double_quotes = r#"DELETE FROM "products""#;
        assert_each(Postgres, &products, &[plain, double_quotes]);
        assert_each(Sqlite, &products, &[plain, backticks, double_quotes]);
        assert_each(Mysql, &products, &[plain, backticks]);
        let capital = r#"DELETE FROM "Products""#;
        assert_each(Postgres, &write(Delete, "Products"), &[capital]);
    }

    #[test]
    fn tables_only_read_do_not_count_as_written() {
        let inserts = [
            "INSERT INTO products (id) SELECT id FROM staged WHERE store_id = $1",
            "WITH s AS (SELECT id FROM staged) INSERT INTO products (id) SELECT id FROM s",
        ];
        assert_each(Postgres, &write(Insert, "products"), &inserts);
        let from =
            "UPDATE products SET price_cents = s.price FROM staged s WHERE s.id = products.id";
        assert_each(Postgres, &write(Update, "products"), &[from]);
        assert_each(Sqlite, &write(Update, "products"), &[from]);
        let using = "DELETE FROM products USING stores WHERE stores.id = products.store_id";
        assert_each(Postgres, &write(Delete, "products"), &[using]);
    }

    #[test]
    fn sqlite_diesel_statements_are_writes_and_numbered_placeholders_parse() {
        let inserts = [
            "INSERT INTO `products` (`id`) VALUES (?)",
            "INSERT OR IGNORE INTO `products` (`id`, `name`) VALUES (?, ?)",
            "INSERT INTO `products` (`id`) VALUES (?) ON CONFLICT (`id`) DO UPDATE SET `name` = excluded.`name`",
        ];
        assert_each(Sqlite, &write(Insert, "products"), &inserts);
        let updates = [
            "UPDATE `products` SET `price_cents` = ? WHERE (`products`.`id` = ?)",
            "UPDATE products SET price_cents = ?1 WHERE id = ?2",
        ];
        assert_each(Sqlite, &write(Update, "products"), &updates);
    }

    #[test]
    fn replace_forms_are_replacing_writes() {
        let replacing = flagged(Insert, "products", false, true);
        let replace_into = "REPLACE INTO `products` (`id`, `name`) VALUES (?, ?)";
        assert_each(Mysql, &replacing, &[replace_into]);
        let or_replace = "INSERT OR REPLACE INTO `products` (`id`) VALUES (?)";
        assert_each(Sqlite, &replacing, &[replace_into, or_replace]);
        let update = "UPDATE OR REPLACE `products` SET `id` = ? WHERE `id` = ?";
        let expected = flagged(Update, "products", false, true);
        assert_each(Sqlite, &expected, &[update]);
    }

    #[test]
    fn mysql_diesel_statements_are_writes() {
        let inserts = [
            "INSERT INTO `products` (`id`, `price_cents`) VALUES (?, ?) ON DUPLICATE KEY UPDATE `price_cents` = VALUES(`price_cents`)",
            "INSERT IGNORE INTO `products` (`id`) VALUES (?)",
        ];
        assert_each(Mysql, &write(Insert, "products"), &inserts);
        let delete = "DELETE FROM `products` WHERE (`products`.`store_id` = ?)";
        assert_each(Mysql, &write(Delete, "products"), &[delete]);
    }

    #[test]
    fn mysql_multi_table_writes_are_opaque_with_aliases_resolved() {
        let both = [
            "UPDATE products p JOIN stores s ON s.id = p.store_id SET p.price_cents = 0",
            "DELETE p, s FROM products p JOIN stores s ON s.id = p.store_id WHERE s.closed = 1",
            "DELETE FROM products, stores USING products JOIN stores ON stores.id = products.store_id",
        ];
        assert_each(Mysql, &opaque(&["products", "stores"]), &both);
        let one_of_two = "DELETE p FROM products p JOIN stores s ON s.id = p.store_id";
        assert_each(Mysql, &opaque(&["products"]), &[one_of_two]);
        // sqlparser 0.64 does not parse the comma form: callers fall back to `tokens`.
        let comma = "UPDATE products, stores SET products.price_cents = 0";
        assert!(classify(comma, Mysql).is_err());
        let found = tokens(comma, Mysql).identifiers;
        assert_eq!(found[..2], ["products", "stores"]);
    }

    #[test]
    fn a_batch_yields_one_classification_per_statement() {
        let sql = "UPDATE products SET price_cents = 1 WHERE store_id = 1; SELECT 1";
        let expected = [write(Update, "products"), Statement::Other];
        for dialect in [Postgres, Sqlite, Mysql] {
            assert_eq!(classify(sql, dialect).unwrap(), expected);
        }
    }

    #[test]
    fn data_modifying_ctes_are_opaque() {
        let cte =
            "WITH moved AS (UPDATE products SET price_cents = 1 RETURNING id) SELECT * FROM moved";
        assert_each(Postgres, &opaque(&["products"]), &[cte]);
        let both =
            "WITH gone AS (DELETE FROM staged RETURNING *) INSERT INTO products SELECT * FROM gone";
        assert_each(Postgres, &opaque(&["staged", "products"]), &[both]);
    }

    #[test]
    fn truncate_merge_and_copy_from_are_opaque() {
        let merge = "MERGE INTO products p USING staged s ON s.id = p.id \
                     WHEN MATCHED THEN UPDATE SET price_cents = s.price_cents \
                     WHEN NOT MATCHED THEN INSERT (id, price_cents) VALUES (s.id, s.price_cents)";
        let products = ["TRUNCATE products", merge, "COPY products FROM STDIN"];
        assert_each(Postgres, &opaque(&["products"]), &products);
        let several = "TRUNCATE TABLE shop.products, stores";
        assert_each(Postgres, &opaque(&["products", "stores"]), &[several]);
        let backticks = "TRUNCATE TABLE `products`";
        assert_each(Mysql, &opaque(&["products"]), &[backticks]);
        assert_each(Postgres, &Statement::Other, &["COPY products TO STDOUT"]);
    }

    #[test]
    fn explain_writes_nothing_but_explain_analyze_of_a_write_is_opaque() {
        let analyzed = [
            "EXPLAIN ANALYZE UPDATE products SET price_cents = 1",
            "EXPLAIN (ANALYZE, BUFFERS) DELETE FROM products",
        ];
        assert_each(Postgres, &opaque(&["products"]), &analyzed);
        let planned = [
            "EXPLAIN UPDATE products SET price_cents = 1",
            "EXPLAIN (ANALYZE false) DELETE FROM products",
            "EXPLAIN ANALYZE SELECT * FROM products",
        ];
        assert_each(Postgres, &Statement::Other, &planned);
        let plan = "EXPLAIN QUERY PLAN DELETE FROM products";
        assert_each(Sqlite, &Statement::Other, &[plan]);
    }

    #[test]
    fn ddl_including_create_trigger_writes_no_rows() {
        let ddl = [
            "CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT NOT NULL)",
            "ALTER TABLE products ADD COLUMN sku TEXT",
            "CREATE INDEX products_store ON products (store_id)",
            "DROP TABLE products",
        ];
        for dialect in [Postgres, Sqlite, Mysql] {
            assert_each(dialect, &Statement::Other, &ddl);
        }
        let postgres = "CREATE TRIGGER products_sync AFTER INSERT OR UPDATE ON products \
                        FOR EACH ROW EXECUTE FUNCTION notify_sync()";
        assert_each(Postgres, &Statement::Other, &[postgres]);
        let sqlite = "CREATE TRIGGER products_audit AFTER UPDATE ON products BEGIN \
                      INSERT INTO audit (product_id) VALUES (NEW.id); END";
        assert_each(Sqlite, &Statement::Other, &[sqlite]);
    }

    #[test]
    fn session_transaction_and_read_statements_write_no_rows() {
        let other = &Statement::Other;
        assert_each(Sqlite, other, &["PRAGMA foreign_keys = 1"]);
        assert_each(Postgres, other, &["SET search_path TO x"]);
        assert_each(Mysql, other, &["SET NAMES utf8mb4", "SHOW TABLES"]);
        let everywhere = [
            "SELECT * FROM products WHERE id = 1",
            "BEGIN",
            "SAVEPOINT diesel_savepoint_1",
            "RELEASE SAVEPOINT diesel_savepoint_1",
            "ROLLBACK TO SAVEPOINT diesel_savepoint_1",
            "COMMIT",
        ];
        for dialect in [Postgres, Sqlite, Mysql] {
            assert_each(dialect, other, &everywhere);
        }
    }

    #[test]
    fn pragma_with_a_keyword_value_does_not_parse_but_tokens_say_pragma() {
        // Diesel's SQLite `establish` sends exactly this; sqlparser 0.64 wants a literal value.
        let sql = "PRAGMA foreign_keys = ON";
        assert!(classify(sql, Sqlite).is_err());
        let found = tokens(sql, Sqlite);
        assert_eq!(found.leading_keyword.as_deref(), Some("PRAGMA"));
        assert_eq!(found.identifiers, ["foreign_keys", "ON"]);
    }

    #[test]
    fn unparseable_text_is_an_error_and_tokens_lists_its_words() {
        let sql = r#"UPDATE "products" SET WHERE price_cents = = 1"#;
        let error = classify(sql, Postgres).unwrap_err().to_string();
        assert!(error.starts_with("sql parser error: "), "{error}");
        let found = tokens(sql, Postgres);
        assert_eq!(found.leading_keyword.as_deref(), Some("UPDATE"));
        let words = ["products", "SET", "WHERE", "price_cents"];
        assert_eq!(found.identifiers, words);
    }

    #[test]
    fn a_batch_splits_into_the_exact_text_of_each_statement() {
        let sql =
            "CREATE TABLE t (id BIGINT);\n  INSERT INTO `products` (`id`) VALUES (1), (2) ;\n\
                   UPDATE products SET name = 'a;b' WHERE id = 1;;";
        let pieces = split(sql, Sqlite).unwrap();
        let texts: Vec<&str> = pieces.iter().map(|(text, _)| *text).collect();
        assert_eq!(
            texts,
            [
                "CREATE TABLE t (id BIGINT)",
                "INSERT INTO `products` (`id`) VALUES (1), (2)",
                "UPDATE products SET name = 'a;b' WHERE id = 1",
            ]
        );
        assert_eq!(pieces[0].1, Statement::Other);
        assert!(matches!(&pieces[1].1, Statement::Write(w) if w.kind == WriteKind::Insert));
        assert!(matches!(&pieces[2].1, Statement::Write(w) if w.kind == WriteKind::Update));
    }

    #[test]
    fn an_update_or_delete_becomes_a_locking_select_of_its_keys_with_its_binds_in_order() {
        let sql = "UPDATE `products` SET `price_cents` = ?, `name` = ? WHERE (`products`.`store_id` = ?) ORDER BY `id` LIMIT 5";
        assert_eq!(
            keys_before_write(sql, Mysql, "id", None).as_deref(),
            Some("SELECT `id`, ?, ? FROM `products` WHERE (`products`.`store_id` = ?) ORDER BY `id` LIMIT 5 FOR UPDATE")
        );
        let raw = "UPDATE products SET price_cents = price_cents * 2";
        assert_eq!(
            keys_before_write(raw, Mysql, "id", None).as_deref(),
            Some("SELECT `id`, price_cents * 2 FROM products FOR UPDATE")
        );
        assert_eq!(
            keys_before_write(
                "DELETE FROM `products` WHERE `products`.`store_id` = ? LIMIT 2",
                Mysql,
                "id",
                Some("store_id")
            )
            .as_deref(),
            Some("SELECT `id`, `store_id` FROM `products` WHERE `products`.`store_id` = ? LIMIT 2 FOR UPDATE")
        );
        assert_eq!(
            keys_before_write(
                "DELETE p FROM products p JOIN stores s ON s.id = p.store_id",
                Mysql,
                "id",
                None
            ),
            None
        );
        assert_eq!(
            keys_before_write("INSERT INTO products (id) VALUES (1)", Mysql, "id", None),
            None
        );
        assert_eq!(
            keys_before_write(
                "UPDATE a JOIN b ON a.id = b.id SET a.x = 1",
                Mysql,
                "id",
                None
            ),
            None
        );
    }

    #[test]
    fn a_plain_insert_names_where_each_rows_key_comes_from() {
        use InsertedKey::{Bind, Int, Text};
        let diesel = "INSERT INTO `price_records` (`id`, `object_id`, `amount_cents`) VALUES (DEFAULT, ?, ?), (DEFAULT, ?, ?)";
        assert_eq!(
            keys_in_insert(diesel, Mysql, "object_id"),
            Some(vec![Bind(0), Bind(2)])
        );
        let raw = "INSERT INTO products (name, id) VALUES (CONCAT(?, ?), 7), (?, ?), ('x', 'k')";
        assert_eq!(
            keys_in_insert(raw, Mysql, "id"),
            Some(vec![Int(7), Bind(3), Text("k".to_owned())])
        );
        for unreadable in [
            "INSERT INTO products (id) VALUES (DEFAULT)",
            "INSERT INTO products (name) VALUES (?)",
            "INSERT INTO products VALUES (?, ?)",
            "INSERT IGNORE INTO products (id) VALUES (?)",
            "INSERT INTO products (id) VALUES (?) ON DUPLICATE KEY UPDATE id = id",
            "REPLACE INTO products (id) VALUES (?)",
            "INSERT INTO products (id) SELECT id FROM other",
            "INSERT INTO products (id) VALUES (? + 1)",
            "UPDATE products SET id = ?",
        ] {
            assert_eq!(
                keys_in_insert(unreadable, Mysql, "id"),
                None,
                "{unreadable}"
            );
        }
    }

    #[test]
    fn a_trigger_body_stays_in_its_statement() {
        let sql = "CREATE TRIGGER audit AFTER UPDATE ON products BEGIN INSERT INTO log VALUES (1); END; DELETE FROM products";
        let texts: Vec<&str> = split(sql, Sqlite)
            .unwrap()
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        assert_eq!(
            texts,
            [
                "CREATE TRIGGER audit AFTER UPDATE ON products BEGIN INSERT INTO log VALUES (1); END",
                "DELETE FROM products"
            ]
        );
    }

    #[test]
    fn tokens_unquote_every_style_and_keep_keyword_like_table_names() {
        let sql = r#"DELETE FROM `shop`.`items`, [logs], "data" WHERE"#;
        let found = tokens(sql, Sqlite);
        assert_eq!(found.leading_keyword.as_deref(), Some("DELETE"));
        let words = ["FROM", "shop", "items", "logs", "data", "WHERE"];
        assert_eq!(found.identifiers, words);
        let found = tokens(r#""products" frobnicate"#, Postgres);
        assert_eq!(found.leading_keyword, None);
        assert_eq!(found.identifiers, ["products", "frobnicate"]);
    }

    #[test]
    fn tokens_keep_the_words_before_an_unterminated_string() {
        let sql = "/* sync */ INSERT INTO products (name) VALUES ('oops";
        assert!(classify(sql, Postgres).is_err());
        let found = tokens(sql, Postgres);
        assert_eq!(found.leading_keyword.as_deref(), Some("INSERT"));
        assert_eq!(found.identifiers, ["INTO", "products", "name", "VALUES"]);
    }
}
