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
//! - `POST /v1.0-alpha1/publish/bulk/{pubsubname}/{topic}`: 204, or 500
//!   with `{"failedEntries": [...]}`;
//! - `GET /v1.0/state/{store}/{key}`: 200 with the value, or 204 if none;
//! - `POST /v1.0/state/{store}` with `[{"key", "value"}]`: 204;
//! - `DELETE /v1.0/state/{store}/{key}`: 204;
//! - `GET /v1.0/healthz`: 204, with no token, as daprd's.
//!
//! So tools and tests publish to and inspect a locally running app exactly as
//! they would under Dapr, with no Dapr installed.
//!
//! **This API is not the app's.** It takes any topic and any key, so it is
//! never mounted on the app's port: `host-bridge up` serves it on a
//! listener of its own (`--sidecar-listen`, loopback by default), behind
//! `DAPR_API_TOKEN` when that is set, as daprd does. A guest's publishes
//! do not come through here; they go through its imports, which check its
//! grants.

use super::{Broker, StateStore};
use crate::contract::{BulkEntry, Message, PublishError, StateError};
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
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        if let Some(key) = name.strip_prefix("metadata.") {
            set_metadata(&mut message, key, value.into_owned())
                .map_err(|e| format!("metadata.{e}"))?;
        }
    }
    Ok(message)
}

/// Sets one publish option, named as in Dapr without its `metadata.`
/// prefix (`ttlInSeconds`, `rawPayload`, `cloudevent.id`, …); any other
/// key rides along as extra metadata. An error starts with the key.
fn set_metadata(message: &mut Message, key: &str, value: String) -> Result<(), String> {
    let metadata = &mut message.metadata;
    let o = &mut metadata.cloudevent;
    match key {
        "ttlInSeconds" => {
            metadata.ttl_seconds = Some(value.parse().map_err(|_| {
                format!("ttlInSeconds must be a whole number of seconds, got {value:?}")
            })?);
        }
        "rawPayload" => {
            metadata.raw_payload = value
                .parse()
                .map_err(|_| format!("rawPayload must be true or false, got {value:?}"))?;
        }
        "cloudevent.id" => o.id = Some(value),
        "cloudevent.source" => o.source = Some(value),
        "cloudevent.type" => o.type_ = Some(value),
        "cloudevent.subject" => o.subject = Some(value),
        "cloudevent.traceparent" => o.traceparent = Some(value),
        "cloudevent.tracestate" => o.tracestate = Some(value),
        other => metadata.extra.push((other.to_owned(), value)),
    }
    Ok(())
}

/// One entry of a bulk publish, as Dapr's API writes it.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct BulkPublishEntry {
    entry_id: String,
    event: serde_json::Value,
    content_type: Option<String>,
    #[serde(default)]
    metadata: std::collections::BTreeMap<String, String>,
}

/// A bulk publish's body as the broker's entries: JSON content is the
/// event's JSON text, any other content must be a JSON string and is its
/// text, as daprd reads it.
fn bulk_entries(body: &[u8]) -> Result<Vec<BulkEntry>, String> {
    let entries: Vec<BulkPublishEntry> = serde_json::from_slice(body)
        .map_err(|e| format!("the body is not a list of bulk publish entries: {e}"))?;
    entries
        .into_iter()
        .map(|entry| {
            let json = entry
                .content_type
                .as_deref()
                .is_some_and(|t| t.contains("json"));
            let data = match (&entry.event, json) {
                (serde_json::Value::String(text), false) => text.clone().into_bytes(),
                (value, true) => value.to_string().into_bytes(),
                (_, false) => {
                    return Err(format!(
                        "entry {}: an event that is not JSON must be a JSON string",
                        entry.entry_id
                    ));
                }
            };
            let mut message = Message::new(data, entry.content_type);
            for (key, value) in entry.metadata {
                set_metadata(&mut message, &key, value)
                    .map_err(|e| format!("entry {}: metadata.{e}", entry.entry_id))?;
            }
            Ok(BulkEntry {
                entry_id: entry.entry_id,
                message,
            })
        })
        .collect()
}

/// One item of a state save, as Dapr's API writes it.
#[derive(serde::Deserialize)]
struct StateItem {
    key: String,
    value: serde_json::Value,
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

const PUBLISH: &str = "/v1.0/publish/";
const BULK_PUBLISH: &str = "/v1.0-alpha1/publish/bulk/";
const STATE: &str = "/v1.0/state/";
const HEALTHZ: &str = "/v1.0/healthz";

#[async_trait]
impl Endpoint for SidecarApi {
    fn serves(&self, method: &Method, path: &str) -> bool {
        match *method {
            Method::POST => {
                path.starts_with(PUBLISH)
                    || path.starts_with(BULK_PUBLISH)
                    || path.starts_with(STATE)
            }
            Method::GET => path.starts_with(STATE) || path == HEALTHZ,
            Method::DELETE => path.starts_with(STATE),
            _ => false,
        }
    }

    async fn serve(&self, request: Request) -> Response {
        let path = request.uri().path().to_owned();
        let method = request.method().clone();
        if path == HEALTHZ {
            return no_content();
        }
        if let Some(store) = path.strip_prefix(STATE)
            && method == Method::POST
            && !store.is_empty()
            && !store.contains('/')
        {
            return self.save_state(store, request).await;
        }
        if let Some((store, key)) = two_names(&path, STATE) {
            let done = if method == Method::DELETE {
                self.state_store.delete(store, key).await.map(|()| None)
            } else {
                self.state_store.get(store, key).await
            };
            return match done {
                Ok(Some(value)) => server::full(StatusCode::OK, "application/octet-stream", value),
                Ok(None) => no_content(),
                Err(e) => state_error_response(&e),
            };
        }
        if let Some((pubsubname, topic)) = two_names(&path, BULK_PUBLISH) {
            let (pubsubname, topic) = (pubsubname.to_owned(), topic.to_owned());
            return self.publish_bulk(&pubsubname, &topic, request).await;
        }
        let Some((pubsubname, topic)) = two_names(&path, PUBLISH) else {
            return server::error(
                StatusCode::NOT_FOUND,
                "ERR_NOT_FOUND",
                format!("no route for {method} {path}"),
            );
        };
        let (pubsubname, topic) = (pubsubname.to_owned(), topic.to_owned());
        let query = request.uri().query().unwrap_or_default().to_owned();
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
            Ok(()) => no_content(),
            Err(e) => publish_error_response(&e),
        }
    }
}

impl SidecarApi {
    async fn publish_bulk(&self, pubsubname: &str, topic: &str, request: Request) -> Response {
        let body = match server::read_body(request).await {
            Ok((_, body)) => body,
            Err(e) => return e.response(),
        };
        let entries = match bulk_entries(&body) {
            Ok(entries) => entries,
            Err(e) => return server::error(StatusCode::BAD_REQUEST, "ERR_PUBSUB_EVENTS_SER", e),
        };
        match self.broker.publish_bulk(pubsubname, topic, entries).await {
            Ok(()) => no_content(),
            Err(failed) => {
                let failed: Vec<_> = failed
                    .iter()
                    .map(|f| serde_json::json!({ "entryId": f.entry_id, "error": format!("{:?}", f.error) }))
                    .collect();
                server::json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &serde_json::json!({
                        "errorCode": "ERR_PUBSUB_PUBLISH_MESSAGE",
                        "failedEntries": failed,
                    }),
                )
            }
        }
    }

    /// Saves every item, in order; the first failure stops the rest.
    async fn save_state(&self, store: &str, request: Request) -> Response {
        let body = match server::read_body(request).await {
            Ok((_, body)) => body,
            Err(e) => return e.response(),
        };
        let items: Vec<StateItem> = match serde_json::from_slice(&body) {
            Ok(items) => items,
            Err(e) => {
                return server::error(
                    StatusCode::BAD_REQUEST,
                    "ERR_MALFORMED_REQUEST",
                    format!("the body is not a list of {{\"key\", \"value\"}} items: {e}"),
                );
            }
        };
        for item in items {
            // Dapr keeps a value as its JSON text, so a GET gives back
            // the JSON that was saved.
            let value = item.value.to_string().into_bytes();
            if let Err(e) = self.state_store.save(store, &item.key, value).await {
                return state_error_response(&e);
            }
        }
        no_content()
    }
}

fn no_content() -> Response {
    server::full(StatusCode::NO_CONTENT, "text/plain", "")
}

/// The status and Dapr error code a failed state call is answered with.
fn state_error_response(e: &StateError) -> Response {
    let (status, code, message) = match e {
        StateError::UnknownStore(m) => (StatusCode::BAD_REQUEST, "ERR_STATE_STORE_NOT_FOUND", m),
        StateError::InvalidRequest(m) => (StatusCode::BAD_REQUEST, "ERR_MALFORMED_REQUEST", m),
        StateError::Unavailable(m) => (StatusCode::INTERNAL_SERVER_ERROR, "ERR_STATE_STORE", m),
    };
    server::error(status, code, message.clone())
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

    #[test]
    fn bulk_entries_read_as_daprd_reads_them() {
        let body = br#"[
            {"entryId": "1", "event": {"a": 1}, "contentType": "application/json"},
            {"entryId": "2", "event": "caf\u00e9", "contentType": "text/plain",
             "metadata": {"cloudevent.id": "x-2", "ttlInSeconds": "5"}}
        ]"#;
        let entries = bulk_entries(body).unwrap();
        assert_eq!(entries[0].message.data, br#"{"a":1}"#);
        assert_eq!(entries[1].message.data, "caf\u{e9}".as_bytes());
        assert_eq!(
            entries[1].message.metadata.cloudevent.id.as_deref(),
            Some("x-2")
        );
        assert_eq!(entries[1].message.metadata.ttl_seconds, Some(5));
        let e =
            bulk_entries(br#"[{"entryId": "3", "event": {"a": 1}, "contentType": "text/plain"}]"#)
                .unwrap_err();
        assert!(e.contains("entry 3"), "{e}");
        let e = bulk_entries(
            br#"[{"entryId": "4", "event": "x", "metadata": {"rawPayload": "maybe"}}]"#,
        )
        .unwrap_err();
        assert!(e.contains("entry 4: metadata.rawPayload"), "{e}");
    }
}
