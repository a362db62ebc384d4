//! Following a stream across connections, as a browser's `EventSource`
//! does: when a connection ends or fails, wait the stream's reconnection
//! time (its `retry:`, or a default), connect again with `Last-Event-ID`
//! set to the id of the last event dispatched, and carry on. The hub
//! answers such a request with every event after that id, then live ones,
//! so the events handed on have no gap and no duplicate (or start with an
//! `event: reset` when the history could not bridge the gap).
//!
//! Bounded where a browser is not: after failed attempts in a row (no
//! answer, or `408`, `429`, `5xx`) the wait doubles from the second on, up to
//! [`Reconnect::max_delay`], and at least the answer's `Retry-After`;
//! [`Reconnect::max_failures`] gives up after that many. Any other refusal
//! (`401`, `403`, `404`, a body that is not an event stream) ends the
//! follow at once, since asking again would get the same answer.

use std::fmt;
use std::ops::ControlFlow;
use std::time::Duration;

use http::StatusCode;

use crate::hub::{ClientError, HubClient, StreamEnd};
use crate::sse::{ParsedEvent, Parser};

/// How a follower waits between connections.
#[derive(Debug, Clone)]
pub struct Reconnect {
    /// The reconnection time until the stream sends `retry:`.
    pub default_retry: Duration,
    /// The longest wait after failed attempts (a `retry:` longer than this
    /// is still honoured).
    pub max_delay: Duration,
    /// Give up after this many failed attempts in a row; `None`: never.
    pub max_failures: Option<u32>,
}

impl Default for Reconnect {
    fn default() -> Reconnect {
        Reconnect {
            // What browsers use (Chromium and Firefox wait 3 s).
            default_retry: Duration::from_secs(3),
            max_delay: Duration::from_secs(30),
            max_failures: None,
        }
    }
}

impl Reconnect {
    /// The wait before the next attempt: the reconnection time after a
    /// stream that was open ended (`failures` 0) or after one failed
    /// attempt, doubled for each further failed attempt in a row, within
    /// `max_delay`, and never less than the `Retry-After` the hub asked for
    /// (itself within `max_delay`).
    pub fn delay(&self, retry: Duration, failures: u32, retry_after: Option<Duration>) -> Duration {
        let ceiling = self.max_delay.max(retry);
        let doubled = retry.saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(31)));
        let wait = doubled.min(ceiling);
        match retry_after {
            Some(asked) => wait.max(asked.min(ceiling)),
            None => wait,
        }
    }
}

/// Whether an attempt that got this error is worth another.
fn retryable(error: &ClientError) -> bool {
    match error {
        ClientError::Connect(_) => true,
        ClientError::Status { status, .. } => {
            status.is_server_error()
                || *status == StatusCode::TOO_MANY_REQUESTS
                || *status == StatusCode::REQUEST_TIMEOUT
        }
        ClientError::Url(_) | ClientError::NotAStream(_) | ClientError::GaveUp { .. } => false,
    }
}

/// What happened between two connections, for the follower's caller to
/// report (the `subscribe` command writes it to stderr).
#[derive(Debug, Clone)]
pub struct Notice {
    /// Why the previous connection is over.
    pub reason: String,
    /// How long until the next attempt.
    pub after: Duration,
    /// The id the next attempt resumes after (empty: from now).
    pub last_event_id: String,
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}; reconnecting in {} ms",
            self.reason,
            self.after.as_millis()
        )?;
        if !self.last_event_id.is_empty() {
            write!(f, " after event {}", self.last_event_id)?;
        }
        Ok(())
    }
}

impl HubClient {
    /// Follows the stream at `path_and_query` from after `last_event_id`
    /// (empty: from now), calling `on_event` for every event and `on_notice`
    /// before each wait, until `on_event` breaks (`Ok`), or a refusal or
    /// [`Reconnect::max_failures`] ends it (`Err`).
    pub async fn follow(
        &self,
        path_and_query: &str,
        last_event_id: &str,
        policy: &Reconnect,
        mut on_event: impl FnMut(ParsedEvent) -> ControlFlow<()>,
        mut on_notice: impl FnMut(&Notice),
    ) -> Result<(), ClientError> {
        let mut last_event_id = last_event_id.to_owned();
        let mut retry = policy.default_retry;
        let mut failures = 0u32;
        loop {
            let mut parser = Parser::resuming(&last_event_id);
            let outcome = self
                .open_stream(path_and_query, &mut parser, &mut on_event)
                .await;
            // The connection may have set both before it failed or ended.
            last_event_id = parser.last_event_id().to_owned();
            if let Some(ms) = parser.retry() {
                retry = Duration::from_millis(ms);
            }
            let (reason, retry_after) = match outcome {
                Ok(StreamEnd::Stopped) => return Ok(()),
                Ok(StreamEnd::Closed) => {
                    failures = 0;
                    ("the hub ended the stream".to_owned(), None)
                }
                Ok(StreamEnd::Broken(why)) => {
                    failures = 0;
                    (format!("the stream broke ({why})"), None)
                }
                Err(error) if retryable(&error) => {
                    failures = failures.saturating_add(1);
                    if policy.max_failures.is_some_and(|max| failures >= max) {
                        return Err(ClientError::GaveUp {
                            attempts: failures,
                            last: Box::new(error),
                        });
                    }
                    let retry_after = match &error {
                        ClientError::Status { retry_after, .. } => *retry_after,
                        _ => None,
                    };
                    (error.to_string(), retry_after)
                }
                Err(error) => return Err(error),
            };
            let notice = Notice {
                reason,
                after: policy.delay(retry, failures, retry_after),
                last_event_id: last_event_id.clone(),
            };
            on_notice(&notice);
            tokio::time::sleep(notice.after).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn an_ended_stream_waits_its_retry_and_further_failures_double_it_up_to_the_ceiling() {
        let policy = Reconnect::default();
        let retry = 3000 * MS;
        let waits: Vec<_> = (0..7).map(|n| policy.delay(retry, n, None)).collect();
        assert_eq!(
            waits,
            [
                3000 * MS,
                3000 * MS,
                6000 * MS,
                12000 * MS,
                24000 * MS,
                30000 * MS,
                30000 * MS
            ]
        );
        assert_eq!(policy.delay(retry, u32::MAX, None), policy.max_delay);
    }

    #[test]
    fn a_retry_above_the_ceiling_is_honoured() {
        let policy = Reconnect::default();
        let long = Duration::from_secs(120);
        assert_eq!(policy.delay(long, 0, None), long);
        assert_eq!(policy.delay(long, 5, None), long);
    }

    #[test]
    fn retry_after_is_a_floor_within_the_ceiling() {
        let policy = Reconnect::default();
        let retry = 100 * MS;
        assert_eq!(
            policy.delay(retry, 1, Some(Duration::from_secs(5))),
            Duration::from_secs(5)
        );
        assert_eq!(policy.delay(retry, 2, Some(Duration::ZERO)), 200 * MS);
        assert_eq!(
            policy.delay(retry, 1, Some(Duration::from_secs(3600))),
            policy.max_delay
        );
    }

    #[test]
    fn only_failures_that_may_pass_are_retried() {
        let status = |code: u16| ClientError::Status {
            status: StatusCode::from_u16(code).unwrap_or(StatusCode::OK),
            body: String::new(),
            retry_after: None,
        };
        assert!(retryable(&ClientError::Connect("refused".into())));
        for code in [408, 429, 500, 502, 503] {
            assert!(retryable(&status(code)), "{code}");
        }
        for code in [400, 401, 403, 404, 410, 301] {
            assert!(!retryable(&status(code)), "{code}");
        }
        assert!(!retryable(&ClientError::NotAStream("text/html".into())));
    }

    #[test]
    fn a_notice_says_why_when_and_from_where() {
        let notice = Notice {
            reason: "the hub ended the stream".into(),
            after: 250 * MS,
            last_event_id: "#4.abc".into(),
        };
        assert_eq!(
            notice.to_string(),
            "the hub ended the stream; reconnecting in 250 ms after event #4.abc"
        );
    }
}
