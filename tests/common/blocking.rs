//! What the synchronous suite adds to `common`: databases created without an ambient runtime,
//! seeding over Diesel's synchronous connections, and the blocking kind of the behaviour suite,
//! whose steps run on `diesel_sync::blocking::SyncedConnection` with no tokio runtime.
#![allow(dead_code, unreachable_pub)]

use diesel::prelude::*;

use super::{price_records, products, Backend, PriceRecord, Product};

/// [`super::create_database`], for a test with no tokio runtime: the setup runs on a runtime of
/// its own that is gone before the test body starts.
pub fn create_database_blocking(backend: Backend, name: &str) -> String {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("setup runtime")
        .block_on(super::create_database(backend, name))
}

/// Inserts rows without syncing them, over a synchronous connection.
pub trait SeedBlocking {
    fn seed_products(&mut self, rows: Vec<Product>, backend: Backend);
    fn seed_price_records(&mut self, rows: Vec<PriceRecord>, backend: Backend);
}

macro_rules! seed_blocking {
    ($($conn:ty),*) => {$(
        impl SeedBlocking for $conn {
            fn seed_products(&mut self, rows: Vec<Product>, backend: Backend) {
                self.transaction(|conn| {
                    for chunk in rows.chunks(backend.insert_chunk()) {
                        diesel::insert_into(products::table).values(chunk).execute(conn)?;
                    }
                    Ok::<_, diesel::result::Error>(())
                })
                .expect("seed products");
            }

            fn seed_price_records(&mut self, rows: Vec<PriceRecord>, _: Backend) {
                diesel::insert_into(price_records::table)
                    .values(&rows)
                    .execute(self)
                    .expect("seed price records");
            }
        }
    )*};
}

seed_blocking!(diesel::SqliteConnection);
#[cfg(feature = "blocking-postgres")]
seed_blocking!(diesel::PgConnection);
#[cfg(feature = "blocking-mysql")]
seed_blocking!(diesel::MysqlConnection);

/// A fixture of the blocking kind: a synced synchronous Diesel connection to a fresh database.
pub struct BlockingKind<C> {
    pub conn: diesel_sync::blocking::SyncedConnection<C>,
    pub registry: diesel_sync::Registry<diesel_sync::blocking::SyncedConnection<C>>,
    pub capture: crate::common::Capture,
    pub url: String,
}

/// Runs a write the way `$write` (a [`Write`](crate::common::kind::Write)) says: `$typed` is
/// the diesel-sync statement, `$plain` the same statement in plain Diesel.
macro_rules! run_write {
    ($write:expr, $conn:ident, typed: $typed:expr, plain: $plain:expr $(,)?) => {
        match $write {
            Write::Typed => $typed.execute_blocking($conn)?,
            Write::Plain => $plain.execute($conn)?,
            Write::Unsynced => $plain.execute($conn.inner_mut())?,
        }
    };
}

/// Inserts rows the way `$insert` (an [`Insert`](crate::common::kind::Insert)) says, all in one
/// statement.
macro_rules! run_insert {
    ($insert:expr, $conn:ident, $table:expr, $rows:expr) => {
        match $insert {
            Insert::Typed => diesel_sync::insert_into($table)
                .values($rows)
                .execute_blocking($conn)?,
            Insert::KeysFromRows => diesel_sync::insert_into($table)
                .values($rows)
                .keys_from_rows()
                .execute_blocking($conn)?,
            Insert::Plain => diesel::insert_into($table).values($rows).execute($conn)?,
            Insert::Unsynced => diesel::insert_into($table)
                .values($rows)
                .execute($conn.inner_mut())?,
        }
    };
}

/// Inserts listings, whose keys only `RETURNING` can tell: `MySQL` has none.
macro_rules! insert_listings {
    (returning, $conn:ident, $rows:expr) => {
        diesel_sync::insert_into(listings::table)
            .values($rows)
            .execute_blocking($conn)?
    };
    (no_returning, $conn:ident, $rows:expr) => {{
        let _ = $rows;
        return Err(Failure::Unsupported(
            "a key the database generates needs RETURNING",
        ));
    }};
}

/// Implements [`Kind`](crate::common::kind::Kind) for one synchronous Diesel connection:
/// `$conflict` is the upsert conflict target the backend accepts, `$listings` whether it has
/// `RETURNING`.
macro_rules! blocking_kind {
    ($conn:ty, $backend:expr, $conflict:expr, $listings:ident) => {
        const _: () = {
            use diesel::connection::SimpleConnection;
            use diesel::result::Error;
            use diesel::connection::TransactionManager;
            use diesel::{
                Connection, ExpressionMethods, QueryDsl, RunQueryDsl, SaveChangesDsl,
                SelectableHelper,
            };
            use diesel_sync::blocking::SyncedConnection;
            use diesel_sync::{Metrics, SyncBackend};

            use crate::common::kind::{
                Checkpoint, End, Failure, Insert, Kind, Scope, Setup, Step, Trace, Write,
            };
            use crate::common::{
                audit, listings, price_records, product_notes, products, stores, Backend, Capture,
                PriceChange, Product, Store,
            };

            type Conn = SyncedConnection<$conn>;

            impl BlockingKind<$conn> {
                /// [`Kind::open`], for the tests of this kind that run outside the suite.
                pub fn fixture(test: &str, setup: Setup) -> Self {
                    let backend = $backend;
                    let url = create_database_blocking(
                        backend,
                        &format!("blocking_{}_{test}", backend.name()),
                    );
                    assert!(
                        tokio::runtime::Handle::try_current().is_err(),
                        "a synchronous test has no runtime"
                    );
                    let capture = Capture::default();
                    let registry = capture.registry_with(setup.sync_switch);
                    let inner = <$conn>::establish(&url).expect("connect");
                    let mut conn = SyncedConnection::new(inner, registry.clone());
                    conn.batch_execute(backend.schema()).expect("schema");
                    let seeded = crate::common::products(setup.products, setup.per_store);
                    conn.inner_mut().seed_products(seeded, backend);
                    if !setup.price_records.is_empty() {
                        conn.inner_mut()
                            .seed_price_records(setup.price_records, backend);
                    }
                    diesel::delete(audit::table)
                        .execute(conn.inner_mut())
                        .expect("clear the audit");
                    BlockingKind {
                        conn,
                        registry,
                        capture,
                        url,
                    }
                }
            }

            impl Kind for BlockingKind<$conn> {
                const BACKEND: Backend = $backend;
                const MAX_IDS_PER_QUERY: usize =
                    <<$conn as Connection>::Backend as SyncBackend>::MAX_IDS_PER_QUERY;
                const CAPTURES_PLAIN_UPSERTS: bool = !matches!($backend, Backend::Mysql);

                async fn open(test: &str, setup: Setup) -> Self {
                    Self::fixture(test, setup)
                }

                async fn run(&mut self, steps: &[Step]) -> Trace {
                    let mut trace = Trace::new();
                    trace.result = run_steps(&mut self.conn, &self.capture, steps, &mut trace);
                    trace
                }

                async fn settle(&self) {
                    self.registry.settled_blocking();
                }

                async fn begin_test_transaction(&mut self) {
                    self.conn
                        .begin_test_transaction()
                        .expect("test transaction");
                }

                async fn product(&mut self, id: i64) -> Product {
                    products::table
                        .find(id)
                        .select(Product::as_select())
                        .first(&mut self.conn)
                        .expect("product")
                }

                async fn product_ids(&mut self) -> Vec<i64> {
                    products::table
                        .select(products::id)
                        .order(products::id)
                        .load(self.conn.inner_mut())
                        .expect("product ids")
                }

                async fn listing_ids(&mut self) -> Vec<i64> {
                    listings::table
                        .select(listings::id)
                        .order(listings::id)
                        .load(self.conn.inner_mut())
                        .expect("listing ids")
                }

                async fn all_stores(&mut self) -> Vec<Store> {
                    stores::table
                        .select(Store::as_select())
                        .order(stores::id)
                        .load(self.conn.inner_mut())
                        .expect("stores")
                }

                async fn all_products(&mut self) -> Vec<Product> {
                    products::table
                        .select(Product::as_select())
                        .order(products::id)
                        .load(self.conn.inner_mut())
                        .expect("products")
                }

                async fn reset_records(&mut self) {
                    let inner = self.conn.inner_mut();
                    diesel::delete(audit::table)
                        .execute(inner)
                        .expect("clear the audit");
                    diesel::delete(product_notes::table)
                        .execute(inner)
                        .expect("clear the notes");
                    self.capture.clear();
                }

                async fn audited_deletions(&mut self) -> Vec<i64> {
                    audit::table
                        .filter(audit::removed)
                        .select(audit::target_id)
                        .distinct()
                        .order(audit::target_id)
                        .load(self.conn.inner_mut())
                        .expect("audit")
                }

                async fn audited(&mut self) -> Vec<i64> {
                    audit::table
                        .select(audit::target_id)
                        .distinct()
                        .order(audit::target_id)
                        .load(self.conn.inner_mut())
                        .expect("audit")
                }

                fn capture(&self) -> &Capture {
                    &self.capture
                }

                fn metrics(&self) -> Metrics {
                    self.registry.metrics()
                }

                fn dead_letter_count(&self) -> usize {
                    self.registry.dead_letters().len()
                }

                fn pending_ids(&self) -> usize {
                    self.conn.pending_ids()
                }
            }

            impl BlockingKind<$conn> {
                /// [`Kind::run`] on another synced connection of the same registry, such as a
                /// pooled one.
                pub fn run_on(conn: &mut Conn, capture: &Capture, steps: &[Step]) -> Trace {
                    let mut trace = Trace::new();
                    trace.result = run_steps(conn, capture, steps, &mut trace);
                    trace
                }
            }

            /// Runs `steps` in order; the first that fails ends them.
            fn run_steps(
                conn: &mut Conn,
                capture: &Capture,
                steps: &[Step],
                trace: &mut Trace,
            ) -> Result<(), Failure> {
                steps
                    .iter()
                    .try_for_each(|step| run_step(conn, capture, step, trace))
            }

            fn run_step(
                conn: &mut Conn,
                capture: &Capture,
                step: &Step,
                trace: &mut Trace,
            ) -> Result<(), Failure> {
                match step {
                    Step::Transaction { steps, end } => {
                        let index = trace.begin();
                        let result = run_transaction(conn, capture, steps, *end, trace);
                        let still_open = matches!(
                            <Conn as Connection>::TransactionManager::transaction_manager_status_mut(conn)
                                .transaction_depth(),
                            Ok(Some(_))
                        );
                        trace.end(index, result, still_open);
                    }
                    Step::Checkpoint => {
                        conn.registry().settled_blocking();
                        trace.checkpoints.push(Checkpoint {
                            pending_ids: conn.pending_ids(),
                            delivered: capture.ids(),
                        });
                    }
                    Step::Fail => return Err(Failure::Rejected),
                    Step::MarkChanged { ids } => {
                        let autocommitted = autocommitting(conn, trace);
                        conn.mark_changed::<Product>(ids.iter().copied());
                        trace.mark(ids, autocommitted);
                    }
                    Step::MarkRemoved { removed } => {
                        let autocommitted = autocommitting(conn, trace);
                        conn.mark_removed::<Product>(removed.iter().copied());
                        let ids: Vec<i64> = removed.iter().map(|(id, _)| *id).collect();
                        trace.mark(&ids, autocommitted);
                    }
                    write => {
                        let affected = run_write_step(conn, write)?;
                        trace.affected.push(affected);
                    }
                }
                Ok(())
            }

            /// Whether the program runs inside a `transaction()` whose database transaction
            /// `MySQL` already rolled back (after a deadlock), as the server says.
            fn autocommitting(conn: &mut Conn, trace: &Trace) -> bool {
                if !matches!($backend, Backend::Mysql) || trace.open.is_empty() {
                    return false;
                }
                let open: i64 = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
                    "CAST(@@in_transaction AS SIGNED)",
                ))
                .get_result(conn.inner_mut())
                .expect("@@in_transaction");
                open == 0
            }

            /// Runs `steps` in a `transaction()` that ends as `end` says; a panic is caught
            /// around the call.
            fn run_transaction(
                conn: &mut Conn,
                capture: &Capture,
                steps: &[Step],
                end: End,
                trace: &mut Trace,
            ) -> Result<(), Failure> {
                if end == End::Abandon {
                    return Err(Failure::Unsupported("a synchronous call has no future to drop"));
                }
                let transaction = std::panic::AssertUnwindSafe(|| {
                    conn.transaction(|conn| {
                        run_steps(conn, capture, steps, trace)?;
                        match end {
                            End::Commit => Ok(()),
                            End::Rollback => Err(Failure::from(Error::RollbackTransaction)),
                            // Unwinds without the panic hook, so thousands of programs print
                            // nothing; the connection sees the same unwinding as from `panic!`.
                            End::Panic | End::Abandon => {
                                std::panic::resume_unwind(Box::new("a bug in the closure"))
                            }
                        }
                    })
                });
                std::panic::catch_unwind(transaction).unwrap_or(Err(Failure::Panicked))
            }

            /// Runs a step that writes; returns the rows it reported.
            #[allow(clippy::too_many_lines)] // one arm per write step: it reads as a table
            fn run_write_step(conn: &mut Conn, step: &Step) -> Result<usize, Failure> {
                let affected = match step {
                    Step::SetPrice { id, cents, write } => run_write!(write, conn,
                        typed: diesel_sync::update(products::table.find(*id))
                            .set(products::price_cents.eq(*cents)),
                        plain: diesel::update(products::table.find(*id))
                            .set(products::price_cents.eq(*cents)),
                    ),
                    Step::SetPriceFromForm { id, cents, write } => {
                        let form = PriceChange {
                            price_cents: *cents,
                        };
                        run_write!(write, conn,
                            typed: diesel_sync::update(products::table.find(*id)).set(&form),
                            plain: diesel::update(products::table.find(*id)).set(&form),
                        )
                    }
                    Step::SavePrice { id, cents } => {
                        let mut product: Product = products::table
                            .find(*id)
                            .select(Product::as_select())
                            .first(conn)?;
                        product.price_cents = *cents;
                        product.save_changes::<Product>(conn)?;
                        1
                    }
                    Step::RaisePrices {
                        scope,
                        cents,
                        write,
                    } => {
                        let raised = products::price_cents.eq(products::price_cents + *cents);
                        match scope {
                            Scope::All => run_write!(write, conn,
                                typed: diesel_sync::update(products::table).set(raised),
                                plain: diesel::update(products::table).set(raised),
                            ),
                            Scope::Store(store) => {
                                let source = products::table.filter(products::store_id.eq(*store));
                                run_write!(write, conn,
                                    typed: diesel_sync::update(source).set(raised),
                                    plain: diesel::update(source).set(raised),
                                )
                            }
                        }
                    }
                    Step::InsertProducts { rows, write } => {
                        run_insert!(write, conn, products::table, rows)
                    }
                    // The typed upsert writes every row in one statement; plain Diesel one row
                    // per statement, as Diesel's SQLite has no multi-row upsert.
                    Step::UpsertProducts { rows, cents, write } => match write {
                        Write::Typed => diesel_sync::insert_into(products::table)
                            .values(rows)
                            .upsert(|insert| {
                                insert
                                    .on_conflict($conflict)
                                    .do_update()
                                    .set(products::price_cents.eq(*cents))
                            })
                            .execute_blocking(conn)?,
                        Write::Plain | Write::Unsynced => {
                            let mut written = 0;
                            for row in rows {
                                let upsert = diesel::insert_into(products::table)
                                    .values(row)
                                    .on_conflict($conflict)
                                    .do_update()
                                    .set(products::price_cents.eq(*cents));
                                written += if *write == Write::Plain {
                                    upsert.execute(conn)?
                                } else {
                                    upsert.execute(conn.inner_mut())?
                                };
                            }
                            written
                        }
                    },
                    Step::DeleteProduct { id, write } => run_write!(write, conn,
                        typed: diesel_sync::delete(products::table.find(*id)),
                        plain: diesel::delete(products::table.find(*id)),
                    ),
                    Step::DeleteProducts { store, write } => {
                        let source = products::table.filter(products::store_id.eq(*store));
                        run_write!(write, conn,
                            typed: diesel_sync::delete(source),
                            plain: diesel::delete(source),
                        )
                    }
                    Step::RawSql { sql } => diesel::sql_query(*sql).execute(conn)?,
                    Step::InsertPriceRecords { rows, write } => {
                        run_insert!(write, conn, price_records::table, rows)
                    }
                    Step::SetAmount {
                        object_id,
                        cents,
                        write,
                    } => {
                        let source =
                            price_records::table.filter(price_records::object_id.eq(*object_id));
                        let amount = price_records::amount_cents.eq(*cents);
                        run_write!(write, conn,
                            typed: diesel_sync::update(source).set(amount),
                            plain: diesel::update(source).set(amount),
                        )
                    }
                    Step::DeletePriceRecords { up_to, write } => {
                        let source =
                            price_records::table.filter(price_records::object_id.le(*up_to));
                        run_write!(write, conn,
                            typed: diesel_sync::delete(source),
                            plain: diesel::delete(source),
                        )
                    }
                    Step::InsertListings { rows } => insert_listings!($listings, conn, rows),
                    Step::InsertNote { product_id } => diesel::insert_into(product_notes::table)
                        .values(product_notes::product_id.eq(*product_id))
                        .execute(conn)?,
                    Step::Transaction { .. }
                    | Step::Checkpoint
                    | Step::Fail
                    | Step::MarkChanged { .. }
                    | Step::MarkRemoved { .. } => unreachable!("not a write: {step:?}"),
                };
                Ok(affected)
            }
        };
    };
}

blocking_kind!(
    diesel::SqliteConnection,
    Backend::Sqlite,
    products::id,
    returning
);
#[cfg(all(diesel_sync_postgres, feature = "blocking-postgres"))]
blocking_kind!(
    diesel::PgConnection,
    Backend::Postgres,
    products::id,
    returning
);
#[cfg(all(diesel_sync_mysql, feature = "blocking-mysql"))]
blocking_kind!(
    diesel::MysqlConnection,
    Backend::Mysql,
    diesel::dsl::DuplicatedKeys,
    no_returning
);
