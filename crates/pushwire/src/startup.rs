//! The line a hub writes once it listens: what it runs as, in one place an
//! operator can read (version, bound addresses, storage, who may publish
//! and subscribe, protocols, and the limits set away from their defaults),
//! and the warning of an open publisher on a reachable address.
//!
//! Secrets never appear: only whether a key is set and how many keys there
//! are.

use std::net::SocketAddr;

use crate::config::{ServeConfig, Storage};

/// The options whose value the summary shows when it differs from the
/// default: the limits and the timing an operator tunes.
const LIMIT_OPTIONS: [&str; 22] = [
    "max-streams",
    "max-connections",
    "queue-capacity",
    "max-body",
    "max-inflight-body",
    "max-header-bytes",
    "max-streams-per-ip",
    "max-streams-per-user",
    "publish-rate",
    "publish-burst",
    "max-id-length",
    "max-event-type-length",
    "max-topic-length",
    "max-user-id-length",
    "max-topics-per-event",
    "max-topics-per-stream",
    "h2-max-streams",
    "header-read-timeout",
    "stream-timeout",
    "history-max-events",
    "history-max-age",
    "heartbeat",
];

/// Who may publish, in words: `keyless loopback`, `publisher key`,
/// `publisher JWT keys: N static, JWKS: yes/no`, or a key and tokens.
pub fn publisher_auth(config: &ServeConfig) -> String {
    let jwks = config.publisher_jwks_url.is_some() || config.jwks_url.is_some();
    let tokens = (!config.publisher_jwt_key.is_empty() || jwks).then(|| {
        format!(
            "publisher JWT keys: {} static, JWKS: {}",
            config.publisher_jwt_key.len(),
            yes_no(jwks)
        )
    });
    match (config.publisher_key.is_some(), tokens) {
        (true, Some(tokens)) => format!("publisher key and {tokens}"),
        (true, None) => "publisher key".to_owned(),
        (false, Some(tokens)) => tokens,
        (false, None) => "keyless loopback".to_owned(),
    }
}

/// Whether publishing needs a credential at all.
pub fn has_publisher_credential(config: &ServeConfig) -> bool {
    publisher_auth(config) != "keyless loopback"
}

/// Who may subscribe, in words.
pub fn subscriber_auth(config: &ServeConfig) -> String {
    if let Some(url) = &config.redacted().auth_url {
        return format!("your backend decides on stream routes (auth-url {url})");
    }
    let jwks = config.subscriber_jwks_url.is_some() || config.jwks_url.is_some();
    if config.subscriber_jwt_key.is_empty() && !jwks {
        return "anonymous (public updates only)".to_owned();
    }
    format!(
        "tokens {}: subscriber JWT keys: {} static, JWKS: {}",
        if config.require_subscriber_auth {
            "required"
        } else {
            "optional"
        },
        config.subscriber_jwt_key.len(),
        yes_no(jwks)
    )
}

fn yes_no(on: bool) -> &'static str {
    if on {
        "yes"
    } else {
        "no"
    }
}

/// The storage engine and where it keeps the history.
pub fn storage(config: &ServeConfig) -> String {
    match config.storage {
        Storage::Embedded => format!(
            "embedded (data dir {}, fsync {})",
            config.data_dir.display(),
            config.fsync
        ),
        Storage::Memory => "memory".to_owned(),
        Storage::Redis => format!("redis (prefix {})", config.redis_prefix),
    }
}

/// The protocols the main listener speaks.
pub fn protocols(config: &ServeConfig) -> &'static str {
    match (config.tls_cert.is_some(), config.h2c) {
        (true, _) => "TLS (HTTP/2 and HTTP/1.1 by ALPN)",
        (false, true) => "plain HTTP/1.1 and h2c",
        (false, false) => "plain HTTP/1.1",
    }
}

/// `name=value` for every limit option set away from its default.
pub fn changed_limits(config: &ServeConfig) -> String {
    let table = |c: &ServeConfig| match toml::Value::try_from(c) {
        Ok(toml::Value::Table(table)) => table,
        _ => toml::Table::new(),
    };
    let (now, defaults) = (table(config), table(&ServeConfig::defaults()));
    let changed: Vec<String> = LIMIT_OPTIONS
        .iter()
        .filter(|name| now.get(**name) != defaults.get(**name))
        .map(|name| match now.get(*name) {
            Some(toml::Value::String(text)) => format!("{name}={text}"),
            Some(value) => format!("{name}={value}"),
            None => format!("{name}=unset"),
        })
        .collect();
    if changed.is_empty() {
        "defaults".to_owned()
    } else {
        changed.join(", ")
    }
}

/// Where the pages are served, for the summary line (each unless turned off).
fn pages(config: &ServeConfig, addr: SocketAddr) -> String {
    let scheme = if config.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    let mut pages = Vec::new();
    if !config.no_demo {
        pages.push(format!("demo page at {scheme}://{addr}/"));
    }
    if !config.no_admin {
        pages.push(format!("admin console at {scheme}://{addr}/admin"));
    }
    if pages.is_empty() {
        "no pages (--no-demo, --no-admin)".to_owned()
    } else {
        pages.join(", ")
    }
}

/// Writes the summary line (`info`) and, for a keyless publisher on an
/// address other hosts can reach, the warning (`warn`).
pub fn log_summary(config: &ServeConfig, addr: SocketAddr, metrics_addr: Option<SocketAddr>) {
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        %addr,
        metrics_addr = metrics_addr.map(|a| a.to_string()),
        storage = storage(config),
        publisher_auth = publisher_auth(config),
        subscriber_auth = subscriber_auth(config),
        protocols = protocols(config),
        limits = changed_limits(config),
        "pushwire listening; {}",
        pages(config, addr),
    );
    if !addr.ip().is_loopback() && !has_publisher_credential(config) {
        tracing::warn!(
            %addr,
            "listening on a non-loopback address without a publisher credential: \
             publish and management calls are open to every loopback peer. Behind a \
             reverse proxy on this machine that may mean everyone who reaches the proxy. \
             Set --publisher-key or --publisher-jwt-key"
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn the_defaults_are_keyless_and_change_no_limit() {
        let config = ServeConfig::defaults();
        assert_eq!(publisher_auth(&config), "keyless loopback");
        assert!(!has_publisher_credential(&config));
        assert_eq!(changed_limits(&config), "defaults");
        assert_eq!(protocols(&config), "plain HTTP/1.1");
    }

    #[test]
    fn the_summary_names_the_pages_that_are_served() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let mut config = ServeConfig::defaults();
        assert_eq!(
            pages(&config, addr),
            "demo page at http://127.0.0.1:8080/, admin console at http://127.0.0.1:8080/admin"
        );
        config.no_demo = true;
        assert_eq!(
            pages(&config, addr),
            "admin console at http://127.0.0.1:8080/admin"
        );
        config.no_admin = true;
        assert_eq!(pages(&config, addr), "no pages (--no-demo, --no-admin)");
        config.no_demo = false;
        assert_eq!(pages(&config, addr), "demo page at http://127.0.0.1:8080/");
    }

    #[test]
    fn credentials_are_counted_never_shown_and_changed_limits_named() {
        let mut config = ServeConfig::defaults();
        config.publisher_key = Some("s3cret".to_owned());
        config.publisher_jwt_key = vec!["k1".to_owned(), "k2".to_owned()];
        config.jwks_url = Some("https://issuer.example/jwks.json".to_owned());
        config.max_streams = 10;
        config.max_streams_per_ip = Some(3);
        let auth = publisher_auth(&config);
        assert_eq!(
            auth,
            "publisher key and publisher JWT keys: 2 static, JWKS: yes"
        );
        assert!(!auth.contains("s3cret"));
        assert_eq!(
            subscriber_auth(&config),
            "tokens optional: subscriber JWT keys: 0 static, JWKS: yes"
        );
        assert_eq!(
            changed_limits(&config),
            "max-streams=10, max-streams-per-ip=3"
        );
        config.auth_url = Some("https://app:pw-secret@app.example/auth".to_owned());
        let subscribers = subscriber_auth(&config);
        assert!(
            subscribers.starts_with("your backend decides"),
            "{subscribers}"
        );
        assert!(!subscribers.contains("pw-secret"), "{subscribers}");
    }
}
