//! Finding the cluster's Redis primary through Redis Sentinel
//! (`--redis-sentinels`, `--redis-sentinel-master`).
//!
//! [`Sentinels::primary`] asks each sentinel in turn
//! `SENTINEL get-master-addr-by-name <name>` and takes the first answer
//! whose server says, when asked `ROLE`, that it is a primary: a sentinel
//! that has not yet heard of a failover names the old primary, which is
//! dead or now a replica, and the next sentinel is asked. Every step is
//! bounded by [`STEP_TIMEOUT`], so one pass over three sentinels takes at
//! most a few seconds even when all of them hang.
//!
//! When to ask again is the caller's business (see `RedisNode` in
//! `mod.rs`): at start, whenever a connection to the primary fails, and
//! when a write answers `READONLY` (a primary demoted to replica).
//!
//! The crate's own `sentinel` feature resolves the same way but hands out a
//! `Client` for a fixed address: the reconnecting `ConnectionManager` built
//! on it would keep reconnecting to the old primary after a failover. So
//! the resolution lives here and the node swaps its connection itself.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, Value};

/// Each connection, question and answer of a resolution waits at most this.
pub const STEP_TIMEOUT: Duration = Duration::from_millis(500);

/// Why no primary could be found.
#[derive(Debug, thiserror::Error)]
pub enum SentinelError {
    /// A `--redis-sentinels` entry is not `host:port`.
    #[error("`{0}` is not host:port")]
    BadAddress(String),
    /// No sentinel named a server that answers as a primary; the reason of
    /// each sentinel, in the order they were asked.
    #[error("no sentinel named a reachable primary for `{master}`: {reasons}")]
    NoPrimary { master: String, reasons: String },
}

/// `host:port` of one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Reads `host:port` (`[v6]:port` for an IPv6 address); the port is 1 to
/// 65535 and the host not empty.
pub fn parse_address(text: &str) -> Result<Address, SentinelError> {
    let bad = || SentinelError::BadAddress(text.to_owned());
    let (host, port) = text.trim().rsplit_once(':').ok_or_else(bad)?;
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.strip_suffix(']').ok_or_else(bad)?,
        None if host.contains(':') => return Err(bad()),
        None => host,
    };
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 || host.contains(char::is_whitespace) {
        return Err(bad());
    }
    Ok(Address {
        host: host.to_owned(),
        port,
    })
}

/// The sentinels of one primary, and its name there.
#[derive(Debug, Clone)]
pub struct Sentinels {
    pub addresses: Vec<Address>,
    pub master: String,
}

impl Sentinels {
    /// The current primary: see the module documentation.
    pub async fn primary(&self) -> Result<Address, SentinelError> {
        let mut reasons = Vec::new();
        for sentinel in &self.addresses {
            match self.ask(sentinel).await {
                Ok(primary) => match is_primary(&primary).await {
                    Ok(()) => return Ok(primary),
                    Err(why) => reasons.push(format!("{sentinel} named {primary}, which {why}")),
                },
                Err(why) => reasons.push(format!("{sentinel}: {why}")),
            }
        }
        Err(SentinelError::NoPrimary {
            master: self.master.clone(),
            reasons: reasons.join("; "),
        })
    }

    /// What one sentinel says the primary is.
    async fn ask(&self, sentinel: &Address) -> Result<Address, String> {
        let mut conn = connect(sentinel).await?;
        let mut cmd = redis::cmd("SENTINEL");
        cmd.arg("get-master-addr-by-name").arg(&self.master);
        let answer: Option<(String, String)> = step(cmd.query_async(&mut conn)).await?;
        let (host, port) = answer.ok_or_else(|| format!("knows no master `{}`", self.master))?;
        let port = port
            .parse()
            .map_err(|_| format!("answered the port `{port}`"))?;
        Ok(Address { host, port })
    }
}

/// Whether the server at `address` says it is a primary (`ROLE`).
async fn is_primary(address: &Address) -> Result<(), String> {
    let mut conn = connect(address).await?;
    let role: Value = step(redis::cmd("ROLE").query_async(&mut conn)).await?;
    says_primary(&role)
}

/// Whether a `ROLE` answer is a primary's (`master`); otherwise what it is.
pub fn says_primary(role: &Value) -> Result<(), String> {
    match role {
        Value::Array(parts) => match parts.first() {
            Some(Value::BulkString(role)) if role == b"master" => Ok(()),
            Some(Value::BulkString(role)) => Err(format!("is a {}", String::from_utf8_lossy(role))),
            _ => Err("gave an unexpected ROLE answer".to_owned()),
        },
        _ => Err("gave an unexpected ROLE answer".to_owned()),
    }
}

/// The connection settings of `base` (database, user, password) for the
/// server at `address`.
pub fn at(base: &ConnectionInfo, address: &Address) -> ConnectionInfo {
    base.clone()
        .set_addr(ConnectionAddr::Tcp(address.host.clone(), address.port))
}

async fn connect(address: &Address) -> Result<MultiplexedConnection, String> {
    let client = Client::open((address.host.as_str(), address.port))
        .map_err(|e| format!("cannot be addressed: {e}"))?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(STEP_TIMEOUT))
        .set_response_timeout(Some(STEP_TIMEOUT));
    step(client.get_multiplexed_async_connection_with_config(&config)).await
}

async fn step<T>(
    op: impl std::future::Future<Output = Result<T, redis::RedisError>>,
) -> Result<T, String> {
    match tokio::time::timeout(STEP_TIMEOUT, op).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("did not answer within {STEP_TIMEOUT:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_host_and_port() {
        let ok = |text: &str| parse_address(text).ok().map(|a| a.to_string());
        assert_eq!(ok("10.0.0.5:26379").as_deref(), Some("10.0.0.5:26379"));
        assert_eq!(ok(" sentinel-a:26379").as_deref(), Some("sentinel-a:26379"));
        assert_eq!(ok("[::1]:26379").as_deref(), Some("[::1]:26379"));
        for bad in [
            "",
            "host",
            ":26379",
            "host:",
            "host:0",
            "host:65536",
            "::1:26379",
            "a b:1",
        ] {
            assert!(parse_address(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn no_sentinel_answering_names_every_reason() {
        // Port 1 on loopback: nothing listens there, the refusal is immediate.
        let sentinels = Sentinels {
            addresses: vec![Address {
                host: "127.0.0.1".to_owned(),
                port: 1,
            }],
            master: "main".to_owned(),
        };
        let error = sentinels.primary().await.err().map(|e| e.to_string());
        let error = error.unwrap_or_default();
        assert!(
            error.contains("`main`") && error.contains("127.0.0.1:1"),
            "{error}"
        );
    }
}
