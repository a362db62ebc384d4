//! Prometheus metrics. Counters are plain atomics updated on the data path;
//! topics and user ids are never labels (their number is unbounded).
//!
//! The hub's own metrics are named `pushwire_*`. The edge may add
//! collectors read at each scrape ([`Metrics::register_collector`]), such
//! as the `process_*` figures, under their conventional unprefixed names;
//! gauges that need the history (`pushwire_history_*`) are set by the edge
//! just before it renders.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::limits::Limit;

/// The one label of `pushwire_limit_rejections_total`: which limit, from a
/// fixed set.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabel {
    limit: &'static str,
}

/// How a fetch of a JWK set (the token keys a hub reads from a URL) ended:
/// the one label of `pushwire_jwks_fetches_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwksFetch {
    /// A JWK set was read and replaced the previous one.
    Ok,
    /// No answer: connection refused, DNS, TLS, timeout, unreadable file.
    Unreachable,
    /// An answer other than 2xx.
    HttpError,
    /// An answer that is not a JWK set, or too large.
    Invalid,
}

impl JwksFetch {
    pub const ALL: [JwksFetch; 4] = [
        JwksFetch::Ok,
        JwksFetch::Unreachable,
        JwksFetch::HttpError,
        JwksFetch::Invalid,
    ];

    fn label(self) -> &'static str {
        match self {
            JwksFetch::Ok => "ok",
            JwksFetch::Unreachable => "unreachable",
            JwksFetch::HttpError => "http_error",
            JwksFetch::Invalid => "invalid",
        }
    }
}

/// How one request to the application's backend (`--auth-url`) ended: the
/// one label of `pushwire_auth_requests_total`. Answers served from the
/// cache or shared with an identical request in flight are not requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthRequest {
    /// `200` with an answer that reads: the stream may open.
    Allowed,
    /// `401`: the backend does not know the session.
    Unauthorized,
    /// `403`: the backend refuses it.
    Forbidden,
    /// Any other status.
    HttpError,
    /// A `200` whose body is not an answer (not JSON, bad grants).
    Invalid,
    /// No answer within `--auth-timeout`.
    Timeout,
    /// No answer at all: connection refused, DNS, TLS.
    Unreachable,
}

impl AuthRequest {
    pub const ALL: [AuthRequest; 7] = [
        AuthRequest::Allowed,
        AuthRequest::Unauthorized,
        AuthRequest::Forbidden,
        AuthRequest::HttpError,
        AuthRequest::Invalid,
        AuthRequest::Timeout,
        AuthRequest::Unreachable,
    ];

    pub fn label(self) -> &'static str {
        match self {
            AuthRequest::Allowed => "allowed",
            AuthRequest::Unauthorized => "unauthorized",
            AuthRequest::Forbidden => "forbidden",
            AuthRequest::HttpError => "http_error",
            AuthRequest::Invalid => "invalid",
            AuthRequest::Timeout => "timeout",
            AuthRequest::Unreachable => "unreachable",
        }
    }
}

/// How one attempt to deliver a webhook message ended: the one label of
/// `pushwire_webhook_attempts_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookAttempt {
    /// A 2xx answer: the message is delivered.
    Delivered,
    /// Any other status.
    HttpError,
    /// No answer within the request timeout.
    Timeout,
    /// No answer at all: connection refused, DNS, TLS.
    Unreachable,
}

impl WebhookAttempt {
    pub const ALL: [WebhookAttempt; 4] = [
        WebhookAttempt::Delivered,
        WebhookAttempt::HttpError,
        WebhookAttempt::Timeout,
        WebhookAttempt::Unreachable,
    ];

    pub fn label(self) -> &'static str {
        match self {
            WebhookAttempt::Delivered => "delivered",
            WebhookAttempt::HttpError => "http_error",
            WebhookAttempt::Timeout => "timeout",
            WebhookAttempt::Unreachable => "unreachable",
        }
    }
}

/// The webhook message types, the one label of
/// `pushwire_webhook_messages_total`.
pub const WEBHOOK_TYPES: [&str; 5] = [
    "user.online",
    "user.offline",
    "stream.opened",
    "stream.closed",
    "event.undelivered",
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabel {
    r#type: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    stage: &'static str,
}

/// Where a publish's time goes on a single node, stage by stage: the
/// histograms of `pushwire_publish_stage_seconds` (by `stage`) and
/// `pushwire_history_group_requests`. The embedded engine times its writer's
/// stages; the fanout stage times its queue, whatever the engine. A clone
/// observes into the same histograms; [`Default`] gives histograms no
/// registry reads (for an engine opened outside a hub).
#[derive(Debug, Clone)]
pub struct PublishStages {
    /// `queue`: from a publish handed to the history's writer to the start
    /// of the group it is written in.
    pub queue: Histogram,
    /// `write`: writing one group of publishes, from its first insert to
    /// its commit, the sync included.
    pub write: Histogram,
    /// `sync`: making one group durable: its journal frame written and
    /// forced with `fdatasync` (with `--fsync always`).
    pub sync: Histogram,
    /// `answer`: from a group stored to the publisher's task holding the
    /// answer (the wake-up of that task).
    pub answer: Histogram,
    /// `fanout`: from events stored to the fanout stage handing them to
    /// the streams (observed once per handover, for its oldest event).
    pub fanout: Histogram,
    /// Publish requests written together in one group.
    pub group_requests: Histogram,
}

/// 10 µs .. ~5.5 min: a sync and a wake-up take tens of microseconds, a
/// fanout far behind takes seconds.
fn stage_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_01, 2.0, 25))
}

/// 1 .. 4096 (the writer's largest group).
fn group_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 13))
}

impl Default for PublishStages {
    fn default() -> Self {
        PublishStages {
            queue: stage_histogram(),
            write: stage_histogram(),
            sync: stage_histogram(),
            answer: stage_histogram(),
            fanout: stage_histogram(),
            group_requests: group_histogram(),
        }
    }
}

pub struct Metrics {
    registry: Registry,
    pub streams_open: Gauge,
    pub users_online: Gauge,
    pub streams_opened: Counter,
    pub streams_refused: Counter,
    pub connections_refused: Counter,
    pub events_published: Counter,
    pub publishes_rejected: Counter,
    pub deliveries: Counter,
    pub slow_consumer_closes: Counter,
    pub resumes: Counter,
    pub resets: Counter,
    pub events_trimmed: Counter,
    pub publish_seconds: Histogram,
    /// The stages of a publish on a single node.
    pub stages: PublishStages,
    /// Events the history retains (for engines that only know their
    /// bounds, the span of sequence numbers between them).
    pub history_events: Gauge,
    /// The oldest and newest retained sequence numbers (0 when empty).
    pub history_oldest_seq: Gauge,
    pub history_newest_seq: Gauge,
    /// Events of a shared (Redis) history this node has not delivered yet.
    pub tail_lag_events: Gauge,
    /// Times this node's Redis tail connected again after losing Redis.
    pub redis_reconnects: Counter,
    limit_rejections: Family<LimitLabel, Counter>,
    jwks_fetches: Family<OutcomeLabel, Counter>,
    auth_requests: Family<OutcomeLabel, Counter>,
    /// Streams whose backend answer came from the cache (`--auth-cache-ttl`).
    pub auth_cache_hits: Counter,
    webhook_messages: Family<TypeLabel, Counter>,
    webhook_attempts: Family<OutcomeLabel, Counter>,
    /// Webhook messages given up after `--webhook-max-attempts`.
    pub webhook_failed: Counter,
    /// Webhook messages written and not yet delivered or given up, as the
    /// sending node knows them.
    pub webhook_backlog: Gauge,
    /// From a webhook message's creation to the 2xx that delivered it.
    pub webhook_delivery_seconds: Histogram,
    /// Webhook messages the outbox could not store (the log says why).
    pub webhook_outbox_errors: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut root = Registry::default();
        let registry = root.sub_registry_with_prefix("pushwire");
        let streams_open = Gauge::default();
        let users_online = Gauge::default();
        let streams_opened = Counter::default();
        let streams_refused = Counter::default();
        let connections_refused = Counter::default();
        let events_published = Counter::default();
        let publishes_rejected = Counter::default();
        let deliveries = Counter::default();
        let slow_consumer_closes = Counter::default();
        let resumes = Counter::default();
        let resets = Counter::default();
        let events_trimmed = Counter::default();
        // 50 µs .. ~1.6 s
        let publish_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        registry.register("streams_open", "Open event streams", streams_open.clone());
        registry.register(
            "users_online",
            "Distinct users with at least one open stream",
            users_online.clone(),
        );
        registry.register("streams_opened", "Streams accepted", streams_opened.clone());
        registry.register(
            "streams_refused",
            "Streams refused by the max-streams limit",
            streams_refused.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections refused by the max-connections limit or the fd limit",
            connections_refused.clone(),
        );
        registry.register(
            "events_published",
            "Events stored and fanned out",
            events_published.clone(),
        );
        registry.register(
            "publishes_rejected",
            "Publish and management requests refused (bad input, auth, conflicts, storage)",
            publishes_rejected.clone(),
        );
        registry.register(
            "deliveries",
            "Event frames queued to streams",
            deliveries.clone(),
        );
        registry.register(
            "slow_consumer_closes",
            "Streams ended because their queue overflowed",
            slow_consumer_closes.clone(),
        );
        registry.register(
            "resumes",
            "Streams that resumed from a Last-Event-ID",
            resumes.clone(),
        );
        registry.register(
            "resets",
            "Streams whose Last-Event-ID was unknown or expired",
            resets.clone(),
        );
        registry.register(
            "events_trimmed",
            "Events dropped by retention",
            events_trimmed.clone(),
        );
        let build_info = Family::<VersionLabel, Gauge>::default();
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register(
            "build_info",
            "Always 1; the label is the running version",
            build_info,
        );
        let history_events = Gauge::default();
        let history_oldest_seq = Gauge::default();
        let history_newest_seq = Gauge::default();
        let tail_lag_events = Gauge::default();
        registry.register(
            "history_events",
            "Events the history retains",
            history_events.clone(),
        );
        registry.register(
            "history_oldest_seq",
            "Sequence number of the oldest retained event (0 when none)",
            history_oldest_seq.clone(),
        );
        registry.register(
            "history_newest_seq",
            "Sequence number of the newest retained event (0 when none)",
            history_newest_seq.clone(),
        );
        registry.register(
            "redis_tail_lag_events",
            "Events of the shared Redis history this node's tail has not delivered yet (0 without Redis)",
            tail_lag_events.clone(),
        );
        let redis_reconnects = Counter::default();
        registry.register(
            "redis_reconnects",
            "Times this node's Redis tail connected again after losing Redis (0 without Redis)",
            redis_reconnects.clone(),
        );
        registry.register(
            "publish_duration_seconds",
            "Time from a publish request's validation to its acknowledgement",
            publish_seconds.clone(),
        );
        let stage_seconds =
            Family::<StageLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                stage_histogram,
            );
        let stage = |stage| stage_seconds.get_or_create(&StageLabel { stage }).clone();
        let stages = PublishStages {
            queue: stage("queue"),
            write: stage("write"),
            sync: stage("sync"),
            answer: stage("answer"),
            fanout: stage("fanout"),
            group_requests: group_histogram(),
        };
        registry.register(
            "publish_stage_seconds",
            "Time of each stage of a publish on a single node: queue (waiting for the history's \
             writer), write (one group of publishes written, sync included), sync (one group forced to disk), \
             answer (stored to the publisher holding the answer), fanout (stored to handed to the streams)",
            stage_seconds,
        );
        registry.register(
            "history_group_requests",
            "Publish requests the history's writer wrote together in one group",
            stages.group_requests.clone(),
        );
        let limit_rejections = Family::<LimitLabel, Counter>::default();
        // Every limit appears from the start, at zero, so a dashboard sees
        // the whole set before the first refusal.
        for limit in Limit::ALL {
            limit_rejections
                .get_or_create(&LimitLabel {
                    limit: limit.label(),
                })
                .inc_by(0);
        }
        registry.register(
            "limit_rejections",
            "Requests and connections refused by a per-client, per-user, per-publisher or per-request limit",
            limit_rejections.clone(),
        );
        let jwks_fetches = Family::<OutcomeLabel, Counter>::default();
        for outcome in JwksFetch::ALL {
            jwks_fetches
                .get_or_create(&OutcomeLabel {
                    outcome: outcome.label(),
                })
                .inc_by(0);
        }
        registry.register(
            "jwks_fetches",
            "Fetches of the JWK sets that verify tokens, by outcome",
            jwks_fetches.clone(),
        );
        let auth_requests = Family::<OutcomeLabel, Counter>::default();
        for outcome in AuthRequest::ALL {
            auth_requests
                .get_or_create(&OutcomeLabel {
                    outcome: outcome.label(),
                })
                .inc_by(0);
        }
        registry.register(
            "auth_requests",
            "Requests to the application's backend that authorizes subscribers (--auth-url), by outcome",
            auth_requests.clone(),
        );
        let auth_cache_hits = Counter::default();
        registry.register(
            "auth_cache_hits",
            "Streams authorized by a cached answer of the backend (--auth-cache-ttl)",
            auth_cache_hits.clone(),
        );
        let webhook_messages = Family::<TypeLabel, Counter>::default();
        for kind in WEBHOOK_TYPES {
            webhook_messages
                .get_or_create(&TypeLabel { r#type: kind })
                .inc_by(0);
        }
        registry.register(
            "webhook_messages",
            "Webhook messages written to the outbox, by type",
            webhook_messages.clone(),
        );
        let webhook_attempts = Family::<OutcomeLabel, Counter>::default();
        for outcome in WebhookAttempt::ALL {
            webhook_attempts
                .get_or_create(&OutcomeLabel {
                    outcome: outcome.label(),
                })
                .inc_by(0);
        }
        registry.register(
            "webhook_attempts",
            "Attempts to deliver a webhook message, by outcome",
            webhook_attempts.clone(),
        );
        let webhook_failed = Counter::default();
        registry.register(
            "webhook_failed",
            "Webhook messages given up after --webhook-max-attempts (listed in /api/v1/webhooks/failed)",
            webhook_failed.clone(),
        );
        let webhook_backlog = Gauge::default();
        registry.register(
            "webhook_backlog",
            "Webhook messages waiting to be delivered, as the sending node knows them",
            webhook_backlog.clone(),
        );
        // 1 ms .. ~4.6 h
        let webhook_delivery_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 24));
        registry.register(
            "webhook_delivery_seconds",
            "Time from a webhook message's creation to the answer that delivered it",
            webhook_delivery_seconds.clone(),
        );
        let webhook_outbox_errors = Counter::default();
        registry.register(
            "webhook_outbox_errors",
            "Webhook messages the outbox could not store",
            webhook_outbox_errors.clone(),
        );
        Metrics {
            registry: root,
            streams_open,
            users_online,
            streams_opened,
            streams_refused,
            connections_refused,
            events_published,
            publishes_rejected,
            deliveries,
            slow_consumer_closes,
            resumes,
            resets,
            events_trimmed,
            publish_seconds,
            stages,
            history_events,
            history_oldest_seq,
            history_newest_seq,
            tail_lag_events,
            redis_reconnects,
            limit_rejections,
            jwks_fetches,
            auth_requests,
            auth_cache_hits,
            webhook_messages,
            webhook_attempts,
            webhook_failed,
            webhook_backlog,
            webhook_delivery_seconds,
            webhook_outbox_errors,
        }
    }

    /// Adds metrics read at each scrape, under the names the collector
    /// gives them (no `pushwire_` prefix).
    pub fn register_collector(&mut self, collector: Box<dyn Collector>) {
        self.registry.register_collector(collector);
    }

    /// Counts one fetch of a JWK set.
    pub fn jwks_fetched(&self, outcome: JwksFetch) {
        self.jwks_fetches
            .get_or_create(&OutcomeLabel {
                outcome: outcome.label(),
            })
            .inc();
    }

    /// Counts one request to the backend of `--auth-url`.
    pub fn auth_requested(&self, outcome: AuthRequest) {
        self.auth_requests
            .get_or_create(&OutcomeLabel {
                outcome: outcome.label(),
            })
            .inc();
    }

    /// Counts webhook messages of one type written to the outbox.
    pub fn webhook_written(&self, kind: &'static str, count: u64) {
        self.webhook_messages
            .get_or_create(&TypeLabel { r#type: kind })
            .inc_by(count);
    }

    /// Counts one attempt to deliver a webhook message.
    pub fn webhook_attempted(&self, outcome: WebhookAttempt) {
        self.webhook_attempts
            .get_or_create(&OutcomeLabel {
                outcome: outcome.label(),
            })
            .inc();
    }

    /// Counts one refusal by `limit`.
    pub fn limit_rejected(&self, limit: Limit) {
        self.limit_rejections
            .get_or_create(&LimitLabel {
                limit: limit.label(),
            })
            .inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
