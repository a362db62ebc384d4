//! What reading a request body costs the hub, however its bytes arrive.
//!
//! A chunked body sent one tiny chunk per TCP segment must cost about its
//! own length while it is read, not a read buffer per chunk, and the memory
//! must be given back when the request ends. The hub runs as the real
//! binary so the resident set measured (`VmRSS` of /proc/<pid>/status) is
//! the hub's own. The bodies end refused (413, 401), so nothing else the
//! hub does moves the figures.
//!
//! `--max-inflight-body` bounds the body bytes being read across all
//! requests: past it a request gets 503 `overloaded` with `Retry-After`,
//! and publishes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pushwire_testkit::http::parse_reply;
use pushwire_testkit::prelude::{get, HubProcess, Reply, WAIT};
use pushwire_testkit::reliability::{self, Row};

const BIN: &str = pushwire_testkit::hub_binary!();
/// `--max-body` of these hubs.
const LIMIT: usize = 512 * 1024;
const KEY: &str = "body-test-key";

/// The resident set of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

/// Samples the resident set of `pid` until stopped, keeping the highest.
struct PeakSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl PeakSampler {
    fn start(pid: u32) -> PeakSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss(pid)));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        PeakSampler { stop, peak, thread }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        self.peak.load(Ordering::Relaxed)
    }
}

/// Sends `head` then `total` one-byte chunks, each its own write (and so,
/// with `TCP_NODELAY`, its own segment), then the last chunk; returns the
/// answer. The hub may answer and close early: the writes then fail and
/// what it answered is read by a reader running alongside.
fn trickle_chunked(addr: SocketAddr, head: &str, total: usize) -> Reply {
    let mut socket = TcpStream::connect(addr).unwrap();
    socket.set_nodelay(true).unwrap();
    let mut reader = socket.try_clone().unwrap();
    // The answer comes once the sending reached the limit: bound the wait
    // by that, not by one ordinary exchange.
    reader.set_read_timeout(Some(6 * WAIT)).unwrap();
    let answer = std::thread::spawn(move || {
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
        raw
    });
    let sent = (|| {
        socket.write_all(head.as_bytes())?;
        for _ in 0..total {
            socket.write_all(b"1\r\nX\r\n")?;
            socket.flush()?;
            // Without a pause the bytes pile up while the hub reads and it
            // gets many chunks per read, as it would not from a remote
            // sender: give each chunk its own read. A spin, not a sleep,
            // which would take a millisecond.
            let sent = Instant::now();
            while sent.elapsed() < Duration::from_micros(20) {
                std::hint::spin_loop();
            }
        }
        socket.write_all(b"0\r\n\r\n")
    })();
    let _ = sent;
    let raw = answer.join().unwrap();
    parse_reply(&raw).unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&raw)))
}

fn spawn_hub(extra: &[&str]) -> HubProcess {
    let limit = LIMIT.to_string();
    let mut args = vec![
        "--storage",
        "memory",
        "--max-body",
        &limit,
        "--publisher-key",
        KEY,
    ];
    args.extend_from_slice(extra);
    HubProcess::spawn(BIN, args)
}

/// The resident set once the hub has settled after a request.
fn settled_rss(pid: u32) -> u64 {
    std::thread::sleep(Duration::from_millis(500));
    rss(pid)
}

/// Baseline, peak and after figures of one trickled body.
struct Figures {
    baseline: u64,
    peak: u64,
    after: u64,
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kib = |b: u64| b / 1024;
        write!(
            f,
            "baseline {} KiB, peak {} KiB, after {} KiB",
            kib(self.baseline),
            kib(self.peak),
            kib(self.after)
        )
    }
}

fn measure(hub: &HubProcess, head: &str, total: usize, status: u16) -> Figures {
    let pid = hub.child.id();
    let baseline = settled_rss(pid);
    let sampler = PeakSampler::start(pid);
    let reply = trickle_chunked(hub.addr, head, total);
    let peak = sampler.finish();
    assert_eq!(reply.status, status, "{}", reply.body);
    let after = settled_rss(pid);
    Figures {
        baseline,
        peak,
        after,
    }
}

/// A fresh hub per body, so one body's memory cannot count for another.
fn measure_on_fresh_hub(head: &str, total: usize, status: u16) -> Figures {
    let hub = spawn_hub(&[]);
    // One ordinary exchange first, so the baseline has the runtime warm.
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(rt.block_on(get(hub.addr, "/healthz")).status, 200);
    let head = head.replace("{addr}", &hub.addr.to_string());
    measure(&hub, &head, total, status)
}

#[test]
fn a_body_trickled_one_byte_per_segment_costs_about_its_length() {
    // A JSON publish over --max-body, with the key: read until the limit, 413.
    let publish = format!(
        "POST /api/v1/publish HTTP/1.1\r\nHost: {{addr}}\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let json = measure_on_fresh_hub(&publish, LIMIT + 16 * 1024, 413);
    // A Mercure form without any token: the token may be in the form, so
    // it is read (within --max-body), then refused, 401.
    let mercure = "POST /.well-known/mercure HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n";
    let form = measure_on_fresh_hub(mercure, 240 * 1024, 401);
    eprintln!("publish, 528 KiB in 1-byte chunks: {json}");
    eprintln!("mercure, 240 KiB in 1-byte chunks: {form}");

    // The buffer grows by doubling: while it grows from half the limit to
    // the limit both are held (1.5 times the limit), beside the
    // connection's read buffer and what a worker thread's first
    // allocations touch, which came to just over twice the limit once. A
    // read buffer kept per chunk, the failure this is for, is a thousand
    // times the body.
    for (what, f) in [("publish", &json), ("mercure", &form)] {
        let growth = f.peak.saturating_sub(f.baseline);
        assert!(growth < 3 * LIMIT as u64, "{what}: {f}");
        // The allocator may keep a little; the body's memory must not stay.
        assert!(f.after < f.baseline + 2 * LIMIT as u64, "{what}: {f}");
    }
    reliability::record(Row {
        family: "request bodies trickled one byte per TCP segment (chunked JSON over --max-body, Mercure form without a token)",
        cases: 2,
        crashes: 0,
        lost: 0,
        outcome: "413 / 401; hub memory grows by less than three times --max-body and is given back",
        test: "cargo test --test bodies a_body_trickled_one_byte_per_segment_costs_about_its_length",
    });
}

/// Opens a publish whose declared body is `len` bytes and sends `sent` of
/// them; the rest is sent by [`finish_body`].
fn open_body(addr: SocketAddr, len: usize, sent: &[u8]) -> TcpStream {
    let mut socket = TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    let head = format!(
        "POST /api/v1/publish HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).unwrap();
    socket.write_all(sent).unwrap();
    socket
}

/// Whether the hub has answered on `socket` yet (without reading it).
fn answered(socket: &TcpStream) -> bool {
    socket.set_nonblocking(true).unwrap();
    // An answer, or a close or reset after one.
    let answered = !matches!(
        socket.peek(&mut [0u8; 1]),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
    );
    socket.set_nonblocking(false).unwrap();
    answered
}

fn answer(mut socket: TcpStream) -> Reply {
    let mut raw = Vec::new();
    let _ = socket.read_to_end(&mut raw);
    parse_reply(&raw).unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&raw)))
}

/// A publish body of exactly `len` bytes sending `data` to topic `t`.
fn padded_event(data: &str, len: usize) -> Vec<u8> {
    let event = format!("{{\"to\":{{\"topics\":[\"t\"]}},\"data\":\"{data}\"}}");
    let mut body = event.into_bytes();
    body.resize(len, b' ');
    body
}

#[test]
fn bodies_over_the_inflight_budget_get_503_and_publish_nothing() {
    // The smallest budget there is, --max-body: room for one body of
    // 300 KiB being read, not two.
    let budget = LIMIT.to_string();
    let hub = spawn_hub(&["--max-inflight-body", &budget]);
    let addr = hub.addr;
    let len = 300 * 1024;
    let first = padded_event("first", len);
    // The first body is half sent and waits: its declared length is held.
    let mut slow = open_body(addr, len, &first[..len / 2]);
    // A probe (not JSON, so it can publish nothing) gets 503 once the slow
    // body holds its room. Before that, it is read and refused 400, and
    // while it was read the slow body may have been refused for want of
    // room itself: then it is sent again.
    let deadline = Instant::now() + WAIT;
    let mut probes = 0;
    let mut resent = 0;
    loop {
        assert!(Instant::now() < deadline, "no 503 within {WAIT:?}");
        probes += 1;
        let probe = answer(open_body(addr, len, &vec![b'#'; len]));
        if probe.status == 503 {
            break;
        }
        assert_eq!(probe.status, 400, "{}", probe.body);
        if answered(&slow) {
            resent += 1;
            slow = open_body(addr, len, &first[..len / 2]);
        }
    }
    let others: Vec<_> = (0..3)
        .map(|i| {
            std::thread::spawn(move || {
                let body = padded_event(&format!("refused-{i}"), len);
                answer(open_body(addr, len, &body))
            })
        })
        .collect();
    for other in others {
        let reply = other.join().unwrap();
        assert_eq!(reply.status, 503, "{}", reply.body);
        assert_eq!(
            reply.json()["error"]["code"],
            "overloaded",
            "{}",
            reply.body
        );
        assert_eq!(reply.header("retry-after"), Some("1"));
    }
    slow.write_all(&first[len / 2..]).unwrap();
    let done = answer(slow);
    assert_eq!(done.status, 200, "{}", done.body);
    // Its budget is given back: the next body is read again.
    let after = answer(open_body(addr, len, &padded_event("after", len)));
    assert_eq!(after.status, 200, "{}", after.body);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let auth = format!("Bearer {KEY}");
    let events = rt.block_on(pushwire_testkit::prelude::request(
        addr,
        "GET",
        "/api/v1/events?limit=1000",
        &[("authorization", &auth)],
        b"",
    ));
    assert_eq!(events.status, 200, "{}", events.body);
    let datas: Vec<String> = events.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(datas, ["first", "after"]);
    // Every refusal is counted: the probe that met the held room, the
    // three, and any slow body refused while a probe held the room.
    let metrics = rt.block_on(get(addr, "/metrics"));
    let counted = format!(
        "pushwire_limit_rejections_total{{limit=\"inflight_body\"}} {}",
        4 + resent
    );
    assert!(
        metrics.body.contains(&counted),
        "{counted}: {}",
        metrics.body
    );
    reliability::record(Row {
        family: "concurrent request bodies over --max-inflight-body",
        cases: probes + 5,
        crashes: 0,
        lost: 0,
        outcome:
            "503 overloaded with Retry-After: 1, nothing published; bodies within the budget stored",
        test:
            "cargo test --test bodies bodies_over_the_inflight_budget_get_503_and_publish_nothing",
    });
}

#[test]
fn a_mercure_publish_with_a_bad_header_or_cookie_token_is_refused_before_its_body() {
    let hub = spawn_hub(&[
        "--publisher-jwt-key",
        "a-publisher-secret-of-32-bytes-or-more",
    ]);
    let addr = hub.addr;
    let mut cases = 0;
    for (credential, status) in [
        ("Authorization: Bearer not-a-token\r\n", 401),
        // Not a Bearer presentation at all: 400 invalid_request.
        ("Authorization: Basic dXNlcjpwYXNz\r\n", 400),
        // A cookie from a page of the hub's own origin reaches the token
        // check; without an Origin it is refused before that (403).
        (
            "Cookie: mercureAuthorization=not-a-token\r\nOrigin: http://ADDR\r\n",
            401,
        ),
        (
            "Cookie: a=1; mercureAccessToken=not-a-token\r\nOrigin: http://ADDR\r\n",
            401,
        ),
        ("Cookie: mercureAuthorization=not-a-token\r\n", 403),
    ] {
        let credential = credential.replace("ADDR", &addr.to_string());
        // The head announces a body that is never sent: the answer can
        // only come from the head.
        let mut socket = TcpStream::connect(addr).unwrap();
        socket.set_read_timeout(Some(WAIT)).unwrap();
        let head = format!(
            "POST /.well-known/mercure HTTP/1.1\r\nHost: {addr}\r\n{credential}\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {LIMIT}\r\n\r\n"
        );
        socket.write_all(head.as_bytes()).unwrap();
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = socket.read(&mut buf).expect("no answer before the body");
            assert!(n > 0, "closed without an answer: {credential}");
            raw.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&raw);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status} ")),
            "{credential}: {text}"
        );
        cases += 1;
    }
    reliability::record(Row {
        family: "Mercure publishes with a bad Authorization header or cookie token and a body never sent",
        cases,
        crashes: 0,
        lost: 0,
        outcome: "401 (400 for a non-Bearer header, 403 for a cookie without Origin) from the head alone; the body is never read",
        test: "cargo test --test bodies a_mercure_publish_with_a_bad_header_or_cookie_token_is_refused_before_its_body",
    });
}
