//! A small HTTP/1.1 client for the `publish` and `subscribe` commands.

use std::ops::ControlFlow;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderName, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::sse::{ParsedEvent, Parser};

/// The request header a resuming stream sends with the id of the last
/// event it received (the hub answers from the event after it).
pub const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid hub URL `{0}`")]
    Url(String),
    #[error("cannot reach the hub: {0}")]
    Connect(String),
    #[error("the hub answered {status}: {body}")]
    Status {
        status: StatusCode,
        body: String,
        /// The `Retry-After` of the answer, in seconds, if it had one.
        retry_after: Option<Duration>,
    },
    #[error("the hub answered 200 with {0}, not `text/event-stream`")]
    NotAStream(String),
    #[error("gave up after {attempts} failed attempts in a row; the last: {last}")]
    GaveUp {
        attempts: u32,
        last: Box<ClientError>,
    },
}

pub struct HubClient {
    base: String,
    key: Option<String>,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl HubClient {
    pub fn new(base: &str, key: Option<String>) -> HubClient {
        HubClient {
            base: base.trim_end_matches('/').to_owned(),
            key,
            http: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    fn request(&self, method: Method, path: &str) -> Result<http::request::Builder, ClientError> {
        let url = format!("{}{}", self.base, path);
        let uri: Uri = url.parse().map_err(|_| ClientError::Url(url.clone()))?;
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(key) = &self.key {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {key}"));
        }
        Ok(builder)
    }

    /// Posts one event (or a batch) to `/api/v1/publish`; returns the reply.
    pub async fn publish(
        &self,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, ClientError> {
        let request = self
            .request(Method::POST, "/api/v1/publish")?
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| ClientError::Url(e.to_string()))?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| ClientError::Connect(with_causes(&e)))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Connect(with_causes(&e)))?
            .to_bytes();
        if !status.is_success() {
            return Err(ClientError::Status {
                status,
                body: String::from_utf8_lossy(&bytes).into_owned(),
                retry_after: None,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Status {
            status,
            body: e.to_string(),
            retry_after: None,
        })
    }

    /// Opens a stream at `path_and_query` and calls `on_event` for every
    /// event until the hub ends the stream or `on_event` breaks: one
    /// connection, no reconnection (see [`HubClient::follow`] for that).
    pub async fn subscribe(
        &self,
        path_and_query: &str,
        last_event_id: Option<&str>,
        mut on_event: impl FnMut(ParsedEvent) -> ControlFlow<()>,
    ) -> Result<(), ClientError> {
        let mut parser = Parser::resuming(last_event_id.unwrap_or_default());
        self.open_stream(path_and_query, &mut parser, &mut on_event)
            .await
            .map(|_| ())
    }

    /// One connection of a stream: sends the parser's last event id as
    /// `Last-Event-ID` (when it has one), then feeds it the body until the
    /// stream ends or `on_event` breaks. `Ok` once the hub answered with a
    /// stream, however the stream then ended; `Err` when it did not answer
    /// with one.
    pub async fn open_stream(
        &self,
        path_and_query: &str,
        parser: &mut Parser,
        on_event: &mut impl FnMut(ParsedEvent) -> ControlFlow<()>,
    ) -> Result<StreamEnd, ClientError> {
        let mut builder = self
            .request(Method::GET, path_and_query)?
            .header(header::ACCEPT, "text/event-stream");
        if !parser.last_event_id().is_empty() {
            builder = builder.header(LAST_EVENT_ID, parser.last_event_id());
        }
        let request = builder
            .body(Full::new(Bytes::new()))
            .map_err(|e| ClientError::Url(e.to_string()))?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| ClientError::Connect(with_causes(&e)))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
            .map(Duration::from_secs);
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let mut body = response.into_body();
        if status != StatusCode::OK {
            let bytes = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            return Err(ClientError::Status {
                status,
                body: String::from_utf8_lossy(&bytes).into_owned(),
                retry_after,
            });
        }
        // As EventSource: a 200 of anything but an event stream is not one.
        let essence = content_type.as_deref().unwrap_or_default();
        let essence = essence.split(';').next().unwrap_or_default().trim();
        if !essence.eq_ignore_ascii_case("text/event-stream") {
            return Err(ClientError::NotAStream(
                content_type.unwrap_or_else(|| "no Content-Type".to_owned()),
            ));
        }
        while let Some(frame) = body.frame().await {
            let frame = match frame {
                Ok(frame) => frame,
                Err(e) => return Ok(StreamEnd::Broken(with_causes(&e))),
            };
            if let Some(data) = frame.data_ref() {
                for event in parser.feed(data) {
                    if on_event(event).is_break() {
                        return Ok(StreamEnd::Stopped);
                    }
                }
            }
        }
        Ok(StreamEnd::Closed)
    }
}

/// An error with its causes: hyper's own text ("client error (Connect)")
/// leaves out why ("Connection refused").
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// How a stream that was open ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// The hub ended it (closed for its user, shutting down, token expired).
    Closed,
    /// The connection broke in the middle, with why.
    Broken(String),
    /// The caller's `on_event` asked to stop.
    Stopped,
}
