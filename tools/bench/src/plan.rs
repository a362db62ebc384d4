//! What a `fanout` or `spread` run sends and expects: the topic names, the
//! data of each event (its sequence number and send time, so a receiver can
//! tell which it got and how late), and which events each stream should
//! receive.

use std::time::{SystemTime, UNIX_EPOCH};

use clap::ValueEnum;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    Fanout,
    Spread,
}

pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default()
}

pub fn topic_name(prefix: &str, kind: Kind, index: usize) -> String {
    match kind {
        Kind::Fanout => format!("{prefix}-all"),
        Kind::Spread => format!("{prefix}-{index}"),
    }
}

/// The data of event `seq`: its number, its send time, then padding.
pub fn event_data(seq: usize, sent_ns: u64, size: usize) -> String {
    let mut data = format!("{seq} {sent_ns} ");
    while data.len() < size {
        data.push('x');
    }
    data
}

/// The events stream `index` should receive: those whose sequence number
/// is `topic` modulo `topics`.
#[derive(Clone, Copy)]
pub struct Expect {
    pub topic: usize,
    pub topics: usize,
    pub count: usize,
}

impl Expect {
    pub fn new(kind: Kind, index: usize, topics: usize, events: usize) -> Expect {
        let topic = match kind {
            Kind::Fanout => 0,
            Kind::Spread => index,
        };
        let topics = topics.max(1);
        let count = if topic < events {
            (events - 1 - topic) / topics + 1
        } else {
            0
        };
        Expect {
            topic,
            topics,
            count,
        }
    }
}

pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn expectations_cover_every_event_once() {
        let (topics, events) = (7, 100);
        let total: usize = (0..topics)
            .map(|i| Expect::new(Kind::Spread, i, topics, events).count)
            .sum();
        assert_eq!(total, events);
        assert_eq!(Expect::new(Kind::Spread, 9, 10, 5).count, 0);
        assert_eq!(Expect::new(Kind::Fanout, 3, 1, 5).count, 5);
    }
}
