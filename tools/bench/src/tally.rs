//! What a worker's streams received: for each stream, which of its expected
//! events arrived (a bitmap, so duplicates and gaps show); for the worker,
//! the counts and the publish-to-receive latency histogram, sent to the
//! coordinator as `[value, count]` pairs that merge exactly.

use anyhow::Context;
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::plan::Expect;

pub fn latency_histogram() -> anyhow::Result<Histogram<u64>> {
    // 1 µs to 1 h, 3 significant digits.
    Ok(Histogram::new_with_bounds(1, 3_600_000_000, 3)?)
}

/// A histogram as `[value, count]` pairs of its non-empty buckets: recorded
/// again into a histogram of the same bounds they land in the same buckets,
/// so merging is exact.
pub fn histogram_pairs(h: &Histogram<u64>) -> Value {
    Value::Array(
        h.iter_recorded()
            .map(|v| json!([v.value_iterated_to(), v.count_at_value()]))
            .collect(),
    )
}

pub fn merge_pairs(into: &mut Histogram<u64>, pairs: &Value) -> anyhow::Result<()> {
    for pair in pairs.as_array().context("histogram is not an array")? {
        let value = pair.get(0).and_then(Value::as_u64).context("bad pair")?;
        let count = pair.get(1).and_then(Value::as_u64).context("bad pair")?;
        into.record_n(value, count)?;
    }
    Ok(())
}

/// What one worker's streams received.
pub struct Tally {
    pub latency: Histogram<u64>,
    pub streams: usize,
    pub expected: usize,
    /// Events carrying a sequence number, duplicates included.
    pub received: u64,
    pub unique: u64,
    pub duplicates: u64,
    /// Events of another topic, or beyond the run's sequence numbers.
    pub misrouted: u64,
    /// Events whose data is not `<seq> <nanos> ...`.
    pub unparsed: u64,
    /// Streams the hub ended while the run went on: with the end of the
    /// body, by closing the connection, or with a connection error.
    pub closed: usize,
    pub closed_by_body_end: usize,
    pub closed_by_eof: usize,
    pub closed_by_error: usize,
    pub protocol_errors: usize,
    pub complete: usize,
    pub first_delivery_ns: u64,
    pub last_delivery_ns: u64,
}

impl Tally {
    pub fn new() -> anyhow::Result<Tally> {
        Ok(Tally {
            latency: latency_histogram()?,
            streams: 0,
            expected: 0,
            received: 0,
            unique: 0,
            duplicates: 0,
            misrouted: 0,
            unparsed: 0,
            closed: 0,
            closed_by_body_end: 0,
            closed_by_eof: 0,
            closed_by_error: 0,
            protocol_errors: 0,
            complete: 0,
            first_delivery_ns: 0,
            last_delivery_ns: 0,
        })
    }

    pub fn record(&mut self, stream: &mut StreamState, data: &str, now_ns: u64) -> bool {
        let mut fields = data.split(' ');
        let seq = fields.next().and_then(|s| s.parse::<usize>().ok());
        let sent = fields.next().and_then(|s| s.parse::<u64>().ok());
        let (Some(seq), Some(sent)) = (seq, sent) else {
            self.unparsed += 1;
            return false;
        };
        self.received += 1;
        let expect = stream.expect;
        if seq % expect.topics != expect.topic || seq / expect.topics >= expect.count {
            self.misrouted += 1;
            return false;
        }
        let local = seq / expect.topics;
        let (word, bit) = (local / 64, 1u64 << (local % 64));
        let Some(slot) = stream.seen.get_mut(word) else {
            self.misrouted += 1;
            return false;
        };
        if *slot & bit != 0 {
            self.duplicates += 1;
            return false;
        }
        *slot |= bit;
        stream.unique += 1;
        self.unique += 1;
        self.latency
            .saturating_record((now_ns.saturating_sub(sent) / 1000).max(1));
        if self.first_delivery_ns == 0 {
            self.first_delivery_ns = now_ns;
        }
        self.last_delivery_ns = self.last_delivery_ns.max(now_ns);
        if stream.unique == expect.count {
            self.complete += 1;
            return self.complete == self.streams;
        }
        false
    }
}

/// Which of its events one stream received.
pub struct StreamState {
    expect: Expect,
    seen: Vec<u64>,
    unique: usize,
}

impl StreamState {
    pub fn new(expect: Expect) -> StreamState {
        StreamState {
            expect,
            seen: vec![0; expect.count.div_ceil(64)],
            unique: 0,
        }
    }

    /// Sequence numbers of the first and the last event it missed.
    pub fn missing_range(&self) -> Option<(usize, usize)> {
        if self.unique >= self.expect.count {
            return None;
        }
        let missing = |local: &usize| self.seen[local / 64] & (1u64 << (local % 64)) == 0;
        let first = (0..self.expect.count).find(missing)?;
        let last = (0..self.expect.count).rev().find(missing)?;
        let seq = |local: usize| local * self.expect.topics + self.expect.topic;
        Some((seq(first), seq(last)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::plan::{event_data, Kind};

    #[test]
    fn tally_counts_duplicates_and_misrouted_events() {
        let mut tally = Tally::new().unwrap();
        tally.streams = 1;
        let expect = Expect::new(Kind::Spread, 1, 2, 4);
        let mut stream = StreamState::new(expect);
        assert!(!tally.record(&mut stream, &event_data(1, 1_000, 32), 5_000));
        assert!(!tally.record(&mut stream, &event_data(1, 1_000, 32), 5_000));
        assert!(!tally.record(&mut stream, &event_data(2, 1_000, 32), 5_000));
        assert!(!tally.record(&mut stream, "hello", 5_000));
        assert!(tally.record(&mut stream, &event_data(3, 1_000, 32), 9_000));
        assert_eq!(
            (
                tally.unique,
                tally.duplicates,
                tally.misrouted,
                tally.unparsed
            ),
            (2, 1, 1, 1)
        );
        assert_eq!(tally.latency.max(), 8);
        assert_eq!(stream.missing_range(), None);
        let mut partial = StreamState::new(Expect::new(Kind::Spread, 2, 3, 20));
        assert!(!tally.record(&mut partial, &event_data(5, 1_000, 32), 5_000));
        assert_eq!(partial.missing_range(), Some((2, 17)));
    }

    #[test]
    fn histograms_merge_exactly_through_pairs() {
        let mut a = latency_histogram().unwrap();
        for v in [1, 5, 900, 12_345, 2_000_000] {
            a.record(v).unwrap();
        }
        let mut b = latency_histogram().unwrap();
        merge_pairs(&mut b, &histogram_pairs(&a)).unwrap();
        assert_eq!(a.len(), b.len());
        for q in [0.5, 0.9, 0.99, 1.0] {
            assert_eq!(a.value_at_quantile(q), b.value_at_quantile(q));
        }
    }
}
