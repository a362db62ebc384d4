//! JWK sets (RFC 7517) fetched from a URL and kept fresh, so that an
//! issuer can rotate its keys without the hub restarting.
//!
//! Invariants:
//! - Verification never waits on the network: it reads the current set, an
//!   `Arc` swapped whole under a lock held only for the swap or the clone.
//! - Only keys that can verify the one configured algorithm enter a set: a
//!   JWK whose `kty` (and curve) does not fit it, whose `alg` names another
//!   algorithm, or whose `use` is not `sig` is dropped when the set is read.
//!   The token's `alg` is still checked against the configuration alone.
//! - A failed fetch never empties the set: the last good one stays.
//! - The key server is asked at most once per [`ON_DEMAND_INTERVAL`] because
//!   of tokens naming an unknown `kid` (a forged `kid` costs the attacker a
//!   `401`, not the key server a request), and tokens arriving while a fetch
//!   runs wait for that fetch instead of starting their own.
//! - A fetch is bounded: [`FETCH_TIMEOUT`], [`MAX_DOCUMENT_BYTES`],
//!   [`MAX_KEYS`]; anything else than a JWK set is a failed fetch.
//!
//! The set is fetched once at start ([`JwksSource::start`]), then again when
//! its cache lifetime (from `Cache-Control: max-age` or `Expires`, within
//! [`MIN_LIFETIME`]..[`MAX_LIFETIME`], [`DEFAULT_LIFETIME`] without either)
//! runs out, by a task that ends when the verifier is dropped.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::header::{HeaderMap, CACHE_CONTROL, DATE, EXPIRES};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::DecodingKey;
use serde_json::Value;

use pushwire_core::metrics::{JwksFetch, Metrics};

use super::keys::{KeyKind, PublicKind};

/// Shortest time a fetched set is trusted before it is fetched again, even
/// when the server says less (or `no-cache`): the hub must not poll it.
pub const MIN_LIFETIME: Duration = Duration::from_secs(60);
/// Longest: keys removed from the set stop verifying within a day.
pub const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Without `Cache-Control: max-age` or `Expires`. After a failed fetch the
/// next scheduled one comes after [`MIN_LIFETIME`].
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// Least time between two fetches caused by tokens with an unknown `kid`.
pub const ON_DEMAND_INTERVAL: Duration = Duration::from_secs(10);
/// Whole fetch: connecting, the answer, its body.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWK set document read.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Most keys in one set; a larger set is refused whole.
pub const MAX_KEYS: usize = 100;

/// Where a JWK set is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksLocation {
    /// `https://`, or `http://` to a loopback host.
    Http(url::Url),
    /// `file://`: read again on every refresh.
    File(PathBuf),
}

impl JwksLocation {
    /// Reads a configured URL. Plain `http://` is refused unless its host is
    /// a loopback address or `localhost`: keys fetched in the clear could be
    /// replaced on the way, and whoever does that mints every token.
    pub fn parse(text: &str) -> Result<JwksLocation, String> {
        let url = url::Url::parse(text.trim())
            .map_err(|e| format!("`{}` is not a URL ({e})", shown_url(text)))?;
        match url.scheme() {
            "https" if url.host().is_some() => Ok(JwksLocation::Http(url)),
            "http" if is_loopback(&url) => Ok(JwksLocation::Http(url)),
            "http" => Err(format!(
                "`{}`: plain http:// is allowed only to a loopback host (127.0.0.1, [::1], localhost); use https://",
                shown_url(text)
            )),
            "file" => url
                .to_file_path()
                .map(JwksLocation::File)
                .map_err(|()| format!("`{text}` is not a local file path (file:///path/to/jwks.json)")),
            _ => Err(format!(
                "`{}`: a JWK set is read from https://, http:// on a loopback host, or file://",
                shown_url(text)
            )),
        }
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// A URL for logs and messages: without its password.
fn shown_url(text: &str) -> String {
    match url::Url::parse(text.trim()) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("redacted"));
            url.to_string()
        }
        _ => text.trim().to_owned(),
    }
}

/// One key of a fetched set, ready to verify.
pub(super) struct SetKey {
    pub kid: Option<String>,
    pub key: DecodingKey,
}

/// The usable keys of one fetched document.
#[derive(Default)]
pub(super) struct KeySet {
    keys: Vec<SetKey>,
}

impl KeySet {
    pub fn has(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// The keys a token may be verified with: only the one with its `kid`
    /// when it has one, else all of them.
    pub fn candidates<'a>(&'a self, kid: Option<&'a str>) -> impl Iterator<Item = &'a DecodingKey> {
        self.keys
            .iter()
            .filter(move |k| kid.is_none() || k.kid.as_deref() == kid)
            .map(|k| &k.key)
    }
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("the document is larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge,
    #[error("not a usable JWK set: {0}")]
    Invalid(String),
}

impl FetchError {
    fn outcome(&self) -> JwksFetch {
        match self {
            FetchError::Unreachable(_) => JwksFetch::Unreachable,
            FetchError::Status(_) => JwksFetch::HttpError,
            FetchError::TooLarge | FetchError::Invalid(_) => JwksFetch::Invalid,
        }
    }
}

/// One configured JWK set: where it is, the current keys, and the
/// bookkeeping that keeps fetches rare.
pub(super) struct JwksSource {
    location: JwksLocation,
    /// The URL for logs, without a password.
    pub shown: String,
    client: Option<reqwest::Client>,
    algorithm: &'static str,
    kind: KeyKind,
    /// `None` until a fetch has succeeded.
    set: RwLock<Option<Arc<KeySet>>>,
    /// Held for the whole of each fetch: fetches never overlap.
    fetching: tokio::sync::Mutex<()>,
    /// Fetches finished, good or bad: a waiter that sees it move knows a
    /// fetch ran while it waited and takes that one's result.
    fetches: AtomicU64,
    last_on_demand: Mutex<Option<Instant>>,
    /// When the background task fetches next.
    next_due: Mutex<Instant>,
    metrics: OnceLock<Arc<Metrics>>,
    started: AtomicBool,
}

impl JwksSource {
    pub fn new(
        location: JwksLocation,
        text: &str,
        client: Option<reqwest::Client>,
        algorithm: &'static str,
        kind: KeyKind,
    ) -> JwksSource {
        JwksSource {
            location,
            shown: shown_url(text),
            client,
            algorithm,
            kind,
            set: RwLock::new(None),
            fetching: tokio::sync::Mutex::new(()),
            fetches: AtomicU64::new(0),
            last_on_demand: Mutex::new(None),
            next_due: Mutex::new(Instant::now()),
            metrics: OnceLock::new(),
            started: AtomicBool::new(false),
        }
    }

    /// The current set, `None` before the first good fetch.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        self.set
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether a token with this `kid` (or without one) would be helped by
    /// a fetch: the set is missing, or lacks that `kid`.
    pub fn lacks(&self, kid: Option<&str>) -> bool {
        match (self.current(), kid) {
            (None, _) => true,
            (Some(set), Some(kid)) => !set.has(kid),
            (Some(_), None) => false,
        }
    }

    /// The first fetch, then the background refreshes. Runs once; later
    /// calls return at once.
    pub async fn start(self: &Arc<Self>, metrics: Arc<Metrics>) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = self.metrics.set(metrics);
        {
            let _fetching = self.fetching.lock().await;
            self.fetch_and_store().await;
        }
        tokio::spawn(refresh_when_due(Arc::downgrade(self)));
    }

    /// A fetch for a token whose `kid` is not in the set, at most once per
    /// [`ON_DEMAND_INTERVAL`]; returns when the set is as fresh as it will
    /// get for that token.
    pub async fn refresh_on_demand(&self) {
        let seen = self.fetches.load(Ordering::Acquire);
        let _fetching = self.fetching.lock().await;
        if self.fetches.load(Ordering::Acquire) != seen {
            // Fetched while this token waited: that fetch is its answer.
            return;
        }
        if !self.claim_on_demand_slot() {
            return;
        }
        self.fetch_and_store().await;
    }

    /// [`JwksSource::refresh_on_demand`] in the background, for callers that
    /// cannot wait. Spawns nothing when the interval has not passed, so a
    /// flood of forged `kid`s costs no more than a lookup each.
    pub fn refresh_soon(self: &Arc<Self>) {
        if self.on_demand_too_soon() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let source = self.clone();
            runtime.spawn(async move { source.refresh_on_demand().await });
        }
    }

    fn on_demand_too_soon(&self) -> bool {
        let last = self
            .last_on_demand
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        last.is_some_and(|at| at.elapsed() < ON_DEMAND_INTERVAL)
    }

    fn claim_on_demand_slot(&self) -> bool {
        let mut last = self
            .last_on_demand
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.is_some_and(|at| at.elapsed() < ON_DEMAND_INTERVAL) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    fn next_due(&self) -> Instant {
        *self.next_due.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Fetches once (the caller holds `fetching`), swaps the set in on
    /// success, keeps the old one on failure, and schedules the next fetch.
    async fn fetch_and_store(&self) {
        let result = self.fetch().await;
        let (outcome, lifetime) = match result {
            Ok((set, lifetime)) => {
                let usable = set.keys.len();
                *self.set.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(set));
                if usable == 0 {
                    tracing::warn!(url = %self.shown, algorithm = self.algorithm,
                        "the JWK set has no key for the configured algorithm; its tokens are refused");
                } else {
                    tracing::debug!(url = %self.shown, keys = usable, ?lifetime, "JWK set fetched");
                }
                (JwksFetch::Ok, lifetime)
            }
            Err(error) => {
                if self.current().is_some() {
                    tracing::warn!(url = %self.shown, %error,
                        "cannot refresh the JWK set; keeping the last good one");
                } else {
                    tracing::error!(url = %self.shown, %error,
                        "cannot fetch the JWK set; tokens needing its keys are refused until a fetch succeeds");
                }
                (error.outcome(), MIN_LIFETIME)
            }
        };
        *self.next_due.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now() + lifetime;
        self.fetches.fetch_add(1, Ordering::AcqRel);
        if let Some(metrics) = self.metrics.get() {
            metrics.jwks_fetched(outcome);
        }
    }

    async fn fetch(&self) -> Result<(KeySet, Duration), FetchError> {
        let (body, lifetime) = match (&self.location, &self.client) {
            (JwksLocation::Http(url), Some(client)) => fetch_http(client, url).await?,
            (JwksLocation::Http(_), None) => {
                return Err(FetchError::Unreachable("no HTTP client".to_owned()))
            }
            (JwksLocation::File(path), _) => {
                let body = tokio::time::timeout(FETCH_TIMEOUT, read_file(path))
                    .await
                    .map_err(|_| {
                        FetchError::Unreachable("reading the file timed out".to_owned())
                    })??;
                (body, DEFAULT_LIFETIME)
            }
        };
        let set = read_set(&body, self.algorithm, self.kind).map_err(FetchError::Invalid)?;
        Ok((set, lifetime))
    }
}

/// The background refreshes of one source; ends once the source is gone.
async fn refresh_when_due(source: Weak<JwksSource>) {
    loop {
        let due = match source.upgrade() {
            Some(source) => source.next_due(),
            None => return,
        };
        tokio::time::sleep_until(due.into()).await;
        let Some(source) = source.upgrade() else {
            return;
        };
        let _fetching = source.fetching.lock().await;
        // An on-demand fetch may have moved the date while this slept.
        if Instant::now() >= source.next_due() {
            source.fetch_and_store().await;
        }
    }
}

async fn fetch_http(
    client: &reqwest::Client,
    url: &url::Url,
) -> Result<(Vec<u8>, Duration), FetchError> {
    let unreachable = |e: reqwest::Error| FetchError::Unreachable(e.to_string());
    let mut response = client
        .get(url.as_str())
        .header(
            http::header::ACCEPT,
            "application/jwk-set+json, application/json",
        )
        .send()
        .await
        .map_err(unreachable)?;
    let status = response.status();
    if !status.is_success() {
        return Err(FetchError::Status(status.as_u16()));
    }
    if response
        .content_length()
        .is_some_and(|length| length > MAX_DOCUMENT_BYTES as u64)
    {
        return Err(FetchError::TooLarge);
    }
    let lifetime = cache_lifetime(response.headers(), SystemTime::now());
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(FetchError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, lifetime))
}

async fn read_file(path: &std::path::Path) -> Result<Vec<u8>, FetchError> {
    use tokio::io::AsyncReadExt as _;
    let unreadable =
        |e: std::io::Error| FetchError::Unreachable(format!("cannot read {}: {e}", path.display()));
    let file = tokio::fs::File::open(path).await.map_err(unreadable)?;
    let mut body = Vec::new();
    // One byte past the limit tells a file that is too large.
    file.take(MAX_DOCUMENT_BYTES as u64 + 1)
        .read_to_end(&mut body)
        .await
        .map_err(unreadable)?;
    if body.len() > MAX_DOCUMENT_BYTES {
        return Err(FetchError::TooLarge);
    }
    Ok(body)
}

/// How long an answer may be used (RFC 9111): `Cache-Control: max-age`
/// first, else `Expires` (against the answer's `Date`), else the default;
/// `no-store` and `no-cache` mean the shortest time. Always within
/// [`MIN_LIFETIME`]..[`MAX_LIFETIME`].
pub(super) fn cache_lifetime(headers: &HeaderMap, now: SystemTime) -> Duration {
    let mut max_age = None;
    for value in headers.get_all(CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',').map(str::trim) {
            let lower = directive.to_ascii_lowercase();
            if lower == "no-store" || lower == "no-cache" {
                return MIN_LIFETIME;
            }
            if let Some(seconds) = lower.strip_prefix("max-age=") {
                if let Ok(seconds) = seconds.trim_matches('"').parse::<u64>() {
                    max_age = Some(Duration::from_secs(seconds));
                }
            }
        }
    }
    let lifetime = max_age.unwrap_or_else(|| {
        match headers.get(EXPIRES).and_then(|v| v.to_str().ok()) {
            None => DEFAULT_LIFETIME,
            Some(expires) => {
                let date = headers
                    .get(DATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|d| httpdate::parse_http_date(d).ok())
                    .unwrap_or(now);
                // An invalid date means already expired (RFC 9111 §5.3).
                httpdate::parse_http_date(expires)
                    .ok()
                    .and_then(|expires| expires.duration_since(date).ok())
                    .unwrap_or(Duration::ZERO)
            }
        }
    });
    lifetime.clamp(MIN_LIFETIME, MAX_LIFETIME)
}

/// Reads a JWK set document and keeps the keys that can verify
/// `algorithm`. Keys that do not fit are dropped one by one; a document
/// that is not a set, or holds more than [`MAX_KEYS`], is refused whole.
pub(super) fn read_set(body: &[u8], algorithm: &str, kind: KeyKind) -> Result<KeySet, String> {
    let document: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON ({e})"))?;
    let keys = document
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("no `keys` array")?;
    if keys.len() > MAX_KEYS {
        return Err(format!("{} keys; at most {MAX_KEYS} are read", keys.len()));
    }
    let mut set = KeySet::default();
    for (n, jwk) in keys.iter().enumerate() {
        match usable_key(jwk, algorithm, kind) {
            Ok(key) => set.keys.push(key),
            Err(reason) => {
                let kid = jwk.get("kid").and_then(Value::as_str).unwrap_or("");
                tracing::debug!(key = n, kid, reason, "JWK not used");
            }
        }
    }
    Ok(set)
}

/// One JWK, if it can verify `algorithm`'s tokens.
fn usable_key(jwk: &Value, algorithm: &str, kind: KeyKind) -> Result<SetKey, String> {
    let text = |name: &str| jwk.get(name).and_then(Value::as_str);
    let present = |name: &str| jwk.get(name).is_some_and(|v| !v.is_null());
    if !jwk.is_object() {
        return Err("not an object".to_owned());
    }
    if present("use") && text("use") != Some("sig") {
        return Err("its `use` is not `sig`".to_owned());
    }
    if let Some(ops) = jwk.get("key_ops").filter(|v| !v.is_null()) {
        let verifies = ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")));
        if !verifies {
            return Err("its `key_ops` do not include `verify`".to_owned());
        }
    }
    if present("alg") && text("alg") != Some(algorithm) {
        return Err(format!("its `alg` is not {algorithm}"));
    }
    if present("kid") && text("kid").is_none() {
        return Err("its `kid` is not a string".to_owned());
    }
    let (kty, crv) = (text("kty"), text("crv"));
    let fits = match kind {
        KeyKind::Secret => kty == Some("oct") && text("k").is_some_and(|k| !k.is_empty()),
        KeyKind::Public(PublicKind::Rsa) => kty == Some("RSA"),
        KeyKind::Public(PublicKind::EcP256) => kty == Some("EC") && crv == Some("P-256"),
        KeyKind::Public(PublicKind::EcP384) => kty == Some("EC") && crv == Some("P-384"),
        KeyKind::Public(PublicKind::Ed25519) => kty == Some("OKP") && crv == Some("Ed25519"),
    };
    if !fits {
        return Err(format!("its `kty` does not fit {algorithm}"));
    }
    if kind == KeyKind::Public(PublicKind::Rsa) {
        // ring verifies with 2048- to 8192-bit keys only.
        let bits = text("n")
            .and_then(|n| URL_SAFE_NO_PAD.decode(n).ok())
            .map(|n| modulus_bits(&n))
            .unwrap_or(0);
        if !(2048..=8192).contains(&bits) {
            return Err(format!("an RSA key of {bits} bits (2048 to 8192 are used)"));
        }
    }
    let parsed: Jwk = serde_json::from_value(jwk.clone()).map_err(|e| e.to_string())?;
    let key = DecodingKey::from_jwk(&parsed).map_err(|e| e.to_string())?;
    Ok(SetKey {
        kid: text("kid").map(str::to_owned),
        key,
    })
}

fn modulus_bits(n: &[u8]) -> usize {
    let n = match n.iter().position(|&b| b != 0) {
        Some(start) => &n[start..],
        None => return 0,
    };
    n.len() * 8 - n.first().map_or(0, |b| b.leading_zeros() as usize)
}
