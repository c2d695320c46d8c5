//! Dapr's sidecar HTTP API, as far as host-bridge speaks it.
//!
//! Two things live here. First, how a publish is encoded on that API: the
//! body is the payload, `Content-Type` its media type, and the options ride
//! in query parameters (`metadata.ttlInSeconds`, `metadata.rawPayload`,
//! `metadata.cloudevent.*`, and any other `metadata.*`). Second, the
//! [`SidecarApi`] endpoint, with which the embedded backend serves the same
//! calls daprd would on its HTTP port:
//!
//! - `POST /v1.0/publish/{pubsubname}/{topic}`: 204, or a Dapr-style error;
//! - `GET /v1.0/state/{store}/{key}`: 200 with the value, or 204 if none.
//!
//! So tools and tests publish to and inspect a locally running app exactly as
//! they would under Dapr, with no Dapr installed.

use super::{Broker, StateStore};
use crate::contract::{Message, PublishError};
use crate::server::{self, Endpoint, Request, Response};
use async_trait::async_trait;
use http::{Method, StatusCode};
use std::sync::Arc;

/// Reads a publish's options from its query string.
pub fn message_from_query(
    query: &str,
    content_type: Option<String>,
    data: Vec<u8>,
) -> Result<Message, String> {
    let mut message = Message::new(data, content_type);
    let metadata = &mut message.metadata;
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        let Some(key) = name.strip_prefix("metadata.") else {
            continue;
        };
        let value = value.into_owned();
        let o = &mut metadata.cloudevent;
        match key {
            "ttlInSeconds" => {
                metadata.ttl_seconds = Some(value.parse().map_err(|_| {
                    format!(
                        "metadata.ttlInSeconds must be a whole number of seconds, got {value:?}"
                    )
                })?);
            }
            "rawPayload" => {
                metadata.raw_payload = value.parse().map_err(|_| {
                    format!("metadata.rawPayload must be true or false, got {value:?}")
                })?;
            }
            "cloudevent.id" => o.id = Some(value),
            "cloudevent.source" => o.source = Some(value),
            "cloudevent.type" => o.type_ = Some(value),
            "cloudevent.subject" => o.subject = Some(value),
            "cloudevent.traceparent" => o.traceparent = Some(value),
            "cloudevent.tracestate" => o.tracestate = Some(value),
            other => metadata.extra.push((other.to_owned(), value)),
        }
    }
    Ok(message)
}

/// The embedded backend's sidecar endpoints.
pub struct SidecarApi {
    pub broker: Arc<dyn Broker>,
    pub state_store: Arc<dyn StateStore>,
}

/// `/v1.0/publish/{pubsubname}/{topic}` or `/v1.0/state/{store}/{key}` → the two names.
fn two_names<'a>(path: &'a str, prefix: &str) -> Option<(&'a str, &'a str)> {
    let rest = path.strip_prefix(prefix)?;
    let (a, b) = rest.split_once('/')?;
    (!a.is_empty() && !b.is_empty() && !b.contains('/')).then_some((a, b))
}

#[async_trait]
impl Endpoint for SidecarApi {
    fn serves(&self, method: &Method, path: &str) -> bool {
        (method == Method::POST && path.starts_with("/v1.0/publish/"))
            || (method == Method::GET && path.starts_with("/v1.0/state/"))
    }

    async fn serve(&self, request: Request) -> Response {
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or_default().to_owned();
        if let Some((store, key)) = two_names(&path, "/v1.0/state/") {
            return match self.state_store.get(store, key).await {
                Ok(Some(value)) => server::full(StatusCode::OK, "application/octet-stream", value),
                Ok(None) => server::full(StatusCode::NO_CONTENT, "text/plain", ""),
                Err(e) => server::error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "ERR_STATE_GET",
                    format!("{e:?}"),
                ),
            };
        }
        let Some((pubsubname, topic)) = two_names(&path, "/v1.0/publish/") else {
            return server::error(
                StatusCode::NOT_FOUND,
                "ERR_NOT_FOUND",
                format!("no route for {path}"),
            );
        };
        let (pubsubname, topic) = (pubsubname.to_owned(), topic.to_owned());
        let content_type = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let data = match server::read_body(request).await {
            Ok((_, body)) => body.to_vec(),
            Err(e) => return e.response(),
        };
        let message = match message_from_query(&query, content_type, data) {
            Ok(message) => message,
            Err(e) => return server::error(StatusCode::BAD_REQUEST, "ERR_PUBSUB_REQUEST_QUERY", e),
        };
        match self.broker.publish(&pubsubname, &topic, message).await {
            Ok(()) => server::full(StatusCode::NO_CONTENT, "text/plain", ""),
            Err(e) => publish_error_response(&e),
        }
    }
}

/// The status and Dapr error code a failed publish is answered with.
fn publish_error_response(e: &PublishError) -> Response {
    let (status, code, message) = match e {
        PublishError::UnknownPubsub(m) => (StatusCode::NOT_FOUND, "ERR_PUBSUB_NOT_FOUND", m),
        PublishError::InvalidMessage(m) => {
            (StatusCode::BAD_REQUEST, "ERR_PUBSUB_CLOUD_EVENTS_SER", m)
        }
        PublishError::Forbidden(m) => (StatusCode::FORBIDDEN, "ERR_PUBSUB_FORBIDDEN", m),
        PublishError::Unavailable(m) => {
            (StatusCode::SERVICE_UNAVAILABLE, "ERR_PUBSUB_NOT_READY", m)
        }
        PublishError::Broker(m) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "ERR_PUBSUB_PUBLISH_MESSAGE",
            m,
        ),
    };
    server::error(status, code, message.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_publish_options_from_the_query() {
        let q = "metadata.ttlInSeconds=30&metadata.rawPayload=true&metadata.cloudevent.id=abc&metadata.cloudevent.type=t%2Fx&metadata.partitionKey=k&other=1";
        let m = message_from_query(q, Some("text/plain".into()), b"x".to_vec()).unwrap();
        assert_eq!(m.metadata.ttl_seconds, Some(30));
        assert!(m.metadata.raw_payload);
        assert_eq!(m.metadata.cloudevent.id.as_deref(), Some("abc"));
        assert_eq!(m.metadata.cloudevent.type_.as_deref(), Some("t/x"));
        assert_eq!(
            m.metadata.extra,
            vec![("partitionKey".to_owned(), "k".to_owned())]
        );
    }

    #[test]
    fn rejects_bad_options_by_name() {
        let e = message_from_query("metadata.ttlInSeconds=soon", None, vec![]).unwrap_err();
        assert!(e.contains("metadata.ttlInSeconds"));
        let e = message_from_query("metadata.rawPayload=yes", None, vec![]).unwrap_err();
        assert!(e.contains("metadata.rawPayload"));
    }

    #[test]
    fn splits_the_two_names() {
        assert_eq!(
            two_names("/v1.0/publish/pubsub/orders", "/v1.0/publish/"),
            Some(("pubsub", "orders"))
        );
        assert_eq!(two_names("/v1.0/publish/pubsub/", "/v1.0/publish/"), None);
        assert_eq!(
            two_names("/v1.0/publish/pubsub/a/b", "/v1.0/publish/"),
            None
        );
    }
}
