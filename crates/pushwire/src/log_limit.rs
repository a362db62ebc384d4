//! Log lines that a caller can provoke at will (refused tokens, limit
//! refusals, slow-consumer cuts) go through a [`Throttle`]: at most
//! [`LINES_PER_WINDOW`] lines of one kind per [`WINDOW`], so an attack
//! cannot flood the log or spend the hub's time formatting lines.
//!
//! What is held back is not forgotten: the first line of that kind once a
//! new window has begun is preceded by one summary line, "N more
//! suppressed", with the kind and the count. A kind that stays quiet after a
//! burst says nothing more (the counters in `/metrics` still have it all).
//!
//! A throttle is a short critical section on its own mutex, taken only on
//! paths that already refuse or cut something, never per delivery.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long one window lasts.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Lines of one kind logged per window; the rest are counted.
pub const LINES_PER_WINDOW: u32 = 10;

/// Streams cut as slow consumers (warn).
pub static SLOW_CONSUMER: Throttle = Throttle::new("slow_consumer");
/// Refused credentials: keys, tokens, non-local keyless callers (info).
pub static AUTH_REFUSAL: Throttle = Throttle::new("auth_refusal");
/// Calls to the `--auth-url` backend that gave no usable answer (warn).
pub static AUTH_BACKEND: Throttle = Throttle::new("auth_backend");
/// Publishes over their rate (info).
pub static RATE_LIMIT: Throttle = Throttle::new("rate_limit");
/// Streams over a per-address, per-user or hub-wide stream limit (info).
pub static STREAM_LIMIT: Throttle = Throttle::new("stream_limit");

/// The counter and window of one kind of line.
pub struct Throttle {
    kind: &'static str,
    state: Mutex<Window>,
}

struct Window {
    started: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

/// Whether a line may be written now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Write it; `suppressed` lines of this kind were held back before it
    /// (to say in a summary line first, when not zero).
    Log { suppressed: u64 },
    /// Do not write it: it is counted for the next summary.
    Suppress,
}

impl Throttle {
    pub const fn new(kind: &'static str) -> Throttle {
        Throttle {
            kind,
            state: Mutex::new(Window {
                started: None,
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// The kind, as summary lines name it.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// Whether a line may be written at `now`.
    pub fn verdict_at(&self, now: Instant) -> Verdict {
        let mut window = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let fresh = window
            .started
            .is_none_or(|started| now.saturating_duration_since(started) >= WINDOW);
        if fresh {
            window.started = Some(now);
            window.logged = 0;
        }
        if window.logged < LINES_PER_WINDOW {
            window.logged += 1;
            let suppressed = std::mem::take(&mut window.suppressed);
            Verdict::Log { suppressed }
        } else {
            window.suppressed += 1;
            Verdict::Suppress
        }
    }

    /// Whether a line may be written now; writes the summary of what was
    /// held back first, at `warn` (it says an attack or a fault went on).
    pub fn admit(&self) -> bool {
        match self.verdict_at(Instant::now()) {
            Verdict::Log { suppressed } => {
                if suppressed > 0 {
                    tracing::warn!(
                        kind = self.kind,
                        suppressed,
                        "{suppressed} more `{}` lines suppressed",
                        self.kind
                    );
                }
                true
            }
            Verdict::Suppress => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_logs_its_share_then_counts_and_the_next_one_reports_the_count() {
        let throttle = Throttle::new("test");
        let start = Instant::now();
        for _ in 0..LINES_PER_WINDOW {
            assert_eq!(throttle.verdict_at(start), Verdict::Log { suppressed: 0 });
        }
        for i in 1..=5 {
            let at = start + Duration::from_millis(i * 100);
            assert_eq!(throttle.verdict_at(at), Verdict::Suppress);
        }
        // Still the same window just before it ends.
        let late = start + WINDOW - Duration::from_millis(1);
        assert_eq!(throttle.verdict_at(late), Verdict::Suppress);
        // A new window: the first line carries the six held back, once.
        let next = start + WINDOW;
        assert_eq!(throttle.verdict_at(next), Verdict::Log { suppressed: 6 });
        assert_eq!(throttle.verdict_at(next), Verdict::Log { suppressed: 0 });
    }

    #[test]
    fn a_quiet_kind_is_never_held_back() {
        let throttle = Throttle::new("test");
        let start = Instant::now();
        for i in 0..100 {
            let at = start + WINDOW * i;
            assert_eq!(throttle.verdict_at(at), Verdict::Log { suppressed: 0 });
        }
    }

    #[test]
    fn kinds_do_not_share_a_window() {
        let (a, b) = (Throttle::new("a"), Throttle::new("b"));
        let now = Instant::now();
        for _ in 0..LINES_PER_WINDOW {
            a.verdict_at(now);
        }
        assert_eq!(a.verdict_at(now), Verdict::Suppress);
        assert_eq!(b.verdict_at(now), Verdict::Log { suppressed: 0 });
    }
}
