//! Errors a handler returns, and how each asks to be retried.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

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
