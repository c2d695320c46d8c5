//! The Dapr backend: the sidecar (daprd) carries the messages.
//!
//! Outbound, guests' publishes and state calls go to the sidecar's HTTP API
//! on `127.0.0.1:$DAPR_HTTP_PORT`, with `dapr-api-token` when
//! `DAPR_API_TOKEN` is set. Inbound, daprd pushes deliveries to the app port,
//! where [`super::dapr_app::DaprAppProtocol`] answers them; redelivery and
//! dead-lettering are daprd's (and its resiliency policy's) job.
//!
//! **Readiness.** The first call waits for the sidecar: it polls
//! `GET /v1.0/healthz/outbound` (204 once daprd's components are loaded) with
//! backoff, for at most `ready_timeout`, and then fails with an error naming
//! the address, instead of hanging or failing on the first refused
//! connection. Later calls do not wait.
//!
//! **Errors.** The sidecar's answers map onto the WIT's typed errors: 400 →
//! `invalid-message` (or `unknown-pubsub` when daprd says the pub/sub is not
//! configured), 403 → `forbidden`, 404 → `unknown-pubsub`, 401 → `forbidden`
//! (a wrong or missing token), a connection failure or 5xx → `unavailable`
//! or `broker`.

use super::dapr_app::DaprAppProtocol;
use super::{Broker, DeliveryTarget, Metrics, StateStore, Subscription};
use crate::host::bindings::{BulkEntry, FailedEntry, Message, PublishError, StateError};
use crate::server::{Endpoint, TOKEN_HEADER};
use async_trait::async_trait;
use base64::Engine as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

/// How to reach the sidecar.
#[derive(Debug, Clone)]
pub struct SidecarConfig {
    /// `http://127.0.0.1:{DAPR_HTTP_PORT}`.
    pub base_url: String,
    /// `DAPR_API_TOKEN`, sent on every call.
    pub api_token: Option<String>,
    /// How long the first call waits for the sidecar to become ready.
    pub ready_timeout: Duration,
}

impl SidecarConfig {
    /// Reads `DAPR_HTTP_PORT` and `DAPR_API_TOKEN`.
    pub fn from_env(ready_timeout: Duration) -> SidecarConfig {
        let port = std::env::var("DAPR_HTTP_PORT").unwrap_or_else(|_| "3500".into());
        let non_empty = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        SidecarConfig {
            base_url: format!("http://127.0.0.1:{port}"),
            api_token: non_empty("DAPR_API_TOKEN"),
            ready_timeout,
        }
    }
}

/// The Dapr sidecar, as broker and state store.
pub struct DaprSidecar {
    config: SidecarConfig,
    client: reqwest::Client,
    ready: OnceCell<()>,
    app: Arc<DaprAppProtocol>,
}

impl DaprSidecar {
    pub fn new(config: SidecarConfig, metrics: Arc<Metrics>) -> anyhow::Result<DaprSidecar> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        Ok(DaprSidecar {
            app: Arc::new(DaprAppProtocol::new(metrics)),
            config,
            client,
            ready: OnceCell::new(),
        })
    }

    /// Waits, once, until the sidecar answers `GET /v1.0/healthz/outbound` with 2xx.
    async fn wait_ready(&self) -> Result<(), String> {
        self.ready
            .get_or_try_init(|| async {
                let url = format!("{}/v1.0/healthz/outbound", self.config.base_url);
                let deadline = tokio::time::Instant::now() + self.config.ready_timeout;
                let mut wait = Duration::from_millis(50);
                let mut last;
                loop {
                    match self.client.get(&url).send().await {
                        Ok(r) if r.status().is_success() => return Ok(()),
                        Ok(r) => last = format!("it answered {}", r.status()),
                        Err(e) => last = format!("{e}"),
                    }
                    if tokio::time::Instant::now() + wait > deadline {
                        return Err(format!(
                            "the Dapr sidecar at {} was not ready within {:?} (last: {last}); is daprd running with DAPR_HTTP_PORT set to its HTTP port?",
                            self.config.base_url, self.config.ready_timeout
                        ));
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(1));
                }
            })
            .await
            .map(|_| ())
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self
            .client
            .request(method, format!("{}{path}", self.config.base_url));
        match &self.config.api_token {
            Some(token) => request.header(TOKEN_HEADER, token),
            None => request,
        }
    }
}

/// The query parameters that carry a message's options on Dapr's publish API.
pub fn publish_query(message: &Message) -> Vec<(String, String)> {
    let meta = &message.metadata;
    let mut query = Vec::new();
    if let Some(ttl) = meta.ttl_seconds {
        query.push(("metadata.ttlInSeconds".into(), ttl.to_string()));
    }
    if meta.raw_payload {
        query.push(("metadata.rawPayload".into(), "true".into()));
    }
    let o = &meta.cloudevent;
    for (name, value) in [
        ("id", &o.id),
        ("source", &o.source),
        ("type", &o.type_),
        ("subject", &o.subject),
        ("traceparent", &o.traceparent),
        ("tracestate", &o.tracestate),
    ] {
        if let Some(value) = value {
            query.push((format!("metadata.cloudevent.{name}"), value.clone()));
        }
    }
    for (name, value) in &meta.extra {
        query.push((format!("metadata.{name}"), value.clone()));
    }
    query
}

/// The reason in a Dapr error body (`{"errorCode", "message"}`), or the body itself.
fn dapr_reason(status: reqwest::StatusCode, body: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(v) => format!(
            "{status}: {} {}",
            v["errorCode"].as_str().unwrap_or_default(),
            v["message"].as_str().unwrap_or(body)
        ),
        Err(_) => format!("{status}: {body}"),
    }
}

/// Maps a failed publish answer onto the WIT's errors.
fn publish_error(status: reqwest::StatusCode, body: &str) -> PublishError {
    let reason = dapr_reason(status, body);
    match status.as_u16() {
        400 if body.contains("ERR_PUBSUB_NOT_FOUND") || body.contains("not configured") => {
            PublishError::UnknownPubsub(reason)
        }
        400 => PublishError::InvalidMessage(reason),
        401 | 403 => PublishError::Forbidden(reason),
        404 => PublishError::UnknownPubsub(reason),
        500 if body.contains("ERR_PUBSUB_NOT_FOUND") => PublishError::UnknownPubsub(reason),
        503 => PublishError::Unavailable(reason),
        _ => PublishError::Broker(reason),
    }
}

#[async_trait]
impl Broker for DaprSidecar {
    fn name(&self) -> &'static str {
        "dapr"
    }

    async fn publish(
        &self,
        pubsubname: &str,
        topic: &str,
        message: Message,
    ) -> Result<(), PublishError> {
        self.wait_ready().await.map_err(PublishError::Unavailable)?;
        let mut request = self
            .request(
                reqwest::Method::POST,
                &format!("/v1.0/publish/{pubsubname}/{topic}"),
            )
            .query(&publish_query(&message));
        if let Some(content_type) = &message.content_type {
            request = request.header(reqwest::header::CONTENT_TYPE, content_type);
        }
        let response = request.body(message.data).send().await.map_err(|e| {
            PublishError::Unavailable(format!("cannot reach the Dapr sidecar: {e}"))
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        Err(publish_error(status, &body))
    }

    async fn publish_bulk(
        &self,
        pubsubname: &str,
        topic: &str,
        entries: Vec<BulkEntry>,
    ) -> Result<(), Vec<FailedEntry>> {
        let fail_all = |entries: &[BulkEntry], error: PublishError| {
            entries
                .iter()
                .map(|e| FailedEntry {
                    entry_id: e.entry_id.clone(),
                    error: error.clone(),
                })
                .collect::<Vec<_>>()
        };
        if let Err(e) = self.wait_ready().await {
            return Err(fail_all(&entries, PublishError::Unavailable(e)));
        }
        let body: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| {
                let content_type = e
                    .message
                    .content_type
                    .clone()
                    .unwrap_or_else(|| super::cloudevent::DEFAULT_CONTENT_TYPE.into());
                let metadata: serde_json::Map<String, serde_json::Value> =
                    publish_query(&e.message)
                        .into_iter()
                        .map(|(k, v)| (k.trim_start_matches("metadata.").to_owned(), v.into()))
                        .collect();
                // Dapr's bulk API takes the event as JSON when the content
                // type is JSON, and as a string otherwise.
                let event: serde_json::Value =
                    if super::cloudevent::essence(&content_type).contains("json") {
                        serde_json::from_slice(&e.message.data).unwrap_or_else(|_| {
                            String::from_utf8_lossy(&e.message.data).into_owned().into()
                        })
                    } else {
                        match String::from_utf8(e.message.data.clone()) {
                            Ok(text) => text.into(),
                            Err(_) => base64::engine::general_purpose::STANDARD
                                .encode(&e.message.data)
                                .into(),
                        }
                    };
                serde_json::json!({
                    "entryId": e.entry_id,
                    "event": event,
                    "contentType": content_type,
                    "metadata": metadata,
                })
            })
            .collect();
        let response = self
            .request(
                reqwest::Method::POST,
                &format!("/v1.0-alpha1/publish/bulk/{pubsubname}/{topic}"),
            )
            .json(&body)
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                return Err(fail_all(
                    &entries,
                    PublishError::Unavailable(format!("cannot reach the Dapr sidecar: {e}")),
                ));
            }
        };
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        let failed: Option<Vec<FailedEntry>> = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["failedEntries"].as_array().cloned())
            .map(|failed| {
                failed
                    .iter()
                    .map(|f| FailedEntry {
                        entry_id: f["entryId"].as_str().unwrap_or_default().to_owned(),
                        error: PublishError::Broker(
                            f["error"].as_str().unwrap_or("failed").to_owned(),
                        ),
                    })
                    .collect()
            });
        Err(failed
            .filter(|f: &Vec<FailedEntry>| !f.is_empty())
            .unwrap_or_else(|| fail_all(&entries, publish_error(status, &text))))
    }

    fn start(
        self: Arc<Self>,
        subscriptions: Vec<Subscription>,
        target: Arc<dyn DeliveryTarget>,
    ) -> Arc<dyn Endpoint> {
        self.app.start(subscriptions, target);
        self.app.clone()
    }

    async fn shutdown(&self, grace: Duration) -> u64 {
        self.app.drain(grace).await
    }
}

/// Dapr's state API holds JSON. A value that is JSON text is stored as that
/// JSON value, so reading it back gives the same JSON (daprd compacts it);
/// any other bytes are stored as a JSON string of their text, and reading
/// a JSON string back gives its contents (see [`state_bytes`]).
fn state_value(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| String::from_utf8_lossy(bytes).into_owned().into())
}

/// The inverse of [`state_value`]: daprd answers a JSON string with its
/// quotes, and the guest gets the string's contents.
fn state_bytes(body: &[u8]) -> Vec<u8> {
    match serde_json::from_slice::<String>(body) {
        Ok(text) => text.into_bytes(),
        Err(_) => body.to_vec(),
    }
}

fn state_error(status: reqwest::StatusCode, body: &str) -> StateError {
    let reason = dapr_reason(status, body);
    if body.contains("ERR_STATE_STORE_NOT_FOUND") || body.contains("ERR_STATE_STORE_NOT_CONFIGURED")
    {
        StateError::UnknownStore(reason)
    } else if status.is_client_error() {
        StateError::InvalidRequest(reason)
    } else {
        StateError::Unavailable(reason)
    }
}

impl DaprSidecar {
    /// Sends one state API call, once the sidecar is ready, and returns the
    /// answer of a successful one; any other answer becomes a `state-error`.
    async fn state_call(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(u16, bytes::Bytes), StateError> {
        self.wait_ready().await.map_err(StateError::Unavailable)?;
        let response = request
            .send()
            .await
            .map_err(|e| StateError::Unavailable(format!("cannot reach the Dapr sidecar: {e}")))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| {
            StateError::Unavailable(format!("reading the sidecar's answer failed: {e}"))
        })?;
        if status.is_success() {
            Ok((status.as_u16(), body))
        } else {
            Err(state_error(status, &String::from_utf8_lossy(&body)))
        }
    }
}

#[async_trait]
impl StateStore for DaprSidecar {
    async fn get(&self, store: &str, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let request = self.request(reqwest::Method::GET, &format!("/v1.0/state/{store}/{key}"));
        match self.state_call(request).await? {
            (204, _) => Ok(None),
            (_, body) => Ok(Some(state_bytes(&body))),
        }
    }

    async fn save(&self, store: &str, key: &str, value: Vec<u8>) -> Result<(), StateError> {
        let body = serde_json::json!([{ "key": key, "value": state_value(&value) }]);
        let request = self
            .request(reqwest::Method::POST, &format!("/v1.0/state/{store}"))
            .json(&body);
        self.state_call(request).await.map(|_| ())
    }

    async fn delete(&self, store: &str, key: &str) -> Result<(), StateError> {
        let request = self.request(
            reqwest::Method::DELETE,
            &format!("/v1.0/state/{store}/{key}"),
        );
        self.state_call(request).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::sidecar_api::message_from_query;

    #[test]
    fn the_query_encoding_round_trips() {
        let query = "metadata.ttlInSeconds=9&metadata.rawPayload=true&metadata.cloudevent.id=x&metadata.cloudevent.traceparent=00-a-b-01&metadata.partitionKey=p";
        let message = message_from_query(query, None, vec![]).unwrap();
        let encoded = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(publish_query(&message))
            .finish();
        assert_eq!(message_from_query(&encoded, None, vec![]).unwrap(), message);
    }

    #[test]
    fn sidecar_errors_map_to_typed_errors() {
        use reqwest::StatusCode as S;
        assert!(matches!(
            publish_error(S::NOT_FOUND, ""),
            PublishError::UnknownPubsub(_)
        ));
        assert!(matches!(
            publish_error(
                S::BAD_REQUEST,
                r#"{"errorCode":"ERR_PUBSUB_NOT_FOUND","message":"pubsub x not found"}"#
            ),
            PublishError::UnknownPubsub(_)
        ));
        assert!(matches!(
            publish_error(S::BAD_REQUEST, "{}"),
            PublishError::InvalidMessage(_)
        ));
        assert!(matches!(
            publish_error(S::FORBIDDEN, ""),
            PublishError::Forbidden(_)
        ));
        assert!(matches!(
            publish_error(S::UNAUTHORIZED, ""),
            PublishError::Forbidden(_)
        ));
        assert!(matches!(
            publish_error(S::INTERNAL_SERVER_ERROR, ""),
            PublishError::Broker(_)
        ));
        let PublishError::Broker(reason) = publish_error(
            S::INTERNAL_SERVER_ERROR,
            r#"{"errorCode":"ERR_PUBSUB_PUBLISH_MESSAGE","message":"redis down"}"#,
        ) else {
            unreachable!()
        };
        assert!(reason.contains("redis down") && reason.contains("ERR_PUBSUB_PUBLISH_MESSAGE"));
    }

    #[test]
    fn json_state_values_stay_json() {
        assert_eq!(state_value(br#"{"a":1}"#), serde_json::json!({"a": 1}));
        assert_eq!(state_value(b"3"), serde_json::json!(3));
        assert_eq!(state_value(b"plain text"), serde_json::json!("plain text"));
        assert_eq!(state_bytes(br#""plain text""#), b"plain text");
        assert_eq!(state_bytes(br#"{"a":1}"#), br#"{"a":1}"#);
        assert_eq!(state_bytes(b"3"), b"3");
    }
}
