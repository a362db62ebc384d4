//! What a keyless hub (no `--publisher-key`, no `--publisher-jwt-key`)
//! asks of the loopback callers it trusts to publish and manage.
//!
//! Loopback is not only the operator's own tools: every browser on the
//! machine is there too, and any page it shows can make it send requests.
//! Two ways a page can reach a keyless hub are closed here:
//! - cross-site requests: a page elsewhere cannot read the answer, but the
//!   request itself (a publish through a seed `GET` route, a close) would
//!   run. Refused when the `Origin` is present and not allowed, or, without
//!   an `Origin` (a plain `GET` from an image or a link), when
//!   `Sec-Fetch-Site` says `cross-site`. Allowed origins: those listed in
//!   `--api-cors-origins` or `--cors-origins` (any, for a `*` in
//!   `--api-cors-origins`, the operator's choice; the default `*` of
//!   `--cors-origins` is about streams and does not count), loopback ones
//!   (`http://localhost:3000`), and `null`, which is what the seed's own
//!   page sends when opened from a file. A sandboxed frame can send `null`
//!   too: a hub that must be safe from that needs a publisher credential.
//! - DNS rebinding: a page on `rebind.attacker.example` whose name is made
//!   to resolve to 127.0.0.1 is same-origin with the hub as far as the
//!   browser knows, reads every answer and sends no `Origin` on `GET`; its
//!   requests still say `Host: rebind.attacker.example`. So these calls are
//!   served only for a loopback `Host` (`localhost`, `*.localhost`, a
//!   loopback address) or one listed in `--allowed-hosts`.
//!
//! With a publisher credential configured none of this applies: the
//! credential is the defence, and a page does not have it.

use std::net::IpAddr;

use http::request::Parts;
use http::{header, HeaderMap, StatusCode};

use super::errors::Refusal;
use super::ApiError;
use crate::config::ServeConfig;

/// The hosts and origins a keyless hub serves browsers' loopback calls for.
#[derive(Debug, Clone, Default)]
pub struct LocalCallers {
    /// `--allowed-hosts`, lower case: `host` or `host:port`.
    hosts: Vec<String>,
    /// Origins listed in the CORS options, lower case, without `*`.
    origins: Vec<String>,
    /// `--api-cors-origins` lists `*`.
    any_origin: bool,
}

impl LocalCallers {
    pub fn new(config: &ServeConfig) -> LocalCallers {
        let lower = |list: &[String]| -> Vec<String> {
            list.iter()
                .filter(|o| o.as_str() != "*")
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect()
        };
        let mut origins = lower(&config.api_cors_origins);
        origins.extend(lower(&config.cors_origins));
        LocalCallers {
            hosts: lower(&config.allowed_hosts),
            origins,
            any_origin: config.api_cors_origins.iter().any(|o| o == "*"),
        }
    }

    /// Refuses a keyless call from a page elsewhere or for a host that is
    /// not this machine's.
    pub fn check(&self, parts: &Parts) -> Result<(), ApiError> {
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| parts.uri.authority().map(|a| a.as_str()));
        if let Some(host) = host {
            if !self.host_allowed(host) {
                return Err(ApiError::new(
                    StatusCode::MISDIRECTED_REQUEST,
                    "host_not_allowed",
                    format!(
                        "without a publisher credential, publish and management calls are \
                         served only for a loopback host (localhost, 127.0.0.1, [::1]) or one \
                         listed in --allowed-hosts, not for `{host}`"
                    ),
                )
                .noted(Refusal::Auth {
                    reason: "keyless call for a host that is not loopback or allowed".to_owned(),
                }));
            }
        }
        if !self.origin_allowed(&parts.headers) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "cross_origin",
                "without a publisher credential, publish and management calls are refused \
                 from pages of other sites; list the page's origin in --api-cors-origins, \
                 or configure --publisher-key",
            )
            .noted(Refusal::Auth {
                reason: "keyless call from a page of another origin".to_owned(),
            }));
        }
        Ok(())
    }

    fn host_allowed(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        let name = match host.strip_prefix('[') {
            Some(literal) => literal.split(']').next().unwrap_or_default(),
            None => host
                .rsplit_once(':')
                .map_or(host.as_str(), |(name, _)| name),
        };
        is_loopback_name(name) || self.hosts.iter().any(|h| *h == host || *h == name)
    }

    fn origin_allowed(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(header::ORIGIN) else {
            // No Origin: a navigation or a plain GET, or not a browser.
            return headers
                .get("sec-fetch-site")
                .is_none_or(|site| !site.as_bytes().eq_ignore_ascii_case(b"cross-site"));
        };
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let origin = origin.trim().to_ascii_lowercase();
        if origin == "null" || self.any_origin || self.origins.contains(&origin) {
            return true;
        }
        url::Url::parse(&origin).is_ok_and(|url| {
            matches!(url.scheme(), "http" | "https")
                && match url.host() {
                    Some(url::Host::Domain(name)) => is_loopback_name(name),
                    Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                    Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                    None => false,
                }
        })
    }
}

/// `localhost`, a name under `.localhost` (RFC 6761 keeps them on this
/// machine) or a loopback address.
fn is_loopback_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn callers(hosts: &[&str], api: &[&str], streams: &[&str]) -> LocalCallers {
        let mut config = ServeConfig::defaults();
        let own = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        config.allowed_hosts = own(hosts);
        config.api_cors_origins = own(api);
        config.cors_origins = own(streams);
        LocalCallers::new(&config)
    }

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut request = http::Request::builder().uri("/api/v1/stats");
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn loopback_and_listed_hosts_pass_others_do_not() {
        let c = callers(&["hub.internal"], &[], &["*"]);
        for host in [
            "localhost",
            "localhost:8080",
            "app.localhost:1",
            "LOCALHOST.",
            "127.0.0.1:80",
            "127.9.9.9",
            "[::1]:8080",
            "hub.internal:9000",
        ] {
            assert!(c.check(&parts(&[("host", host)])).is_ok(), "{host}");
        }
        for host in [
            "rebind.attacker.example",
            "localhost.attacker.example",
            "10.0.0.1",
            "[::2]",
        ] {
            let refused = c.check(&parts(&[("host", host)])).err().unwrap();
            assert_eq!(refused.status, StatusCode::MISDIRECTED_REQUEST, "{host}");
        }
    }

    #[test]
    fn origins_of_other_sites_are_refused() {
        let c = callers(&[], &["https://app.example"], &["*"]);
        let ok = |h: &[(&str, &str)]| c.check(&parts(h)).is_ok();
        assert!(ok(&[]));
        assert!(ok(&[("origin", "null")]));
        assert!(ok(&[("origin", "null"), ("sec-fetch-site", "cross-site")]));
        assert!(ok(&[("origin", "http://localhost:3000")]));
        assert!(ok(&[("origin", "http://127.0.0.1:5173")]));
        assert!(ok(&[("origin", "https://app.example")]));
        assert!(ok(&[("sec-fetch-site", "same-origin")]));
        assert!(ok(&[("sec-fetch-site", "none")]));
        assert!(!ok(&[("sec-fetch-site", "cross-site")]));
        assert!(!ok(&[("origin", "https://evil.example")]));
        assert!(!ok(&[("origin", "https://localhost.evil.example")]));
        assert!(!ok(&[("origin", "file://")]));
        // The default `*` of --cors-origins is about streams.
        let open = callers(&[], &[], &["*"]);
        assert!(open
            .check(&parts(&[("origin", "https://evil.example")]))
            .is_err());
        // A `*` in --api-cors-origins is the operator's explicit choice.
        let any = callers(&[], &["*"], &[]);
        assert!(any
            .check(&parts(&[("origin", "https://evil.example")]))
            .is_ok());
    }
}
