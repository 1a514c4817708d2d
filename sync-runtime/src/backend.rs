//! What differs between backends: how many ids one query may bind, and how a write learns the
//! ids it touched (`RETURNING` on PostgreSQL and SQLite; a locking `SELECT` first on MySQL).

use std::future::Future;

use diesel::backend::Backend;
use diesel::QueryResult;

use crate::synced::IdOf;
#[cfg(any(feature = "postgres", feature = "sqlite", feature = "mysql"))]
use crate::synced::SyncedTable;
use crate::write::SyncedWrite;

/// A backend the collector can resolve ids on.
pub trait SyncBackend: Backend {
    /// The most ids one `eq_any` query binds. PostgreSQL binds the ids as one array.
    const MAX_IDS_PER_QUERY: usize;
}

/// How a write on backend `Self` over connection `C` reports the target ids it touched.
///
/// Returns the affected row count and the ids.
#[diagnostic::on_unimplemented(
    message = "this synced write cannot run on backend `{Self}`",
    note = "check that the statement compiles as plain Diesel on this backend; on MySQL an insert needs rows of a `Synced` model and an update or delete needs a filtered table, not a model reference"
)]
pub trait WriteIds<'q, C, W: SyncedWrite>: Backend {
    /// Runs the write.
    fn write(
        conn: &mut C,
        write: W,
    ) -> impl Future<Output = QueryResult<(usize, Vec<IdOf<W::Table>>)>> + Send;
}

#[cfg(feature = "postgres")]
impl SyncBackend for diesel::pg::Pg {
    const MAX_IDS_PER_QUERY: usize = usize::MAX;
}

#[cfg(feature = "sqlite")]
impl SyncBackend for diesel::sqlite::Sqlite {
    // SQLITE_MAX_VARIABLE_NUMBER of the bundled library.
    const MAX_IDS_PER_QUERY: usize = 32_766;
}

#[cfg(feature = "mysql")]
impl SyncBackend for diesel::mysql::Mysql {
    // The protocol counts placeholders in a u16.
    const MAX_IDS_PER_QUERY: usize = 65_535;
}

/// Backends with `RETURNING`: the statement returns the key column of every affected row.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
macro_rules! returning_backend {
    ($backend:ty) => {
        const _: () = {
            use diesel::dsl::{delete as Delete, Returning, Update};
            use diesel::query_builder::{AsQuery, InsertStatement, IntoUpdateTarget, Query};
            use diesel::{AsChangeset, Insertable, Table};
            use diesel_async::methods::LoadQuery;
            use diesel_async::{AsyncConnectionCore, RunQueryDsl};

            use crate::synced::KeyOf;
            use crate::write::{DecorateInsert, SyncedDelete, SyncedInsert, SyncedUpdate};

            impl<'q, C, S, V> WriteIds<'q, C, SyncedUpdate<S, V>> for $backend
            where
                C: AsyncConnectionCore<Backend = $backend>,
                S: IntoUpdateTarget<Table: SyncedTable> + Send + 'q,
                V: AsChangeset<Target = S::Table> + Send + 'q,
                Update<S, V>: AsQuery,
                Returning<Update<S, V>, KeyOf<S::Table>>:
                    Query + LoadQuery<'q, C, IdOf<S::Table>> + 'q,
            {
                async fn write(
                    conn: &mut C,
                    write: SyncedUpdate<S, V>,
                ) -> QueryResult<(usize, Vec<IdOf<S::Table>>)> {
                    let ids: Vec<IdOf<S::Table>> = diesel::update(write.source)
                        .set(write.changes)
                        .returning(KeyOf::<S::Table>::default())
                        .load(conn)
                        .await?;
                    Ok((ids.len(), ids))
                }
            }

            impl<'q, C, S> WriteIds<'q, C, SyncedDelete<S>> for $backend
            where
                C: AsyncConnectionCore<Backend = $backend>,
                S: IntoUpdateTarget<Table: SyncedTable> + Send + 'q,
                Returning<Delete<S>, KeyOf<S::Table>>:
                    Query + LoadQuery<'q, C, IdOf<S::Table>> + 'q,
            {
                async fn write(
                    conn: &mut C,
                    write: SyncedDelete<S>,
                ) -> QueryResult<(usize, Vec<IdOf<S::Table>>)> {
                    let ids: Vec<IdOf<S::Table>> = diesel::delete(write.source)
                        .returning(KeyOf::<S::Table>::default())
                        .load(conn)
                        .await?;
                    Ok((ids.len(), ids))
                }
            }

            impl<'q, C, T, V, D, U: 'q, Op: 'q> WriteIds<'q, C, SyncedInsert<T, V, D>> for $backend
            where
                C: AsyncConnectionCore<Backend = $backend>,
                T: SyncedTable + Table + Send + 'q,
                V: Insertable<T> + Send + 'q,
                D: DecorateInsert<InsertStatement<T, V::Values>, Output = InsertStatement<T, U, Op>>
                    + Send
                    + 'q,
                Returning<InsertStatement<T, U, Op>, KeyOf<T>>:
                    Query + LoadQuery<'q, C, IdOf<T>> + 'q,
            {
                async fn write(
                    conn: &mut C,
                    write: SyncedInsert<T, V, D>,
                ) -> QueryResult<(usize, Vec<IdOf<T>>)> {
                    let insert = diesel::insert_into(write.table).values(write.values);
                    let ids: Vec<IdOf<T>> = write
                        .decorate
                        .decorate(insert)
                        .returning(KeyOf::<T>::default())
                        .load(conn)
                        .await?;
                    Ok((ids.len(), ids))
                }
            }
        };
    };
}

#[cfg(feature = "postgres")]
returning_backend!(diesel::pg::Pg);
#[cfg(feature = "sqlite")]
returning_backend!(diesel::sqlite::Sqlite);

#[cfg(feature = "mysql")]
mod mysql {
    //! MySQL has no `RETURNING`: updates and deletes select the affected keys first, locking the
    //! rows (`FOR UPDATE`) so the write that follows touches exactly those; inserts read the
    //! keys from their rows.

    use diesel::dsl::{delete as Delete, Select, Update};
    use diesel::mysql::Mysql;
    use diesel::query_builder::{
        AsQuery, AstPass, InsertStatement, IntoUpdateTarget, Query, QueryFragment,
    };
    use diesel::query_dsl::methods::SelectDsl;
    use diesel::{AsChangeset, Insertable, Table};
    use diesel_async::methods::{ExecuteDsl, LoadQuery};
    use diesel_async::{AsyncConnectionCore, RunQueryDsl};

    use diesel::query_builder::QueryId;
    use diesel::QueryResult;

    use super::{IdOf, SyncedTable, WriteIds};
    use crate::synced::{KeyOf, TargetOf};
    use crate::write::{DecorateInsert, SyncedDelete, SyncedInsert, SyncedRows, SyncedUpdate};

    /// `<query> FOR UPDATE`: Diesel's own locking clause type is not nameable in bounds.
    #[derive(Debug, Clone, Copy, QueryId)]
    pub struct ForUpdate<Q>(Q);

    impl<Q: Query> Query for ForUpdate<Q> {
        type SqlType = Q::SqlType;
    }

    impl<Q: QueryFragment<Mysql>> QueryFragment<Mysql> for ForUpdate<Q> {
        fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Mysql>) -> QueryResult<()> {
            self.0.walk_ast(out.reborrow())?;
            out.push_sql(" FOR UPDATE");
            Ok(())
        }
    }

    type AffectedKeys<S> = ForUpdate<<Select<S, KeyOf<<S as diesel::associations::HasTable>::Table>> as AsQuery>::Query>;

    /// Selects the keys of the rows `source` matches, locking them until the transaction ends.
    async fn affected_keys<'q, C, S>(conn: &mut C, source: S) -> QueryResult<Vec<IdOf<S::Table>>>
    where
        C: AsyncConnectionCore<Backend = Mysql>,
        S: IntoUpdateTarget<Table: SyncedTable> + SelectDsl<KeyOf<S::Table>>,
        Select<S, KeyOf<S::Table>>: AsQuery,
        AffectedKeys<S>: LoadQuery<'q, C, IdOf<S::Table>> + 'q,
    {
        ForUpdate(source.select(KeyOf::<S::Table>::default()).as_query()).load(conn).await
    }

    impl<'q, C, S, V> WriteIds<'q, C, SyncedUpdate<S, V>> for Mysql
    where
        C: AsyncConnectionCore<Backend = Mysql>,
        S: IntoUpdateTarget<Table: SyncedTable> + SelectDsl<KeyOf<S::Table>> + Clone + Send + 'q,
        Select<S, KeyOf<S::Table>>: AsQuery,
        AffectedKeys<S>: LoadQuery<'q, C, IdOf<S::Table>> + 'q,
        V: AsChangeset<Target = S::Table> + Send + 'q,
        Update<S, V>: AsQuery + ExecuteDsl<C> + 'q,
    {
        async fn write(
            conn: &mut C,
            write: SyncedUpdate<S, V>,
        ) -> QueryResult<(usize, Vec<IdOf<S::Table>>)> {
            let ids = affected_keys(conn, write.source.clone()).await?;
            let affected = diesel::update(write.source).set(write.changes).execute(conn).await?;
            Ok((affected, ids))
        }
    }

    impl<'q, C, S> WriteIds<'q, C, SyncedDelete<S>> for Mysql
    where
        C: AsyncConnectionCore<Backend = Mysql>,
        S: IntoUpdateTarget<Table: SyncedTable> + SelectDsl<KeyOf<S::Table>> + Clone + Send + 'q,
        Select<S, KeyOf<S::Table>>: AsQuery,
        AffectedKeys<S>: LoadQuery<'q, C, IdOf<S::Table>> + 'q,
        Delete<S>: ExecuteDsl<C> + 'q,
    {
        async fn write(
            conn: &mut C,
            write: SyncedDelete<S>,
        ) -> QueryResult<(usize, Vec<IdOf<S::Table>>)> {
            let ids = affected_keys(conn, write.source.clone()).await?;
            let affected = diesel::delete(write.source).execute(conn).await?;
            Ok((affected, ids))
        }
    }

    impl<'q, C, T, V, D, Out> WriteIds<'q, C, SyncedInsert<T, V, D>> for Mysql
    where
        C: AsyncConnectionCore<Backend = Mysql>,
        T: SyncedTable + Table + Send + 'q,
        V: Insertable<T> + SyncedRows<TargetOf<T>> + Send + 'q,
        D: DecorateInsert<InsertStatement<T, V::Values>, Output = Out> + Send + 'q,
        Out: ExecuteDsl<C> + 'q,
    {
        async fn write(
            conn: &mut C,
            write: SyncedInsert<T, V, D>,
        ) -> QueryResult<(usize, Vec<IdOf<T>>)> {
            let ids = write.values.sync_keys();
            let insert = diesel::insert_into(write.table).values(write.values);
            let affected = write.decorate.decorate(insert).execute(conn).await?;
            Ok((affected, ids))
        }
    }
}
