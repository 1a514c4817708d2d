//! Result lines: one JSON object per line (written with `serde_json`), fields in a fixed order,
//! and the statistics they carry (medians and nearest-rank percentiles).

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Duration;

use serde_json::Value;

/// One JSON object, built field by field, keys in the order they were added.
#[derive(Debug, Default)]
pub(crate) struct Line {
    fields: Vec<(String, Value)>,
    ok: bool,
}

impl Line {
    pub(crate) fn new(workload: &str, backend: &str, connection: &str) -> Self {
        Self {
            fields: Vec::new(),
            ok: true,
        }
        .str("workload", workload)
        .str("backend", backend)
        .str("connection", connection)
    }

    fn field(mut self, key: &str, value: Value) -> Self {
        self.fields.push((key.to_owned(), value));
        self
    }

    pub(crate) fn str(self, key: &str, value: &str) -> Self {
        self.field(key, Value::from(value))
    }

    pub(crate) fn int(self, key: &str, value: u64) -> Self {
        self.field(key, Value::from(value))
    }

    /// A float rounded to 6 decimals (microseconds for seconds), `null` when not finite.
    pub(crate) fn num(self, key: &str, value: f64) -> Self {
        let rounded = (value * 1e6).round() / 1e6;
        self.field(key, Value::from(rounded))
    }

    pub(crate) fn null(self, key: &str) -> Self {
        self.field(key, Value::Null)
    }

    pub(crate) fn bool(self, key: &str, value: bool) -> Self {
        self.field(key, Value::from(value))
    }

    /// Marks the line failed when `ok` is false (a correctness field is wrong).
    pub(crate) fn check(mut self, ok: bool) -> Self {
        self.ok &= ok;
        self
    }

    pub(crate) fn is_ok(&self) -> bool {
        self.ok
    }

    /// The JSON text, with the closing `ok` field.
    pub(crate) fn render(&self) -> String {
        let mut out = String::from("{");
        for (key, value) in &self.fields {
            let _ = write!(out, "{}:{value},", Value::from(key.as_str()));
        }
        let _ = write!(out, "\"ok\":{}}}", self.ok);
        out
    }
}

/// Prints a workload's lines, or a failed line carrying its error. Returns whether every line
/// is correct.
pub(crate) fn emit(
    result: Result<Vec<Line>, String>,
    workload: &str,
    backend: &str,
    connection: &str,
) -> bool {
    let lines = result.unwrap_or_else(|error| {
        vec![Line::new(workload, backend, connection)
            .str("error", &error)
            .check(false)]
    });
    let mut stdout = std::io::stdout().lock();
    let mut ok = true;
    for line in lines {
        ok &= line.is_ok();
        let _ = writeln!(stdout, "{}", line.render());
    }
    let _ = stdout.flush();
    ok
}

/// The median of `values` (the mean of the middle two for an even count).
pub(crate) fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[middle]
    } else {
        f64::midpoint(sorted[middle - 1], sorted[middle])
    }
}

/// The nearest-rank `p`-th percentile (0 < p ≤ 100) of `values`, which must be sorted.
pub(crate) fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len()).div_ceil(100).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Microseconds, for latency fields.
pub(crate) fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}
