//! pushwire's core: everything the hub decides, with no IO and no HTTP.
//!
//! One event's path through it, top to bottom:
//!
//! - [`event`]: a publisher's [`Draft`](event::Draft) is validated against
//!   the [`limits`] and becomes an [`Event`](event::Event) whose SSE frame
//!   ([`frame`]) is encoded once;
//! - [`log`]: the [`EventLog`](log::EventLog) trait gives it its sequence
//!   number and stores it (the engines live in the server crate), then hands
//!   it, in sequence order, to the fanout (through the [`stage`], so that
//!   the publish is answered without waiting for it); the durable engines
//!   store it in the one format of [`record`];
//! - [`registry`]: the index of open streams finds every stream whose
//!   [`Interest`](route::Interest) ([`route`]) receives it;
//! - [`outbox`]: each stream's bounded queue, drained as a stream of
//!   [`Frames`](outbox::Frames) that the transport writes to the socket.
//!
//! [`hub`] ties them together for the edge: publish, open a stream with
//! resume, close, counts, history; [`seen`] keeps each user's cursor (the
//! newest event written to their streams) for `since=last-seen`. [`announce`] makes the Mercure
//! subscription events; [`grants`] reads what a verified token allows;
//! [`metrics`] counts what happens.
//!
//! The crate's manifest has no HTTP, server or storage dependency: the
//! edge translates requests into these calls and these errors into
//! responses.

pub mod announce;
pub mod event;
pub mod frame;
pub mod grants;
pub mod hub;
pub mod id;
pub mod limits;
pub mod log;
pub mod metrics;
pub mod outbox;
pub mod record;
pub mod registry;
pub mod route;
pub mod seen;
pub mod stage;
pub mod text;
