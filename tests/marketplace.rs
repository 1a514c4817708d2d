//! The main job at small size, on every backend: the marketplace example's scenario, with its
//! end-state checks asserted (every committed price arrived, nothing rolled back arrived, every
//! deleted product was unlisted, a store switched on mid-run started syncing, the store with
//! sync off got nothing, at most one call per store per transaction).

mod common;

#[path = "../examples/marketplace/client.rs"]
mod client;
#[path = "../examples/marketplace/marketplace.rs"]
mod marketplace;
#[path = "../examples/marketplace/scenario.rs"]
mod scenario;
#[path = "../examples/marketplace/shop.rs"]
mod shop;

use common::{create_database, Backend};

async fn run_scenario(backend: Backend, name: &str) {
    let config = scenario::Config {
        database_url: create_database(backend, name).await,
        stores: 5,
        products_per_store: 40,
        import_rows: 300,
        failure_rate: 0.2,
        requests_per_second: 50,
        progress: false,
    };
    let report = scenario::run(&config).await.expect("the scenario runs");
    report.print();
    for check in &report.checks {
        assert!(check.passed, "{}: {}", check.name, check.detail);
    }
    assert!(report.passed());
    assert!(
        report.refused_requests > 0,
        "the marketplace injected failures"
    );
    assert!(report.retries > 0, "failed calls were retried");
    assert_eq!(report.rolled_back, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marketplace_scenario_on_sqlite() {
    run_scenario(Backend::Sqlite, "marketplace").await;
}

#[cfg(diesel_sync_postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marketplace_scenario_on_postgres() {
    run_scenario(Backend::Postgres, "marketplace").await;
}

#[cfg(diesel_sync_mysql)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marketplace_scenario_on_mysql() {
    run_scenario(Backend::Mysql, "marketplace").await;
}
