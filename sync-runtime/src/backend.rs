//! What differs between backends: how many ids one query may bind, and how a write learns the
//! ids it touched (`RETURNING` on PostgreSQL and SQLite; a locking `SELECT` first on MySQL; the
//! rows themselves for an insert with `keys_from_rows`, and for any insert on MySQL).

use std::future::Future;

use diesel::backend::Backend;
use diesel::deserialize::FromSqlRow;
use diesel::expression::QueryMetadata;
use diesel::query_builder::{AsQuery, QueryFragment, QueryId};
use diesel::QueryResult;
use diesel_async::AsyncConnectionCore;
use futures_util::{StreamExt, TryStreamExt};

use crate::synced::TargetId;
use crate::write::SyncedWrite;

/// A query returning one key per row, runnable on `C`. Keys are read through
/// `AsyncConnectionCore::load` so no lifetime appears in the bounds: a lifetime there trips
/// rustc's higher-ranked checks of the futures inside `transaction` closures.
pub trait KeyQuery<C: AsyncConnectionCore, Id>: AsQuery + Send + Sized {
    /// Runs the query and collects the keys.
    fn load_keys(self, conn: &mut C) -> impl Future<Output = QueryResult<Vec<Id>>> + Send;
}

impl<C, Id, Q> KeyQuery<C, Id> for Q
where
    C: AsyncConnectionCore,
    Q: AsQuery + Send,
    Q::Query: QueryFragment<C::Backend> + QueryId + Send,
    C::Backend: QueryMetadata<Q::SqlType>,
    Id: FromSqlRow<Q::SqlType, C::Backend> + Send,
{
    async fn load_keys(self, conn: &mut C) -> QueryResult<Vec<Id>> {
        let rows = conn.load(self).await?;
        rows.map(|row| {
            Id::build_from_row(&row?).map_err(diesel::result::Error::DeserializationError)
        })
        .try_collect()
        .await
    }
}

/// A backend the collector can resolve ids on.
pub trait SyncBackend: Backend {
    /// The most ids one `eq_any` query binds. PostgreSQL binds the ids as one array.
    const MAX_IDS_PER_QUERY: usize;
    /// Whether each id is a placeholder of its own (`IN (?, …)`): then a list's length is part
    /// of the statement, and resolve pads it so that few lengths, and few statements, occur.
    const BINDS_EACH_ID: bool = true;
}

/// How a write on backend `Self` over connection `C` reports the target ids it touched.
///
/// Returns the affected row count and the target ids.
#[diagnostic::on_unimplemented(
    message = "this synced write cannot run on backend `{Self}`",
    note = "check that the statement compiles as plain Diesel on this backend; on MySQL an insert needs rows of a `Synced` model and an update or delete needs a filtered table, not a model reference"
)]
pub trait WriteIds<C, W: SyncedWrite>: Backend {
    /// Runs the write.
    fn write(
        conn: &mut C,
        write: W,
    ) -> impl Future<Output = QueryResult<(usize, Vec<TargetId<W::Model>>)>> + Send;
}

#[cfg(any(feature = "postgres", feature = "blocking-postgres"))]
impl SyncBackend for diesel::pg::Pg {
    const MAX_IDS_PER_QUERY: usize = usize::MAX;
    const BINDS_EACH_ID: bool = false;
}

#[cfg(feature = "sqlite")]
impl SyncBackend for diesel::sqlite::Sqlite {
    // SQLITE_MAX_VARIABLE_NUMBER of the bundled library.
    const MAX_IDS_PER_QUERY: usize = 32_766;
}

#[cfg(any(feature = "mysql", feature = "blocking-mysql"))]
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
            use diesel::query_builder::{AsQuery, IntoUpdateTarget, Query};
            use diesel::AsChangeset;
            use diesel_async::AsyncConnectionCore;

            use super::{KeyQuery, TargetId};
            use crate::synced::Synced;
            use crate::write::{SyncedDelete, SyncedUpdate};

            impl<C, S, V, M> WriteIds<C, SyncedUpdate<S, V, M>> for $backend
            where
                C: AsyncConnectionCore<Backend = $backend>,
                M: Synced,
                S: IntoUpdateTarget<Table = M::Table> + Send,
                V: AsChangeset<Target = S::Table> + Send,
                Update<S, V>: AsQuery,
                Returning<Update<S, V>, M::KeyColumn>: Query + KeyQuery<C, TargetId<M>>,
            {
                async fn write(
                    conn: &mut C,
                    write: SyncedUpdate<S, V, M>,
                ) -> QueryResult<(usize, Vec<TargetId<M>>)> {
                    let ids: Vec<TargetId<M>> = diesel::update(write.source)
                        .set(write.changes)
                        .returning(<M::KeyColumn as Default>::default())
                        .load_keys(conn)
                        .await?;
                    Ok((ids.len(), ids))
                }
            }

            impl<C, S, M> WriteIds<C, SyncedDelete<S, M>> for $backend
            where
                C: AsyncConnectionCore<Backend = $backend>,
                M: Synced,
                S: IntoUpdateTarget<Table = M::Table> + Send,
                Returning<Delete<S>, M::KeyColumn>: Query + KeyQuery<C, TargetId<M>>,
            {
                async fn write(
                    conn: &mut C,
                    write: SyncedDelete<S, M>,
                ) -> QueryResult<(usize, Vec<TargetId<M>>)> {
                    let ids: Vec<TargetId<M>> = diesel::delete(write.source)
                        .returning(<M::KeyColumn as Default>::default())
                        .load_keys(conn)
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

/// Backends that insert many rows in one statement: an insert whose rows carry their keys runs
/// as bare Diesel's and registers the rows' keys.
#[cfg(any(feature = "postgres", feature = "mysql"))]
macro_rules! keys_from_rows_backend {
    ($backend:ty) => {
        const _: () = {
            use diesel::query_builder::InsertStatement;
            use diesel::{Insertable, Table};
            use diesel_async::methods::ExecuteDsl;
            use diesel_async::{AsyncConnectionCore, RunQueryDsl};

            use super::{TargetId, WriteIds};
            use crate::synced::Synced;
            use crate::write::{KeysFromRows, SyncedInsert, SyncedRows};

            impl<C, T, V, M> WriteIds<C, SyncedInsert<T, V, M, KeysFromRows>> for $backend
            where
                C: AsyncConnectionCore<Backend = $backend>,
                M: Synced<Table = T>,
                T: Table + Send,
                V: Insertable<T> + SyncedRows<M::Target> + Send,
                InsertStatement<T, V::Values>: ExecuteDsl<C>,
            {
                async fn write(
                    conn: &mut C,
                    write: SyncedInsert<T, V, M, KeysFromRows>,
                ) -> QueryResult<(usize, Vec<TargetId<M>>)> {
                    let ids = write.values.sync_keys();
                    let affected = diesel::insert_into(write.table)
                        .values(write.values)
                        .execute(conn)
                        .await?;
                    Ok((affected, ids))
                }
            }
        };
    };
}

#[cfg(feature = "postgres")]
keys_from_rows_backend!(diesel::pg::Pg);
#[cfg(feature = "mysql")]
keys_from_rows_backend!(diesel::mysql::Mysql);

#[cfg(feature = "postgres")]
mod postgres {
    //! PostgreSQL inserts any number of rows in one statement and returns their keys.

    use diesel::dsl::Returning;
    use diesel::pg::Pg;
    use diesel::query_builder::{InsertStatement, Query};
    use diesel::{Insertable, QueryResult, Table};
    use diesel_async::AsyncConnectionCore;

    use super::{KeyQuery, TargetId, WriteIds};
    use crate::synced::Synced;
    use crate::write::{DecorateInsert, SyncedInsert};

    impl<C, T, V, M, D, U, Op> WriteIds<C, SyncedInsert<T, V, M, D>> for Pg
    where
        C: AsyncConnectionCore<Backend = Pg>,
        M: Synced<Table = T>,
        T: Table + Send,
        V: Insertable<T> + Send,
        D: DecorateInsert<InsertStatement<T, V::Values>, Output = InsertStatement<T, U, Op>> + Send,
        Returning<InsertStatement<T, U, Op>, M::KeyColumn>: Query + KeyQuery<C, TargetId<M>>,
    {
        async fn write(
            conn: &mut C,
            write: SyncedInsert<T, V, M, D>,
        ) -> QueryResult<(usize, Vec<TargetId<M>>)> {
            let insert = diesel::insert_into(write.table).values(write.values);
            let ids: Vec<TargetId<M>> = write
                .decorate
                .decorate(insert)
                .returning(<M::KeyColumn as Default>::default())
                .load_keys(conn)
                .await?;
            Ok((ids.len(), ids))
        }
    }
}

#[cfg(feature = "sqlite")]
mod sqlite {
    //! SQLite over diesel-async cannot run Diesel's multi-row insert (its batch path exists only
    //! for the synchronous connection), so a synced insert runs one `INSERT … RETURNING` per
    //! row (one plain `INSERT` per row with `keys_from_rows`), inside the caller's transaction.

    use diesel::dsl::Returning;
    use diesel::query_builder::{InsertStatement, Query};
    use diesel::sqlite::Sqlite;
    use diesel::{Insertable, QueryResult, Table};
    use diesel_async::methods::ExecuteDsl;
    use diesel_async::{AsyncConnectionCore, RunQueryDsl};

    use super::{KeyQuery, TargetId, WriteIds};
    use crate::synced::Synced;
    use crate::write::{
        DecorateInsert, InsertRows, KeysFromRows, Plain, SyncedInsert, SyncedRows, Upsert,
    };

    impl<C, T, V, M> WriteIds<C, SyncedInsert<T, V, M, Plain>> for Sqlite
    where
        C: AsyncConnectionCore<Backend = Sqlite>,
        M: Synced<Table = T>,
        T: Table + Copy + Send,
        V: InsertRows + Send,
        V::Row: Insertable<T> + Send,
        Returning<InsertStatement<T, <V::Row as Insertable<T>>::Values>, M::KeyColumn>:
            Query + KeyQuery<C, TargetId<M>>,
    {
        async fn write(
            conn: &mut C,
            write: SyncedInsert<T, V, M, Plain>,
        ) -> QueryResult<(usize, Vec<TargetId<M>>)> {
            let mut ids = Vec::new();
            for row in write.values.rows() {
                let returned: Vec<TargetId<M>> = diesel::insert_into(write.table)
                    .values(row)
                    .returning(<M::KeyColumn as Default>::default())
                    .load_keys(conn)
                    .await?;
                ids.extend(returned);
            }
            Ok((ids.len(), ids))
        }
    }

    /// Rows that carry their keys: one bare `INSERT` per row.
    impl<C, T, V, M> WriteIds<C, SyncedInsert<T, V, M, KeysFromRows>> for Sqlite
    where
        C: AsyncConnectionCore<Backend = Sqlite>,
        M: Synced<Table = T>,
        T: Table + Copy + Send,
        V: InsertRows + SyncedRows<M::Target> + Send,
        V::Row: Insertable<T> + Send,
        InsertStatement<T, <V::Row as Insertable<T>>::Values>: ExecuteDsl<C>,
    {
        async fn write(
            conn: &mut C,
            write: SyncedInsert<T, V, M, KeysFromRows>,
        ) -> QueryResult<(usize, Vec<TargetId<M>>)> {
            let ids = write.values.sync_keys();
            let mut affected = 0;
            for row in write.values.rows() {
                affected += diesel::insert_into(write.table)
                    .values(row)
                    .execute(conn)
                    .await?;
            }
            Ok((affected, ids))
        }
    }

    /// An upsert is one statement: SQLite accepts it for one row.
    impl<C, T, V, M, F, U, Op> WriteIds<C, SyncedInsert<T, V, M, Upsert<F>>> for Sqlite
    where
        C: AsyncConnectionCore<Backend = Sqlite>,
        M: Synced<Table = T>,
        T: Table + Send,
        V: Insertable<T> + Send,
        Upsert<F>: DecorateInsert<InsertStatement<T, V::Values>, Output = InsertStatement<T, U, Op>>
            + Send,
        Returning<InsertStatement<T, U, Op>, M::KeyColumn>: Query + KeyQuery<C, TargetId<M>>,
    {
        async fn write(
            conn: &mut C,
            write: SyncedInsert<T, V, M, Upsert<F>>,
        ) -> QueryResult<(usize, Vec<TargetId<M>>)> {
            let insert = diesel::insert_into(write.table).values(write.values);
            let ids: Vec<TargetId<M>> = write
                .decorate
                .decorate(insert)
                .returning(<M::KeyColumn as Default>::default())
                .load_keys(conn)
                .await?;
            Ok((ids.len(), ids))
        }
    }
}

#[cfg(any(feature = "mysql", feature = "blocking-mysql"))]
pub(crate) mod mysql {
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
    use diesel_async::methods::ExecuteDsl;
    use diesel_async::AsyncConnectionCore;
    use diesel_async::RunQueryDsl;

    use diesel::query_builder::QueryId;
    use diesel::QueryResult;

    use super::{KeyQuery, TargetId, WriteIds};
    use crate::synced::Synced;
    use crate::write::{DecorateInsert, SyncedDelete, SyncedInsert, SyncedRows, SyncedUpdate};

    /// `<query> FOR UPDATE`: Diesel's own locking clause type is not nameable in bounds.
    #[derive(Debug, Clone, Copy, QueryId)]
    pub struct ForUpdate<Q>(pub(crate) Q);

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

    type AffectedKeys<S, M> = ForUpdate<<Select<S, <M as Synced>::KeyColumn> as AsQuery>::Query>;

    /// Selects the keys of the rows `source` matches, locking them until the transaction ends.
    async fn affected_keys<C, S, M>(conn: &mut C, source: S) -> QueryResult<Vec<TargetId<M>>>
    where
        C: AsyncConnectionCore<Backend = Mysql>,
        M: Synced,
        S: IntoUpdateTarget<Table = M::Table> + SelectDsl<M::KeyColumn>,
        Select<S, M::KeyColumn>: AsQuery,
        AffectedKeys<S, M>: KeyQuery<C, TargetId<M>>,
    {
        ForUpdate(
            source
                .select(<M::KeyColumn as Default>::default())
                .as_query(),
        )
        .load_keys(conn)
        .await
    }

    impl<C, S, V, M> WriteIds<C, SyncedUpdate<S, V, M>> for Mysql
    where
        C: AsyncConnectionCore<Backend = Mysql>,
        M: Synced,
        S: IntoUpdateTarget<Table = M::Table> + SelectDsl<M::KeyColumn> + Clone + Send,
        Select<S, M::KeyColumn>: AsQuery,
        AffectedKeys<S, M>: KeyQuery<C, TargetId<M>>,
        V: AsChangeset<Target = S::Table> + Send,
        Update<S, V>: AsQuery + ExecuteDsl<C>,
    {
        async fn write(
            conn: &mut C,
            write: SyncedUpdate<S, V, M>,
        ) -> QueryResult<(usize, Vec<TargetId<M>>)> {
            let ids = affected_keys::<C, S, M>(conn, write.source.clone()).await?;
            let affected = diesel::update(write.source)
                .set(write.changes)
                .execute(conn)
                .await?;
            Ok((affected, ids))
        }
    }

    impl<C, S, M> WriteIds<C, SyncedDelete<S, M>> for Mysql
    where
        C: AsyncConnectionCore<Backend = Mysql>,
        M: Synced,
        S: IntoUpdateTarget<Table = M::Table> + SelectDsl<M::KeyColumn> + Clone + Send,
        Select<S, M::KeyColumn>: AsQuery,
        AffectedKeys<S, M>: KeyQuery<C, TargetId<M>>,
        Delete<S>: ExecuteDsl<C>,
    {
        async fn write(
            conn: &mut C,
            write: SyncedDelete<S, M>,
        ) -> QueryResult<(usize, Vec<TargetId<M>>)> {
            let ids = affected_keys::<C, S, M>(conn, write.source.clone()).await?;
            let affected = diesel::delete(write.source).execute(conn).await?;
            Ok((affected, ids))
        }
    }

    impl<C, T, V, M, D, Out> WriteIds<C, SyncedInsert<T, V, M, D>> for Mysql
    where
        C: AsyncConnectionCore<Backend = Mysql>,
        M: Synced<Table = T>,
        T: Table + Send,
        V: Insertable<T> + SyncedRows<M::Target> + Send,
        D: DecorateInsert<InsertStatement<T, V::Values>, Output = Out> + Send,
        Out: ExecuteDsl<C>,
    {
        async fn write(
            conn: &mut C,
            write: SyncedInsert<T, V, M, D>,
        ) -> QueryResult<(usize, Vec<TargetId<M>>)> {
            let ids = write.values.sync_keys();
            let insert = diesel::insert_into(write.table).values(write.values);
            let affected = write.decorate.decorate(insert).execute(conn).await?;
            Ok((affected, ids))
        }
    }
}
