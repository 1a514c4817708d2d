//! Durable mode's statements over Diesel's synchronous connections: the same outbox rows,
//! claims, locks and outcomes as the async side's [`OutboxBackend`](crate::OutboxBackend), run
//! by a synchronous registry's connections (the outbox rows of a COMMIT) and its worker (on
//! blocking threads of the registry's own runtime).
// Built with no synchronous backend, the module has nothing to implement.
#![cfg_attr(
    not(any(
        feature = "sqlite",
        feature = "blocking-postgres",
        feature = "blocking-mysql"
    )),
    allow(unused_imports, unused_macros)
)]

use diesel::connection::{Connection, LoadConnection};
use diesel::prelude::*;
use diesel::QueryResult;

use crate::outbox::{
    lock_name, lock_taken, now_ms, outbox, same_attempts, Claim, DeadEntry, Entry, LockTaken,
    NewEntry,
};

/// A backend whose synchronous connections write and deliver the outbox. Implemented for
/// PostgreSQL and MySQL (with `blocking-postgres`, `blocking-mysql`) and SQLite.
pub trait BlockingOutbox: diesel::backend::Backend {
    /// Writes `entries` in one statement. Not public API.
    #[doc(hidden)]
    fn append<C: Connection<Backend = Self>>(
        conn: &mut C,
        entries: Vec<NewEntry>,
    ) -> QueryResult<()>;

    /// Claims rows, skipping those another worker holds locked. Not public API.
    #[doc(hidden)]
    fn claim<C: Connection<Backend = Self> + LoadConnection>(
        conn: &mut C,
        claim: &Claim,
    ) -> QueryResult<Vec<Entry>>;

    /// Deletes the delivered rows and writes the failed ones, in one transaction. Not public
    /// API.
    #[doc(hidden)]
    fn finish<C: Connection<Backend = Self>>(
        conn: &mut C,
        done: &[i64],
        failed: Vec<NewEntry>,
    ) -> QueryResult<()>;

    /// How many rows wait for delivery, dead ones left out. Not public API.
    #[doc(hidden)]
    fn live<C: Connection<Backend = Self> + LoadConnection>(conn: &mut C) -> QueryResult<i64>;

    /// The dead rows, oldest first. Not public API.
    #[doc(hidden)]
    fn dead<C: Connection<Backend = Self> + LoadConnection>(
        conn: &mut C,
    ) -> QueryResult<Vec<DeadEntry>>;

    /// Makes dead row `id` (every dead row with `None`) claimable again, its attempts reset.
    /// Not public API.
    #[doc(hidden)]
    fn revive<C: Connection<Backend = Self>>(conn: &mut C, id: Option<i64>) -> QueryResult<usize>;

    /// Deletes dead row `id` (every dead row with `None`). Not public API.
    #[doc(hidden)]
    fn discard<C: Connection<Backend = Self>>(conn: &mut C, id: Option<i64>) -> QueryResult<usize>;

    /// Takes (`take`) or releases a model's delivery lock. Not public API.
    #[doc(hidden)]
    fn model_lock<C: Connection<Backend = Self> + LoadConnection>(
        conn: &mut C,
        model: &str,
        take: bool,
    ) -> QueryResult<()>;
}

/// Implements [`BlockingOutbox`] for a backend, as `outbox_backend!` does the async side.
macro_rules! blocking_outbox {
    (
        $backend:ty,
        lock: $lock:expr,
        unlock: $unlock:expr,
        |$select:ident| $locked:expr
    ) => {
        impl BlockingOutbox for $backend {
            fn append<C: Connection<Backend = Self>>(
                conn: &mut C,
                entries: Vec<NewEntry>,
            ) -> QueryResult<()> {
                diesel::insert_into(outbox::table)
                    .values(entries)
                    .execute(conn)
                    .map(drop)
            }

            fn claim<C: Connection<Backend = Self> + LoadConnection>(
                conn: &mut C,
                claim: &Claim,
            ) -> QueryResult<Vec<Entry>> {
                conn.transaction(|conn| {
                    let $select = outbox::table
                        .select((outbox::id, outbox::attempts))
                        .filter(outbox::dead_at.is_null())
                        .filter(outbox::available_at.le(claim.now))
                        .order(outbox::id)
                        .limit(claim.rows);
                    let ids = same_attempts($locked.load(conn)?);
                    if ids.is_empty() {
                        return Ok(Vec::new());
                    }
                    diesel::update(outbox::table.filter(outbox::id.eq_any(&ids)))
                        .set((
                            outbox::available_at.eq(claim.lease_ends),
                            outbox::claimed_by.eq(&claim.worker),
                            outbox::attempts.eq(outbox::attempts + 1),
                        ))
                        .execute(conn)?;
                    outbox::table
                        .filter(outbox::id.eq_any(&ids))
                        .order(outbox::id)
                        .select(Entry::as_select())
                        .load(conn)
                })
            }

            fn finish<C: Connection<Backend = Self>>(
                conn: &mut C,
                done: &[i64],
                failed: Vec<NewEntry>,
            ) -> QueryResult<()> {
                conn.transaction(|conn| {
                    if !done.is_empty() {
                        diesel::delete(outbox::table.filter(outbox::id.eq_any(done)))
                            .execute(conn)?;
                    }
                    if !failed.is_empty() {
                        Self::append(conn, failed)?;
                    }
                    Ok(())
                })
            }

            fn live<C: Connection<Backend = Self> + LoadConnection>(
                conn: &mut C,
            ) -> QueryResult<i64> {
                outbox::table
                    .filter(outbox::dead_at.is_null())
                    .count()
                    .get_result(conn)
            }

            fn dead<C: Connection<Backend = Self> + LoadConnection>(
                conn: &mut C,
            ) -> QueryResult<Vec<DeadEntry>> {
                outbox::table
                    .filter(outbox::dead_at.is_not_null())
                    .order(outbox::id)
                    .select(DeadEntry::as_select())
                    .load(conn)
            }

            fn revive<C: Connection<Backend = Self>>(
                conn: &mut C,
                id: Option<i64>,
            ) -> QueryResult<usize> {
                let dead = outbox::table
                    .filter(outbox::dead_at.is_not_null())
                    .into_boxed();
                let dead = match id {
                    Some(id) => dead.filter(outbox::id.eq(id)),
                    None => dead,
                };
                diesel::update(outbox::table.filter(outbox::id.eq_any(dead.select(outbox::id))))
                    .set((
                        outbox::dead_at.eq(None::<i64>),
                        outbox::attempts.eq(0),
                        outbox::available_at.eq(now_ms()),
                        outbox::claimed_by.eq(None::<String>),
                    ))
                    .execute(conn)
            }

            fn discard<C: Connection<Backend = Self>>(
                conn: &mut C,
                id: Option<i64>,
            ) -> QueryResult<usize> {
                let dead = outbox::dead_at.is_not_null();
                match id {
                    Some(id) => {
                        diesel::delete(outbox::table.filter(dead).filter(outbox::id.eq(id)))
                            .execute(conn)
                    }
                    None => diesel::delete(outbox::table.filter(dead)).execute(conn),
                }
            }

            fn model_lock<C: Connection<Backend = Self> + LoadConnection>(
                conn: &mut C,
                model: &str,
                take: bool,
            ) -> QueryResult<()> {
                let Some(sql) = (if take { $lock } else { $unlock }) else {
                    return Ok(());
                };
                let rows: Vec<LockTaken> = diesel::sql_query(sql)
                    .bind::<diesel::sql_types::Text, _>(lock_name(model))
                    .load(conn)?;
                lock_taken(model, rows)
            }
        }
    };
}

#[cfg(feature = "blocking-postgres")]
blocking_outbox!(
    diesel::pg::Pg,
    lock: Some(crate::outbox::PG_LOCK),
    unlock: Some(crate::outbox::PG_UNLOCK),
    |select| select.for_update().skip_locked()
);
#[cfg(feature = "blocking-mysql")]
blocking_outbox!(
    diesel::mysql::Mysql,
    lock: Some(crate::outbox::MYSQL_LOCK),
    unlock: Some(crate::outbox::MYSQL_UNLOCK),
    |select| select.for_update().skip_locked()
);
#[cfg(feature = "sqlite")]
blocking_outbox!(
    diesel::sqlite::Sqlite,
    lock: None::<&str>,
    unlock: None::<&str>,
    |select| select
);
