//! The application, built once from the parsed configuration.
//!
//! [`App::build`] is the one place where settings become running parts: the
//! history engine and the hub over it (with the cluster presence of a node
//! on Redis), the TLS certificate, the token verifier, the `--auth-url`
//! backend, the policies and
//! limits the handlers consult, and the router. Everything that can refuse
//! the configuration (a history that cannot be opened, a certificate or a
//! key that does not load) refuses here, before a port is bound, so a hub
//! that cannot serve never takes its address.
//!
//! The accept loop (`server.rs`) then only serves connections with what was
//! built; handlers see the settings they need through [`AppState`] and never
//! the raw configuration.

use std::num::NonZeroU32;
use std::sync::Arc;
use tokio::runtime::Handle;

use crate::http::metadata::ProtectedResource;

use axum::Router;

use crate::auth::backend::Backend;
use crate::auth::jwt::{JwtConfigError, Role, Verifier};
use crate::auth::{PublisherPolicy, SubscriberPolicy};
use crate::config::{ServeConfig, Storage};
use crate::engines::embedded::EmbeddedLog;
use crate::engines::memory::MemoryLog;
use crate::engines::redis::presence::Cluster;
use crate::engines::redis::{sentinel, RedisLog, RedisNode};
use crate::http::{router, AppState};
use crate::limits::{PublishRateLimiter, StreamLimits};
use crate::transport::tls::{Tls, TlsError};
use crate::webhooks::store::{EmbeddedStore, MemoryStore, RedisStore, Store};
use crate::webhooks::Webhooks;
use pushwire_core::hub::{Hub, HubConfig};
use pushwire_core::log::{EventLog, Fanout, Retention, StoreError};
use pushwire_core::metrics::Metrics;
use pushwire_core::stage::Stage;

/// Why the configuration could not be turned into a running application.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The history could not be opened; its message names the file.
    #[error(transparent)]
    Storage(#[from] StoreError),
    /// The certificate or key could not be loaded; the message names the file.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A token key does not suit the configured algorithm.
    #[error(transparent)]
    Jwt(#[from] JwtConfigError),
    /// The `--auth-url` backend's client could not be built.
    #[error(transparent)]
    AuthBackend(#[from] crate::auth::backend::SetupError),
    /// The webhooks' HTTP client could not be built.
    #[error(transparent)]
    Outbound(#[from] crate::outbound::OutboundError),
    /// `--hub-url` is not an absolute URL (checked with the configuration).
    #[error("hub-url must be an absolute URL: {0}")]
    HubUrl(#[from] url::ParseError),
}

/// What the accept loop serves.
pub struct App {
    pub hub: Arc<Hub>,
    /// This node's share of the cluster figures, when the history is on Redis.
    pub cluster: Option<Arc<Cluster>>,
    /// The certificate and key, when the hub serves HTTPS.
    pub tls: Option<Arc<Tls>>,
    /// Every route, with the state its handlers share.
    pub router: Router,
    /// The token verifier the policies share; its JWK sets are fetched by
    /// [`Verifier::start_key_sets`] once the runtime serves.
    pub verifier: Arc<Verifier>,
    /// The webhooks, when `--webhook-url` is set; their sender runs with
    /// the server.
    pub webhooks: Option<Arc<Webhooks>>,
}

impl App {
    /// Opens the history and builds every part from `config`. The fanout
    /// stage runs on `streams`, the runtime of the streams it feeds.
    pub fn build(config: &ServeConfig, streams: &Handle) -> Result<App, AppError> {
        // The history first: it is what most often refuses to start.
        let (hub, cluster, webhooks) = build_hub(config, streams)?;
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(Arc::new(Tls::load(cert, key)?)),
            _ => None,
        };
        let verifier = Arc::new(Verifier::new(&config.jwt_settings())?);
        let backend = match config.backend_settings() {
            Some(settings) => Some(Arc::new(Backend::new(&settings, hub.metrics().clone())?)),
            None => None,
        };
        let state = Arc::new(app_state(
            hub.clone(),
            verifier.clone(),
            backend,
            webhooks.clone(),
            config,
        ));
        Ok(App {
            hub,
            cluster,
            tls,
            router: router(state, config),
            verifier,
            webhooks,
        })
    }
}

/// Builds the core from the configuration, with the cluster presence of a
/// node on Redis. Fails when the history cannot be opened.
type Built = (Arc<Hub>, Option<Arc<Cluster>>, Option<Arc<Webhooks>>);

fn build_hub(config: &ServeConfig, streams: &Handle) -> Result<Built, AppError> {
    let hub_config = HubConfig {
        queue_capacity: config.queue_capacity,
        retry_ms: config.retry.as_millis() as u64,
        max_streams: config.max_streams,
        stream_lifetime: config.stream_timeout,
        presence: config.subscriptions,
        limits: config.field_limits(),
        hub_url: url::Url::parse(&config.hub_url)?,
    };
    let retention = Retention {
        max_events: config.history_max_events,
        max_age: config.history_max_age,
    };
    let redis = match config.storage {
        Storage::Redis => Some(redis_node(config)?.with_replicas_ack(config.redis_replicas_ack)?),
        _ => None,
    };
    let mut metrics = Metrics::new();
    metrics.register_collector(Box::new(crate::process::ProcessCollector));
    let reconnects = metrics.redis_reconnects.clone();
    let stages = metrics.stages.clone();
    let hub = Hub::new(hub_config, Arc::new(metrics), |fanout| {
        // The single-node engines deliver through the fanout stage, so a
        // publish is answered once stored; a cluster node's tail is a stage
        // of its own.
        let staged = |fanout| -> Arc<dyn Fanout> {
            let (stage, runner) = Stage::timed(fanout, stages.fanout.clone());
            streams.spawn(runner);
            stage
        };
        Ok::<Arc<dyn EventLog>, StoreError>(match (config.storage, &redis) {
            (Storage::Redis, Some(redis)) => Arc::new(RedisLog::open_counted(
                redis.clone(),
                retention,
                fanout,
                reconnects,
            )),
            (Storage::Memory, _) => Arc::new(MemoryLog::new(retention, staged(fanout))),
            _ => Arc::new(EmbeddedLog::open_timed(
                &config.data_dir,
                retention,
                config.fsync,
                staged(fanout),
                stages.clone(),
            )?),
        })
    })?;
    let cluster = redis.as_ref().map(|redis| {
        tracing::info!(node = %redis.node, prefix = %config.redis_prefix, "cluster node on Redis");
        Arc::new(Cluster::new(redis.clone(), config.redis_presence_ttl))
    });
    let webhooks = match config.webhook_settings() {
        Some(settings) => {
            let store: Arc<dyn Store> = match (config.storage, &redis) {
                (Storage::Redis, Some(redis)) => Arc::new(RedisStore::new(redis.clone())),
                (Storage::Memory, _) => Arc::new(MemoryStore::default()),
                _ => Arc::new(EmbeddedStore::open(&config.data_dir)?),
            };
            Some(Arc::new(Webhooks::new(
                settings,
                store,
                hub.metrics().clone(),
                cluster.clone(),
            )?))
        }
        None => None,
    };
    let mut hub = hub;
    if let Some(cluster) = &cluster {
        hub = hub.with_peers(cluster.clone());
    }
    if let Some(webhooks) = &webhooks {
        hub = hub.with_observer(webhooks.clone());
    }
    Ok((Arc::new(hub), cluster, webhooks))
}

/// The node's link to Redis: the primary of `--redis-url`, or the one the
/// sentinels name.
fn redis_node(config: &ServeConfig) -> Result<RedisNode, StoreError> {
    let prefix = &config.redis_prefix;
    match (&config.redis_sentinel_master, &config.redis_url) {
        (Some(master), url) if !config.redis_sentinels.is_empty() => {
            let addresses = config
                .redis_sentinels
                .iter()
                .map(|text| sentinel::parse_address(text))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| StoreError::Unavailable(format!("redis-sentinels: {e}")))?;
            let sentinels = sentinel::Sentinels {
                addresses,
                master: master.clone(),
            };
            RedisNode::with_sentinels(url.as_deref(), sentinels, prefix)
        }
        (_, Some(url)) => RedisNode::new(url, prefix),
        (_, None) => Err(StoreError::Unavailable(
            "storage redis needs redis-url or redis-sentinels".to_owned(),
        )),
    }
}

/// What the handlers share: the hub, who may publish and read, and the
/// limits they enforce.
fn app_state(
    hub: Arc<Hub>,
    verifier: Arc<Verifier>,
    backend: Option<Arc<Backend>>,
    webhooks: Option<Arc<Webhooks>>,
    config: &ServeConfig,
) -> AppState {
    let publisher_tokens = verifier.has_keys(Role::Publisher).then(|| verifier.clone());
    let subscriber_tokens = verifier
        .has_keys(Role::Subscriber)
        .then(|| verifier.clone());
    AppState {
        hub,
        policy: PublisherPolicy::new(config.publisher_key.clone(), publisher_tokens),
        subscribers: SubscriberPolicy::new(subscriber_tokens, config.require_subscriber_auth),
        backend,
        webhooks,
        max_body: config.max_body,
        body_budget: crate::limits::BodyBudget::new(config.max_inflight_body),
        hub_url: config.hub_url.clone(),
        protected_resource: ProtectedResource::of(config).map(Arc::new),
        presence: config.subscriptions,
        max_header_bytes: config.max_header_bytes,
        streams: StreamLimits::new(
            config.max_streams_per_ip,
            config.max_streams_per_user,
            config.retry,
        ),
        publish_rate: PublishRateLimiter::new(
            config.publish_rate,
            config.publish_burst.and_then(NonZeroU32::new),
        ),
        field_limits: config.field_limits(),
        local_callers: crate::http::LocalCallers::new(config),
        credentialed_origins: config
            .cors_origins
            .iter()
            .filter_map(|o| url::Url::parse(o).ok())
            .map(|o| o.origin().ascii_serialization())
            .collect(),
    }
}
