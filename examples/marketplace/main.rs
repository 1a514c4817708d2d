//! The main job: a shop whose prices change from many code paths, synced to a marketplace
//! running on loopback. Runs on SQLite with no setup:
//!
//! ```sh
//! cargo run --example marketplace
//! DATABASE_URL=postgres://postgres@127.0.0.1/test cargo run --example marketplace
//! cargo run --example marketplace -- --help
//! ```

mod client;
mod marketplace;
mod scenario;
mod shop;

use std::process::ExitCode;

use clap::Parser;

/// A shop syncing prices to a marketplace: every committed price must arrive, nothing that
/// rolled back may, and a store with sync off gets nothing.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Database to run on: a SQLite file path, `postgres://…` or `mysql://…`.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// Stores in the shop (the last one has sync off; the one before is switched on mid-run).
    #[arg(long, default_value_t = 10)]
    stores: i64,
    /// Products per store.
    #[arg(long, default_value_t = 500)]
    products_per_store: i64,
    /// Rows in the imported price list.
    #[arg(long, default_value_t = 3_000)]
    import_rows: usize,
    /// Fraction of marketplace requests that fail with 503 (0.0–1.0).
    #[arg(long, default_value_t = 0.1)]
    failure_rate: f64,
    /// Requests per second a store may make before the marketplace answers 429.
    #[arg(long, default_value_t = 20)]
    rate_limit: u32,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let database_url = args.database_url.unwrap_or_else(|| {
        let path = std::env::temp_dir().join("diesel-sync-marketplace.db");
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        path.display().to_string()
    });
    let config = scenario::Config {
        database_url,
        stores: args.stores.max(3),
        products_per_store: args.products_per_store.max(4),
        import_rows: args.import_rows,
        failure_rate: args.failure_rate.clamp(0.0, 1.0),
        requests_per_second: args.rate_limit.max(1),
        // Progress is drawn only on a terminal.
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    match scenario::run(&config).await {
        Ok(report) => {
            report.print();
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
