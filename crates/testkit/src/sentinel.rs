//! A real Redis Sentinel setup for the failover tests: one primary, its
//! replicas (one, or two where a test needs a replica left after a
//! failover) and three `redis-sentinel` processes that monitor the primary
//! under one name with a quorum of two, all on free loopback ports, each in
//! a temporary directory of its own (a sentinel rewrites its configuration
//! file, so it is written there). Failure is noticed after
//! [`DOWN_AFTER`] without an answer. Every process is killed (SIGKILL)
//! when dropped. `scripts/test` installs `redis-sentinel` when missing; a
//! machine without it fails these tests, it does not skip them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::hub::WAIT;
use crate::redis::{free_port, info, RedisServer};

/// How long a primary may not answer before a sentinel thinks it down.
pub const DOWN_AFTER: Duration = Duration::from_millis(1000);
/// Sentinel's `failover-timeout`: also how long a failed failover waits
/// before another attempt.
const FAILOVER_TIMEOUT: Duration = Duration::from_millis(5000);

/// One `redis-sentinel` process.
pub struct Sentinel {
    child: Option<Child>,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Sentinel {
    /// Starts a sentinel that monitors `primary` as `name`, and waits until
    /// it answers. Like [`RedisServer::start`], tries another port when the
    /// free one was taken meanwhile.
    fn start(name: &str, primary: u16) -> Sentinel {
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("temporary directory");
            let port = free_port();
            let conf = dir.path().join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                     sentinel monitor {name} 127.0.0.1 {primary} 2\n\
                     sentinel down-after-milliseconds {name} {down}\n\
                     sentinel failover-timeout {name} {failover}\n\
                     sentinel parallel-syncs {name} 1\n",
                    dir = dir.path().display(),
                    down = DOWN_AFTER.as_millis(),
                    failover = FAILOVER_TIMEOUT.as_millis(),
                ),
            )
            .expect("write sentinel.conf");
            let child = Command::new("redis-sentinel")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-sentinel runs (scripts/test installs it)");
            let pid = child.id();
            let mut sentinel = Sentinel {
                child: Some(child),
                port,
                _dir: dir,
            };
            let deadline = Instant::now() + WAIT;
            loop {
                if info(port, "server").contains(&format!("process_id:{pid}\r\n")) {
                    return sentinel;
                }
                if let Some(Ok(Some(_))) = sentinel.child.as_mut().map(Child::try_wait) {
                    sentinel.child = None;
                    break;
                }
                assert!(Instant::now() < deadline, "redis-sentinel did not answer");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("redis-sentinel did not start on any of five free ports");
    }

    /// What this sentinel knows of its master (`INFO sentinel`).
    fn knows(&self) -> String {
        info(self.port, "sentinel")
    }
}

/// A primary, its replicas and three sentinels watching them.
pub struct SentinelSetup {
    /// The master name the sentinels know the primary by.
    pub name: String,
    pub primary: RedisServer,
    pub replicas: Vec<RedisServer>,
    pub sentinels: Vec<Sentinel>,
}

impl SentinelSetup {
    /// One primary, one replica, three sentinels.
    pub fn start() -> SentinelSetup {
        SentinelSetup::with_replicas(1)
    }

    /// Starts everything and waits until every replica is in sync and
    /// every sentinel has found the replicas and the other sentinels, so
    /// that a failover can start as soon as the primary goes.
    pub fn with_replicas(count: usize) -> SentinelSetup {
        let name = "pushwire-test".to_owned();
        let primary = RedisServer::start();
        let replicas: Vec<RedisServer> = (0..count)
            .map(|_| RedisServer::replica_of(&primary))
            .collect();
        for replica in &replicas {
            replica.synced();
        }
        let sentinels: Vec<Sentinel> = (0..3)
            .map(|_| Sentinel::start(&name, primary.port))
            .collect();
        let deadline = Instant::now() + WAIT * 3;
        // `master0:name=…,status=ok,address=…,slaves=1,sentinels=3`
        let wanted = format!("slaves={count},sentinels=3");
        for sentinel in &sentinels {
            while !sentinel.knows().contains(&wanted) {
                assert!(
                    Instant::now() < deadline,
                    "sentinel on port {} did not find the replicas and its peers: {}",
                    sentinel.port,
                    sentinel.knows()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        SentinelSetup {
            name,
            primary,
            replicas,
            sentinels,
        }
    }

    /// `--redis-sentinels`: every sentinel, comma-separated.
    pub fn sentinels_flag(&self) -> String {
        self.sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The port every sentinel names as the master now, once they agree.
    pub fn master_port(&self) -> Option<u16> {
        let ports: Vec<Option<u16>> = self
            .sentinels
            .iter()
            .map(|s| {
                let text = s.knows();
                let address = text.split("address=").nth(1)?;
                let address = address.split(',').next()?;
                address.rsplit(':').next()?.parse().ok()
            })
            .collect();
        match ports.first() {
            Some(Some(port)) if ports.iter().all(|p| *p == Some(*port)) => Some(*port),
            _ => None,
        }
    }
}
