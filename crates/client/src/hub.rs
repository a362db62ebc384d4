//! A small HTTP/1.1 client for the `publish` and `subscribe` commands.

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
    Status { status: StatusCode, body: String },
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
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            return Err(ClientError::Status {
                status,
                body: String::from_utf8_lossy(&bytes).into_owned(),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Status {
            status,
            body: e.to_string(),
        })
    }

    /// Opens a stream at `path_and_query` and calls `on_event` for every
    /// event until the hub ends the stream.
    pub async fn subscribe(
        &self,
        path_and_query: &str,
        last_event_id: Option<&str>,
        mut on_event: impl FnMut(ParsedEvent),
    ) -> Result<(), ClientError> {
        let mut builder = self
            .request(Method::GET, path_and_query)?
            .header(header::ACCEPT, "text/event-stream");
        if let Some(id) = last_event_id {
            builder = builder.header(LAST_EVENT_ID, id);
        }
        let request = builder
            .body(Full::new(Bytes::new()))
            .map_err(|e| ClientError::Url(e.to_string()))?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        let status = response.status();
        let mut body = response.into_body();
        if !status.is_success() {
            let bytes = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            return Err(ClientError::Status {
                status,
                body: String::from_utf8_lossy(&bytes).into_owned(),
            });
        }
        let mut parser = Parser::default();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ClientError::Connect(e.to_string()))?;
            if let Some(data) = frame.data_ref() {
                parser.feed(data).into_iter().for_each(&mut on_event);
            }
        }
        Ok(())
    }
}
