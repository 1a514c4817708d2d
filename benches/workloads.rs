//! The standard workloads (W1, W1base, W2, W3, W4, W5 and the 1,000,000-id scale run, defined
//! in `docs/benchmarks.md`), plus commit-to-handler latency and collector memory, on SQLite,
//! PostgreSQL or MySQL. Prints one JSON object per result line; exits non-zero when a correctness field is
//! wrong (an id leaked or missed, calls or resolve queries not as expected).
//!
//! ```text
//! cargo bench --bench workloads -- --backend sqlite|postgres|mysql|all
//!     [--runs N] [--scale] [--smoke] [--memory] [--durable] [--only W1,W2,W3,W4,W5,scale,latency,collector]
//! ```
//!
//! PostgreSQL: `DIESEL_SYNC_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`).
//! MySQL: `DIESEL_SYNC_MYSQL_URL` (default `mysql://root@127.0.0.1:3306/test`).
//! See `docs/benchmarks.md` for what each field means and how it is measured.

#[path = "workloads/blocking.rs"]
mod blocking;
#[path = "workloads/db.rs"]
mod db;
#[path = "workloads/plan.rs"]
mod plan;
#[path = "workloads/recorder.rs"]
mod recorder;
#[path = "workloads/report.rs"]
mod report;
#[path = "workloads/run.rs"]
mod run;
#[path = "workloads/schema.rs"]
mod schema;

use std::process::ExitCode;

use crate::db::Db;
use crate::report::Line;
use crate::run::{Bench, Size};
use crate::schema::Backend;

// `allocation_counter` installs the global allocator: it counts per thread, without atomics, so
// the timed runs pay little for the collector measurements.
use allocation_counter as _;

const USAGE: &str = "usage: workloads [--backend sqlite|postgres|mysql|all] [--runs N] [--scale] [--smoke] [--memory] [--durable] [--only W1,W2,W3,W4,W5,scale,latency,collector]";

/// The command line.
#[derive(Debug)]
#[allow(clippy::struct_excessive_bools)] // one per flag
struct Args {
    backends: Vec<Backend>,
    runs: usize,
    scale: bool,
    smoke: bool,
    memory: bool,
    durable: bool,
    only: Option<Vec<String>>,
}

impl Args {
    fn parse() -> Result<Self, String> {
        let mut args = Args {
            backends: vec![Backend::Sqlite],
            runs: 5,
            scale: false,
            smoke: false,
            memory: false,
            durable: false,
            only: None,
        };
        let mut runs = None;
        let mut words = std::env::args().skip(1);
        while let Some(word) = words.next() {
            match word.as_str() {
                // `cargo bench` passes `--bench` to every bench target.
                "--bench" => {}
                "--backend" => {
                    args.backends = match words.next().as_deref() {
                        Some("sqlite") => vec![Backend::Sqlite],
                        Some("postgres") => vec![Backend::Postgres],
                        Some("mysql") => vec![Backend::Mysql],
                        Some("all") => vec![Backend::Sqlite, Backend::Postgres, Backend::Mysql],
                        other => return Err(format!("unknown backend {other:?}")),
                    }
                }
                "--runs" => {
                    let n = words.next().and_then(|n| n.parse().ok()).filter(|&n| n > 0);
                    runs = Some(n.ok_or("--runs takes a positive number")?);
                }
                "--scale" => args.scale = true,
                "--smoke" => args.smoke = true,
                "--memory" => args.memory = true,
                "--durable" => args.durable = true,
                "--only" => {
                    let list = words.next().ok_or("--only takes a list")?;
                    args.only = Some(list.split(',').map(str::to_lowercase).collect());
                }
                "-h" | "--help" => return Err(String::new()),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        args.runs = runs.unwrap_or(if args.smoke { 1 } else { 5 });
        Ok(args)
    }

    fn wants(&self, workload: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|w| w == &workload.to_lowercase()))
    }
}

fn main() -> ExitCode {
    let args = match Args::parse() {
        Ok(args) => args,
        Err(error) => {
            if !error.is_empty() {
                eprintln!("error: {error}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Err(error) = plan::check_generator() {
        eprintln!("error: {error}");
        return ExitCode::FAILURE;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let bench = Bench {
        size: if args.smoke { Size::SMOKE } else { Size::FULL },
        runs: args.runs,
        tag: format!("diesel_sync_bench_{}", std::process::id()),
        memory: args.memory,
        durable: args.durable,
    };
    let mut failed = false;
    for &backend in &args.backends {
        if backend == Backend::Sqlite {
            failed |= !run_blocking_sqlite(&args, &bench);
        }
        let ok = runtime.block_on(async {
            match backend {
                Backend::Sqlite => run_backend::<db::Sqlite>(&args, &bench).await,
                Backend::Postgres => run_backend::<db::Postgres>(&args, &bench).await,
                Backend::Mysql => run_backend::<db::Mysql>(&args, &bench).await,
            }
        });
        failed |= !ok;
    }
    if failed {
        eprintln!("error: a correctness field is wrong or a workload failed; see the lines with \"ok\":false");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Runs W1, W2 and W3 on synchronous SQLite, outside any tokio runtime (dispatch runs on the
/// registry's own). Returns whether every line is correct.
fn run_blocking_sqlite(args: &Args, bench: &Bench) -> bool {
    let mut ok = true;
    let mut emit = |result: Result<Vec<Line>, String>, workload: &str| {
        ok &= report::emit(
            result,
            workload,
            Backend::Sqlite.name(),
            blocking::connection(bench),
        );
    };
    if args.wants("W1") || args.wants("W1base") {
        eprintln!("[sqlite, blocking] W1, W1base");
        emit(blocking::w1(bench), "W1");
    }
    if args.wants("W2") {
        eprintln!("[sqlite, blocking] W2");
        emit(blocking::w2_w3(bench, false), "W2");
    }
    if args.wants("W3") {
        eprintln!("[sqlite, blocking] W3");
        emit(blocking::w2_w3(bench, true), "W3");
    }
    ok
}

/// Runs the selected workloads on one backend, printing each line as it completes. Returns
/// whether every line is correct.
async fn run_backend<D: Db>(args: &Args, bench: &Bench) -> bool {
    let mut ok = true;
    let mut emit = |result: Result<Vec<Line>, String>, workload: &str| {
        ok &= report::emit(result, workload, D::BACKEND.name(), D::CONNECTION);
    };
    let mut w1_per_id = None;
    if args.wants("W1") || args.wants("W1base") {
        eprintln!("[{}] W1, W1base", D::BACKEND.name());
        let result = run::w1::<D>(bench).await.map(|(lines, per_id)| {
            w1_per_id = Some(per_id);
            lines
        });
        emit(result, "W1");
    }
    if args.wants("W2") {
        eprintln!("[{}] W2", D::BACKEND.name());
        emit(run::w2_w3::<D>(bench, false).await, "W2");
    }
    if args.wants("W3") {
        eprintln!("[{}] W3", D::BACKEND.name());
        emit(run::w2_w3::<D>(bench, true).await, "W3");
    }
    if args.wants("W4") {
        eprintln!("[{}] W4", D::BACKEND.name());
        emit(run::w4::<D>(bench).await, "W4");
    }
    if args.wants("W5") {
        eprintln!("[{}] W5", D::BACKEND.name());
        emit(run::w5::<D>(bench).await, "W5");
    }
    if args.scale && args.wants("scale") {
        eprintln!("[{}] scale", D::BACKEND.name());
        emit(run::scale::<D>(bench, w1_per_id).await, "scale");
    }
    if args.wants("latency") {
        eprintln!("[{}] latency", D::BACKEND.name());
        emit(run::latency::<D>(bench).await, "latency");
    }
    if args.wants("collector") {
        eprintln!("[{}] collector", D::BACKEND.name());
        emit(run::collector::<D>(bench).await, "collector");
    }
    ok
}
