//! The async kind of the behaviour suite: its steps run on a diesel-async connection wrapped in
//! `diesel_sync::SyncedConnection`, under the test's tokio runtime.
#![allow(dead_code, unreachable_pub)]

use diesel_sync::{Registry, SyncedConnection};

/// A fixture of the async kind: a synced diesel-async connection to a fresh database.
pub struct AsyncKind<C> {
    pub conn: SyncedConnection<C>,
    pub registry: Registry<SyncedConnection<C>>,
    pub capture: crate::common::Capture,
    pub url: String,
}

/// Runs a write the way `$write` (a [`Write`](crate::common::kind::Write)) says: `$typed` is
/// the diesel-sync statement, `$plain` the same statement in plain Diesel.
macro_rules! run_write {
    ($write:expr, $conn:ident, typed: $typed:expr, plain: $plain:expr $(,)?) => {
        match $write {
            Write::Typed => $typed.execute($conn).await?,
            Write::Plain => $plain.execute($conn).await?,
            Write::Unsynced => $plain.execute($conn.inner_mut()).await?,
        }
    };
}

/// Inserts rows the way `$insert` (an [`Insert`](crate::common::kind::Insert)) says. Plain
/// Diesel inserts one row per statement: `SQLite` over diesel-async has no multi-row insert.
macro_rules! run_insert {
    ($insert:expr, $conn:ident, $table:expr, $rows:expr) => {
        match $insert {
            Insert::Typed => {
                diesel_sync::insert_into($table)
                    .values($rows)
                    .execute($conn)
                    .await?
            }
            Insert::KeysFromRows => {
                diesel_sync::insert_into($table)
                    .values($rows)
                    .keys_from_rows()
                    .execute($conn)
                    .await?
            }
            Insert::Plain => {
                let mut inserted = 0;
                for row in $rows {
                    inserted += diesel::insert_into($table)
                        .values(row)
                        .execute($conn)
                        .await?;
                }
                inserted
            }
            Insert::Unsynced => {
                let mut inserted = 0;
                for row in $rows {
                    inserted += diesel::insert_into($table)
                        .values(row)
                        .execute($conn.inner_mut())
                        .await?;
                }
                inserted
            }
        }
    };
}

/// Inserts listings, whose keys only `RETURNING` can tell: `MySQL` has none.
macro_rules! insert_listings {
    (returning, $conn:ident, $rows:expr) => {
        diesel_sync::insert_into(listings::table)
            .values($rows)
            .execute($conn)
            .await?
    };
    (no_returning, $conn:ident, $rows:expr) => {{
        let _ = $rows;
        return Err(Failure::Unsupported(
            "a key the database generates needs RETURNING",
        ));
    }};
}

/// Implements [`Kind`](crate::common::kind::Kind) for one diesel-async connection: `$conflict`
/// is the upsert conflict target the backend accepts, `$listings` whether it has `RETURNING`.
macro_rules! async_kind {
    ($conn:ty, $backend:expr, $conflict:expr, $listings:ident) => {
        const _: () = {
            use diesel::result::Error;
            use diesel::{ExpressionMethods, QueryDsl, SelectableHelper};
            use diesel_async::{
                AsyncConnection, AsyncConnectionCore, RunQueryDsl, SaveChangesDsl,
                SimpleAsyncConnection, TransactionManager,
            };
            use diesel_sync::{Metrics, SyncBackend, SyncedConnection};
            use futures_util::future::BoxFuture;

            use crate::common::kind::{
                Checkpoint, End, Failure, Insert, Kind, Scope, Setup, Step, Trace, Write,
            };
            use crate::common::{
                audit, create_database, listings, price_records, product_notes, products, stores,
                Capture, PriceChange, Product, Seed, Store,
            };

            type Conn = SyncedConnection<$conn>;

            impl Kind for AsyncKind<$conn> {
                const BACKEND: crate::common::Backend = $backend;
                const MAX_IDS_PER_QUERY: usize =
                    <<$conn as AsyncConnectionCore>::Backend as SyncBackend>::MAX_IDS_PER_QUERY;
                const CAPTURES_PLAIN_UPSERTS: bool = true;

                async fn open(test: &str, setup: Setup) -> Self {
                    let backend = Self::BACKEND;
                    let url =
                        create_database(backend, &format!("async_{}_{test}", backend.name())).await;
                    let capture = Capture::default();
                    let registry = capture.registry_with(setup.sync_switch);
                    let inner = <$conn>::establish(&url).await.expect("connect");
                    let mut conn = SyncedConnection::new(inner, registry.clone());
                    conn.batch_execute(backend.schema()).await.expect("schema");
                    let seeded = crate::common::products(setup.products, setup.per_store);
                    conn.inner_mut().seed_products(seeded, backend).await;
                    if !setup.price_records.is_empty() {
                        conn.inner_mut()
                            .seed_price_records(setup.price_records, backend)
                            .await;
                    }
                    diesel::delete(audit::table)
                        .execute(conn.inner_mut())
                        .await
                        .expect("clear the audit");
                    AsyncKind {
                        conn,
                        registry,
                        capture,
                        url,
                    }
                }

                async fn run(&mut self, steps: &[Step]) -> Trace {
                    let mut trace = Trace::new();
                    let result = run_steps(&mut self.conn, &self.capture, steps, &mut trace).await;
                    trace.result = result;
                    trace
                }

                async fn settle(&self) {
                    self.registry.settled().await;
                }

                async fn begin_test_transaction(&mut self) {
                    self.conn
                        .begin_test_transaction()
                        .await
                        .expect("test transaction");
                }

                async fn product(&mut self, id: i64) -> Product {
                    products::table
                        .find(id)
                        .select(Product::as_select())
                        .first(&mut self.conn)
                        .await
                        .expect("product")
                }

                async fn product_ids(&mut self) -> Vec<i64> {
                    products::table
                        .select(products::id)
                        .order(products::id)
                        .load(self.conn.inner_mut())
                        .await
                        .expect("product ids")
                }

                async fn listing_ids(&mut self) -> Vec<i64> {
                    listings::table
                        .select(listings::id)
                        .order(listings::id)
                        .load(self.conn.inner_mut())
                        .await
                        .expect("listing ids")
                }

                async fn all_stores(&mut self) -> Vec<Store> {
                    stores::table
                        .select(Store::as_select())
                        .order(stores::id)
                        .load(self.conn.inner_mut())
                        .await
                        .expect("stores")
                }

                async fn all_products(&mut self) -> Vec<Product> {
                    products::table
                        .select(Product::as_select())
                        .order(products::id)
                        .load(self.conn.inner_mut())
                        .await
                        .expect("products")
                }

                async fn reset_records(&mut self) {
                    let inner = self.conn.inner_mut();
                    diesel::delete(audit::table)
                        .execute(inner)
                        .await
                        .expect("clear the audit");
                    diesel::delete(product_notes::table)
                        .execute(inner)
                        .await
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
                        .await
                        .expect("audit")
                }

                async fn audited(&mut self) -> Vec<i64> {
                    audit::table
                        .select(audit::target_id)
                        .distinct()
                        .order(audit::target_id)
                        .load(self.conn.inner_mut())
                        .await
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

            impl AsyncKind<$conn> {
                /// [`Kind::run`] on another synced connection of the same registry, such as a
                /// pooled one.
                pub async fn run_on(conn: &mut Conn, capture: &Capture, steps: &[Step]) -> Trace {
                    let mut trace = Trace::new();
                    trace.result = run_steps(conn, capture, steps, &mut trace).await;
                    trace
                }
            }

            /// Runs `steps` in order; the first that fails ends them. Boxed: a transaction
            /// step runs its own steps through here.
            fn run_steps<'a>(
                conn: &'a mut Conn,
                capture: &'a Capture,
                steps: &'a [Step],
                trace: &'a mut Trace,
            ) -> BoxFuture<'a, Result<(), Failure>> {
                Box::pin(async move {
                    for step in steps {
                        run_step(conn, capture, step, trace).await?;
                    }
                    Ok(())
                })
            }

            async fn run_step(
                conn: &mut Conn,
                capture: &Capture,
                step: &Step,
                trace: &mut Trace,
            ) -> Result<(), Failure> {
                match step {
                    Step::Transaction { steps, end } => {
                        let index = trace.begin();
                        let result = run_transaction(conn, capture, steps, *end, trace).await;
                        let still_open = matches!(
                            <Conn as AsyncConnection>::TransactionManager::transaction_manager_status_mut(conn)
                                .transaction_depth(),
                            Ok(Some(_))
                        );
                        trace.end(index, result, still_open);
                    }
                    Step::Checkpoint => {
                        conn.registry().settled().await;
                        trace.checkpoints.push(Checkpoint {
                            pending_ids: conn.pending_ids(),
                            delivered: capture.ids(),
                        });
                    }
                    Step::Fail => return Err(Failure::Rejected),
                    Step::MarkChanged { ids } => {
                        let autocommitted = autocommitting(conn, trace).await;
                        conn.mark_changed::<Product>(ids.iter().copied()).await;
                        trace.mark(ids, autocommitted);
                    }
                    Step::MarkRemoved { removed } => {
                        let autocommitted = autocommitting(conn, trace).await;
                        conn.mark_removed::<Product>(removed.iter().copied()).await;
                        let ids: Vec<i64> = removed.iter().map(|(id, _)| *id).collect();
                        trace.mark(&ids, autocommitted);
                    }
                    write => {
                        let affected = run_write_step(conn, write).await?;
                        trace.affected.push(affected);
                    }
                }
                Ok(())
            }

            /// Whether the program runs inside a `transaction()` whose database transaction
            /// `MySQL` already rolled back (after a deadlock), as the server says.
            async fn autocommitting(conn: &mut Conn, trace: &Trace) -> bool {
                if !matches!($backend, crate::common::Backend::Mysql) || trace.open.is_empty() {
                    return false;
                }
                let open: i64 = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
                    "CAST(@@in_transaction AS SIGNED)",
                ))
                .get_result(conn.inner_mut())
                .await
                .expect("@@in_transaction");
                open == 0
            }

            /// Runs `steps` in a `transaction()` that ends as `end` says. A panic is caught
            /// around the call; an abandoned one is dropped once its closure waits, between
            /// statements, as a cancelled request's future is.
            async fn run_transaction(
                conn: &mut Conn,
                capture: &Capture,
                steps: &[Step],
                end: End,
                trace: &mut Trace,
            ) -> Result<(), Failure> {
                use futures_util::future::{self, Either};
                use futures_util::FutureExt;
                let (waiting, abandoned) = tokio::sync::oneshot::channel::<()>();
                let transaction = conn.transaction(async move |conn| {
                    run_steps(conn, capture, steps, trace).await?;
                    match end {
                        End::Commit => Ok(()),
                        End::Rollback => Err(Failure::from(Error::RollbackTransaction)),
                        // Unwinds without the panic hook, so thousands of programs print
                        // nothing; the connection sees the same unwinding as from `panic!`.
                        End::Panic => std::panic::resume_unwind(Box::new("a bug in the closure")),
                        End::Abandon => {
                            let _ = waiting.send(());
                            future::pending().await
                        }
                    }
                });
                let transaction = std::panic::AssertUnwindSafe(transaction).catch_unwind();
                futures_util::pin_mut!(transaction);
                let outcome = match future::select(transaction, abandoned).await {
                    Either::Left((outcome, _)) => outcome,
                    // Dropped here, with no statement in flight.
                    Either::Right((Ok(()), _)) => return Err(Failure::Abandoned),
                    // The closure returned before waiting: let the transaction finish.
                    Either::Right((Err(_), transaction)) => transaction.await,
                };
                outcome.unwrap_or(Err(Failure::Panicked))
            }

            /// Runs a step that writes; returns the rows it reported.
            #[allow(clippy::too_many_lines)] // one arm per write step: it reads as a table
            async fn run_write_step(conn: &mut Conn, step: &Step) -> Result<usize, Failure> {
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
                            .first(conn)
                            .await?;
                        product.price_cents = *cents;
                        product.save_changes::<Product>(conn).await?;
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
                    Step::UpsertProducts { rows, cents, write } => {
                        // One row per statement: SQLite over diesel-async upserts one row at a
                        // time. Owned rows: a borrowed row's lifetimes in the upsert closure trip
                        // rustc's higher-ranked `Send` check of the boxed future.
                        let mut written = 0;
                        for row in rows {
                            written += run_write!(write, conn,
                                typed: diesel_sync::insert_into(products::table)
                                    .values(row.clone())
                                    .upsert(|insert| {
                                        insert
                                            .on_conflict($conflict)
                                            .do_update()
                                            .set(products::price_cents.eq(*cents))
                                    }),
                                plain: diesel::insert_into(products::table)
                                    .values(row.clone())
                                    .on_conflict($conflict)
                                    .do_update()
                                    .set(products::price_cents.eq(*cents)),
                            );
                        }
                        written
                    }
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
                    Step::RawSql { sql } => diesel::sql_query(*sql).execute(conn).await?,
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
                    Step::InsertNote { product_id } => {
                        diesel::insert_into(product_notes::table)
                            .values(product_notes::product_id.eq(*product_id))
                            .execute(conn)
                            .await?
                    }
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

async_kind!(
    diesel_async::sync_connection_wrapper::SyncConnectionWrapper<diesel::SqliteConnection>,
    crate::common::Backend::Sqlite,
    products::id,
    returning
);
#[cfg(diesel_sync_postgres)]
async_kind!(
    diesel_async::AsyncPgConnection,
    crate::common::Backend::Postgres,
    products::id,
    returning
);
#[cfg(diesel_sync_mysql)]
async_kind!(
    diesel_async::AsyncMysqlConnection,
    crate::common::Backend::Mysql,
    diesel::dsl::DuplicatedKeys,
    no_returning
);
