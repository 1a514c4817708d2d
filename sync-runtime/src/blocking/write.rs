//! `execute_blocking`: the statement-level writes of [`crate::update`], [`crate::delete`] and
//! [`crate::insert_into`], run on a synchronous [`SyncedConnection`](super::SyncedConnection).
//!
//! The statements are the ones the async side builds; only the last call differs. It is an
//! inherent method with its own name rather than a trait method named `execute`: the async
//! inherent `execute` would always win method resolution over a trait method of the same name.

use diesel::connection::Connection;
use diesel::QueryResult;

use super::backend::WriteIds;
use super::connection::{AsSynced, CaptureConnection, SyncedConnection};
use crate::synced::Synced;
use crate::write::{is_target, SyncedWrite};
use crate::write::{SyncedDelete, SyncedInsert, SyncedUpdate};
use diesel::dsl::delete as Delete;
use diesel::query_builder::IntoUpdateTarget;
use diesel::query_dsl::methods::ExecuteDsl;

type BackendOf<Conn> = <<Conn as AsSynced>::Inner as Connection>::Backend;

macro_rules! execute_blocking {
    ($($write:ident<$($param:ident),*>),*) => {$(
        impl<$($param),*> $write<$($param),*> {
            /// Runs the statement on a synchronous synced connection (a
            /// [`blocking::SyncedConnection`](crate::blocking::SyncedConnection) or an r2d2
            /// connection of them) and registers the ids it touched with the connection's
            /// collector. Returns the number of rows affected.
            ///
            /// Outside a transaction it runs in one of its own: on MySQL the write is a key
            /// `SELECT` and the statement, which must commit together with the ids they
            /// register.
            pub fn execute_blocking<Conn>(self, conn: &mut Conn) -> QueryResult<usize>
            where
                M: Synced,
                Conn: AsSynced,
                BackendOf<Conn>: WriteIds<Conn::Inner, Self>,
            {
                write_registered(conn.as_synced(), self)
            }
        }
    )*};
}

/// Runs a typed write on the inner connection and registers the ids it returns, in a
/// transaction of its own when none is open.
fn write_registered<C, W>(conn: &mut SyncedConnection<C>, write: W) -> QueryResult<usize>
where
    C: CaptureConnection,
    W: SyncedWrite,
    C::Backend: WriteIds<C, W>,
{
    let opened = conn.begin_unless_open()?;
    let written = <C::Backend>::write(conn.inner_mut(), write).map(|(affected, ids)| {
        conn.register::<<W::Model as Synced>::Target>(ids);
        affected
    });
    conn.end_opened(opened, written)
}

execute_blocking!(SyncedUpdate<S, V, M>, SyncedInsert<T, V, M, D>);

impl<S, M> SyncedDelete<S, M> {
    /// Runs the statement on a synchronous synced connection and registers the ids it touched
    /// with the connection's collector: a reference model's rows change their targets, a
    /// target's rows are removed from their stores. Returns the number of rows deleted.
    ///
    /// A target's delete runs as plain Diesel through the connection, whose capture reads each
    /// row's store with its key.
    pub fn execute_blocking<Conn>(self, conn: &mut Conn) -> QueryResult<usize>
    where
        M: Synced,
        S: IntoUpdateTarget,
        Conn: AsSynced,
        BackendOf<Conn>: WriteIds<Conn::Inner, Self>,
        Delete<S>: ExecuteDsl<SyncedConnection<Conn::Inner>>,
    {
        let conn = conn.as_synced();
        if is_target::<M>() {
            return ExecuteDsl::execute(diesel::delete(self.source), conn);
        }
        write_registered(conn, self)
    }
}
