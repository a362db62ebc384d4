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
        let mut server = RedisServer {
            child: None,
            port: 0,
            dir: tempfile::tempdir().expect("temporary directory"),
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
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        if stream.write_all(b"INFO server\r\n").is_err() {
            return false;
        }
        let wanted = format!("process_id:{pid}\r\n");
        let mut reply = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&reply);
            if text.contains(&wanted) {
                return true;
            }
            if text.contains("process_id:") && text.contains("\r\n\r\n") {
                break;
            }
        }
        false
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}
