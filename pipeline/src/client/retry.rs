//! Retries, in two separate halves.
//!
//! * Classification ([`retryable`], [`transient_status`]): whether a failed attempt can succeed
//!   when made again, and whether making it again is safe. It looks only at the failure and at
//!   the request's [`Idempotency`], never at time.
//! * Policy ([`RetryConfig`], [`Backoff`]): when the next attempt is made, and when to stop:
//!   exponential back-off with jitter (backon), a maximum number of retries, and an overall
//!   deadline after which no new attempt starts. A server's `Retry-After` lengthens a wait, up
//!   to the maximum delay.
//!
//! [`retry`] joins the two for the common case; callers with their own classification (a
//! Vertex create, a resumable upload's chunks) drive a [`Backoff`] themselves.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::time::Instant;

use super::Error;

/// Whether repeating a request can do harm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// Repeating it changes nothing more: reads, listings, deletes, whole-object writes,
    /// writes guarded by a precondition, cancels.
    Idempotent,
    /// It may have taken effect when its answer was lost (a create): repeated only when it
    /// certainly never reached the server.
    NotIdempotent,
}

/// Statuses that say "try again later": 408, 429 and every 5xx.
pub fn transient_status(status: u16) -> bool {
    status == 408 || status == 429 || (500..=599).contains(&status)
}

/// Whether another attempt after `error` can succeed and is safe to make.
///
/// A refused connection, or a transient failure to get a token, never reached the server, so
/// it is retried whatever the request. A
/// timeout, a broken connection or a transient status may follow a request that took effect,
/// so they are retried only for idempotent requests. Other statuses (4xx), missing credentials
/// and malformed requests or answers are final.
pub fn retryable(error: &Error, idempotency: Idempotency) -> bool {
    match error {
        Error::Connect { .. } => true,
        Error::Timeout { .. } | Error::Interrupted { .. } => idempotency == Idempotency::Idempotent,
        Error::Status { status, .. } => {
            idempotency == Idempotency::Idempotent && transient_status(*status)
        }
        // Token fetches are reads: a transient failure (network, server error) is retried.
        Error::Auth { transient, .. } => *transient,
        Error::Invalid { .. } => false,
    }
}

/// How failed attempts are repeated: exponential back-off with jitter between `min_delay` and
/// `max_delay`, at most `max_retries` retries, and none started after `deadline` (counted from
/// the first attempt).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryConfig {
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// `None`: no limit but the deadline.
    pub max_retries: Option<usize>,
    /// `None`: no limit but `max_retries`.
    pub deadline: Option<Duration>,
}

impl Default for RetryConfig {
    /// Google's recommendation for Cloud Storage: 1 s doubling up to 32 s, here with at most 8
    /// retries within 2 minutes.
    fn default() -> Self {
        Self {
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(32),
            max_retries: Some(8),
            deadline: Some(Duration::from_secs(120)),
        }
    }
}

impl RetryConfig {
    /// The waits of one operation, its clock starting now.
    pub fn backoff(&self) -> Backoff {
        let mut builder = ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay);
        builder = match self.max_retries {
            Some(n) => builder.with_max_times(n),
            None => builder.without_max_times(),
        };
        Backoff {
            delays: builder.build(),
            started: Instant::now(),
            deadline: self.deadline,
            max_delay: self.max_delay,
        }
    }
}

/// The waits between the attempts of one operation.
#[derive(Debug)]
pub struct Backoff {
    delays: backon::ExponentialBackoff,
    started: Instant,
    deadline: Option<Duration>,
    max_delay: Duration,
}

impl Backoff {
    /// The wait before the next attempt, or `None` when the policy is spent (no retries left,
    /// or the wait would end past the deadline). `hint` is the server's `Retry-After`.
    pub fn next_delay(&mut self, hint: Option<Duration>) -> Option<Duration> {
        let delay = self.delays.next()?;
        let delay = hint.map_or(delay, |h| h.min(self.max_delay).max(delay));
        if let Some(deadline) = self.deadline
            && self.started.elapsed() + delay > deadline
        {
            return None;
        }
        Some(delay)
    }

    /// Time since the first attempt began.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

/// The last failure of an operation whose retries are spent or which could not be retried.
#[derive(Debug)]
pub struct Failed {
    pub error: Error,
    pub attempts: usize,
    pub elapsed: Duration,
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.error)?;
        if self.attempts > 1 {
            let elapsed = Duration::from_millis(self.elapsed.as_millis() as u64);
            write!(
                f,
                " (gave up after {} attempts in {})",
                self.attempts,
                humantime::format_duration(elapsed)
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for Failed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl Failed {
    /// A failure of a single attempt.
    pub fn once(error: Error) -> Self {
        Self {
            error,
            attempts: 1,
            elapsed: Duration::ZERO,
        }
    }
}

/// Runs `attempt` until it succeeds, `when` says its failure is final, or `config` is spent.
/// `what` names the operation in the warning logged before each retry.
pub async fn retry<T, F, Fut>(
    config: &RetryConfig,
    what: &str,
    when: impl Fn(&Error) -> bool,
    mut attempt: F,
) -> Result<T, Failed>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let mut backoff = config.backoff();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let error = match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let delay = if when(&error) {
            backoff.next_delay(error.retry_after())
        } else {
            None
        };
        let Some(delay) = delay else {
            return Err(Failed {
                error,
                attempts,
                elapsed: backoff.elapsed(),
            });
        };
        tracing::warn!(
            %error,
            attempt = attempts,
            delay = %humantime::format_duration(Duration::from_millis(delay.as_millis() as u64)),
            "{what} failed; retrying"
        );
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16) -> Error {
        Error::Status {
            url: "u".into(),
            status,
            body: bytes::Bytes::new(),
            retry_after: None,
        }
    }

    #[test]
    fn classification_depends_on_the_failure_and_idempotency_only() {
        use Idempotency::{Idempotent, NotIdempotent};
        let connect = Error::Connect {
            url: "u".into(),
            message: "refused".into(),
        };
        let timeout = Error::Timeout {
            url: "u".into(),
            after: Duration::from_secs(1),
        };
        let broken = Error::Interrupted {
            url: "u".into(),
            message: "reset".into(),
        };
        for e in [&connect, &timeout, &broken] {
            assert!(retryable(e, Idempotent), "{e}");
        }
        assert!(
            retryable(&connect, NotIdempotent),
            "never reached the server"
        );
        assert!(!retryable(&timeout, NotIdempotent));
        assert!(!retryable(&broken, NotIdempotent));
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(retryable(&status(s), Idempotent), "{s}");
            assert!(!retryable(&status(s), NotIdempotent), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 412] {
            assert!(!retryable(&status(s), Idempotent), "{s}");
        }
        let auth = |transient| Error::Auth {
            message: "no token".into(),
            transient,
        };
        assert!(!retryable(&auth(false), Idempotent));
        assert!(retryable(&auth(true), NotIdempotent), "no request was sent");
    }

    #[tokio::test(start_paused = true)]
    async fn the_policy_stops_at_max_retries_or_the_deadline() {
        let config = RetryConfig {
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(4),
            max_retries: Some(3),
            deadline: None,
        };
        let mut calls = 0;
        let failed = retry(
            &config,
            "test",
            |_| true,
            || {
                calls += 1;
                async { Err::<(), _>(status(503)) }
            },
        )
        .await
        .unwrap_err();
        assert_eq!(
            (calls, failed.attempts),
            (4, 4),
            "one try and three retries"
        );
        assert!(
            failed.to_string().contains("gave up after 4 attempts"),
            "{failed}"
        );

        let config = RetryConfig {
            max_retries: None,
            deadline: Some(Duration::from_secs(30)),
            ..config
        };
        let started = Instant::now();
        let failed = retry(
            &config,
            "test",
            |_| true,
            || async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Err::<(), _>(status(500))
            },
        )
        .await
        .unwrap_err();
        assert!(
            started.elapsed() <= Duration::from_secs(30 + 5),
            "no attempt starts after the deadline: {:?}",
            started.elapsed()
        );
        assert!(failed.attempts >= 3, "{}", failed.attempts);

        let mut calls = 0;
        let failed = retry(
            &config,
            "test",
            |_| false,
            || {
                calls += 1;
                async { Err::<(), _>(status(400)) }
            },
        )
        .await
        .unwrap_err();
        assert_eq!(
            (calls, failed.attempts),
            (1, 1),
            "final failures are not retried"
        );
        assert_eq!(failed.to_string(), status(400).to_string());
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_lengthens_a_wait_up_to_the_maximum() {
        let config = RetryConfig {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            max_retries: Some(5),
            deadline: None,
        };
        let mut b = config.backoff();
        let d = b.next_delay(Some(Duration::from_secs(7))).unwrap();
        assert_eq!(d, Duration::from_secs(7));
        let d = b.next_delay(Some(Duration::from_secs(3600))).unwrap();
        assert_eq!(d, Duration::from_secs(10));
        let d = b.next_delay(None).unwrap();
        assert!(d < Duration::from_secs(1), "{d:?}");
    }
}
