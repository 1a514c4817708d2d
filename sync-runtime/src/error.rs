//! Errors a handler returns, and how each asks to be retried.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use crate::catalog::ModelFacts;

/// The error a [`Handler`](crate::Handler) returns when it could not deliver a batch.
///
/// It wraps the cause and says whether the batch should be tried again:
///
/// ```
/// # use diesel_sync_runtime as diesel_sync;
/// use std::time::Duration;
/// use diesel_sync::HandlerError;
///
/// // `?` on any `std::error::Error` gives a retryable error.
/// fn parse(body: &str) -> Result<u32, HandlerError> {
///     Ok(body.parse::<u32>()?)
/// }
/// // A 4xx validation error: retrying cannot help.
/// let rejected = HandlerError::permanent("price below the marketplace minimum");
/// // A 429 with `Retry-After: 30`.
/// let throttled = HandlerError::retry_after("rate limited", Duration::from_secs(30));
/// assert!(parse("x").is_err() && !rejected.is_retryable() && throttled.is_retryable());
/// ```
pub struct HandlerError {
    source: Box<dyn StdError + Send + Sync>,
    retry: Retry,
}

/// What a failed attempt asks of the dispatcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Retry after the policy's next backoff delay.
    Backoff,
    /// Do not retry: dead-letter the batch now.
    Never,
    /// Retry once this much time has passed.
    After(Duration),
}

impl HandlerError {
    /// A failure worth retrying with the handler's backoff (a timeout, a 5xx).
    pub fn retryable(source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self {
            source: source.into(),
            retry: Retry::Backoff,
        }
    }

    /// A failure that retrying cannot fix (a 4xx validation error): the batch is dead-lettered
    /// after this attempt.
    pub fn permanent(source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self {
            source: source.into(),
            retry: Retry::Never,
        }
    }

    /// A failure to retry after `delay` (a 429 or 503 with `Retry-After`), in place of the
    /// backoff delay.
    pub fn retry_after(
        source: impl Into<Box<dyn StdError + Send + Sync>>,
        delay: Duration,
    ) -> Self {
        Self {
            source: source.into(),
            retry: Retry::After(delay),
        }
    }

    /// Whether the dispatcher will try the batch again (while attempts remain).
    pub fn is_retryable(&self) -> bool {
        self.retry != Retry::Never
    }

    /// The underlying error.
    pub fn source(&self) -> &(dyn StdError + Send + Sync + 'static) {
        &*self.source
    }

    pub(crate) fn retry(&self) -> Retry {
        self.retry
    }
}

impl<E> From<E> for HandlerError
where
    E: StdError + Send + Sync + 'static,
{
    fn from(error: E) -> Self {
        Self::retryable(error)
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("source", &self.source)
            .field("retry", &self.retry)
            .finish()
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.source, f)
    }
}

/// A write to a synced table that the connection refused to run, because it could not tell
/// exactly which rows the write changes. Nothing was run: the database is unchanged.
///
/// It reaches the caller as [`diesel::result::Error::QueryBuilderError`]; its message names the
/// table and says how to write it instead. Statements run on
/// [`SyncedConnection::inner_mut`](crate::SyncedConnection::inner_mut) are never refused (nor
/// captured): register what they change with `mark_changed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureRefused {
    table: String,
    message: String,
}

impl CaptureRefused {
    /// The synced table the refused statement writes.
    pub fn table(&self) -> &str {
        &self.table
    }

    fn new(model: &ModelFacts, why: &str, instead: &str) -> Self {
        let target = short(model.target_name);
        Self {
            table: model.table.to_owned(),
            message: format!(
                "refused a write to `{}`, a table synced by `{}`: {why}; {instead}, or run it on `conn.inner_mut()` and register the changed ids with `conn.mark_changed::<{target}>(ids)`",
                model.table,
                short(model.model)
            ),
        }
    }

    /// A refusal of a statement whose synced model is not singled out.
    fn of_table(table: &str, why: &str, instead: &str) -> Self {
        Self {
            table: table.to_owned(),
            message: format!(
                "refused a write to `{table}`, a synced table: {why}; {instead}, or run it on `conn.inner_mut()` and register the changed ids with `conn.mark_changed`"
            ),
        }
    }

    pub(crate) fn opaque(table: &str) -> Self {
        Self::of_table(
            table,
            "the statement writes it in a form whose changed rows cannot be read back (a data-modifying CTE, MERGE, TRUNCATE, a multi-table write)",
            "write it with a plain INSERT, UPDATE or DELETE of that table",
        )
    }

    pub(crate) fn ambiguous(table: &str, models: &[&'static str]) -> Self {
        let models: Vec<&str> = models.iter().map(|m| short(m)).collect();
        Self::of_table(
            table,
            &format!(
                "several models derive `Synced` for it ({}) and the connection's registry handles the targets of none or several of them",
                models.join(", ")
            ),
            "register a handler for the target of exactly one of them",
        )
    }

    pub(crate) fn unreadable_key(model: &ModelFacts) -> Self {
        Self::new(
            model,
            "its key type cannot be read from a returned row (capture reads integer and text keys)",
            "write it with `diesel_sync::insert_into`, `update` or `delete`",
        )
    }

    pub(crate) fn unreadable_store(model: &ModelFacts) -> Self {
        Self::new(
            model,
            "a deleted row is delivered as a removal from its store, and the store key type cannot be read from a returned row (capture reads integer and text keys)",
            "group by an integer or text column",
        )
    }

    pub(crate) fn keys_not_selectable(model: &ModelFacts) -> Self {
        Self::new(
            model,
            "MySQL cannot return the rows this write changes, and its keys cannot be selected first (a multi-table write)",
            "write one table per statement, or with `diesel_sync::update(…)` or `delete(…)`",
        )
    }

    pub(crate) fn no_returning(model: &ModelFacts) -> Self {
        Self::new(
            model,
            "Diesel's synchronous MySQL connection reads no rows a write returns, so the keys of an INSERT (or of a write with its own RETURNING) cannot be read",
            "write it with `diesel_sync::insert_into(…)`, which reads the keys from the rows",
        )
    }

    pub(crate) fn in_batch(model: &ModelFacts) -> Self {
        Self::new(
            model,
            "a batch of several statements cannot return the rows one of them writes",
            "run that write as a statement of its own",
        )
    }

    pub(crate) fn unparsed(table: &str, error: &str) -> Self {
        Self::of_table(
            table,
            &format!("the SQL names it but could not be parsed ({error}), so what it writes cannot be told"),
            "write it as plain SQL the parser reads, or with Diesel's query builder",
        )
    }

    pub(crate) fn returns_rows_outside_a_transaction(model: &ModelFacts) -> Self {
        Self::new(
            model,
            "a write that returns rows (`get_result`, `get_results`, `returning`) is captured only inside a transaction",
            "run it in `conn.transaction(…)`, or with `.execute(conn)`",
        )
    }

    pub(crate) fn selected_keys_run_for_rows(model: &ModelFacts) -> Self {
        Self::new(
            model,
            "on MySQL this write returns no rows here, and its keys are read by a `SELECT … FOR UPDATE` before it only when it runs with `execute`",
            "run it with `.execute(conn)`",
        )
    }
}

/// A type's path without its modules.
fn short(path: &str) -> &str {
    path.rsplit("::").next().unwrap_or(path)
}

impl fmt::Display for CaptureRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for CaptureRefused {}
