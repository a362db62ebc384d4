//! One configuration, three sources: command-line flags, `PUSHWIRE_*`
//! environment variables and an optional TOML file. A flag or variable that
//! was given beats the file; the file beats the built-in default. The
//! defaults live in one place, the `default_value` of each flag below, so
//! `pushwire serve --help`, the README table and the running hub agree.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, FromArgMatches, ValueEnum};
use serde::{Deserialize, Serialize};

pub use pushwire_core::log::Fsync;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Args(#[from] clap::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// A durable log in `--data-dir`: history survives restarts and crashes.
    Embedded,
    /// A bounded window of history in memory, lost on restart.
    Memory,
    /// One history in Redis shared by several nodes (a cluster); needs `--redis-url`.
    Redis,
}

/// Everything `pushwire serve` can be told.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ServeConfig {
    /// TOML file with any of these options (keys spelled like the flags, without `--`).
    #[arg(long, env = "PUSHWIRE_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Address and port to listen on: an IP address (`0.0.0.0:8080`, `[::]:8080`) or a host name (`localhost:8080`, its first address).
    #[arg(long, env = "PUSHWIRE_LISTEN", default_value = "127.0.0.1:8080", value_parser = listen_address)]
    #[serde(deserialize_with = "listen_from_file")]
    pub listen: SocketAddr,

    /// Also serve `/metrics` (and only it) on this address, e.g. a private interface for the scraper; `/metrics` stays on `--listen` too.
    #[arg(long, env = "PUSHWIRE_METRICS_LISTEN")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,

    /// PEM file with the certificate chain: the hub then serves HTTPS, HTTP/2 or HTTP/1.1 as the client's ALPN asks. Needs `--tls-key`; both are read again on SIGHUP.
    #[arg(long, env = "PUSHWIRE_TLS_CERT")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,

    /// PEM file with the private key of `--tls-cert`.
    #[arg(long, env = "PUSHWIRE_TLS_KEY")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,

    /// Also accept cleartext HTTP/2 with prior knowledge (h2c) on the plain-text port, next to HTTP/1.1.
    #[arg(long, env = "PUSHWIRE_H2C", value_parser = clap::builder::BoolishValueParser::new())]
    #[serde(default)]
    pub h2c: bool,

    /// Most streams one HTTP/2 connection may have open at once.
    #[arg(long, env = "PUSHWIRE_H2_MAX_STREAMS", default_value_t = 1000)]
    pub h2_max_streams: u32,

    /// How much nicer (lower in CPU priority, 0 to 19) than the rest of the hub the streams' threads run (the fanout of events to every stream, the writing of plain HTTP/1.1 streams): under load, publishes, the API and the history's writer get the CPU first, and deliveries wait longer.
    #[arg(long, env = "PUSHWIRE_STREAMS_NICE", default_value_t = 0)]
    pub streams_nice: u8,

    /// Interval of the comment heartbeat that keeps idle streams open through proxies.
    #[arg(long, env = "PUSHWIRE_HEARTBEAT", default_value = "15s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,

    /// Reconnection delay sent to clients as `retry:` at the start of every stream.
    #[arg(long, env = "PUSHWIRE_RETRY", default_value = "3s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub retry: Duration,

    /// Maximum lifetime of one stream (like SseEmitter's timeout); clients then reconnect and resume. Unlimited when not set.
    #[arg(long, env = "PUSHWIRE_STREAM_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(
        with = "humantime_serde",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub stream_timeout: Option<Duration>,

    /// Events one stream may have queued; a stream that falls further behind is closed (slow consumer).
    #[arg(long, env = "PUSHWIRE_QUEUE_CAPACITY", default_value_t = 1024)]
    pub queue_capacity: usize,

    /// Most streams open at once; more are refused with 503.
    #[arg(long, env = "PUSHWIRE_MAX_STREAMS", default_value_t = 100_000)]
    pub max_streams: usize,

    /// Most TCP connections open at once; more are closed on accept.
    #[arg(long, env = "PUSHWIRE_MAX_CONNECTIONS", default_value_t = 100_000)]
    pub max_connections: usize,

    /// Largest request body, in bytes; larger ones get 413.
    #[arg(long, env = "PUSHWIRE_MAX_BODY", default_value_t = 1_048_576)]
    pub max_body: usize,

    /// Request body bytes all requests together may hold while they are read; a request that would take more gets 503 `overloaded` with `Retry-After`. At least `--max-body`.
    #[arg(long, env = "PUSHWIRE_MAX_INFLIGHT_BODY", default_value_t = 67_108_864)]
    pub max_inflight_body: usize,

    /// Largest request head (request line, headers, blank line), in bytes; larger ones get 431.
    #[arg(long, env = "PUSHWIRE_MAX_HEADER_BYTES", default_value_t = 32_768)]
    pub max_header_bytes: usize,

    /// Most streams one client address (the TCP peer) may have open at once; more get 429. Unlimited when not set.
    #[arg(long, env = "PUSHWIRE_MAX_STREAMS_PER_IP")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_streams_per_ip: Option<usize>,

    /// Most streams one user may have open at once; more get 429. Unlimited when not set.
    #[arg(long, env = "PUSHWIRE_MAX_STREAMS_PER_USER")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_streams_per_user: Option<usize>,

    /// Publish requests one publisher may make, as `<count>/s`, `/m` or `/h`; more get 429. Unlimited when not set.
    #[arg(long, env = "PUSHWIRE_PUBLISH_RATE", value_parser = crate::limits::PublishRate::from_str)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_rate: Option<crate::limits::PublishRate>,

    /// Publish requests one publisher may make at once before `--publish-rate` paces it; the rate's count when not set.
    #[arg(long, env = "PUSHWIRE_PUBLISH_BURST", value_parser = clap::value_parser!(u32).range(1..))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_burst: Option<u32>,

    /// Longest event id a publisher may supply, in bytes (at most 256).
    #[arg(long, env = "PUSHWIRE_MAX_ID_LENGTH", default_value_t = pushwire_core::limits::MAX_ID_LEN)]
    pub max_id_length: usize,

    /// Longest event type, in bytes (at most 256).
    #[arg(long, env = "PUSHWIRE_MAX_EVENT_TYPE_LENGTH", default_value_t = pushwire_core::limits::MAX_EVENT_TYPE_LEN)]
    pub max_event_type_length: usize,

    /// Longest topic, in bytes (at most 2048).
    #[arg(long, env = "PUSHWIRE_MAX_TOPIC_LENGTH", default_value_t = pushwire_core::limits::MAX_TOPIC_LEN)]
    pub max_topic_length: usize,

    /// Longest user id or group prefix, in bytes (at most 256).
    #[arg(long, env = "PUSHWIRE_MAX_USER_ID_LENGTH", default_value_t = pushwire_core::limits::MAX_USER_ID_LEN)]
    pub max_user_id_length: usize,

    /// Most topics one event may be published to.
    #[arg(long, env = "PUSHWIRE_MAX_TOPICS_PER_EVENT", default_value_t = pushwire_core::limits::DEFAULT_MAX_TOPICS)]
    pub max_topics_per_event: usize,

    /// Most topics and topic selectors one stream may listen to.
    #[arg(long, env = "PUSHWIRE_MAX_TOPICS_PER_STREAM", default_value_t = pushwire_core::limits::DEFAULT_MAX_TOPICS)]
    pub max_topics_per_stream: usize,

    /// Time a client has to send its request headers.
    #[arg(long, env = "PUSHWIRE_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,

    /// Shared secret publishers and management calls send as `Authorization: Bearer <key>`. Without it, only loopback peers may publish or manage.
    #[arg(long, env = "PUSHWIRE_PUBLISHER_KEY", hide_env_values = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher_key: Option<String>,

    /// Key that verifies publishers' JSON Web Tokens: the secret for HS256/384/512, a PEM public key (text or file path) for the others. Repeat it for several keys (a token verifies if any of them verifies it), e.g. while rotating; the environment variable holds one. Tokens then also work on the seed and `/api/v1` routes.
    #[arg(long, env = "PUSHWIRE_PUBLISHER_JWT_KEY", hide_env_values = true, action = clap::ArgAction::Append)]
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "one_or_many"
    )]
    pub publisher_jwt_key: Vec<String>,

    /// Key that verifies subscribers' JSON Web Tokens (private updates, subscriptions API, user streams); like `--publisher-jwt-key`, repeatable.
    #[arg(long, env = "PUSHWIRE_SUBSCRIBER_JWT_KEY", hide_env_values = true, action = clap::ArgAction::Append)]
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "one_or_many"
    )]
    pub subscriber_jwt_key: Vec<String>,

    /// JWK set (RFC 7517) whose keys verify both roles' tokens, fetched at start and kept fresh: `https://...`, `http://` to a loopback host only, or `file:///path`. A token's `kid` picks its key.
    #[arg(long, env = "PUSHWIRE_JWKS_URL")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,

    /// JWK set for publishers' tokens; replaces `--jwks-url` for them.
    #[arg(long, env = "PUSHWIRE_PUBLISHER_JWKS_URL")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher_jwks_url: Option<String>,

    /// JWK set for subscribers' tokens; replaces `--jwks-url` for them.
    #[arg(long, env = "PUSHWIRE_SUBSCRIBER_JWKS_URL")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscriber_jwks_url: Option<String>,

    /// The one signature algorithm tokens may use: HS256, HS384, HS512, RS256, RS384, RS512, PS256, ES256, ES384 or EdDSA (never `none`).
    #[arg(long, env = "PUSHWIRE_JWT_ALG", default_value = "HS256")]
    pub jwt_alg: String,

    /// The hub's resource identifier, required in the `aud` of current-draft (`typ: at+jwt`) tokens, e.g. `https://example.com/.well-known/mercure`.
    #[arg(long, env = "PUSHWIRE_JWT_AUDIENCE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_audience: Option<String>,

    /// Issuer identifiers (`iss`) of the OAuth authorization servers that issue current-draft tokens for this hub (comma-separated). Access tokens must then carry one of them in `iss`; the protected resource metadata advertises them.
    #[arg(long, env = "PUSHWIRE_AUTHORIZATION_SERVERS", value_delimiter = ',')]
    #[serde(default, deserialize_with = "comma_list")]
    pub authorization_servers: Vec<String>,

    /// Refuse subscribers without a valid token (by default anonymous subscribers get public updates).
    #[arg(long, env = "PUSHWIRE_REQUIRE_SUBSCRIBER_AUTH", value_parser = clap::builder::BoolishValueParser::new())]
    #[serde(default)]
    pub require_subscriber_auth: bool,

    /// Your application's endpoint that authorizes every new stream: the hub POSTs the request's route, user, topics, client and forwarded headers as JSON, and opens the stream only on a `200` answer naming its user and grants (docs/integration.md). Then the one subscriber authority of stream routes: subscriber tokens are not verified there.
    #[arg(long, env = "PUSHWIRE_AUTH_URL")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_url: Option<String>,

    /// Request headers forwarded to `--auth-url` in the JSON body, when present (comma-separated, case-insensitive); others never are.
    #[arg(
        long,
        env = "PUSHWIRE_AUTH_FORWARD_HEADERS",
        default_value = "cookie,authorization",
        value_delimiter = ','
    )]
    #[serde(deserialize_with = "comma_list")]
    pub auth_forward_headers: Vec<String>,

    /// Longest wait for `--auth-url` to answer; past it the stream is refused (503).
    #[arg(long, env = "PUSHWIRE_AUTH_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub auth_timeout: Duration,

    /// How long an answer of `--auth-url` is reused for the same forwarded credentials (never past its `expires_in`); 0s asks for every stream.
    #[arg(long, env = "PUSHWIRE_AUTH_CACHE_TTL", default_value = "10s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub auth_cache_ttl: Duration,

    /// Your application's endpoint for webhooks: signed JSON messages when users come online and go offline and when an event addressed to users reached some of them nowhere (docs/webhooks.md). Needs `--webhook-secret`.
    #[arg(long, env = "PUSHWIRE_WEBHOOK_URL")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,

    /// The Standard Webhooks signing secret, `whsec_` and the base64 of a 24 to 64 byte key; the receiver verifies every message with it.
    #[arg(long, env = "PUSHWIRE_WEBHOOK_SECRET", hide_env_values = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,

    /// Message types sent (comma-separated): `user.online`, `user.offline`, `stream.opened`, `stream.closed`, `event.undelivered`; by default all but the two `stream.*`.
    #[arg(
        long,
        env = "PUSHWIRE_WEBHOOK_EVENTS",
        default_value = "user.online,user.offline,event.undelivered",
        value_delimiter = ','
    )]
    #[serde(deserialize_with = "comma_list")]
    pub webhook_events: Vec<String>,

    /// How long a user whose last stream closed must stay away before `user.offline` (a page refresh is not an offline and online pair).
    #[arg(long, env = "PUSHWIRE_WEBHOOK_OFFLINE_DELAY", default_value = "5s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub webhook_offline_delay: Duration,

    /// Most bytes of an event's data an `event.undelivered` message carries (cut on a character boundary, marked `truncated`).
    #[arg(long, env = "PUSHWIRE_WEBHOOK_MAX_DATA", default_value_t = 4096)]
    pub webhook_max_data: usize,

    /// Delay before the first retry of a message the receiver did not take (non-2xx, timeout); doubled per attempt, with jitter.
    #[arg(long, env = "PUSHWIRE_WEBHOOK_RETRY_BACKOFF", default_value = "1s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub webhook_retry_backoff: Duration,

    /// Longest delay between two attempts of one message.
    #[arg(long, env = "PUSHWIRE_WEBHOOK_RETRY_MAX_DELAY", default_value = "1h", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub webhook_retry_max_delay: Duration,

    /// Attempts per message before it is given up and listed in `GET /api/v1/webhooks/failed` (12 span about 34 minutes with the default delays; 35 about a day).
    #[arg(long, env = "PUSHWIRE_WEBHOOK_MAX_ATTEMPTS", default_value_t = 12)]
    pub webhook_max_attempts: u32,

    /// Longest wait for the webhook receiver to answer one attempt.
    #[arg(long, env = "PUSHWIRE_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub webhook_timeout: Duration,

    /// Do not serve the demo page at `/` (it answers 404); the API and streams are unchanged.
    #[arg(long, env = "PUSHWIRE_NO_DEMO", value_parser = clap::builder::BoolishValueParser::new())]
    #[serde(default)]
    pub no_demo: bool,

    /// Do not serve the admin console at `/admin` (it answers 404); the management API it calls is unchanged.
    #[arg(long, env = "PUSHWIRE_NO_ADMIN", value_parser = clap::builder::BoolishValueParser::new())]
    #[serde(default)]
    pub no_admin: bool,

    /// Announce Mercure subscriptions as they start and end, and serve the subscriptions API.
    #[arg(long, env = "PUSHWIRE_SUBSCRIPTIONS", value_parser = clap::builder::BoolishValueParser::new())]
    #[serde(default)]
    pub subscriptions: bool,

    /// The hub's public URL: relative URL patterns and relative topics are resolved against it.
    #[arg(
        long,
        env = "PUSHWIRE_HUB_URL",
        default_value = "https://localhost/.well-known/mercure"
    )]
    pub hub_url: String,

    /// Origins allowed to open streams from a browser (comma-separated; `*` for any). Listed origins may send cookies (credentials) to stream and Mercure routes; `*` never can.
    #[arg(
        long,
        env = "PUSHWIRE_CORS_ORIGINS",
        default_value = "*",
        value_delimiter = ','
    )]
    #[serde(deserialize_with = "comma_list")]
    pub cors_origins: Vec<String>,

    /// Origins allowed to call publish and management routes from a browser (comma-separated; none by default).
    #[arg(long, env = "PUSHWIRE_API_CORS_ORIGINS", value_delimiter = ',')]
    #[serde(default, deserialize_with = "comma_list")]
    pub api_cors_origins: Vec<String>,

    /// Host names (or `host:port`) besides loopback ones for which a hub without publisher credentials serves publish and management calls (comma-separated; none by default). Defeats DNS rebinding.
    #[arg(long, env = "PUSHWIRE_ALLOWED_HOSTS", value_delimiter = ',')]
    #[serde(default, deserialize_with = "comma_list")]
    pub allowed_hosts: Vec<String>,

    /// History engine.
    #[arg(long, env = "PUSHWIRE_STORAGE", value_enum, default_value = "embedded")]
    pub storage: Storage,

    /// Directory of the embedded history, created if missing; one hub per directory.
    #[arg(long, env = "PUSHWIRE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// When the embedded history forces writes to disk: `always` (before each publish is acknowledged), `interval:<ms>` (at least that often) or `never` (only at a clean stop).
    #[arg(long, env = "PUSHWIRE_FSYNC", default_value = "always")]
    pub fsync: Fsync,

    /// Redis of the cluster, with `--storage redis`: `redis://[[user]:password@]host:port/db` (Redis 7.0 or newer). With `--redis-sentinels` it is optional and gives only the database, user and password: the sentinels name the host.
    #[arg(long, env = "PUSHWIRE_REDIS_URL", hide_env_values = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,

    /// Redis Sentinels that watch the cluster's primary (comma-separated `host:port`), with `--storage redis`: each node asks them, in turn, for the primary at start and whenever it fails or turns read-only, so it follows a failover without a restart. Needs `--redis-sentinel-master`.
    #[arg(long, env = "PUSHWIRE_REDIS_SENTINELS", value_delimiter = ',')]
    #[serde(default, deserialize_with = "comma_list")]
    pub redis_sentinels: Vec<String>,

    /// The name the sentinels know the primary by (`sentinel monitor <name> ...`). Needs `--redis-sentinels`.
    #[arg(long, env = "PUSHWIRE_REDIS_SENTINEL_MASTER")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_sentinel_master: Option<String>,

    /// With `--storage redis`: a publish is acknowledged only once this many replicas took it (Redis `WAIT`, at most 1 s); fewer answer 503. 0: once the primary took it.
    #[arg(long, env = "PUSHWIRE_REDIS_REPLICAS_ACK", default_value_t = 0)]
    pub redis_replicas_ack: usize,

    /// Namespace of the cluster's Redis keys (`<prefix>:events`, ...): one cluster per prefix.
    #[arg(long, env = "PUSHWIRE_REDIS_PREFIX", default_value = "pushwire")]
    pub redis_prefix: String,

    /// With `--storage redis`: a node that stops writing its presence (killed, cut off) drops out of user counts and lists after at most this long.
    #[arg(long, env = "PUSHWIRE_REDIS_PRESENCE_TTL", default_value = "15s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub redis_presence_ttl: Duration,

    /// Most events the history keeps.
    #[arg(long, env = "PUSHWIRE_HISTORY_MAX_EVENTS", default_value_t = 1_000_000)]
    pub history_max_events: usize,

    /// Oldest event the history keeps.
    #[arg(long, env = "PUSHWIRE_HISTORY_MAX_AGE", default_value = "24h", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub history_max_age: Duration,

    /// On shutdown, how long `/readyz` answers 503 while everything is still served, before streams end: give it the time a load balancer takes to notice.
    #[arg(long, env = "PUSHWIRE_DRAIN_DELAY", default_value = "0s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub drain_delay: Duration,

    /// Time open connections get to finish on shutdown.
    #[arg(long, env = "PUSHWIRE_SHUTDOWN_GRACE", default_value = "5s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,

    /// Log format.
    #[arg(long, env = "PUSHWIRE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Log filter (tracing syntax, e.g. `info` or `pushwire=debug`).
    #[arg(long, env = "PUSHWIRE_LOG", default_value = "info")]
    pub log: String,
}

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);
const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);
const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
const MIB: usize = 1024 * 1024;
const GIB: usize = 1024 * MIB;

/// The largest value of each duration option: beyond these a value is a
/// mistake, and a big enough one overflows the clock arithmetic it feeds
/// (a deadline `now + timeout` panics on every connection).
const DURATION_BOUNDS: [(&str, Duration, &str); 13] = [
    ("heartbeat", DAY, "24h"),
    ("stream-timeout", YEAR, "365d"),
    ("header-read-timeout", HOUR, "1h"),
    ("redis-presence-ttl", DAY, "24h"),
    ("history-max-age", YEAR, "365d"),
    ("drain-delay", HOUR, "1h"),
    ("shutdown-grace", HOUR, "1h"),
    ("auth-timeout", MINUTE, "1m"),
    ("auth-cache-ttl", HOUR, "1h"),
    ("webhook-offline-delay", DAY, "24h"),
    ("webhook-retry-backoff", DAY, "24h"),
    ("webhook-retry-max-delay", WEEK, "7d"),
    ("webhook-timeout", MINUTE, "1m"),
];

/// The most replicas `--redis-replicas-ack` may wait for: more is a typo
/// (Sentinel setups have a handful).
const MAX_REPLICAS_ACK: usize = 16;

/// The largest value of each size option (bytes, or frames for the queue).
const SIZE_BOUNDS: [(&str, usize, &str); 5] = [
    ("max-body", GIB, "1 GiB (1073741824)"),
    ("max-inflight-body", 16 * GIB, "16 GiB (17179869184)"),
    ("max-header-bytes", MIB, "1 MiB (1048576)"),
    ("queue-capacity", MIB, "1048576 frames"),
    ("webhook-max-data", MIB, "1 MiB (1048576)"),
];

/// The entries of a comma list, trimmed, empty ones dropped.
fn trimmed(entries: Vec<String>) -> Vec<String> {
    entries
        .iter()
        .flat_map(|entry| entry.split(','))
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(str::to_owned)
        .collect()
}

/// When a value clap refused came from a `PUSHWIRE_*` variable rather than
/// from the command line, says so: clap names only the flag, which the
/// operator never typed. `None` for any other error.
pub fn env_value_error(
    command: &clap::Command,
    error: &clap::Error,
    args: &[String],
) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        error.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return None;
    }
    let Some(ContextValue::String(shown)) = error.get(ContextKind::InvalidArg) else {
        return None;
    };
    // `--max-body <MAX_BODY>`
    let long = shown.split_whitespace().next()?.strip_prefix("--")?;
    let typed = args
        .iter()
        .any(|a| a == &format!("--{long}") || a.starts_with(&format!("--{long}=")));
    if typed {
        return None;
    }
    let arg = command
        .get_subcommands()
        .flat_map(|c| c.get_arguments())
        .chain(command.get_arguments())
        .find(|a| a.get_long() == Some(long))?;
    let variable = arg.get_env()?.to_string_lossy().into_owned();
    let value = std::env::var(&variable).ok()?;
    let reason = match (
        error.get(ContextKind::Custom),
        error.get(ContextKind::ValidValue),
    ) {
        (Some(ContextValue::String(reason)), _) => format!(": {reason}"),
        (_, Some(ContextValue::Strings(valid))) => format!(": use one of {}", valid.join(", ")),
        _ => std::error::Error::source(error)
            .map(|source| format!(": {source}"))
            .unwrap_or_default(),
    };
    Some(format!(
        "invalid value '{value}' in the environment variable {variable} (for --{long}){reason}"
    ))
}

/// Words of `text` in lines of at most `width` characters (longer words
/// get a line of their own).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// An address to listen on: `ip:port`, or `host:port` resolved once, at
/// start, to its first address (`localhost` is 127.0.0.1 on most systems).
pub fn listen_address(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err("give an address and a port, such as 127.0.0.1:8080 or localhost:8080".into());
    };
    if port.parse::<u16>().is_err() {
        return Err(format!("`{port}` is not a port number (0 to 65535)"));
    }
    use std::net::ToSocketAddrs;
    match text.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("the host name `{host}` resolves to no address")),
        Err(e) => Err(format!("the host name `{host}` does not resolve: {e}")),
    }
}

fn listen_from_file<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    listen_address(&text).map_err(serde::de::Error::custom)
}

/// A list option in the TOML file: an array of strings, or one string that
/// is comma-separated as the flag is (`cors-origins = "a, b"`).
fn comma_list<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum List {
        One(String),
        Many(Vec<String>),
    }
    Ok(match List::deserialize(deserializer)? {
        List::One(text) => trimmed(vec![text]),
        List::Many(entries) => trimmed(entries),
    })
}

/// A key list in the TOML file: one string (one key) or an array of them.
/// Unlike [`comma_list`], nothing is split: a secret may contain commas.
fn one_or_many<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Keys {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Keys::deserialize(deserializer)? {
        Keys::One(key) => vec![key],
        Keys::Many(keys) => keys,
    })
}

impl ServeConfig {
    /// Builds the configuration from parsed arguments, then merges the TOML
    /// file named by `--config` under whatever was given explicitly.
    pub fn from_matches(matches: &ArgMatches) -> Result<ServeConfig, ConfigError> {
        let mut config = ServeConfig::from_arg_matches(matches)?;
        if let Some(path) = config.config.clone() {
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let file_error = |message: String| ConfigError::File {
                path: path.clone(),
                message,
            };
            let file: toml::Table = toml::from_str(&text).map_err(|e| file_error(e.to_string()))?;
            let mut merged =
                toml::Table::try_from(&config).map_err(|e| file_error(e.to_string()))?;
            for (key, value) in file {
                let id = key.replace('-', "_");
                let given = matches!(
                    matches
                        .try_get_raw(&id)
                        .ok()
                        .and_then(|_| matches.value_source(&id)),
                    Some(ValueSource::CommandLine | ValueSource::EnvVariable)
                );
                if !given {
                    merged.insert(key, value);
                }
            }
            config = merged
                .try_into()
                .map_err(|e: toml::de::Error| file_error(e.message().to_owned()))?;
            config.config = Some(path);
        }
        // `a, b` means `a` and `b`, wherever the list came from.
        for list in [
            &mut config.cors_origins,
            &mut config.api_cors_origins,
            &mut config.authorization_servers,
            &mut config.allowed_hosts,
            &mut config.auth_forward_headers,
            &mut config.redis_sentinels,
        ] {
            *list = trimmed(std::mem::take(list));
        }
        for name in &mut config.auth_forward_headers {
            name.make_ascii_lowercase();
        }
        config.check()?;
        Ok(config)
    }

    /// The built-in defaults, as `pushwire serve` with no flags would run.
    pub fn defaults() -> ServeConfig {
        let command = clap::Command::new("pushwire");
        let command = ServeConfig::augment_args(command);
        let matches = command.get_matches_from(["pushwire"]);
        // The defaults are literals of this file and parse; tests check it.
        ServeConfig::from_arg_matches(&matches).unwrap_or_else(|e| panic!("bad default: {e}"))
    }

    /// A configuration file with every option commented out at its
    /// built-in default, each under its help text and variable: what
    /// `pushwire config` prints, a starting point to edit. Uncommenting a
    /// line of an option that has a default sets that default; options
    /// without one show their key only.
    pub fn commented_defaults() -> String {
        // The built-in defaults, whatever the environment says.
        let command = ServeConfig::augment_args(clap::Command::new("pushwire"))
            .mut_args(|arg| arg.env(None::<&str>));
        let defaults = command
            .clone()
            .try_get_matches_from(["pushwire"])
            .ok()
            .and_then(|m| ServeConfig::from_arg_matches(&m).ok())
            .and_then(|c| toml::Table::try_from(&c).ok())
            .unwrap_or_default();
        let documented = ServeConfig::augment_args(clap::Command::new("pushwire"));
        let mut out = String::from(
            "# pushwire configuration: every option at its built-in default.\n\
             # Keys are the flags without `--`; a flag or PUSHWIRE_* variable given at start\n\
             # wins over this file. Uncomment and edit what you need, then run\n\
             # `pushwire check-config --config <this file>`.\n",
        );
        for arg in documented.get_arguments() {
            let Some(key) = arg.get_long() else { continue };
            if key == "config" {
                continue;
            }
            out.push('\n');
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            for line in wrap(&help, 86) {
                out.push_str("# ");
                out.push_str(&line);
                out.push('\n');
            }
            if let Some(variable) = arg.get_env() {
                out.push_str(&format!(
                    "# (environment: {})\n",
                    variable.to_string_lossy()
                ));
            }
            match defaults.get(key) {
                Some(value) => out.push_str(&format!("#{key} = {value}\n")),
                None => out.push_str(&format!("#{key} =   (no default)\n")),
            }
        }
        out
    }

    /// What token verification needs.
    pub fn jwt_settings(&self) -> crate::auth::jwt::JwtSettings {
        crate::auth::jwt::JwtSettings {
            algorithm: self.jwt_alg.clone(),
            publisher_keys: self.publisher_jwt_key.clone(),
            subscriber_keys: self.subscriber_jwt_key.clone(),
            publisher_jwks: self
                .publisher_jwks_url
                .clone()
                .or_else(|| self.jwks_url.clone()),
            subscriber_jwks: self
                .subscriber_jwks_url
                .clone()
                .or_else(|| self.jwks_url.clone()),
            audience: self.jwt_audience.clone(),
            base_url: self.hub_url.clone(),
            issuers: self.authorization_servers.clone(),
        }
    }

    /// What the `--auth-url` backend needs, when one is configured.
    pub fn backend_settings(&self) -> Option<crate::auth::backend::BackendSettings> {
        Some(crate::auth::backend::BackendSettings {
            url: self.auth_url.clone()?,
            forward_headers: self.auth_forward_headers.clone(),
            timeout: self.auth_timeout,
            cache_ttl: self.auth_cache_ttl,
            base_url: self.hub_url.clone(),
        })
    }

    /// The webhook settings, when `--webhook-url` is set and the options
    /// read (`check` refused them otherwise).
    pub fn webhook_settings(&self) -> Option<crate::webhooks::WebhookSettings> {
        let url = self.webhook_url.clone()?;
        let secret = crate::webhooks::sign::Secret::parse(self.webhook_secret.as_deref()?).ok()?;
        Some(crate::webhooks::WebhookSettings {
            url,
            secret,
            kinds: self.webhook_kinds().ok()?,
            offline_delay: self.webhook_offline_delay,
            max_data: self.webhook_max_data,
            retry_backoff: self.webhook_retry_backoff,
            retry_max_delay: self.webhook_retry_max_delay,
            max_attempts: self.webhook_max_attempts,
            timeout: self.webhook_timeout,
        })
    }

    fn webhook_kinds(&self) -> Result<crate::webhooks::Kinds, ConfigError> {
        let names = trimmed(self.webhook_events.clone());
        let kinds = names
            .iter()
            .map(|name| {
                crate::webhooks::Kind::parse(name).ok_or_else(|| {
                    ConfigError::Invalid(format!(
                        "webhook-events: unknown type `{name}` (user.online, user.offline, \
                         stream.opened, stream.closed, event.undelivered)"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(crate::webhooks::Kinds::of(kinds))
    }

    fn check_webhooks(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        self.webhook_kinds()?;
        if self.webhook_max_attempts == 0 || self.webhook_max_attempts > 100 {
            return invalid("webhook-max-attempts must be between 1 and 100");
        }
        if self.webhook_timeout.is_zero() {
            return invalid("webhook-timeout must be longer than zero");
        }
        if self.webhook_retry_backoff.is_zero() {
            return invalid("webhook-retry-backoff must be longer than zero");
        }
        if self.webhook_retry_max_delay < self.webhook_retry_backoff {
            return invalid("webhook-retry-max-delay must be at least webhook-retry-backoff");
        }
        match (&self.webhook_url, &self.webhook_secret) {
            (None, None) => Ok(()),
            (None, Some(_)) => invalid("webhook-secret needs webhook-url"),
            (Some(_), None) => invalid(
                "webhook-url needs webhook-secret (whsec_<base64>): unsigned webhooks could be forged",
            ),
            (Some(url), Some(secret)) => {
                let parsed = url::Url::parse(url)
                    .map_err(|e| ConfigError::Invalid(format!("webhook-url: {e}")))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return invalid("webhook-url must be an http:// or https:// URL");
                }
                crate::webhooks::sign::Secret::parse(secret)
                    .map_err(|e| ConfigError::Invalid(e.to_string()))?;
                Ok(())
            }
        }
    }

    /// The field limits the core validates events and streams against.
    pub fn field_limits(&self) -> crate::limits::FieldLimits {
        crate::limits::FieldLimits {
            id_length: self.max_id_length,
            event_type_length: self.max_event_type_length,
            topic_length: self.max_topic_length,
            user_id_length: self.max_user_id_length,
            topics_per_event: self.max_topics_per_event,
            topics_per_stream: self.max_topics_per_stream,
        }
    }

    /// The configuration as `check-config` shows it: the publisher key,
    /// shared JWT secrets (HS* keys) and the password of `redis-url`
    /// replaced by `<redacted>`, so the output can be pasted into a ticket.
    /// Public keys (PEM text or a file path) and JWKS URLs (but for a
    /// password in them) are not secret and stay.
    pub fn redacted(&self) -> ServeConfig {
        const REDACTED: &str = "<redacted>";
        let mut shown = self.clone();
        shown.publisher_key = self.publisher_key.as_ref().map(|_| REDACTED.to_owned());
        if self.jwt_alg.trim().to_ascii_uppercase().starts_with("HS") {
            let all_hidden = |keys: &[String]| vec![REDACTED.to_owned(); keys.len()];
            shown.publisher_jwt_key = all_hidden(&self.publisher_jwt_key);
            shown.subscriber_jwt_key = all_hidden(&self.subscriber_jwt_key);
        }
        let without_password = |url: &Option<String>| {
            url.as_ref().map(|text| {
                match url::Url::parse(text) {
                    Ok(mut url) if url.password().is_some() => {
                        // `set_password` fails only for URLs that cannot carry one.
                        let _ = url.set_password(Some("redacted"));
                        url.to_string()
                    }
                    Ok(_) => text.clone(),
                    // Not a URL (check() refuses it anyway): nothing to pick apart.
                    Err(_) => REDACTED.to_owned(),
                }
            })
        };
        shown.redis_url = without_password(&self.redis_url);
        shown.jwks_url = without_password(&self.jwks_url);
        shown.publisher_jwks_url = without_password(&self.publisher_jwks_url);
        shown.subscriber_jwks_url = without_password(&self.subscriber_jwks_url);
        shown.auth_url = without_password(&self.auth_url);
        shown.webhook_url = without_password(&self.webhook_url);
        shown.webhook_secret = self.webhook_secret.as_ref().map(|_| REDACTED.to_owned());
        shown
    }

    /// Every duration and size option within its bound ([`DURATION_BOUNDS`],
    /// [`SIZE_BOUNDS`]), and the fsync interval at most an hour.
    fn check_bounds(&self) -> Result<(), ConfigError> {
        let durations: [Option<Duration>; DURATION_BOUNDS.len()] = [
            Some(self.heartbeat),
            self.stream_timeout,
            Some(self.header_read_timeout),
            Some(self.redis_presence_ttl),
            Some(self.history_max_age),
            Some(self.drain_delay),
            Some(self.shutdown_grace),
            Some(self.auth_timeout),
            Some(self.auth_cache_ttl),
            Some(self.webhook_offline_delay),
            Some(self.webhook_retry_backoff),
            Some(self.webhook_retry_max_delay),
            Some(self.webhook_timeout),
        ];
        for ((name, max, shown), value) in DURATION_BOUNDS.iter().zip(durations) {
            if value.is_some_and(|v| v > *max) {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be at most {shown}"
                )));
            }
        }
        // Sized by the bounds table: a value left out does not compile.
        let sizes: [usize; SIZE_BOUNDS.len()] = [
            self.max_body,
            self.max_inflight_body,
            self.max_header_bytes,
            self.queue_capacity,
            self.webhook_max_data,
        ];
        for ((name, max, shown), value) in SIZE_BOUNDS.iter().zip(sizes) {
            if value > *max {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be at most {shown}"
                )));
            }
        }
        if matches!(self.fsync, Fsync::Interval(every) if every > HOUR) {
            return Err(ConfigError::Invalid(
                "fsync interval must be at most 3600000 ms (1h)".to_owned(),
            ));
        }
        Ok(())
    }

    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        self.check_bounds()?;
        self.field_limits().check().map_err(ConfigError::Invalid)?;
        if self
            .metrics_listen
            .is_some_and(|m| m == self.listen && m.port() != 0)
        {
            return invalid("metrics-listen must be another address or port than listen");
        }
        if self.max_header_bytes < 1024 {
            return invalid("max-header-bytes must be at least 1024");
        }
        if self.max_inflight_body < self.max_body {
            return invalid("max-inflight-body must be at least max-body");
        }
        if self.max_streams_per_ip == Some(0) || self.max_streams_per_user == Some(0) {
            return invalid("max-streams-per-ip and max-streams-per-user must be at least 1");
        }
        if self.publish_burst.is_some() && self.publish_rate.is_none() {
            return invalid("publish-burst needs publish-rate");
        }
        if self.publish_burst == Some(0) {
            return invalid("publish-burst must be at least 1");
        }
        if self.heartbeat.is_zero() {
            return invalid("heartbeat must be longer than zero");
        }
        if self.queue_capacity == 0 {
            return invalid("queue-capacity must be at least 1");
        }
        if self.history_max_events == 0 {
            return invalid("history-max-events must be at least 1");
        }
        if self.retry.as_millis() > u128::from(pushwire_core::event::MAX_RETRY_MS) {
            return invalid("retry must be at most 24h");
        }
        if self.publisher_key.as_deref().is_some_and(str::is_empty) {
            return invalid("publisher-key must not be empty");
        }
        for (name, keys) in [
            ("publisher-jwt-key", &self.publisher_jwt_key),
            ("subscriber-jwt-key", &self.subscriber_jwt_key),
        ] {
            if let Some(n) = keys.iter().position(|key| key.is_empty()) {
                return invalid(&match keys.len() {
                    1 => format!("{name} must not be empty"),
                    _ => format!(
                        "{name}: the {} key must not be empty",
                        crate::auth::jwt::ordinal(n + 1)
                    ),
                });
            }
        }
        for (name, url) in [
            ("jwks-url", &self.jwks_url),
            ("publisher-jwks-url", &self.publisher_jwks_url),
            ("subscriber-jwks-url", &self.subscriber_jwks_url),
        ] {
            if let Some(url) = url {
                crate::auth::jwt::JwksLocation::parse(url)
                    .map_err(|reason| ConfigError::Invalid(format!("{name}: {reason}")))?;
            }
        }
        if let Some(url) = &self.auth_url {
            crate::auth::backend::parse_url(url)
                .map_err(|e| ConfigError::Invalid(e.to_string()))?;
            if self.require_subscriber_auth {
                return invalid(
                    "require-subscriber-auth and auth-url: choose one; with auth-url your \
                     backend decides who may open a stream",
                );
            }
        }
        crate::auth::backend::parse_header_names(&self.auth_forward_headers)
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if self.auth_timeout.is_zero() {
            return invalid("auth-timeout must be longer than zero");
        }
        self.check_webhooks()?;
        if self.require_subscriber_auth
            && self.subscriber_jwt_key.is_empty()
            && self.jwt_settings().subscriber_jwks.is_none()
        {
            return invalid(
                "require-subscriber-auth needs subscriber-jwt-key, subscriber-jwks-url or jwks-url",
            );
        }
        crate::auth::jwt::Verifier::new(&self.jwt_settings())
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if url::Url::parse(&self.hub_url).is_err() {
            return invalid("hub-url must be an absolute URL");
        }
        // The hub's keys are one trust relationship: with tokens of two
        // issuers, one issuer's key could vouch for the other's identity,
        // which the current draft forbids ("Token Validation").
        if self.authorization_servers.len() > 1 {
            return invalid(
                "authorization-servers: name one issuer; the hub's keys are not bound to issuers, \
                 so tokens of several would be verified with a pooled set",
            );
        }
        if let Some(server) = self
            .authorization_servers
            .iter()
            .find(|s| url::Url::parse(s).map_or(true, |u| u.scheme() != "https"))
        {
            return invalid(&format!(
                "authorization-servers: `{server}` is not an issuer identifier (an https:// URL, RFC 8414)"
            ));
        }
        if self.h2_max_streams == 0 {
            return invalid("h2-max-streams must be at least 1");
        }
        if self.streams_nice > 19 {
            return invalid("streams-nice must be between 0 and 19");
        }
        match (&self.tls_cert, &self.tls_key) {
            (None, None) => {}
            (Some(_), None) => return invalid("tls-cert needs tls-key: give both or neither"),
            (None, Some(_)) => return invalid("tls-key needs tls-cert: give both or neither"),
            (Some(cert), Some(key)) => {
                if self.h2c {
                    return invalid(
                        "h2c is for plain-text listening; with tls-cert, HTTP/2 is \
                         negotiated by ALPN",
                    );
                }
                crate::transport::tls::server_config(cert, key)
                    .map_err(|e| ConfigError::Invalid(e.to_string()))?;
            }
        }
        match (
            self.redis_sentinels.is_empty(),
            self.redis_sentinel_master.as_deref(),
        ) {
            (true, Some(_)) => return invalid("redis-sentinel-master needs redis-sentinels"),
            (false, None) => return invalid("redis-sentinels needs redis-sentinel-master"),
            (_, Some(name)) if name.is_empty() || name.contains(char::is_whitespace) => {
                return invalid("redis-sentinel-master must be a non-empty word without spaces")
            }
            _ => {}
        }
        for sentinel in &self.redis_sentinels {
            crate::engines::redis::sentinel::parse_address(sentinel)
                .map_err(|e| ConfigError::Invalid(format!("redis-sentinels: {e}")))?;
        }
        match (&self.storage, &self.redis_url) {
            (Storage::Redis, None) if self.redis_sentinels.is_empty() => {
                return invalid("storage redis needs redis-url or redis-sentinels")
            }
            (_, Some(url)) => {
                redis::Client::open(url.as_str())
                    .map_err(|e| ConfigError::Invalid(format!("redis-url: {e}")))?;
            }
            (_, None) => {}
        }
        if self.redis_replicas_ack > MAX_REPLICAS_ACK {
            return invalid(&format!(
                "redis-replicas-ack must be at most {MAX_REPLICAS_ACK}"
            ));
        }
        if self.redis_prefix.is_empty() || self.redis_prefix.contains(char::is_whitespace) {
            return invalid("redis-prefix must be a non-empty word without spaces");
        }
        if self.redis_presence_ttl < std::time::Duration::from_secs(1) {
            return invalid("redis-presence-ttl must be at least 1s");
        }
        // Every directive must parse: a filter that silently fell back to
        // `info` would hide the very lines its author asked for.
        if let Err(error) = tracing_subscriber::EnvFilter::builder().parse(&self.log) {
            return invalid(&format!(
                "log: `{}` is not a valid filter: {error}",
                self.log
            ));
        }
        for host in &self.allowed_hosts {
            if !crate::transport::strict_heads::host_is_valid(host.as_bytes()) {
                return invalid(&format!(
                    "allowed-hosts: `{host}` is not a host name or host:port"
                ));
            }
        }
        for origin in self.cors_origins.iter().chain(&self.api_cors_origins) {
            if origin != "*" && http::HeaderValue::from_str(origin).is_err() {
                return invalid(&format!("`{origin}` is not a valid origin"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeConfig,
    }

    fn load(args: &[&str]) -> Result<ServeConfig, ConfigError> {
        let matches = Cli::command().try_get_matches_from(args)?;
        ServeConfig::from_matches(&matches)
    }

    #[test]
    fn comma_lists_read_the_same_from_flags_and_file() -> Result<(), Box<dyn std::error::Error>> {
        let want = vec![
            "https://a.example".to_owned(),
            "https://b.example".to_owned(),
        ];
        let flag = load(&[
            "x",
            "--cors-origins",
            "https://a.example, https://b.example",
        ])?;
        assert_eq!(flag.cors_origins, want);
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("pushwire.toml");
        for text in [
            "cors-origins = \"https://a.example, https://b.example\"\n",
            "cors-origins = [\"https://a.example\", \" https://b.example\"]\n",
        ] {
            std::fs::write(&file, text)?;
            let c = load(&["x", "--config", &file.to_string_lossy()])?;
            assert_eq!(c.cors_origins, want, "{text}");
        }
        std::fs::write(
            &file,
            "api-cors-origins = \"https://a.example,https://b.example\"\n",
        )?;
        let c = load(&["x", "--config", &file.to_string_lossy()])?;
        assert_eq!(c.api_cors_origins, want);
        // Anything else is still refused.
        std::fs::write(&file, "cors-origins = 5\n")?;
        let error = load(&["x", "--config", &file.to_string_lossy()])
            .err()
            .map(|e| e.to_string());
        assert!(error.is_some(), "a number is not a list of origins");
        Ok(())
    }

    #[test]
    fn every_log_directive_must_parse() {
        let error = |args: &[&str]| load(args).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(load(&["x", "--log", "warn,pushwire=debug"]).is_ok());
        for bad in ["[[[", "warn,pushwire=bogus"] {
            let message = error(&["x", "--log", bad]);
            assert!(message.starts_with("log: "), "{bad}: {message}");
            assert!(message.contains(bad), "{bad}: {message}");
        }
    }

    #[test]
    fn check_config_shows_no_secret() -> Result<(), Box<dyn std::error::Error>> {
        let c = load(&[
            "x",
            "--publisher-key",
            "pk-secret",
            "--publisher-jwt-key",
            "jwt-secret-of-thirty-two-bytes-or-more",
            "--redis-url",
            "redis://user:redis-secret@10.0.0.5:6379/2",
        ])?;
        let text = toml::to_string(&c.redacted())?;
        for secret in ["pk-secret", "jwt-secret", "redis-secret"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("publisher-key = \"<redacted>\""), "{text}");
        assert!(
            text.contains("redis://user:redacted@10.0.0.5:6379/2"),
            "{text}"
        );
        // What is not secret stays as it was, and nothing else changes.
        let mut rs = ServeConfig::defaults();
        rs.jwt_alg = "RS256".into();
        rs.publisher_jwt_key = vec!["/etc/pw/pub.pem".into()];
        assert_eq!(rs.redacted().publisher_jwt_key, ["/etc/pw/pub.pem"]);
        rs.jwks_url = Some("https://user:jwks-secret@issuer.example.com/jwks".into());
        assert_eq!(
            rs.redacted().jwks_url.as_deref(),
            Some("https://user:redacted@issuer.example.com/jwks")
        );
        assert_eq!(
            toml::to_string(&ServeConfig::defaults().redacted())?,
            toml::to_string(&ServeConfig::defaults())?
        );
        Ok(())
    }

    #[test]
    fn jwt_keys_repeat_and_come_from_the_file_as_one_or_many(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let first = "first-secret-of-thirty-two-bytes-or-more";
        let second = "second-secret, with a comma, thirty-two bytes";
        let c = load(&[
            "x",
            "--publisher-jwt-key",
            first,
            "--publisher-jwt-key",
            second,
            "--subscriber-jwt-key",
            first,
        ])?;
        assert_eq!(c.publisher_jwt_key, [first, second]);
        assert_eq!(c.jwt_settings().subscriber_keys, [first]);
        let text = toml::to_string(&c.redacted())?;
        assert!(!text.contains("-secret"), "{text}");
        assert!(
            text.contains(r#"publisher-jwt-key = ["<redacted>", "<redacted>"]"#),
            "{text}"
        );

        let dir = tempfile::tempdir()?;
        let file = dir.path().join("pushwire.toml");
        let f = file.to_string_lossy().to_string();
        std::fs::write(&file, format!("publisher-jwt-key = {first:?}\n"))?;
        assert_eq!(load(&["x", "--config", &f])?.publisher_jwt_key, [first]);
        std::fs::write(
            &file,
            format!("publisher-jwt-key = [{first:?}, {second:?}]\n"),
        )?;
        assert_eq!(
            load(&["x", "--config", &f])?.publisher_jwt_key,
            [first, second]
        );
        // Round trip through check-config's output.
        std::fs::write(&file, toml::to_string(&c)?)?;
        assert_eq!(
            load(&["x", "--config", &f])?.publisher_jwt_key,
            [first, second]
        );

        let error = |args: &[&str]| load(args).err().map(|e| e.to_string()).unwrap_or_default();
        let message = error(&["x", "--publisher-jwt-key", first, "--publisher-jwt-key", ""]);
        assert!(message.contains("the 2nd key"), "{message}");
        let message = error(&[
            "x",
            "--publisher-jwt-key",
            first,
            "--publisher-jwt-key=-----BEGIN PUBLIC KEY-----",
        ]);
        assert!(message.contains("the 2nd publisher JWT key"), "{message}");
        Ok(())
    }

    #[test]
    fn jwks_urls_are_checked_and_the_role_url_wins() {
        let error = |args: &[&str]| load(args).err().map(|e| e.to_string()).unwrap_or_default();
        for option in [
            "--jwks-url",
            "--publisher-jwks-url",
            "--subscriber-jwks-url",
        ] {
            let message = error(&["x", option, "http://issuer.example.com/jwks"]);
            assert!(
                message.starts_with(&format!("{}: ", &option[2..])),
                "{message}"
            );
            assert!(error(&["x", option, "ftp://127.0.0.1/jwks"]).contains(&option[2..]));
        }
        let c = load(&[
            "x",
            "--jwks-url",
            "https://issuer.example.com/jwks",
            "--subscriber-jwks-url",
            "http://127.0.0.1:9/jwks",
        ]);
        let settings = c.map(|c| c.jwt_settings()).ok();
        assert_eq!(
            settings.as_ref().and_then(|s| s.publisher_jwks.as_deref()),
            Some("https://issuer.example.com/jwks")
        );
        assert_eq!(
            settings.as_ref().and_then(|s| s.subscriber_jwks.as_deref()),
            Some("http://127.0.0.1:9/jwks")
        );
        // A JWK set is enough for subscribers to need a token.
        assert!(load(&[
            "x",
            "--require-subscriber-auth",
            "--jwks-url",
            "file:///etc/pushwire/jwks.json"
        ])
        .is_ok());
        assert!(error(&["x", "--require-subscriber-auth"]).contains("subscriber-jwks-url"));
    }

    #[test]
    fn the_commented_defaults_name_every_option_and_read_back_as_the_defaults() {
        let text = ServeConfig::commented_defaults();
        let command = ServeConfig::augment_args(clap::Command::new("pushwire"));
        for arg in command.get_arguments() {
            let Some(key) = arg.get_long() else { continue };
            if key != "config" {
                assert!(text.contains(&format!("\n#{key} = ")), "{key} is missing");
            }
        }
        // Uncommenting every option that has a default gives the defaults.
        let uncommented: String = text
            .lines()
            .filter_map(|l| l.strip_prefix('#'))
            .filter(|l| !l.starts_with(' ') && !l.contains("(no default)"))
            .map(|l| format!("{l}\n"))
            .collect();
        let dir = std::env::temp_dir().join(format!("pushwire-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok();
        let file = dir.join("pushwire.toml");
        std::fs::write(&file, &uncommented).ok();
        let loaded = load(&["pushwire", "--config", &file.to_string_lossy()]);
        std::fs::remove_dir_all(&dir).ok();
        let loaded = match loaded {
            Ok(c) => c,
            Err(e) => panic!("{e}\n{uncommented}"),
        };
        let as_table = |c: &ServeConfig| toml::Table::try_from(c).ok();
        assert_eq!(as_table(&loaded), as_table(&ServeConfig::defaults()));
    }

    #[test]
    fn one_authorization_server_an_https_issuer() {
        assert!(load(&[
            "pushwire",
            "--authorization-servers",
            "https://auth.example.com"
        ])
        .is_ok());
        for bad in [
            "https://a.example,https://b.example",
            "http://auth.example.com",
            "auth.example.com",
        ] {
            let Err(error) = load(&["pushwire", "--authorization-servers", bad]) else {
                panic!("{bad} was accepted");
            };
            assert!(
                error.to_string().contains("authorization-servers"),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn auth_url_options_parse_from_flags_and_file_and_a_bad_url_is_refused(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let defaults = ServeConfig::defaults();
        assert_eq!(defaults.auth_url, None);
        assert_eq!(defaults.auth_forward_headers, ["cookie", "authorization"]);
        assert_eq!(defaults.auth_timeout, Duration::from_secs(2));
        assert_eq!(defaults.auth_cache_ttl, Duration::from_secs(10));
        assert!(defaults.backend_settings().is_none());

        let c = load(&[
            "x",
            "--auth-url",
            "https://app.example.com/pushwire/auth",
            "--auth-forward-headers",
            "Cookie, X-Session",
            "--auth-timeout",
            "500ms",
            "--auth-cache-ttl",
            "0s",
        ])?;
        let settings = c.backend_settings().ok_or("no backend settings")?;
        assert_eq!(settings.url, "https://app.example.com/pushwire/auth");
        assert_eq!(settings.forward_headers, ["cookie", "x-session"]);
        assert_eq!(settings.timeout, Duration::from_millis(500));
        assert_eq!(settings.cache_ttl, Duration::ZERO);
        assert_eq!(settings.base_url, c.hub_url);

        let dir = tempfile::tempdir()?;
        let path = dir.path().join("auth.toml");
        std::fs::write(
            &path,
            "auth-url = \"http://app:3000/auth\"\nauth-forward-headers = [\"cookie\"]\n\
             auth-timeout = \"3s\"\nauth-cache-ttl = \"1m\"\n",
        )?;
        let p = path.to_string_lossy().to_string();
        let file = load(&["x", "--config", &p])?;
        assert_eq!(file.auth_url.as_deref(), Some("http://app:3000/auth"));
        assert_eq!(file.auth_forward_headers, ["cookie"]);
        assert_eq!(file.auth_timeout, Duration::from_secs(3));
        assert_eq!(file.auth_cache_ttl, Duration::from_secs(60));
        // check-config shows a password in the URL as redacted.
        let secret = load(&[
            "x",
            "--auth-url",
            "https://u:auth-secret@app.example.com/auth",
        ])?;
        assert!(!toml::to_string(&secret.redacted())?.contains("auth-secret"));

        let error = |args: &[&str]| load(args).err().map(|e| e.to_string()).unwrap_or_default();
        for bad in [
            "app.example.com/auth",
            "ftp://app.example.com/auth",
            "not a url",
        ] {
            let message = error(&["x", "--auth-url", bad]);
            assert!(message.starts_with("auth-url: "), "{bad}: {message}");
        }
        assert!(error(&["x", "--auth-forward-headers", "bad header"])
            .starts_with("auth-forward-headers: "));
        assert!(error(&["x", "--auth-timeout", "0s"]).contains("auth-timeout"));
        assert!(error(&["x", "--auth-timeout", "2m"]).starts_with("auth-timeout"));
        assert!(error(&[
            "x",
            "--auth-url",
            "http://127.0.0.1:9/auth",
            "--require-subscriber-auth",
            "--subscriber-jwt-key",
            "a-subscriber-secret-of-thirty-two-bytes",
        ])
        .contains("choose one"));
        Ok(())
    }

    #[test]
    fn defaults_parse() {
        let c = ServeConfig::defaults();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.heartbeat, Duration::from_secs(15));
        assert_eq!(c.retry, Duration::from_secs(3));
        assert_eq!(c.stream_timeout, None);
        assert_eq!(c.cors_origins, vec!["*".to_owned()]);
        assert!(c.api_cors_origins.is_empty());
        assert_eq!(c.storage, Storage::Embedded);
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.fsync, Fsync::Always);
        assert_eq!((&c.tls_cert, &c.tls_key), (&None, &None));
        assert!(!c.h2c);
        assert_eq!(c.h2_max_streams, 1000);
        assert_eq!(c.streams_nice, 0);
    }

    #[test]
    fn tls_needs_both_files_and_they_must_load() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, generated.cert.pem())?;
        std::fs::write(&key, generated.signing_key.serialize_pem())?;
        let (c, k) = (cert.to_string_lossy(), key.to_string_lossy());
        let error = |args: &[&str]| load(args).err().map(|e| e.to_string()).unwrap_or_default();

        let both = load(&["x", "--tls-cert", &c, "--tls-key", &k])?;
        assert_eq!(both.tls_cert.as_deref(), Some(cert.as_path()));
        let text = toml::to_string(&both)?;
        assert!(
            text.contains("tls-cert = ") && text.contains("tls-key = "),
            "{text}"
        );

        assert!(error(&["x", "--tls-cert", &c]).contains("tls-key"));
        assert!(error(&["x", "--tls-key", &k]).contains("tls-cert"));
        // The key where the certificate belongs, and the other way round.
        assert!(error(&["x", "--tls-cert", &k, "--tls-key", &k]).contains("no certificate"));
        assert!(error(&["x", "--tls-cert", &c, "--tls-key", &c]).contains("no private key"));
        let missing = dir.path().join("missing.pem");
        let m = missing.to_string_lossy();
        assert!(error(&["x", "--tls-cert", &m, "--tls-key", &k]).contains("missing.pem"));
        // h2c is for plain text; with TLS, ALPN picks the protocol.
        assert!(error(&["x", "--tls-cert", &c, "--tls-key", &k, "--h2c"]).contains("h2c"));

        // One file from the TOML file, the other from a flag.
        let file = dir.path().join("pushwire.toml");
        std::fs::write(&file, format!("tls-key = {:?}\nh2c = false\n", k))?;
        let f = file.to_string_lossy();
        let mixed = load(&["x", "--config", &f, "--tls-cert", &c])?;
        assert_eq!(mixed.tls_key.as_deref(), Some(key.as_path()));
        Ok(())
    }

    #[test]
    fn limits_parse_from_flags_and_file_and_refuse_impossible_values(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let c = load(&[
            "x",
            "--publish-rate",
            "10/s",
            "--publish-burst",
            "20",
            "--max-streams-per-ip",
            "50",
            "--max-topic-length",
            "100",
        ])?;
        assert_eq!(
            c.publish_rate.map(|r| r.to_string()).as_deref(),
            Some("10/s")
        );
        assert_eq!(c.publish_burst, Some(20));
        assert_eq!(c.max_streams_per_ip, Some(50));
        assert_eq!(c.field_limits().topic_length, 100);
        let text = toml::to_string(&c)?;
        assert!(text.contains("publish-rate = \"10/s\""), "{text}");

        let dir = tempfile::tempdir()?;
        let path = dir.path().join("limits.toml");
        std::fs::write(
            &path,
            "publish-rate = \"600/m\"\nmax-streams-per-user = 3\nmax-topics-per-stream = 7\n",
        )?;
        let p = path.to_string_lossy().to_string();
        let file = load(&["x", "--config", &p])?;
        assert_eq!(
            file.publish_rate.map(|r| r.to_string()).as_deref(),
            Some("600/m")
        );
        assert_eq!(file.max_streams_per_user, Some(3));
        assert_eq!(file.field_limits().topics_per_stream, 7);

        let error = |args: &[&str]| load(args).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error(&["x", "--publish-rate", "fast"]).contains("1000/s"));
        assert!(error(&["x", "--publish-burst", "5"]).contains("publish-rate"));
        assert!(error(&["x", "--max-topic-length", "4096"]).contains("max-topic-length"));
        assert!(error(&["x", "--max-id-length", "0"]).contains("max-id-length"));
        assert!(error(&["x", "--max-streams-per-ip", "0"]).contains("max-streams-per-ip"));
        assert!(error(&["x", "--max-header-bytes", "100"]).contains("max-header-bytes"));
        assert!(
            error(&["x", "--max-body", "2048", "--max-inflight-body", "1024"])
                .contains("max-inflight-body")
        );
        assert!(load(&["x", "--max-body", "2048", "--max-inflight-body", "2048"]).is_ok());
        Ok(())
    }

    #[test]
    fn metrics_listen_is_its_own_address() -> Result<(), Box<dyn std::error::Error>> {
        let c = load(&["x", "--metrics-listen", "10.0.0.5:9100"])?;
        assert_eq!(c.metrics_listen, Some("10.0.0.5:9100".parse()?));
        assert_eq!(load(&["x"])?.metrics_listen, None);
        let same = load(&[
            "x",
            "--listen",
            "127.0.0.1:9000",
            "--metrics-listen",
            "127.0.0.1:9000",
        ]);
        let message = same.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("metrics-listen"), "{message}");
        // Two ephemeral ports are two ports.
        assert!(load(&[
            "x",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0"
        ])
        .is_ok());
        Ok(())
    }

    #[test]
    fn pages_are_served_unless_turned_off_by_flag_environment_or_file(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let c = load(&["x"])?;
        assert!(
            !c.no_demo && !c.no_admin,
            "both pages are served by default"
        );
        let c = load(&["x", "--no-demo"])?;
        assert!(c.no_demo && !c.no_admin);
        let c = load(&["x", "--no-admin"])?;
        assert!(!c.no_demo && c.no_admin);
        // Read from these variables (not set here: tests share one environment).
        let command = ServeConfig::augment_args(clap::Command::new("x"));
        for (flag, variable) in [
            ("no-demo", "PUSHWIRE_NO_DEMO"),
            ("no-admin", "PUSHWIRE_NO_ADMIN"),
        ] {
            let arg = command.get_arguments().find(|a| a.get_long() == Some(flag));
            let env = arg
                .and_then(|a| a.get_env())
                .map(|e| e.to_string_lossy().into_owned());
            assert_eq!(env.as_deref(), Some(variable), "--{flag}");
        }
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("pushwire.toml");
        std::fs::write(&file, "no-demo = true\nno-admin = true\n")?;
        let c = load(&["x", "--config", &file.to_string_lossy()])?;
        assert!(c.no_demo && c.no_admin);
        // A flag given beats the file.
        std::fs::write(&file, "no-demo = false\n")?;
        let c = load(&["x", "--config", &file.to_string_lossy(), "--no-demo"])?;
        assert!(c.no_demo && !c.no_admin);
        std::fs::write(&file, "no-admin = \"yes\"\n")?;
        assert!(
            load(&["x", "--config", &file.to_string_lossy()]).is_err(),
            "the file takes booleans, not strings"
        );
        Ok(())
    }

    #[test]
    fn h2_options_parse() {
        assert!(load(&["x", "--h2c"]).is_ok_and(|c| c.h2c));
        assert!(load(&["x", "--streams-nice", "20"]).is_err());
        assert!(load(&["x", "--streams-nice", "10"]).is_ok_and(|c| c.streams_nice == 10));
        assert!(load(&["x", "--h2-max-streams", "0"]).is_err());
        assert!(load(&["x", "--h2-max-streams", "64"]).is_ok_and(|c| c.h2_max_streams == 64));
    }

    #[test]
    fn fsync_modes_parse_and_print_back() {
        for (text, mode) in [
            ("always", Fsync::Always),
            ("never", Fsync::Never),
            ("interval:250", Fsync::Interval(Duration::from_millis(250))),
        ] {
            assert_eq!(text.parse::<Fsync>(), Ok(mode));
            assert_eq!(mode.to_string(), text);
        }
        assert_eq!(
            "interval:1000ms".parse::<Fsync>(),
            Ok(Fsync::Interval(Duration::from_secs(1)))
        );
        for bad in [
            "",
            "sometimes",
            "interval:",
            "interval:0",
            "interval:-5",
            "interval:1s",
        ] {
            assert!(bad.parse::<Fsync>().is_err(), "{bad}");
        }
        assert!(load(&["x", "--fsync", "interval:0"]).is_err());
        assert!(load(&["x", "--fsync", "sometimes"]).is_err());
    }

    #[test]
    fn storage_options_round_trip_through_toml() -> Result<(), Box<dyn std::error::Error>> {
        let c = load(&[
            "x",
            "--storage",
            "embedded",
            "--data-dir",
            "/var/lib/pushwire",
            "--fsync",
            "interval:50",
        ])?;
        let text = toml::to_string(&c)?;
        assert!(text.contains("fsync = \"interval:50\""), "{text}");
        assert!(text.contains("data-dir = \"/var/lib/pushwire\""), "{text}");
        assert!(text.contains("storage = \"embedded\""), "{text}");
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("round.toml");
        std::fs::write(&path, &text)?;
        let p = path.to_string_lossy().to_string();
        let again = load(&["x", "--config", &p])?;
        assert_eq!(again.fsync, Fsync::Interval(Duration::from_millis(50)));
        assert_eq!(again.data_dir, PathBuf::from("/var/lib/pushwire"));
        assert_eq!(again.storage, Storage::Embedded);
        std::fs::write(&path, "storage = \"memory\"\nfsync = \"never\"\n")?;
        let file = load(&["x", "--config", &p])?;
        assert_eq!((file.storage, file.fsync), (Storage::Memory, Fsync::Never));
        Ok(())
    }

    #[test]
    fn file_fills_what_flags_leave_out() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("pushwire.toml");
        std::fs::write(
            &path,
            "heartbeat = \"2s\"\nlisten = \"127.0.0.1:9000\"\nstream-timeout = \"1m\"\n",
        )?;
        let p = path.to_string_lossy().to_string();
        let c = load(&["x", "--config", &p, "--listen", "127.0.0.1:7000"])?;
        assert_eq!(c.heartbeat, Duration::from_secs(2));
        assert_eq!(c.listen.to_string(), "127.0.0.1:7000");
        assert_eq!(c.stream_timeout, Some(Duration::from_secs(60)));
        Ok(())
    }

    #[test]
    fn unknown_file_keys_are_errors() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "hartbeat = \"2s\"\n")?;
        let p = path.to_string_lossy().to_string();
        let err = load(&["x", "--config", &p]).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("hartbeat")));
        Ok(())
    }

    #[test]
    fn redis_storage_needs_a_valid_url() {
        let error = |args: &[&str]| load(args).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error(&["x", "--storage", "redis"]).contains("redis-url"));
        assert!(
            error(&["x", "--storage", "redis", "--redis-url", "http://x"]).contains("redis-url")
        );
        assert!(error(&["x", "--redis-prefix", ""]).contains("redis-prefix"));
        let c = load(&[
            "x",
            "--storage",
            "redis",
            "--redis-url",
            "redis://127.0.0.1:6379/0",
        ]);
        assert!(c.is_ok_and(|c| c.storage == Storage::Redis && c.redis_prefix == "pushwire"));
    }

    #[test]
    fn sentinels_need_a_master_name_and_well_formed_addresses() {
        let error = |args: &[&str]| load(args).err().map(|e| e.to_string()).unwrap_or_default();
        let redis = ["x", "--storage", "redis"];
        let with = |extra: &[&'static str]| [&redis[..], extra].concat();
        assert!(error(&with(&["--redis-sentinels", "127.0.0.1:26379"]))
            .contains("redis-sentinel-master"));
        assert!(error(&with(&["--redis-sentinel-master", "main"])).contains("redis-sentinels"));
        for bad in ["127.0.0.1", "127.0.0.1:0", "a:1,:2", "host:port"] {
            let message = error(&with(&[
                "--redis-sentinel-master",
                "main",
                "--redis-sentinels",
                bad,
            ]));
            assert!(message.starts_with("redis-sentinels: "), "{bad}: {message}");
        }
        // With sentinels the URL is optional; given, it must still parse.
        let c = load(&with(&[
            "--redis-sentinels",
            "127.0.0.1:26379, 127.0.0.1:26380",
            "--redis-sentinel-master",
            "main",
        ]));
        assert!(c.is_ok_and(|c| c.redis_sentinels.len() == 2 && c.redis_url.is_none()));
        let bad_url = with(&[
            "--redis-sentinels",
            "127.0.0.1:26379",
            "--redis-sentinel-master",
            "main",
            "--redis-url",
            "http://x",
        ]);
        assert!(error(&bad_url).contains("redis-url"));
    }

    #[test]
    fn replicas_ack_is_bounded() {
        let error = |args: &[&str]| load(args).err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(ServeConfig::defaults().redis_replicas_ack, 0);
        assert!(load(&["x", "--redis-replicas-ack", "16"]).is_ok());
        assert!(error(&["x", "--redis-replicas-ack", "17"]).contains("redis-replicas-ack"));
        assert!(load(&["x", "--redis-replicas-ack", "-1"]).is_err());
    }

    #[test]
    fn sentinel_options_come_from_the_file_too() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("pushwire.toml");
        std::fs::write(
            &path,
            "storage = \"redis\"\nredis-sentinels = \"10.0.0.5:26379, 10.0.0.6:26379\"\n\
             redis-sentinel-master = \"main\"\nredis-replicas-ack = 1\n",
        )?;
        let c = load(&["x", "--config", &path.to_string_lossy()])?;
        assert_eq!(c.redis_sentinels, ["10.0.0.5:26379", "10.0.0.6:26379"]);
        assert_eq!(c.redis_sentinel_master.as_deref(), Some("main"));
        assert_eq!(c.redis_replicas_ack, 1);
        Ok(())
    }

    #[test]
    fn redis_options_come_from_the_file_too() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("cluster.toml");
        std::fs::write(
            &path,
            "storage = \"redis\"\nredis-url = \"redis://10.0.0.5:6379/2\"\n\
             redis-prefix = \"app\"\nredis-presence-ttl = \"30s\"\n",
        )?;
        let p = path.to_string_lossy().to_string();
        let c = load(&["x", "--config", &p])?;
        assert_eq!(c.storage, Storage::Redis);
        assert_eq!(c.redis_url.as_deref(), Some("redis://10.0.0.5:6379/2"));
        assert_eq!(c.redis_prefix, "app");
        assert_eq!(c.redis_presence_ttl, Duration::from_secs(30));
        let text = toml::to_string(&c)?;
        assert!(text.contains("redis-prefix = \"app\""), "{text}");
        Ok(())
    }

    #[test]
    fn every_duration_and_size_has_an_upper_bound() {
        let error = |args: &[&str]| load(args).err().map(|e| e.to_string()).unwrap_or_default();
        let huge = "18446744073709551615s";
        for (name, _, _) in DURATION_BOUNDS {
            let message = error(&["x", &format!("--{name}"), huge]);
            assert!(message.starts_with(name), "{name}: {message}");
        }
        for (name, max, _) in SIZE_BOUNDS {
            let flag = format!("--{name}");
            let over = (max + 1).to_string();
            // The inflight budget must stay at least the body limit.
            let message = error(&["x", &flag, &over, "--max-inflight-body", &over]);
            let message = if name == "max-inflight-body" {
                error(&["x", &flag, &over])
            } else {
                message
            };
            assert!(message.starts_with(name), "{name}: {message}");
        }
        assert!(error(&["x", "--fsync", "interval:3600001"]).starts_with("fsync"));
        // At the bounds, everything starts.
        let at = load(&[
            "x",
            "--heartbeat",
            "24h",
            "--stream-timeout",
            "365d",
            "--header-read-timeout",
            "1h",
            "--history-max-age",
            "365d",
            "--shutdown-grace",
            "1h",
            "--auth-timeout",
            "1m",
            "--auth-cache-ttl",
            "1h",
            "--max-body",
            "1073741824",
            "--max-inflight-body",
            "17179869184",
            "--max-header-bytes",
            "1048576",
            "--queue-capacity",
            "1048576",
            "--fsync",
            "interval:3600000",
        ]);
        assert!(at.is_ok(), "{:?}", at.err().map(|e| e.to_string()));
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(load(&["x", "--heartbeat", "0s"]).is_err());
        assert!(load(&["x", "--heartbeat", "soon"]).is_err());
        assert!(load(&["x", "--queue-capacity", "0"]).is_err());
    }
}
