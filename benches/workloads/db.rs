//! The three connection kinds: a fresh database per run, seeding, and every workload's
//! transaction written twice, once through `diesel_sync` and once as bare diesel-async.

use std::time::Instant;

use futures_util::FutureExt;

use diesel::result::Error;
use diesel::{ExpressionMethods, QueryDsl, QueryResult, SelectableHelper};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{
    AsyncConnection, AsyncConnectionCore, AsyncMysqlConnection, AsyncPgConnection, RunQueryDsl,
    SimpleAsyncConnection,
};
use diesel_sync::{CaptureConnection, Durable, Registry, SyncBackend, SyncedConnection};

use crate::recorder::Recorder;
use crate::schema::{price_records, products, Backend, PriceRecord, Product};

/// The synced connection over `D`'s connection kind.
pub(crate) type SyncedConn<D> = SyncedConnection<<D as Db>::Conn>;

/// Rows per statement when seeding: under each backend's bind limit (4 binds per product).
const SEED_CHUNK: usize = 8_000;

/// What the collector held at its peak while ids were pending.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Footprint {
    /// `conn.pending_ids()` at the end of the registrations.
    pub(crate) pending: usize,
    /// Peak heap bytes above the level before the first registration.
    pub(crate) peak_bytes: u64,
}

/// A connection kind, and the workloads' transactions on it.
pub(crate) trait Db: 'static {
    /// The diesel-async connection.
    type Conn: CaptureConnection;
    const BACKEND: Backend;
    /// The connection kind, as result lines name it.
    const CONNECTION: &'static str;
    /// Ids per resolve query (`SyncBackend::MAX_IDS_PER_QUERY`).
    const RESOLVE_CHUNK: usize;

    /// A registry whose only handler is `recorder`, for this connection kind.
    fn registry(recorder: &Recorder) -> Registry<SyncedConn<Self>>;
    /// [`Db::registry`], durable: delivered from the outbox of the database at `url`.
    fn durable_registry(recorder: &Recorder, url: &str) -> Registry<SyncedConn<Self>>;

    async fn seed_products(conn: &mut Self::Conn, rows: Vec<Product>) -> QueryResult<()>;
    async fn seed_price_records(conn: &mut Self::Conn, rows: Vec<PriceRecord>) -> QueryResult<()>;
    async fn price_record_ids(conn: &mut Self::Conn) -> QueryResult<Vec<i64>>;
    /// Loads the products of `ids`, `chunk` ids per query: the query resolve runs, bare.
    async fn load_products(conn: &mut Self::Conn, ids: &[i64], chunk: usize) -> QueryResult<usize>;

    /// W1 and scale: one transaction inserting `rows`, `chunk` rows per `insert_into`, with
    /// `keys_from_rows()` when `keys_from_rows`. Returns the instant the body finished (what
    /// follows is COMMIT, resolve and dispatch).
    async fn insert_synced(
        conn: &mut SyncedConn<Self>,
        rows: &[PriceRecord],
        chunk: usize,
        keys_from_rows: bool,
    ) -> QueryResult<Instant>;
    /// W1base: the same statements with bare Diesel (one row per statement on SQLite, as the
    /// synced insert runs there). With `returning`, each statement also returns the
    /// `object_id` of its rows as the synced insert's statement does (PostgreSQL, SQLite;
    /// MySQL has no `RETURNING`: the synced insert reads the keys from the rows there).
    async fn insert_bare(
        conn: &mut Self::Conn,
        rows: &[PriceRecord],
        chunk: usize,
        returning: bool,
    ) -> QueryResult<Instant>;

    /// W2/W3: one transaction saving each row in turn, then failing if `fail`. Returns the
    /// instant the body finished (what follows is COMMIT, resolve and dispatch).
    async fn saves_synced(
        conn: &mut SyncedConn<Self>,
        rows: &[PriceRecord],
        fail: bool,
    ) -> QueryResult<Instant>;
    async fn saves_bare(
        conn: &mut Self::Conn,
        rows: &[PriceRecord],
        fail: bool,
    ) -> QueryResult<Instant>;

    /// W4: saves `outer`, then a savepoint saves `inner` and fails; the outer commits.
    async fn savepoint_synced(
        conn: &mut SyncedConn<Self>,
        outer: &[PriceRecord],
        inner: &[PriceRecord],
    ) -> QueryResult<()>;
    async fn savepoint_bare(
        conn: &mut Self::Conn,
        outer: &[PriceRecord],
        inner: &[PriceRecord],
    ) -> QueryResult<()>;

    /// W5: one transaction, `UPDATE price_records SET amount_cents = 1234 WHERE id IN (ids)`.
    async fn bulk_update_synced(conn: &mut SyncedConn<Self>, ids: &[i64]) -> QueryResult<usize>;
    async fn bulk_update_bare(conn: &mut Self::Conn, ids: &[i64]) -> QueryResult<usize>;

    /// Registers `outer` (one `mark_changed` per inner `Vec`, as each write registers its ids)
    /// in a transaction, then `inner` in a savepoint if it is not empty, and measures the
    /// collector's peak heap; then rolls everything back.
    async fn collector_footprint(
        conn: &mut SyncedConn<Self>,
        outer: &[Vec<i64>],
        inner: &[Vec<i64>],
    ) -> QueryResult<Footprint>;
}

/// Registers each list of ids as one write would. Inside a transaction registering never
/// waits, so it completes on the first poll, on this thread, where the allocations are counted.
fn register<C>(conn: &mut SyncedConnection<C>, writes: &[Vec<i64>])
where
    C: CaptureConnection,
{
    for ids in writes {
        conn.mark_changed::<Product>(ids.iter().copied())
            .now_or_never()
            .expect("registering inside a transaction does not wait");
    }
}

/// Ends a measuring transaction: rolls it back, carrying the measurement out.
enum Stop {
    Measured(Footprint),
    Db(Error),
}

impl From<Error> for Stop {
    fn from(error: Error) -> Self {
        Stop::Db(error)
    }
}

/// Seeding and bare multi-row inserts: the part that differs per connection kind.
trait Bulk {
    async fn seed_products(&mut self, rows: Vec<Product>) -> QueryResult<()>;
    async fn seed_price_records(&mut self, rows: Vec<PriceRecord>) -> QueryResult<()>;
}

/// W1's statements, plain Diesel, run alike on the bare and the synced connection: one row per
/// statement on SQLite (diesel-async has no multi-row insert there), all rows at once
/// elsewhere. With `returning`, each statement also returns the rows' `object_id`s.
trait InsertRows {
    async fn insert_rows(&mut self, rows: &[PriceRecord], returning: bool) -> QueryResult<()>;
}

/// Implements [`InsertRows`] with one body for a bare connection and its synced wrapper.
macro_rules! insert_rows {
    ($($conn:ty),* => |$this:ident, $rows:ident, $returning:ident| $body:block) => {$(
        impl InsertRows for $conn {
            async fn insert_rows(&mut self, $rows: &[PriceRecord], $returning: bool) -> QueryResult<()> {
                let $this = self;
                $body
            }
        }
    )*};
}

insert_rows!(
    SyncConnectionWrapper<diesel::SqliteConnection>,
    SyncedConnection<SyncConnectionWrapper<diesel::SqliteConnection>> => |conn, rows, returning| {
        for row in rows {
            let insert = diesel::insert_into(price_records::table).values(row);
            if returning {
                let keys: Vec<i64> = insert.returning(price_records::object_id).load(conn).await?;
                std::hint::black_box(keys);
            } else {
                insert.execute(conn).await?;
            }
        }
        Ok(())
    }
);

insert_rows!(
    AsyncPgConnection, SyncedConnection<AsyncPgConnection> => |conn, rows, returning| {
        let insert = diesel::insert_into(price_records::table).values(rows);
        if returning {
            let keys: Vec<i64> = insert.returning(price_records::object_id).load(conn).await?;
            std::hint::black_box(keys);
        } else {
            insert.execute(conn).await?;
        }
        Ok(())
    }
);

insert_rows!(
    AsyncMysqlConnection, SyncedConnection<AsyncMysqlConnection> => |conn, rows, _returning| {
        diesel::insert_into(price_records::table).values(rows).execute(conn).await.map(drop)
    }
);

/// SQLite over diesel-async has no multi-row insert: seed through the synchronous connection,
/// and insert one row per statement as the synced insert does.
impl Bulk for SyncConnectionWrapper<diesel::SqliteConnection> {
    async fn seed_products(&mut self, rows: Vec<Product>) -> QueryResult<()> {
        self.spawn_blocking(move |conn| {
            diesel::Connection::transaction(conn, |conn| {
                for chunk in rows.chunks(SEED_CHUNK) {
                    diesel::RunQueryDsl::execute(
                        diesel::insert_into(products::table).values(chunk),
                        conn,
                    )?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn seed_price_records(&mut self, rows: Vec<PriceRecord>) -> QueryResult<()> {
        self.spawn_blocking(move |conn| {
            diesel::Connection::transaction(conn, |conn| {
                for chunk in rows.chunks(SEED_CHUNK) {
                    diesel::RunQueryDsl::execute(
                        diesel::insert_into(price_records::table).values(chunk),
                        conn,
                    )?;
                }
                Ok(())
            })
        })
        .await
    }
}

macro_rules! bulk_multi_row {
    ($($conn:ty),*) => {$(
        impl Bulk for $conn {
            async fn seed_products(&mut self, rows: Vec<Product>) -> QueryResult<()> {
                self.transaction(async |conn| {
                    for chunk in rows.chunks(SEED_CHUNK) {
                        diesel::insert_into(products::table).values(chunk).execute(conn).await?;
                    }
                    Ok(())
                })
                .await
            }

            async fn seed_price_records(&mut self, rows: Vec<PriceRecord>) -> QueryResult<()> {
                self.transaction(async |conn| {
                    for chunk in rows.chunks(SEED_CHUNK) {
                        diesel::insert_into(price_records::table).values(chunk).execute(conn).await?;
                    }
                    Ok(())
                })
                .await
            }

        }
    )*};
}

bulk_multi_row!(AsyncPgConnection, AsyncMysqlConnection);

/// W2–W5's transactions, written once for both sides: the same plain Diesel statements, run on
/// the synced connection (which captures them) and on the bare one.
macro_rules! twin_transactions {
    ($conn:ty, $saves:ident, $savepoint:ident, $bulk_update:ident) => {
        async fn $saves(
            conn: &mut $conn,
            rows: &[PriceRecord],
            fail: bool,
        ) -> QueryResult<Instant> {
            conn.transaction(async |conn| {
                for row in rows {
                    diesel::insert_into(price_records::table)
                        .values(row)
                        .execute(conn)
                        .await?;
                }
                if fail {
                    return Err(Error::RollbackTransaction);
                }
                Ok(Instant::now())
            })
            .await
        }

        async fn $savepoint(
            conn: &mut $conn,
            outer: &[PriceRecord],
            inner: &[PriceRecord],
        ) -> QueryResult<()> {
            conn.transaction(async |conn| {
                for row in outer {
                    diesel::insert_into(price_records::table)
                        .values(row)
                        .execute(conn)
                        .await?;
                }
                let nested = conn
                    .transaction(async |conn| {
                        for row in inner {
                            diesel::insert_into(price_records::table)
                                .values(row)
                                .execute(conn)
                                .await?;
                        }
                        Err::<(), _>(Error::RollbackTransaction)
                    })
                    .await;
                match nested {
                    Err(Error::RollbackTransaction) => Ok(()),
                    Err(other) => Err(other),
                    Ok(()) => unreachable!("the savepoint always fails"),
                }
            })
            .await
        }

        async fn $bulk_update(conn: &mut $conn, ids: &[i64]) -> QueryResult<usize> {
            conn.transaction(async |conn| {
                diesel::update(price_records::table.filter(price_records::id.eq_any(ids)))
                    .set(price_records::amount_cents.eq(1234_i64))
                    .execute(conn)
                    .await
            })
            .await
        }
    };
}

/// The workloads' transactions on one connection kind. Written once; the macro only fills in
/// the concrete connection type, which keeps diesel-async's bounds out of generic code.
macro_rules! db {
    ($db:ident, $conn:ty, $backend:expr, $kind:literal) => {
        #[derive(Debug)]
        pub(crate) struct $db;

        impl Db for $db {
            type Conn = $conn;
            const BACKEND: Backend = $backend;
            const CONNECTION: &'static str = $kind;
            const RESOLVE_CHUNK: usize =
                <<$conn as AsyncConnectionCore>::Backend as SyncBackend>::MAX_IDS_PER_QUERY;

            fn registry(recorder: &Recorder) -> Registry<SyncedConn<Self>> {
                recorder.registry()
            }

            fn durable_registry(recorder: &Recorder, url: &str) -> Registry<SyncedConn<Self>> {
                recorder.builder().durable(Durable::new(url)).build()
            }

            async fn seed_products(conn: &mut $conn, rows: Vec<Product>) -> QueryResult<()> {
                Bulk::seed_products(conn, rows).await
            }

            async fn seed_price_records(
                conn: &mut $conn,
                rows: Vec<PriceRecord>,
            ) -> QueryResult<()> {
                Bulk::seed_price_records(conn, rows).await
            }

            async fn price_record_ids(conn: &mut $conn) -> QueryResult<Vec<i64>> {
                price_records::table
                    .select(price_records::id)
                    .order(price_records::id)
                    .load(conn)
                    .await
            }

            async fn load_products(
                conn: &mut $conn,
                ids: &[i64],
                chunk: usize,
            ) -> QueryResult<usize> {
                let mut loaded = 0;
                for part in ids.chunks(chunk) {
                    let rows: Vec<Product> = products::table
                        .filter(products::id.eq_any(part))
                        .select(Product::as_select())
                        .load(conn)
                        .await?;
                    loaded += rows.len();
                }
                Ok(loaded)
            }

            async fn insert_synced(
                conn: &mut SyncedConnection<$conn>,
                rows: &[PriceRecord],
                chunk: usize,
                keys_from_rows: bool,
            ) -> QueryResult<Instant> {
                conn.transaction(async |conn| {
                    for part in rows.chunks(chunk) {
                        if keys_from_rows {
                            diesel_sync::insert_into(price_records::table)
                                .values(part)
                                .keys_from_rows()
                                .execute(conn)
                                .await?;
                        } else {
                            // The bare side's statements, captured by the connection.
                            conn.insert_rows(part, false).await?;
                        }
                    }
                    Ok(Instant::now())
                })
                .await
            }

            async fn insert_bare(
                conn: &mut $conn,
                rows: &[PriceRecord],
                chunk: usize,
                returning: bool,
            ) -> QueryResult<Instant> {
                conn.transaction(async |conn| {
                    for part in rows.chunks(chunk) {
                        conn.insert_rows(part, returning).await?;
                    }
                    Ok(Instant::now())
                })
                .await
            }

            twin_transactions!(
                SyncedConnection<$conn>,
                saves_synced,
                savepoint_synced,
                bulk_update_synced
            );
            twin_transactions!($conn, saves_bare, savepoint_bare, bulk_update_bare);

            async fn collector_footprint(
                conn: &mut SyncedConnection<$conn>,
                outer: &[Vec<i64>],
                inner: &[Vec<i64>],
            ) -> QueryResult<Footprint> {
                let result = conn
                    .transaction(async |conn| {
                        // BEGIN has run: the frame exists, and nothing is registered yet.
                        let outer_level = allocation_counter::measure(|| register(conn, outer));
                        if inner.is_empty() {
                            return Err::<(), _>(Stop::Measured(Footprint {
                                pending: conn.pending_ids(),
                                peak_bytes: outer_level.bytes_max,
                            }));
                        }
                        let outer_kept = u64::try_from(outer_level.bytes_current).unwrap_or(0);
                        // The SAVEPOINT's own allocations are not the collector's: measure
                        // the nested level from after it, on top of what the outer level keeps.
                        let nested = conn
                            .transaction(async |conn| {
                                let nested_level =
                                    allocation_counter::measure(|| register(conn, inner));
                                Err::<(), _>(Stop::Measured(Footprint {
                                    pending: conn.pending_ids(),
                                    peak_bytes: nested_level.bytes_max,
                                }))
                            })
                            .await;
                        match nested {
                            Err(Stop::Measured(nested)) => Err(Stop::Measured(Footprint {
                                pending: nested.pending,
                                peak_bytes: outer_level
                                    .bytes_max
                                    .max(outer_kept + nested.peak_bytes),
                            })),
                            Err(error) => Err(error),
                            Ok(()) => unreachable!("the measuring savepoint always rolls back"),
                        }
                    })
                    .await;
                match result {
                    Err(Stop::Measured(footprint)) => Ok(footprint),
                    Err(Stop::Db(error)) => Err(error),
                    Ok(()) => unreachable!("the measuring transaction always rolls back"),
                }
            }
        }
    };
}

db!(
    Sqlite,
    SyncConnectionWrapper<diesel::SqliteConnection>,
    Backend::Sqlite,
    "SyncConnectionWrapper<SqliteConnection>"
);
db!(
    Postgres,
    AsyncPgConnection,
    Backend::Postgres,
    "AsyncPgConnection"
);
db!(
    Mysql,
    AsyncMysqlConnection,
    Backend::Mysql,
    "AsyncMysqlConnection"
);

/// The server URL of a backend: `DIESEL_SYNC_POSTGRES_URL` / `DIESEL_SYNC_MYSQL_URL`, or the
/// local default.
pub(crate) fn server_url(backend: Backend) -> Option<String> {
    let (variable, default) = match backend {
        Backend::Sqlite => return None,
        Backend::Postgres => (
            "DIESEL_SYNC_POSTGRES_URL",
            "postgres://postgres@127.0.0.1:5432/test",
        ),
        Backend::Mysql => ("DIESEL_SYNC_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"),
    };
    Some(
        std::env::var(variable)
            .ok()
            .filter(|url| !url.is_empty())
            .unwrap_or_else(|| default.to_owned()),
    )
}

/// Creates an empty database named `name` (a SQLite file in a temp dir, a PostgreSQL schema,
/// a MySQL database) and returns the URL to connect to it.
pub(crate) async fn create_database(backend: Backend, name: &str) -> Result<String, String> {
    match backend {
        Backend::Sqlite => {
            let dir = std::env::temp_dir().join("diesel-sync-bench");
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let path = dir.join(format!("{name}.db"));
            remove_sqlite(&path.display().to_string());
            Ok(path.display().to_string())
        }
        Backend::Postgres => {
            let base = server_url(backend).expect("a server URL");
            let mut admin = AsyncPgConnection::establish(&base)
                .await
                .map_err(|e| format!("PostgreSQL at {base} is unreachable: {e}"))?;
            admin
                .batch_execute(&format!(
                    "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name};"
                ))
                .await
                .map_err(|e| e.to_string())?;
            let separator = if base.contains('?') { '&' } else { '?' };
            Ok(format!("{base}{separator}options=-csearch_path%3D{name}"))
        }
        Backend::Mysql => {
            let base = server_url(backend).expect("a server URL");
            let mut admin = AsyncMysqlConnection::establish(&base)
                .await
                .map_err(|e| format!("MySQL at {base} is unreachable: {e}"))?;
            admin
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name};"
                ))
                .await
                .map_err(|e| e.to_string())?;
            let server = base
                .rsplit_once('/')
                .map_or(base.as_str(), |(server, _)| server);
            Ok(format!("{server}/{name}"))
        }
    }
}

/// Drops what [`create_database`] made (best effort: a leftover is dropped by the next run).
pub(crate) async fn drop_database(backend: Backend, name: &str, url: &str) {
    match backend {
        Backend::Sqlite => remove_sqlite(url),
        Backend::Postgres => {
            if let Ok(mut admin) =
                AsyncPgConnection::establish(&server_url(backend).expect("a server URL")).await
            {
                let _ = admin
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                    .await;
            }
        }
        Backend::Mysql => {
            if let Ok(mut admin) =
                AsyncMysqlConnection::establish(&server_url(backend).expect("a server URL")).await
            {
                let _ = admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
                    .await;
            }
        }
    }
}

fn remove_sqlite(path: &str) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{path}{suffix}"));
    }
}
