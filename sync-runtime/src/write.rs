//! Statement-level writes that register every id they touch: `insert_into`, `update`, `delete`.
//!
//! They mirror Diesel's functions of the same names and run on a [`SyncedConnection`]. Where the
//! backend has `RETURNING` (PostgreSQL, SQLite) the statement returns the key column; on MySQL
//! an update or delete first selects the affected keys with `FOR UPDATE` in the same
//! transaction, and an insert reads the keys from the rows it inserts, as
//! [`SyncedInsert::keys_from_rows`] does on every backend.

use diesel::query_builder::{InsertStatement, IntoUpdateTarget};
use diesel::QueryResult;
use diesel::{Insertable, Table};
use diesel_async::AsyncConnectionCore;

use crate::backend::WriteIds;
use crate::connection::{AsSynced, CaptureConnection, SyncedConnection};
use diesel::dsl::delete as Delete;
use diesel_async::methods::ExecuteDsl;
use std::marker::PhantomData;

use crate::synced::{KeyInRow, Synced, SyncedTable, TargetId};

/// Creates a synced `UPDATE`, like [`diesel::update`]: every row it changes is registered.
///
/// ```
/// # use diesel_sync_runtime as diesel_sync;
/// # diesel::table! { products { id -> BigInt, store_id -> BigInt, price_cents -> BigInt } }
/// # use diesel::prelude::*;
/// # #[derive(Debug, Queryable, Selectable, diesel_sync_derive::Synced)]
/// # #[diesel(table_name = products)]
/// # #[synced(crate = "diesel_sync_runtime", store = store_id)]
/// # struct Product { id: i64, store_id: i64, price_cents: i64 }
/// let raise = diesel_sync::update(products::table.filter(products::store_id.eq(7)))
///     .set(products::price_cents.eq(products::price_cents * 2));
/// ```
pub fn update<S, M>(source: S) -> UpdateBuilder<S, M>
where
    S: IntoUpdateTarget<Table: SyncedTable<M>>,
    M: Synced<Table = S::Table>,
{
    UpdateBuilder {
        source,
        model: PhantomData,
    }
}

/// Creates a synced `DELETE`, like [`diesel::delete`]: every row it deletes is registered, a
/// target's as a removal from its store ([`Batch::removed`](crate::Batch::removed)), a
/// reference model's as a change of its target.
pub fn delete<S, M>(source: S) -> SyncedDelete<S, M>
where
    S: IntoUpdateTarget<Table: SyncedTable<M>>,
    M: Synced<Table = S::Table>,
{
    SyncedDelete {
        source,
        model: PhantomData,
    }
}

/// Creates a synced `INSERT`, like [`diesel::insert_into`]: every row it inserts (or, as an
/// upsert, updates) is registered.
pub fn insert_into<T, M>(table: T) -> InsertBuilder<T, M>
where
    T: SyncedTable<M>,
    M: Synced<Table = T>,
{
    InsertBuilder {
        table,
        model: PhantomData,
    }
}

/// An `UPDATE` waiting for its changes; see [`update`].
#[derive(Debug)]
#[must_use = "call `.set(…)` and `.execute(conn)`"]
pub struct UpdateBuilder<S, M> {
    source: S,
    model: PhantomData<fn() -> M>,
}

/// A synced `UPDATE`; run it with [`SyncedUpdate::execute`], or with
/// [`SyncedUpdate::execute_blocking`] on a [`blocking`](crate::blocking) connection.
#[derive(Debug)]
#[must_use = "a synced write does nothing until `.execute(conn)` is awaited (or `.execute_blocking(conn)` is called)"]
pub struct SyncedUpdate<S, V, M> {
    pub(crate) source: S,
    pub(crate) changes: V,
    model: PhantomData<fn() -> M>,
}

/// A synced `DELETE`; run it with [`SyncedDelete::execute`], or with
/// [`SyncedDelete::execute_blocking`] on a [`blocking`](crate::blocking) connection.
#[derive(Debug)]
#[must_use = "a synced write does nothing until `.execute(conn)` is awaited (or `.execute_blocking(conn)` is called)"]
pub struct SyncedDelete<S, M> {
    pub(crate) source: S,
    model: PhantomData<fn() -> M>,
}

/// An `INSERT` waiting for its values; see [`insert_into`].
#[derive(Debug)]
#[must_use = "call `.values(…)` and `.execute(conn)`"]
pub struct InsertBuilder<T, M> {
    table: T,
    model: PhantomData<fn() -> M>,
}

/// A synced `INSERT`; run it with [`SyncedInsert::execute`], or with
/// [`SyncedInsert::execute_blocking`] on a [`blocking`](crate::blocking) connection.
#[derive(Debug)]
#[must_use = "a synced write does nothing until `.execute(conn)` is awaited (or `.execute_blocking(conn)` is called)"]
pub struct SyncedInsert<T, V, M, D = Plain> {
    pub(crate) table: T,
    pub(crate) values: V,
    pub(crate) decorate: D,
    model: PhantomData<fn() -> M>,
}

/// A plain insert: the statement is run as `values` built it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Plain;

/// A plain insert whose rows carry their keys: the keys are read from the rows, and the
/// statement runs without `RETURNING`. See [`SyncedInsert::keys_from_rows`].
#[derive(Debug, Clone, Copy, Default)]
pub struct KeysFromRows;

/// An insert finished by a closure, such as an `on_conflict(…).do_update()` upsert.
#[derive(Debug, Clone, Copy)]
pub struct Upsert<F>(F);

/// Turns the `insert_into(…).values(…)` statement into the one that runs.
pub trait DecorateInsert<Stmt> {
    /// The statement that runs.
    type Output;
    /// Builds it.
    fn decorate(self, insert: Stmt) -> Self::Output;
}

impl<Stmt> DecorateInsert<Stmt> for Plain {
    type Output = Stmt;
    fn decorate(self, insert: Stmt) -> Stmt {
        insert
    }
}

impl<Stmt, F, Out> DecorateInsert<Stmt> for Upsert<F>
where
    F: FnOnce(Stmt) -> Out,
{
    type Output = Out;
    fn decorate(self, insert: Stmt) -> Out {
        (self.0)(insert)
    }
}

/// A synced write and the model of the table it writes.
pub trait SyncedWrite {
    /// The synced model of the table written.
    type Model: Synced;
}

impl<S, V, M: Synced> SyncedWrite for SyncedUpdate<S, V, M> {
    type Model = M;
}

impl<S, M: Synced> SyncedWrite for SyncedDelete<S, M> {
    type Model = M;
}

impl<T, V, M: Synced, D> SyncedWrite for SyncedInsert<T, V, M, D> {
    type Model = M;
}

/// Rows whose keys are known before they are written: what an insert on a backend without
/// `RETURNING` (MySQL), or one with [`SyncedInsert::keys_from_rows`], needs.
#[diagnostic::on_unimplemented(
    message = "the keys of `{Self}` are not known before the insert",
    label = "synced inserts on MySQL, and with `keys_from_rows`, read the keys from the rows",
    note = "insert rows of a model that derives `Synced` (one row, a slice or a Vec of them) and whose key field is not `#[diesel(skip_insertion)]`; otherwise, on PostgreSQL and SQLite, leave out `keys_from_rows` and the statement returns the keys, and on MySQL insert with Diesel and call `mark_changed` with the new ids"
)]
pub trait SyncedRows<Target: Synced> {
    /// The target ids the rows will sync.
    fn sync_keys(&self) -> Vec<TargetId<Target>>;
}

impl<M: KeyInRow> SyncedRows<M::Target> for &M {
    fn sync_keys(&self) -> Vec<TargetId<M>> {
        vec![self.sync_key()]
    }
}

impl<M: KeyInRow> SyncedRows<M::Target> for &[M] {
    fn sync_keys(&self) -> Vec<TargetId<M>> {
        self.iter().map(Synced::sync_key).collect()
    }
}

impl<M: KeyInRow> SyncedRows<M::Target> for &Vec<M> {
    fn sync_keys(&self) -> Vec<TargetId<M>> {
        self.iter().map(Synced::sync_key).collect()
    }
}

impl<M: KeyInRow> SyncedRows<M::Target> for Vec<M> {
    fn sync_keys(&self) -> Vec<TargetId<M>> {
        self.iter().map(Synced::sync_key).collect()
    }
}

/// Values an insert can split into rows: one row of a `Synced` model, or a slice or `Vec` of
/// rows. SQLite inserts them one statement per row.
#[diagnostic::on_unimplemented(
    message = "a synced insert on SQLite cannot split `{Self}` into rows",
    note = "SQLite over diesel-async inserts one row per statement: pass a row of a `Synced` model, or a slice or `Vec` of rows"
)]
pub trait InsertRows {
    /// One row.
    type Row;
    /// The rows, in order.
    fn rows(self) -> impl Iterator<Item = Self::Row> + Send;
}

impl<'a, M: Synced + Sync> InsertRows for &'a M {
    type Row = &'a M;
    fn rows(self) -> impl Iterator<Item = &'a M> + Send {
        std::iter::once(self)
    }
}

impl<'a, M: Sync> InsertRows for &'a [M] {
    type Row = &'a M;
    fn rows(self) -> impl Iterator<Item = &'a M> + Send {
        self.iter()
    }
}

impl<'a, M: Sync> InsertRows for &'a Vec<M> {
    type Row = &'a M;
    fn rows(self) -> impl Iterator<Item = &'a M> + Send {
        self.iter()
    }
}

impl<M: Send> InsertRows for Vec<M> {
    type Row = M;
    fn rows(self) -> impl Iterator<Item = M> + Send {
        self.into_iter()
    }
}

impl<S, M> UpdateBuilder<S, M> {
    /// The changes, as for [`diesel::query_builder::UpdateStatement::set`].
    pub fn set<V>(self, changes: V) -> SyncedUpdate<S, V, M> {
        SyncedUpdate {
            source: self.source,
            changes,
            model: PhantomData,
        }
    }
}

impl<T, M> InsertBuilder<T, M> {
    /// The rows to insert: one `Insertable`, a slice, a `Vec`, or column assignments.
    pub fn values<V>(self, values: V) -> SyncedInsert<T, V, M> {
        SyncedInsert {
            table: self.table,
            values,
            decorate: Plain,
            model: PhantomData,
        }
    }
}

impl<T, V, M> SyncedInsert<T, V, M> {
    /// Reads the keys to register from the rows instead of asking the database for them with
    /// `RETURNING`. For rows of a `Synced` model whose key the application sets (a reference
    /// model's key always is): the statement runs exactly as bare Diesel's. On synchronous
    /// SQLite that halves the cost of a bulk insert, on PostgreSQL it saves about a tenth.
    /// MySQL, which has no `RETURNING`, always works this way.
    ///
    /// Not for keys the database generates. A model whose key field is
    /// `#[diesel(skip_insertion)]` does not compile here; a key the database replaces some
    /// other way (a trigger) cannot be seen, and the rows' values would be registered.
    ///
    /// ```
    /// # use diesel_sync_runtime as diesel_sync;
    /// # diesel::table! { products { id -> BigInt, store_id -> BigInt } }
    /// # diesel::table! { price_records { id -> BigInt, object_id -> BigInt, amount_cents -> BigInt } }
    /// # use diesel::prelude::*;
    /// # #[derive(Debug, Queryable, Selectable, diesel_sync_derive::Synced)]
    /// # #[diesel(table_name = products)]
    /// # #[synced(crate = "diesel_sync_runtime", store = store_id)]
    /// # struct Product { id: i64, store_id: i64 }
    /// #[derive(Debug, Insertable, diesel_sync_derive::Synced)]
    /// #[diesel(table_name = price_records)]
    /// #[synced(crate = "diesel_sync_runtime", target = Product, key = object_id)]
    /// struct PriceRecord {
    ///     object_id: i64,
    ///     amount_cents: i64,
    /// }
    ///
    /// let records = vec![PriceRecord { object_id: 7, amount_cents: 1_299 }];
    /// // Registers product 7 after COMMIT, like `.values(&records)` alone, without `RETURNING`.
    /// let insert = diesel_sync::insert_into(price_records::table)
    ///     .values(&records)
    ///     .keys_from_rows();
    /// ```
    pub fn keys_from_rows(self) -> SyncedInsert<T, V, M, KeysFromRows>
    where
        M: Synced,
        V: SyncedRows<M::Target>,
    {
        SyncedInsert {
            table: self.table,
            values: self.values,
            decorate: KeysFromRows,
            model: PhantomData,
        }
    }

    /// Finishes the statement with Diesel's upsert builder; rows inserted and rows updated are
    /// both registered.
    ///
    /// ```ignore
    /// diesel_sync::insert_into(products::table)
    ///     .values(&rows)
    ///     .upsert(|insert| insert.on_conflict(products::id).do_update().set(products::price_cents.eq(excluded(products::price_cents))))
    ///     .execute(conn)
    ///     .await?;
    /// ```
    pub fn upsert<F, Out>(self, finish: F) -> SyncedInsert<T, V, M, Upsert<F>>
    where
        T: Table,
        V: Insertable<T>,
        F: FnOnce(InsertStatement<T, V::Values>) -> Out,
    {
        SyncedInsert {
            table: self.table,
            values: self.values,
            decorate: Upsert(finish),
            model: PhantomData,
        }
    }
}

type BackendOf<Conn> = <<Conn as AsSynced>::Inner as AsyncConnectionCore>::Backend;

macro_rules! execute_synced {
    ($($write:ident<$($param:ident),*>),*) => {$(
        impl<$($param),*> $write<$($param),*> {
            /// Runs the statement and registers the ids it touched with the connection's
            /// collector. Returns the number of rows affected.
            ///
            /// Outside a transaction it runs in one of its own: on some backends the write is
            /// several statements (a key `SELECT` first, one INSERT per row), which must
            /// commit together with the ids they register.
            pub async fn execute<Conn>(self, conn: &mut Conn) -> QueryResult<usize>
            where
                M: Synced,
                Conn: AsSynced,
                BackendOf<Conn>: WriteIds<Conn::Inner, Self>,
            {
                write_registered(conn.as_synced(), self).await
            }
        }
    )*};
}

/// Runs a typed write on the inner connection and registers the ids it returns, in a
/// transaction of its own when none is open.
async fn write_registered<C, W>(conn: &mut SyncedConnection<C>, write: W) -> QueryResult<usize>
where
    C: CaptureConnection,
    W: SyncedWrite,
    C::Backend: WriteIds<C, W>,
{
    let opened = conn.begin_unless_open().await?;
    let written = match <C::Backend>::write(conn.inner_mut(), write).await {
        Ok((affected, ids)) => {
            conn.register::<<W::Model as Synced>::Target>(ids).await;
            Ok(affected)
        }
        Err(error) => Err(error),
    };
    conn.end_opened(opened, written).await
}

execute_synced!(SyncedUpdate<S, V, M>, SyncedInsert<T, V, M, D>);

impl<S, M> SyncedDelete<S, M> {
    /// Runs the statement and registers the ids it touched with the connection's collector:
    /// a reference model's rows change their targets, a target's rows are removed from their
    /// stores. Returns the number of rows deleted.
    ///
    /// A target's delete runs as plain Diesel through the connection, whose capture reads each
    /// row's store with its key; a reference model's, like [`SyncedUpdate::execute`].
    pub async fn execute<Conn>(self, conn: &mut Conn) -> QueryResult<usize>
    where
        M: Synced,
        S: IntoUpdateTarget,
        Conn: AsSynced,
        BackendOf<Conn>: WriteIds<Conn::Inner, Self>,
        Delete<S>: ExecuteDsl<SyncedConnection<Conn::Inner>>,
    {
        let conn = conn.as_synced();
        if is_target::<M>() {
            return ExecuteDsl::execute(diesel::delete(self.source), conn).await;
        }
        write_registered(conn, self).await
    }
}

/// Whether `M` is a target model, whose deleted rows are removals.
pub(crate) fn is_target<M: Synced>() -> bool {
    std::any::TypeId::of::<M>() == std::any::TypeId::of::<M::Target>()
}
