//! The OpenAPI shapes of the core's types that the JSON API reads and
//! writes. The core has no OpenAPI dependency (it knows nothing of HTTP),
//! so each type the document needs is described here once, field for field
//! as it serializes; `tests/openapi.rs` and the contract run check real
//! answers against these shapes, so a field added in the core and not here
//! fails a test.

#![allow(dead_code)] // Only the document reads these types.

use utoipa::ToSchema;

/// The addressees of one event.
#[derive(ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[schema(as = Target)]
pub enum TargetSchema {
    /// Every stream of each of these users.
    Users(Vec<String>),
    /// Every stream of every user whose id starts with this prefix (a group).
    UserPrefix(String),
    /// Every stream subscribed to at least one of these topics.
    Topics(Vec<String>),
    /// Every open stream.
    All,
}

/// A stored event. `id` is what subscribers see and send back as
/// `Last-Event-ID`.
#[derive(ToSchema)]
#[schema(as = Event)]
pub struct EventSchema {
    id: String,
    to: TargetSchema,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<String>,
    data: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    private: bool,
    /// Milliseconds since the Unix epoch when the hub accepted the event.
    time: u64,
}

/// Online users and how many streams each has open.
#[derive(ToSchema)]
#[schema(as = UserStreams)]
pub struct UserStreamsSchema {
    id: String,
    streams: usize,
}

/// A topic with open streams and how many.
#[derive(ToSchema)]
#[schema(as = TopicStreams)]
pub struct TopicStreamsSchema {
    topic: String,
    streams: usize,
}

/// The hub's counters, as `/api/v1/stats` answers them.
#[derive(ToSchema)]
#[schema(as = Stats)]
pub struct StatsSchema {
    streams: usize,
    users: usize,
    topics: usize,
    events_published: u64,
    deliveries: u64,
    slow_consumer_closes: u64,
    last_event_id: Option<String>,
    uptime_seconds: u64,
    /// Live nodes, when the hub is one node of a cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    nodes: Option<usize>,
}

/// A Mercure update, as the form of `POST /.well-known/mercure` carries it.
#[derive(ToSchema)]
#[schema(as = MercureUpdate)]
pub struct MercureUpdateSchema {
    /// The update's topic; repeated, the others are alternates (classic
    /// protocol; a current-draft token allows exactly one).
    topic: Vec<String>,
    /// The content.
    data: Option<String>,
    /// `on` (or any value): only subscribers granted a topic receive it.
    private: Option<String>,
    /// The update's id instead of the hub's (unique; not `#...` or all digits).
    id: Option<String>,
    /// The SSE event type.
    #[serde(rename = "type")]
    kind: Option<String>,
    /// Reconnection time, ms.
    retry: Option<u64>,
}
