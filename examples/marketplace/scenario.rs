//! The origin scenario: prices change from the many code paths of an ordinary shop, and the
//! marketplace must end up with every committed price and nothing else.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::error::Error;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel_sync::{Registry, RetryPolicy};

use crate::client::MarketplaceClient;
use crate::marketplace::{Behaviour, Marketplace};

/// Prices written only by work that rolls back: the marketplace must never see one.
pub(crate) const ROLLED_BACK_PRICE: i64 = 9_000_000;

/// The size and weather of one run.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) database_url: String,
    pub(crate) stores: i64,
    pub(crate) products_per_store: i64,
    pub(crate) import_rows: usize,
    pub(crate) failure_rate: f64,
    pub(crate) requests_per_second: u32,
    pub(crate) progress: bool,
}

/// What a run did and whether the marketplace agrees with the database.
#[derive(Debug)]
pub(crate) struct Report {
    pub(crate) backend: &'static str,
    pub(crate) committed: u64,
    pub(crate) rolled_back: u64,
    pub(crate) ids_committed: u64,
    pub(crate) handler_calls: u64,
    pub(crate) accepted_calls: u64,
    pub(crate) refused_requests: u64,
    pub(crate) retries: u64,
    pub(crate) dead_letters: u64,
    pub(crate) batches_skipped: u64,
    pub(crate) elapsed: Duration,
    pub(crate) checks: Vec<Check>,
}

#[derive(Debug)]
pub(crate) struct Check {
    pub(crate) name: &'static str,
    pub(crate) passed: bool,
    pub(crate) detail: String,
}

impl Report {
    pub(crate) fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }

    pub(crate) fn print(&self) {
        let rows = [
            ("backend", self.backend.to_owned()),
            ("transactions committed", self.committed.to_string()),
            ("transactions rolled back", self.rolled_back.to_string()),
            ("ids handed on", self.ids_committed.to_string()),
            ("handler calls", self.handler_calls.to_string()),
            ("bulk updates accepted", self.accepted_calls.to_string()),
            (
                "requests refused (503/429)",
                self.refused_requests.to_string(),
            ),
            ("retries", self.retries.to_string()),
            ("dead letters", self.dead_letters.to_string()),
            (
                "batches skipped (sync off)",
                self.batches_skipped.to_string(),
            ),
            ("time", format!("{:.2} s", self.elapsed.as_secs_f64())),
        ];
        println!("\nsummary");
        println!("{}", "-".repeat(44));
        for (name, value) in rows {
            println!("{name:<28} {value:>15}");
        }
        println!("{}", "-".repeat(44));
        for check in &self.checks {
            let mark = if check.passed { "ok  " } else { "FAIL" };
            println!("{mark} {}: {}", check.name, check.detail);
        }
    }
}

/// Who wrote what, so the end state can be checked.
struct Ledger {
    committed: u64,
    rolled_back: u64,
    /// Committed transactions per store they touched.
    per_store: BTreeMap<i64, u64>,
    /// Stores whose sync switch is off now.
    off: BTreeSet<i64>,
    /// Products whose price committed work changed while their store synced.
    touched: BTreeSet<i64>,
    /// Products whose price committed work changed while their store's sync was off.
    unsynced: BTreeSet<i64>,
    /// Products the shop deleted.
    discontinued: BTreeSet<i64>,
    /// The store switched on mid-run, and after how many committed transactions.
    switched_on: Option<(i64, u64)>,
}

impl Ledger {
    fn new(off: impl IntoIterator<Item = i64>) -> Self {
        Ledger {
            committed: 0,
            rolled_back: 0,
            per_store: BTreeMap::new(),
            off: off.into_iter().collect(),
            touched: BTreeSet::new(),
            unsynced: BTreeSet::new(),
            discontinued: BTreeSet::new(),
            switched_on: None,
        }
    }

    fn commit(&mut self, products_per_store: i64, ids: impl IntoIterator<Item = i64>) {
        self.committed += 1;
        let ids: Vec<i64> = ids.into_iter().collect();
        let stores: BTreeSet<i64> = ids
            .iter()
            .map(|id| store_of(*id, products_per_store))
            .collect();
        for store in stores {
            *self.per_store.entry(store).or_default() += 1;
        }
        for id in ids {
            if self.off.contains(&store_of(id, products_per_store)) {
                self.unsynced.insert(id);
            } else {
                self.touched.insert(id);
            }
        }
    }

    fn switch_on(&mut self, store: i64) {
        self.off.remove(&store);
        self.switched_on = Some((store, self.committed));
    }
}

fn store_of(id: i64, products_per_store: i64) -> i64 {
    (id - 1) / products_per_store + 1
}

/// A deterministic price list: splitmix64.
struct Prices(u64);

impl Prices {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    #[allow(clippy::cast_possible_wrap)]
    fn below(&mut self, n: i64) -> i64 {
        (self.next() % n.unsigned_abs()) as i64
    }

    fn price(&mut self) -> i64 {
        100 + self.below(99_900)
    }
}

/// Runs the scenario on the backend `config.database_url` names.
pub(crate) async fn run(config: &Config) -> Result<Report, Box<dyn Error + Send + Sync>> {
    let url = config.database_url.as_str();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        postgres::run(config).await
    } else if url.starts_with("mysql://") {
        mysql::run(config).await
    } else {
        sqlite::run(config).await
    }
}

/// Shows transactions and deliveries while the scenario runs.
fn progress<Conn: 'static>(
    registry: &Registry<Conn>,
    transactions: &Arc<AtomicU64>,
    show: bool,
) -> tokio::task::JoinHandle<()> {
    let registry = registry.clone();
    let transactions = Arc::clone(transactions);
    tokio::spawn(async move {
        if !show {
            return;
        }
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tick.tick().await;
            let m = registry.metrics();
            let mut err = std::io::stderr();
            let _ = write!(
                err,
                "\r  transactions {:>6}  ids {:>7}  calls {:>5}  retries {:>4}  dead {:>3}  pending {:>3} ",
                transactions.load(Ordering::Relaxed),
                m.ids_committed,
                m.calls,
                m.retries,
                m.dead_letters,
                m.pending
            );
            let _ = err.flush();
        }
    })
}

/// The store switched on mid-run: its changes before the switch stay off the marketplace,
/// unless changed again after it; those after arrive.
fn switched_on_check(
    config: &Config,
    ledger: &Ledger,
    seen: &crate::marketplace::Ledger,
    missing: &[i64],
) -> Check {
    let (late_store, switched_after) = ledger.switched_on.unwrap_or((0, 0));
    let of_late = |id: &&i64| store_of(**id, config.products_per_store) == late_store;
    let late_after = ledger.touched.iter().filter(of_late).count();
    let late_only_before: Vec<i64> = ledger
        .unsynced
        .iter()
        .filter(of_late)
        .filter(|id| !ledger.touched.contains(id))
        .copied()
        .collect();
    let late_missing = missing.iter().filter(of_late).count();
    let sent_before_switch = late_only_before
        .iter()
        .filter(|id| seen.prices.contains_key(id))
        .count();
    Check {
        name: "a store switched on mid-run started syncing",
        passed: late_after > 0
            && late_missing == 0
            && !late_only_before.is_empty()
            && sent_before_switch == 0,
        detail: format!(
            "store {late_store} on after {switched_after} transactions: {} products changed only before ({sent_before_switch} sent), {late_after} after ({late_missing} missing)",
            late_only_before.len()
        ),
    }
}

/// The end-state checks, shared by every backend.
fn checks(
    config: &Config,
    marketplace: &Marketplace,
    ledger: &Ledger,
    database: &HashMap<i64, i64>,
    disabled_store: i64,
    dead: &HashSet<i64>,
) -> Vec<Check> {
    marketplace.ledger(|seen| {
        let missing: Vec<i64> = ledger
            .touched
            .iter()
            .filter(|id| seen.prices.get(id) != database.get(id) && !dead.contains(id))
            .copied()
            .collect();
        let leaked: Vec<i64> = seen
            .accepted
            .iter()
            .filter(|(_, p)| p.price_cents >= ROLLED_BACK_PRICE)
            .map(|(_, p)| p.id)
            .collect();
        let disabled_calls = seen.calls.get(&disabled_store).copied().unwrap_or(0)
            + seen
                .accepted
                .iter()
                .filter(|(store, _)| *store == disabled_store)
                .count() as u64
            + seen
                .unlisted
                .values()
                .filter(|store| **store == disabled_store)
                .count() as u64;
        let over: Vec<(i64, u64, u64)> = seen
            .calls
            .iter()
            .filter_map(|(store, calls)| {
                let transactions = ledger.per_store.get(store).copied().unwrap_or(0);
                (*calls > transactions).then_some((*store, *calls, transactions))
            })
            .collect();
        let still_listed: Vec<i64> = ledger
            .discontinued
            .iter()
            .filter(|id| store_of(**id, config.products_per_store) != disabled_store)
            .filter(|id| !dead.contains(id))
            .filter(|id| seen.prices.contains_key(id) || !seen.unlisted.contains_key(id))
            .copied()
            .collect();
        vec![
            Check {
                name: "every deleted product was unlisted",
                passed: still_listed.is_empty() && !ledger.discontinued.is_empty(),
                detail: format!(
                    "{} products deleted, {} unlisted, {} still listed",
                    ledger.discontinued.len(),
                    seen.unlisted.len(),
                    still_listed.len()
                ),
            },
            Check {
                name: "every committed price arrived",
                passed: missing.is_empty(),
                detail: format!(
                    "{} products changed, {} missing, {} dead-lettered",
                    ledger.touched.len(),
                    missing.len(),
                    dead.len()
                ),
            },
            Check {
                name: "nothing that rolled back arrived",
                passed: leaked.is_empty(),
                detail: format!("{} rolled-back prices seen", leaked.len()),
            },
            switched_on_check(config, ledger, seen, &missing),
            Check {
                name: "the store with sync off got nothing",
                passed: disabled_calls == 0,
                detail: format!("store {disabled_store}: {disabled_calls} calls or rows"),
            },
            Check {
                name: "at most one call per store per transaction",
                passed: over.is_empty(),
                detail: format!(
                    "{} stores, {} accepted calls for {} store-transactions",
                    seen.calls.len(),
                    seen.calls.values().sum::<u64>(),
                    ledger.per_store.values().sum::<u64>()
                ),
            },
        ]
    })
}

/// The scenario over one connection type: the same code paths on every backend.
macro_rules! scenario {
    ($backend:ident, $name:literal, $conn:ty, $migrations:expr) => {
        mod $backend {
            use super::*;

            use diesel::result::Error as DieselError;
            use diesel::{ExpressionMethods, QueryDsl, SelectableHelper};
            use diesel_async::{
                AsyncConnection, AsyncMigrationHarness, RunQueryDsl, SaveChangesDsl,
            };
            use diesel_migrations::MigrationHarness;
            use diesel_sync::SyncedConnection;

            use crate::shop::{price_records, products, stores, PriceRecord, Product, Store};

            type Conn = SyncedConnection<$conn>;

            pub(super) async fn run(
                config: &Config,
            ) -> Result<Report, Box<dyn Error + Send + Sync>> {
                let mut inner = prepare(&config.database_url).await?;
                let disabled_store = config.stores;
                seed(&mut inner, config).await?;

                let marketplace = Marketplace::start(Behaviour {
                    failure_rate: config.failure_rate,
                    requests_per_second: config.requests_per_second,
                })
                .await?;
                let client = MarketplaceClient::new(format!("http://{}", marketplace.address));
                // The store's switch, as committed with each change: flipping it in the
                // database takes effect from the next commit.
                let registry = Registry::builder()
                    .handler(client)
                    .when(|store: &Store| store.sync_enabled)
                    .retry_policy(
                        RetryPolicy::default()
                            .max_attempts(8)
                            .initial_delay(Duration::from_millis(50))
                            .max_delay(Duration::from_secs(2)),
                    )
                    .build();
                let mut conn = SyncedConnection::new(inner, registry.clone());

                let transactions = Arc::new(AtomicU64::new(0));
                let ticker = progress(&registry, &transactions, config.progress);
                let started = Instant::now();
                let ledger = code_paths(&mut conn, config, &transactions).await?;

                registry.settled().await;
                let drained = registry.shutdown(Duration::from_secs(30)).await;
                let elapsed = started.elapsed();
                ticker.abort();
                if config.progress {
                    eprintln!();
                }

                let database: HashMap<i64, i64> = products::table
                    .select((products::id, products::price_cents))
                    .load::<(i64, i64)>(&mut conn)
                    .await?
                    .into_iter()
                    .collect();
                let dead: HashSet<i64> = registry
                    .dead_letters()
                    .drain()
                    .iter()
                    .filter_map(|letter| {
                        letter.batch::<Product>().map(|b| {
                            b.ids()
                                .chain(b.removed().iter().copied())
                                .collect::<Vec<_>>()
                        })
                    })
                    .flatten()
                    .collect();
                let checks = checks(
                    config,
                    &marketplace,
                    &ledger,
                    &database,
                    disabled_store,
                    &dead,
                );
                let metrics = registry.metrics();
                let (accepted_calls, refused_requests) =
                    marketplace.ledger(|seen| (seen.calls.values().sum(), seen.refused));
                Ok(Report {
                    backend: $name,
                    committed: ledger.committed,
                    rolled_back: ledger.rolled_back,
                    ids_committed: metrics.ids_committed,
                    handler_calls: metrics.calls,
                    accepted_calls,
                    refused_requests,
                    retries: metrics.retries,
                    dead_letters: metrics.dead_letters + drained.abandoned,
                    batches_skipped: metrics.batches_skipped,
                    elapsed,
                    checks,
                })
            }

            /// Every code path of the shop that changes prices, in turn.
            async fn code_paths(
                conn: &mut Conn,
                config: &Config,
                transactions: &AtomicU64,
            ) -> Result<Ledger, DieselError> {
                let late_store = config.stores - 1;
                let mut ledger = Ledger::new([late_store, config.stores]);
                let mut prices = Prices(42);
                let products = config.stores * config.products_per_store;
                let per_store = config.products_per_store;

                // The product edit form: one product at a time.
                for _ in 0..50 {
                    let id = 1 + prices.below(products);
                    edit_form(conn, id, prices.price()).await?;
                    ledger.commit(per_store, [id]);
                    transactions.fetch_add(1, Ordering::Relaxed);
                }

                // A bulk import of a price list: thousands of rows, one transaction.
                let list: Vec<(i64, i64)> = (0..config.import_rows)
                    .map(|_| (1 + prices.below(products), prices.price()))
                    .collect();
                bulk_import(conn, &list).await?;
                ledger.commit(per_store, list.iter().map(|(id, _)| *id));
                transactions.fetch_add(1, Ordering::Relaxed);

                // The variant editor: a parent and its variants, variants in a nested transaction.
                for _ in 0..20 {
                    let parent = 1 + prices.below(products - 3);
                    let variants: Vec<(i64, i64)> =
                        (1..=3).map(|k| (parent + k, prices.price())).collect();
                    variant_editor(conn, (parent, prices.price()), &variants).await?;
                    ledger.commit(
                        per_store,
                        std::iter::once(parent).chain(variants.iter().map(|v| v.0)),
                    );
                    transactions.fetch_add(1, Ordering::Relaxed);
                }

                // The pricing-rule engine: +5 % on a whole store, one UPDATE each.
                for store in 1..=config.stores {
                    let changed = pricing_rule(conn, store).await?;
                    ledger.commit(per_store, changed);
                    transactions.fetch_add(1, Ordering::Relaxed);
                }

                // The shop owner switches sync on for a store: no restart, no code path told.
                switch_sync_on(conn, late_store).await?;
                ledger.switch_on(late_store);

                // The supplier webhook: every third delivery carries a bad row and rolls back.
                for hook in 0..30_i64 {
                    let fails = hook % 3 == 2;
                    let items: Vec<(i64, i64)> = (0..5)
                        .map(|k| {
                            (
                                1 + prices.below(products),
                                if fails {
                                    ROLLED_BACK_PRICE + hook * 10 + k
                                } else {
                                    prices.price()
                                },
                            )
                        })
                        .collect();
                    let result = supplier_webhook(conn, &items, fails).await;
                    match result {
                        Ok(()) => ledger.commit(per_store, items.iter().map(|(id, _)| *id)),
                        Err(_) => ledger.rolled_back += 1,
                    }
                    transactions.fetch_add(1, Ordering::Relaxed);
                }

                // A change inside a savepoint fails; its transaction commits the rest.
                for k in 0..10_i64 {
                    let kept = (1 + prices.below(products), prices.price());
                    let dropped = (1 + prices.below(products), ROLLED_BACK_PRICE + 1_000 + k);
                    savepoint_fails(conn, kept, dropped).await?;
                    ledger.commit(per_store, [kept.0]);
                    transactions.fetch_add(1, Ordering::Relaxed);
                }

                // The catalog cleanup: discontinued products are deleted, by filter, with
                // their price history.
                for store in 1..=config.stores {
                    let first = (store - 1) * per_store + 1;
                    let gone: Vec<i64> = (first..first + 3).collect();
                    discontinue(conn, &gone).await?;
                    ledger.commit(per_store, gone.iter().copied());
                    ledger.discontinued.extend(gone);
                    transactions.fetch_add(1, Ordering::Relaxed);
                }

                Ok(ledger)
            }

            /// Connects and brings the schema to the latest migration, from scratch.
            async fn prepare(url: &str) -> Result<$conn, Box<dyn Error + Send + Sync>> {
                let conn = <$conn>::establish(url).await?;
                let mut harness = AsyncMigrationHarness::new(conn);
                harness.revert_all_migrations($migrations)?;
                harness.run_pending_migrations($migrations)?;
                Ok(harness.into_inner())
            }

            /// Stores and products, written without syncing (the shop's existing data).
            async fn seed(conn: &mut $conn, config: &Config) -> Result<(), DieselError> {
                let stores: Vec<Store> = (1..=config.stores)
                    .map(|id| Store {
                        id,
                        name: format!("store-{id}"),
                        sync_enabled: id < config.stores - 1,
                    })
                    .collect();
                let products: Vec<Product> = (0..config.stores * config.products_per_store)
                    .map(|i| Product {
                        id: i + 1,
                        store_id: i / config.products_per_store + 1,
                        name: format!("product-{}", i + 1),
                        price_cents: 100 + (i * 7919) % 99_900,
                    })
                    .collect();
                conn.transaction(async |conn| {
                    for store in &stores {
                        diesel::insert_into(stores::table)
                            .values(store)
                            .execute(conn)
                            .await?;
                    }
                    for product in &products {
                        diesel::insert_into(products::table)
                            .values(product)
                            .execute(conn)
                            .await?;
                    }
                    Ok(())
                })
                .await
            }

            async fn edit_form(
                conn: &mut Conn,
                id: i64,
                price_cents: i64,
            ) -> Result<(), DieselError> {
                conn.transaction(async |conn| {
                    let mut product: Product = products::table
                        .find(id)
                        .select(Product::as_select())
                        .first(conn)
                        .await?;
                    product.price_cents = price_cents;
                    product.save_changes::<Product>(conn).await?;
                    Ok(())
                })
                .await
            }

            async fn bulk_import(conn: &mut Conn, list: &[(i64, i64)]) -> Result<(), DieselError> {
                conn.transaction(async |conn| {
                    for &(id, amount_cents) in list {
                        // Plain Diesel: the connection captures the product each row syncs.
                        diesel::insert_into(price_records::table)
                            .values(&PriceRecord {
                                object_id: id,
                                amount_cents,
                            })
                            .execute(conn)
                            .await?;
                        diesel::update(products::table.find(id))
                            .set(products::price_cents.eq(amount_cents))
                            .execute(conn)
                            .await?;
                    }
                    Ok(())
                })
                .await
            }

            async fn variant_editor(
                conn: &mut Conn,
                parent: (i64, i64),
                variants: &[(i64, i64)],
            ) -> Result<(), DieselError> {
                conn.transaction(async |conn| {
                    set_price(conn, parent).await?;
                    conn.transaction(async |conn| {
                        for &variant in variants {
                            set_price(conn, variant).await?;
                        }
                        Ok::<_, DieselError>(())
                    })
                    .await
                })
                .await
            }

            /// Returns the ids the rule repriced (read back for the checks, not for syncing).
            async fn pricing_rule(conn: &mut Conn, store: i64) -> Result<Vec<i64>, DieselError> {
                conn.transaction(async |conn| {
                    diesel::update(products::table.filter(products::store_id.eq(store)))
                        .set(products::price_cents.eq(products::price_cents * 105 / 100))
                        .execute(conn)
                        .await?;
                    products::table
                        .filter(products::store_id.eq(store))
                        .select(products::id)
                        .load(conn)
                        .await
                })
                .await
            }

            async fn supplier_webhook(
                conn: &mut Conn,
                items: &[(i64, i64)],
                bad_row: bool,
            ) -> Result<(), DieselError> {
                conn.transaction(async |conn| {
                    for &item in items {
                        set_price(conn, item).await?;
                    }
                    if bad_row {
                        Err(DieselError::RollbackTransaction)
                    } else {
                        Ok(())
                    }
                })
                .await
            }

            async fn savepoint_fails(
                conn: &mut Conn,
                kept: (i64, i64),
                dropped: (i64, i64),
            ) -> Result<(), DieselError> {
                conn.transaction(async |conn| {
                    set_price(conn, kept).await?;
                    let failed = conn
                        .transaction(async |conn| {
                            set_price(conn, dropped).await?;
                            Err::<(), _>(DieselError::RollbackTransaction)
                        })
                        .await;
                    debug_assert!(failed.is_err());
                    Ok(())
                })
                .await
            }

            /// The store settings page: turns a store's price sync on.
            async fn switch_sync_on(conn: &mut Conn, store: i64) -> Result<(), DieselError> {
                diesel::update(stores::table.find(store))
                    .set(stores::sync_enabled.eq(true))
                    .execute(conn)
                    .await?;
                Ok(())
            }

            async fn discontinue(conn: &mut Conn, ids: &[i64]) -> Result<(), DieselError> {
                conn.transaction(async |conn| {
                    diesel::delete(
                        price_records::table.filter(price_records::object_id.eq_any(ids)),
                    )
                    .execute(conn)
                    .await?;
                    diesel::delete(products::table.filter(products::id.eq_any(ids)))
                        .execute(conn)
                        .await?;
                    Ok(())
                })
                .await
            }

            async fn set_price(
                conn: &mut Conn,
                (id, price_cents): (i64, i64),
            ) -> Result<usize, DieselError> {
                diesel::update(products::table.find(id))
                    .set(products::price_cents.eq(price_cents))
                    .execute(conn)
                    .await
            }
        }
    };
}

scenario!(
    sqlite,
    "sqlite",
    diesel_async::sync_connection_wrapper::SyncConnectionWrapper<diesel::SqliteConnection>,
    crate::shop::SQLITE_MIGRATIONS
);
scenario!(
    postgres,
    "postgres",
    diesel_async::AsyncPgConnection,
    crate::shop::POSTGRES_MIGRATIONS
);
scenario!(
    mysql,
    "mysql",
    diesel_async::AsyncMysqlConnection,
    crate::shop::MYSQL_MIGRATIONS
);
