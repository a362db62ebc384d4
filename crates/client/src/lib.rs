//! pushwire-client: the client side of a pushwire hub. `hub` is the small
//! HTTP/1.1 client behind the `pushwire publish` and `pushwire subscribe`
//! commands (publish an event, read a stream); `reconnect` follows a stream
//! across connections as a browser's `EventSource` does; `sse` is a server-sent-events
//! parser that follows the WHATWG rules, which the load tools and the tests
//! use to read what a hub writes the way a browser would. It knows nothing
//! of the hub's internals: only its HTTP API and the event-stream format.

pub mod hub;
pub mod reconnect;
pub mod sse;

pub use hub::{ClientError, HubClient, StreamEnd, LAST_EVENT_ID};
pub use reconnect::{Notice, Reconnect};
