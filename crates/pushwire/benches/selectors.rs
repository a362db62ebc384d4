//! What matching topic selectors costs: 5,000 URI templates and 5,000 URL
//! patterns, 100,000 matches each, straight through `Selector::matches` and
//! through a `MatchCache`, with the hit rates a hub sees (a few hot topics
//! asked again and again) and with none at all (every pair new).
//!
//! Run: `cargo bench --bench selectors`. Prints ns per match.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench fails loudly

use std::hint::black_box;
use std::time::Instant;

use pushwire_core::route::{MatchCache, MatchKind, Selector};

const SELECTORS: usize = 5_000;
const MATCHES: usize = 100_000;
const HUB: &str = "https://localhost/.well-known/mercure";

/// A deterministic generator (xorshift), so runs compare.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, sides: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % sides as u64) as usize
    }

    /// Skewed towards 0: a few hot items, a long tail.
    fn skewed(&mut self, sides: usize) -> usize {
        let u = self.roll(1 << 20) as f64 / f64::from(1 << 20);
        ((u * u * u) * sides as f64) as usize
    }
}

/// The literal parts that vary between selectors: 100 hosts times 50
/// sections.
fn host_and_section(i: usize) -> (usize, usize) {
    (i % 100, i / 100)
}

fn selectors(kind: MatchKind) -> Vec<Selector> {
    (0..SELECTORS)
        .map(|i| {
            let (host, section) = host_and_section(i);
            let text = match kind {
                MatchKind::UriTemplate => {
                    format!("https://example{host}.com/s{section}/users/{{u}}/orders/{{id}}")
                }
                _ => format!("https://example{host}.com/s{section}/users/:u/orders/:id"),
            };
            Selector::parse(kind, &text, HUB).expect("a valid selector")
        })
        .collect()
}

/// A topic for selector `i`: half of them match it, the others differ in
/// a way the matcher must read to the end to see.
fn topic(dice: &mut Dice, i: usize) -> String {
    let (host, section) = host_and_section(i);
    let user = dice.roll(1_000);
    let order = dice.roll(100_000);
    match dice.roll(4) {
        0 | 1 => format!("https://example{host}.com/s{section}/users/{user}/orders/{order}"),
        2 => format!("https://example{host}.com/s{section}/users/{user}/orders/{order}/items"),
        _ => format!("https://example{host}.com/s{section}/users/{user}/invoices/{order}"),
    }
}

/// `MATCHES` (selector index, topic) pairs. With `distinct` pairs in the
/// pool, drawn skewed, a cache sees realistic repeats; with as many pairs as
/// matches, drawn in order, it never hits.
fn workload(dice: &mut Dice, distinct: usize, skewed: bool) -> Vec<(usize, String)> {
    let pool: Vec<(usize, String)> = (0..distinct)
        .map(|_| {
            let i = dice.roll(SELECTORS);
            (i, topic(dice, i))
        })
        .collect();
    (0..MATCHES)
        .map(|n| {
            let pick = if skewed {
                dice.skewed(distinct)
            } else {
                n % distinct
            };
            pool[pick].clone()
        })
        .collect()
}

/// What the hub does on publish: the event's topic against every
/// selector. Five topics, four events each, so a cache meets each
/// (selector, topic) pair four times.
fn fanout(dice: &mut Dice) -> Vec<(usize, String)> {
    let topics: Vec<String> = (0..5)
        .map(|_| {
            let i = dice.roll(SELECTORS);
            topic(dice, i)
        })
        .collect();
    let events = MATCHES / SELECTORS;
    (0..events)
        .flat_map(|event| {
            let topic = topics[event % topics.len()].clone();
            (0..SELECTORS).map(move |i| (i, topic.clone()))
        })
        .collect()
}

fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn direct(selectors: &[Selector], work: &[(usize, String)]) -> (f64, usize) {
    let started = Instant::now();
    let mut matched = 0;
    for (i, topic) in work {
        matched += usize::from(black_box(&selectors[*i]).matches(black_box(topic)));
    }
    (
        started.elapsed().as_nanos() as f64 / work.len() as f64,
        matched,
    )
}

fn cached(selectors: &[Selector], work: &[(usize, String)], capacity: usize) -> (f64, usize, f64) {
    let mut cache = MatchCache::new(capacity);
    let started = Instant::now();
    let mut matched = 0;
    for (i, topic) in work {
        matched += usize::from(cache.matches(black_box(&selectors[*i]), black_box(topic)));
    }
    let ns = started.elapsed().as_nanos() as f64 / work.len() as f64;
    let hit_rate = cache.hits() as f64 / (cache.hits() + cache.misses()) as f64;
    (ns, matched, hit_rate)
}

fn main() {
    println!("selectors: {SELECTORS} per kind, {MATCHES} matches per run");
    for (kind, label) in [
        (MatchKind::UriTemplate, "URI template"),
        (MatchKind::UrlPattern, "URL pattern"),
    ] {
        let before = resident_bytes();
        let started = Instant::now();
        let selectors = selectors(kind);
        let compile = started.elapsed();
        let memory = match (before, resident_bytes()) {
            (Some(b), Some(a)) => format!(
                "{:.1} KiB",
                a.saturating_sub(b) as f64 / 1024.0 / SELECTORS as f64
            ),
            _ => "n/a".to_owned(),
        };
        println!(
            "\n{label}: compile {:.1} µs/selector, resident {memory}/selector (before first match)",
            compile.as_secs_f64() * 1e6 / SELECTORS as f64
        );

        let mut dice = Dice(0x2545_f491_4f6c_dd1d);
        let workloads = [
            (
                "pairs, hot: 20,000 distinct (selector, topic), skewed",
                workload(&mut dice, 20_000, true),
            ),
            (
                "pairs, cold: every (selector, topic) new",
                workload(&mut dice, MATCHES, false),
            ),
            (
                "fanout: 20 events on 5 topics, each against every selector",
                fanout(&mut dice),
            ),
        ];
        for (name, work) in workloads {
            // Warm the regexes' lazy DFAs, as a running hub's are.
            let _ = direct(&selectors, &work);
            let (ns, expected) = direct(&selectors, &work);
            println!("  {name}");
            println!("    no cache              {ns:8.1} ns/match ({expected} matched)");
            for capacity in [65_536, 4_096] {
                let (ns, matched, hits) = cached(&selectors, &work, capacity);
                assert_eq!(matched, expected, "the cache changed an answer");
                println!(
                    "    cache capacity {capacity:6} {ns:8.1} ns/match (hit rate {:.1}%)",
                    hits * 100.0
                );
            }
        }
    }
}
