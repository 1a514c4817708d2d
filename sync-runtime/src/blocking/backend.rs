//! How a synced write learns the ids it touched over a synchronous connection, per backend:
//! `RETURNING` on PostgreSQL and SQLite (inserts of many rows in one statement on both), a
//! locking `SELECT … FOR UPDATE` first on MySQL, whose inserts read the keys from their rows as
//! every backend does for an insert with `keys_from_rows`.

use diesel::backend::Backend;
use diesel::QueryResult;

use crate::synced::TargetId;
use crate::write::SyncedWrite;

/// How a write on backend `Self` over synchronous connection `C` reports the target ids it
/// touched: the blocking twin of [`crate::WriteIds`].
///
/// Returns the affected row count and the target ids.
#[diagnostic::on_unimplemented(
    message = "this synced write cannot run on backend `{Self}`",
    note = "check that the statement compiles as plain Diesel on this backend; on MySQL an insert needs rows of a `Synced` model and an update or delete needs a filtered table, not a model reference"
)]
pub trait WriteIds<C, W: SyncedWrite>: Backend {
    /// Runs the write.
    fn write(conn: &mut C, write: W) -> QueryResult<(usize, Vec<TargetId<W::Model>>)>;
}

/// Backends with `RETURNING`: the statement returns the key column of every affected row, and
/// an insert of many rows (an upsert too) is one statement.
#[cfg(any(
    feature = "postgres",
    feature = "blocking-postgres",
    feature = "sqlite"
))]
macro_rules! returning_backend {
    ($backend:ty) => {
        const _: () = {
            use diesel::connection::Connection;
            use diesel::dsl::{delete as Delete, Returning, Update};
            use diesel::query_builder::{AsQuery, InsertStatement, IntoUpdateTarget, Query};
            use diesel::query_dsl::LoadQuery;
            use diesel::{AsChangeset, Insertable, RunQueryDsl, Table};

            use crate::blocking::WriteIds;
            use crate::synced::Synced;
            use crate::synced::TargetId;
            use crate::write::{DecorateInsert, SyncedDelete, SyncedInsert, SyncedUpdate};

            impl<'q, C, S, V, M> WriteIds<C, SyncedUpdate<S, V, M>> for $backend
            where
                C: Connection<Backend = $backend>,
                M: Synced,
                S: IntoUpdateTarget<Table = M::Table>,
                V: AsChangeset<Target = S::Table>,
                Update<S, V>: AsQuery,
                Returning<Update<S, V>, M::KeyColumn>: Query + LoadQuery<'q, C, TargetId<M>>,
            {
                fn write(
                    conn: &mut C,
                    write: SyncedUpdate<S, V, M>,
                ) -> QueryResult<(usize, Vec<TargetId<M>>)> {
                    let ids: Vec<TargetId<M>> = diesel::update(write.source)
                        .set(write.changes)
                        .returning(<M::KeyColumn as Default>::default())
                        .load(conn)?;
                    Ok((ids.len(), ids))
                }
            }

            impl<'q, C, S, M> WriteIds<C, SyncedDelete<S, M>> for $backend
            where
                C: Connection<Backend = $backend>,
                M: Synced,
                S: IntoUpdateTarget<Table = M::Table>,
                Returning<Delete<S>, M::KeyColumn>: Query + LoadQuery<'q, C, TargetId<M>>,
            {
                fn write(
                    conn: &mut C,
                    write: SyncedDelete<S, M>,
                ) -> QueryResult<(usize, Vec<TargetId<M>>)> {
                    let ids: Vec<TargetId<M>> = diesel::delete(write.source)
                        .returning(<M::KeyColumn as Default>::default())
                        .load(conn)?;
                    Ok((ids.len(), ids))
                }
            }

            impl<'q, C, T, V, M, D, U, Op> WriteIds<C, SyncedInsert<T, V, M, D>> for $backend
            where
                C: Connection<Backend = $backend>,
                M: Synced<Table = T>,
                T: Table,
                V: Insertable<T>,
                D: DecorateInsert<
                    InsertStatement<T, V::Values>,
                    Output = InsertStatement<T, U, Op>,
                >,
                Returning<InsertStatement<T, U, Op>, M::KeyColumn>:
                    Query + LoadQuery<'q, C, TargetId<M>>,
            {
                fn write(
                    conn: &mut C,
                    write: SyncedInsert<T, V, M, D>,
                ) -> QueryResult<(usize, Vec<TargetId<M>>)> {
                    let insert = diesel::insert_into(write.table).values(write.values);
                    let ids: Vec<TargetId<M>> = write
                        .decorate
                        .decorate(insert)
                        .returning(<M::KeyColumn as Default>::default())
                        .load(conn)?;
                    Ok((ids.len(), ids))
                }
            }
        };
    };
}

#[cfg(any(feature = "postgres", feature = "blocking-postgres"))]
returning_backend!(diesel::pg::Pg);
#[cfg(feature = "sqlite")]
returning_backend!(diesel::sqlite::Sqlite);

/// An insert whose rows carry their keys runs as bare Diesel's, many rows in one statement on
/// every backend, and registers the rows' keys.
#[cfg(any(
    feature = "postgres",
    feature = "blocking-postgres",
    feature = "sqlite",
    feature = "mysql",
    feature = "blocking-mysql"
))]
macro_rules! keys_from_rows_backend {
    ($backend:ty) => {
        const _: () = {
            use diesel::connection::Connection;
            use diesel::query_builder::InsertStatement;
            use diesel::query_dsl::methods::ExecuteDsl;
            use diesel::{Insertable, Table};

            use crate::blocking::WriteIds;
            use crate::synced::{Synced, TargetId};
            use crate::write::{KeysFromRows, SyncedInsert, SyncedRows};

            impl<C, T, V, M> WriteIds<C, SyncedInsert<T, V, M, KeysFromRows>> for $backend
            where
                C: Connection<Backend = $backend>,
                M: Synced<Table = T>,
                T: Table,
                V: Insertable<T> + SyncedRows<M::Target>,
                InsertStatement<T, V::Values>: ExecuteDsl<C>,
            {
                fn write(
                    conn: &mut C,
                    write: SyncedInsert<T, V, M, KeysFromRows>,
                ) -> QueryResult<(usize, Vec<TargetId<M>>)> {
                    let ids = write.values.sync_keys();
                    let insert = diesel::insert_into(write.table).values(write.values);
                    let affected = ExecuteDsl::execute(insert, conn)?;
                    Ok((affected, ids))
                }
            }
        };
    };
}

#[cfg(any(feature = "postgres", feature = "blocking-postgres"))]
keys_from_rows_backend!(diesel::pg::Pg);
#[cfg(feature = "sqlite")]
keys_from_rows_backend!(diesel::sqlite::Sqlite);
#[cfg(any(feature = "mysql", feature = "blocking-mysql"))]
keys_from_rows_backend!(diesel::mysql::Mysql);

#[cfg(any(feature = "mysql", feature = "blocking-mysql"))]
mod mysql {
    //! MySQL has no `RETURNING`: updates and deletes select the affected keys first, locking the
    //! rows (`FOR UPDATE`) so the write that follows touches exactly those; inserts read the
    //! keys from their rows.

    use diesel::connection::Connection;
    use diesel::dsl::{delete as Delete, Select, Update};
    use diesel::mysql::Mysql;
    use diesel::query_builder::{
        AsQuery, AstPass, InsertStatement, IntoUpdateTarget, Query, QueryFragment, QueryId,
    };
    use diesel::query_dsl::methods::{ExecuteDsl, SelectDsl};
    use diesel::query_dsl::LoadQuery;
    use diesel::{AsChangeset, Insertable, QueryResult, RunQueryDsl, Table};

    use super::{TargetId, WriteIds};
    use crate::backend::mysql::ForUpdate;
    use crate::synced::Synced;
    use crate::write::{DecorateInsert, SyncedDelete, SyncedInsert, SyncedRows, SyncedUpdate};

    /// The key `SELECT … FOR UPDATE`, prepared afresh each time rather than from Diesel's
    /// statement cache: after a deadlock ended an earlier run of a cached one, libmariadb's
    /// `mysql_stmt_execute` of it can wait for good.
    #[derive(Debug, Clone, Copy, QueryId)]
    pub(crate) struct FreshForUpdate<Q>(ForUpdate<Q>);

    impl<Q: Query> Query for FreshForUpdate<Q> {
        type SqlType = Q::SqlType;
    }

    impl<Q: QueryFragment<Mysql>> QueryFragment<Mysql> for FreshForUpdate<Q> {
        fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Mysql>) -> QueryResult<()> {
            out.unsafe_to_cache_prepared();
            self.0.walk_ast(out.reborrow())
        }
    }

    impl<Q, Conn> RunQueryDsl<Conn> for FreshForUpdate<Q> {}

    type AffectedKeys<S, M> =
        FreshForUpdate<<Select<S, <M as Synced>::KeyColumn> as AsQuery>::Query>;

    /// Selects the keys of the rows `source` matches, locking them until the transaction ends.
    fn affected_keys<'q, C, S, M>(conn: &mut C, source: S) -> QueryResult<Vec<TargetId<M>>>
    where
        C: Connection<Backend = Mysql>,
        M: Synced,
        S: IntoUpdateTarget<Table = M::Table> + SelectDsl<M::KeyColumn>,
        Select<S, M::KeyColumn>: AsQuery,
        AffectedKeys<S, M>: LoadQuery<'q, C, TargetId<M>>,
    {
        FreshForUpdate(ForUpdate(
            source
                .select(<M::KeyColumn as Default>::default())
                .as_query(),
        ))
        .load(conn)
    }

    impl<'q, C, S, V, M> WriteIds<C, SyncedUpdate<S, V, M>> for Mysql
    where
        C: Connection<Backend = Mysql>,
        M: Synced,
        S: IntoUpdateTarget<Table = M::Table> + SelectDsl<M::KeyColumn> + Clone,
        Select<S, M::KeyColumn>: AsQuery,
        AffectedKeys<S, M>: LoadQuery<'q, C, TargetId<M>>,
        V: AsChangeset<Target = S::Table>,
        Update<S, V>: AsQuery + ExecuteDsl<C>,
    {
        fn write(
            conn: &mut C,
            write: SyncedUpdate<S, V, M>,
        ) -> QueryResult<(usize, Vec<TargetId<M>>)> {
            let ids = affected_keys::<C, S, M>(conn, write.source.clone())?;
            let update = diesel::update(write.source).set(write.changes);
            let affected = ExecuteDsl::execute(update, conn)?;
            Ok((affected, ids))
        }
    }

    impl<'q, C, S, M> WriteIds<C, SyncedDelete<S, M>> for Mysql
    where
        C: Connection<Backend = Mysql>,
        M: Synced,
        S: IntoUpdateTarget<Table = M::Table> + SelectDsl<M::KeyColumn> + Clone,
        Select<S, M::KeyColumn>: AsQuery,
        AffectedKeys<S, M>: LoadQuery<'q, C, TargetId<M>>,
        Delete<S>: ExecuteDsl<C>,
    {
        fn write(
            conn: &mut C,
            write: SyncedDelete<S, M>,
        ) -> QueryResult<(usize, Vec<TargetId<M>>)> {
            let ids = affected_keys::<C, S, M>(conn, write.source.clone())?;
            let affected = ExecuteDsl::execute(diesel::delete(write.source), conn)?;
            Ok((affected, ids))
        }
    }

    impl<C, T, V, M, D, Out> WriteIds<C, SyncedInsert<T, V, M, D>> for Mysql
    where
        C: Connection<Backend = Mysql>,
        M: Synced<Table = T>,
        T: Table,
        V: Insertable<T> + SyncedRows<M::Target>,
        D: DecorateInsert<InsertStatement<T, V::Values>, Output = Out>,
        Out: ExecuteDsl<C>,
    {
        fn write(
            conn: &mut C,
            write: SyncedInsert<T, V, M, D>,
        ) -> QueryResult<(usize, Vec<TargetId<M>>)> {
            let ids = write.values.sync_keys();
            let insert = diesel::insert_into(write.table).values(write.values);
            let affected = ExecuteDsl::execute(write.decorate.decorate(insert), conn)?;
            Ok((affected, ids))
        }
    }
}
