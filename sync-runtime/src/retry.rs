//! How often and how patiently a failed batch is tried again.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// Retry policy of one handler: attempts, capped exponential backoff and jitter.
///
/// The default mirrors a Celery task with `max_retries=3` and exponential backoff: 4 attempts
/// in all, delays of about 1 s, 2 s, 4 s (each with up to 100 % added jitter), capped at 600 s.
///
/// ```
/// # use diesel_sync_runtime as diesel_sync;
/// use std::time::Duration;
/// use diesel_sync::RetryPolicy;
///
/// let policy = RetryPolicy::default()
///     .max_attempts(6)
///     .initial_delay(Duration::from_millis(200))
///     .max_delay(Duration::from_secs(60));
/// assert_eq!(policy.attempts(), 6);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    max_attempts: u32,
    initial_delay: Duration,
    max_delay: Duration,
    factor: f32,
    jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(600),
            factor: 2.0,
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// One attempt, no retries.
    pub fn never() -> Self {
        Self::default().max_attempts(1)
    }

    /// Total calls per batch, the first included (at least 1).
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The delay before the first retry.
    #[must_use]
    pub fn initial_delay(mut self, delay: Duration) -> Self {
        self.initial_delay = delay;
        self
    }

    /// The cap on any one backoff delay.
    #[must_use]
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// The growth factor between delays (2.0 doubles them).
    #[must_use]
    pub fn factor(mut self, factor: f32) -> Self {
        self.factor = factor;
        self
    }

    /// Whether delays get random jitter, so stores that failed together do not retry together.
    #[must_use]
    pub fn jitter(mut self, jitter: bool) -> Self {
        self.jitter = jitter;
        self
    }

    /// Total calls per batch, the first included.
    pub fn attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The delays between attempts: one per retry, `attempts() - 1` in all.
    pub(crate) fn delays(&self) -> impl Iterator<Item = Duration> {
        let builder = ExponentialBuilder::new()
            .with_min_delay(self.initial_delay)
            .with_max_delay(self.max_delay)
            .with_factor(self.factor)
            .with_max_times((self.max_attempts - 1) as usize);
        if self.jitter {
            builder.with_jitter().build()
        } else {
            builder.build()
        }
    }
}
