//! A real `redis-server` for the cluster tests: a child process on a free
//! loopback port, with an append-only file forced to disk on every write
//! (`appendfsync always`) in a temporary directory, so that a restart on
//! the same port and directory keeps everything Redis acknowledged. Killed
//! (SIGKILL) when dropped. `scripts/test` installs `redis-server` when
//! missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::hub::WAIT;

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    /// Arguments beyond the defaults (`--replicaof` for a replica).
    extra: Vec<String>,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers. Another
    /// test may be handed the same free port in the meantime: then Redis
    /// cannot bind it, and another port is tried.
    pub fn start() -> RedisServer {
        RedisServer::start_with(Vec::new())
    }

    /// A replica of `primary` (`--replicaof`), on a free port, in a
    /// directory of its own. It answers at once; [`RedisServer::synced`]
    /// waits until it took the primary's data.
    pub fn replica_of(primary: &RedisServer) -> RedisServer {
        RedisServer::start_with(vec![
            "--replicaof".to_owned(),
            "127.0.0.1".to_owned(),
            primary.port.to_string(),
        ])
    }

    fn start_with(extra: Vec<String>) -> RedisServer {
        let mut server = RedisServer {
            child: None,
            port: 0,
            dir: tempfile::tempdir().expect("temporary directory"),
            extra,
        };
        for _ in 0..5 {
            server.port = free_port();
            if server.launch() {
                return server;
            }
        }
        panic!("redis-server did not start on any of five free ports");
    }

    /// A port nobody listens on, for "Redis is not there" cases. It is
    /// taken below the kernel's ephemeral range, so that no other test's
    /// `bind(0)` is handed it while this one waits to start Redis there.
    pub fn unused_port() -> u16 {
        let seed = std::process::id() as u64
            ^ u64::from(
                std::time::UNIX_EPOCH
                    .elapsed()
                    .map_or(0, |d| d.subsec_nanos()),
            );
        (0..1000)
            .map(|i| 20_000 + ((seed + i * 7919) % 10_000) as u16)
            .find(|&port| TcpListener::bind(("127.0.0.1", port)).is_ok())
            .expect("a free port below the ephemeral range")
    }

    /// Starts a server on `port` (which may have been unused so far) in a
    /// fresh directory.
    pub fn start_on(port: u16) -> RedisServer {
        let mut server = RedisServer {
            child: None,
            port,
            dir: tempfile::tempdir().expect("temporary directory"),
            extra: Vec::new(),
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The server's directory (its append-only files), to copy and put
    /// back as a restore from an older copy would.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// SIGKILL: with `appendfsync always`, nothing acknowledged is lost.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and directory.
    pub fn restart(&mut self) {
        assert!(
            self.launch(),
            "redis-server did not start again on port {}",
            self.port
        );
    }

    /// Starts the server; true once it answers, false if it exited (its
    /// port was taken).
    fn launch(&mut self) -> bool {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "yes"])
            .args(["--appendfsync", "always"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/test installs it)");
        let pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        // Ours answers with its own process id (not another test's server
        // that holds the port).
        while !self.answers_as(pid) {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return false;
            }
            assert!(Instant::now() < deadline, "redis-server did not answer");
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    fn answers_as(&self, pid: u32) -> bool {
        info(self.port, "server").contains(&format!("process_id:{pid}\r\n"))
    }

    /// The process id, while it runs (to check which server answers).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits until this replica has loaded its primary's data and follows
    /// it (`master_link_status:up`).
    pub fn synced(&self) {
        let deadline = Instant::now() + WAIT;
        while !info(self.port, "replication").contains("master_link_status:up") {
            assert!(
                Instant::now() < deadline,
                "the replica on port {} did not sync",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `primary` or `replica`, as the server itself says (`INFO replication`);
    /// empty when it does not answer.
    pub fn role(&self) -> String {
        info(self.port, "replication")
            .lines()
            .find_map(|l| l.strip_prefix("role:"))
            .map(|r| {
                r.trim()
                    .replace("master", "primary")
                    .replace("slave", "replica")
            })
            .unwrap_or_default()
    }
}

/// The text of `INFO <section>` from the server on `port` (empty when it
/// does not answer within half a second).
pub(crate) fn info(port: u16, section: &str) -> String {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream
        .write_all(format!("INFO {section}\r\n").as_bytes())
        .is_err()
    {
        return String::new();
    }
    // A bulk string: `$<len>\r\n<text>\r\n`.
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&reply);
        let Some((head, body)) = text.split_once("\r\n") else {
            continue;
        };
        match head.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) {
            Some(len) if body.len() >= len => return body[..len].to_owned(),
            Some(_) => continue,
            None => return String::new(),
        }
    }
    String::new()
}

pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}
