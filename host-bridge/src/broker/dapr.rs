//! The Dapr backend: the sidecar (daprd) carries the messages.
//!
//! Outbound, guests' publishes go to the sidecar's HTTP API on
//! `127.0.0.1:$DAPR_HTTP_PORT`, and their state calls to its gRPC API on
//! `127.0.0.1:$DAPR_GRPC_PORT`, which carries bytes (see [`super::dapr_state`]),
//! each with `dapr-api-token` when `DAPR_API_TOKEN` is set. Inbound, daprd pushes deliveries to the app port,
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
use super::dapr_state::DaprStateClient;
use super::{Broker, DeliveryTarget, Metrics, StateStore, Subscription};
use crate::contract::{BulkEntry, FailedEntry, Message, PublishError, StateError};
use crate::server::{Endpoint, TOKEN_HEADER};
use crate::telemetry;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

/// How to reach the sidecar.
#[derive(Debug, Clone)]
pub struct SidecarConfig {
    /// `http://127.0.0.1:{DAPR_HTTP_PORT}`.
    pub base_url: String,
    /// `http://127.0.0.1:{DAPR_GRPC_PORT}`.
    pub grpc_url: String,
    /// `DAPR_API_TOKEN`, sent on every call.
    pub api_token: Option<String>,
    /// How long the first call waits for the sidecar to become ready.
    pub ready_timeout: Duration,
}

impl SidecarConfig {
    /// Reads `DAPR_HTTP_PORT`, `DAPR_GRPC_PORT` and `DAPR_API_TOKEN`.
    pub fn from_env(ready_timeout: Duration) -> SidecarConfig {
        let port = std::env::var("DAPR_HTTP_PORT").unwrap_or_else(|_| "3500".into());
        let grpc_port = std::env::var("DAPR_GRPC_PORT").unwrap_or_else(|_| "50001".into());
        let non_empty = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        SidecarConfig {
            base_url: format!("http://127.0.0.1:{port}"),
            grpc_url: format!("http://127.0.0.1:{grpc_port}"),
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
    state: DaprStateClient,
}

impl DaprSidecar {
    pub fn new(config: SidecarConfig, metrics: Arc<Metrics>) -> anyhow::Result<DaprSidecar> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        let state = DaprStateClient::new(&config.grpc_url, config.api_token.as_deref())?;
        Ok(DaprSidecar {
            app: Arc::new(DaprAppProtocol::new(metrics)),
            state,
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
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.config.base_url));
        // A call made in a span (a guest's publish) sends its context the
        // way daprd reads it, so daprd's spans continue ours.
        if let Some(trace) = telemetry::context_of(&tracing::Span::current()) {
            for (name, value) in [
                ("traceparent", trace.traceparent),
                ("tracestate", trace.tracestate),
            ] {
                if let Some(value) = value {
                    request = request.header(name, value);
                }
            }
        }
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
        // Entries Dapr's bulk API cannot carry exactly are refused, each
        // with a typed error; the others are still published.
        let mut refused = Vec::new();
        let mut body = Vec::new();
        let mut sent = Vec::new();
        for entry in entries {
            match bulk_entry(&entry) {
                Ok(value) => {
                    body.push(value);
                    sent.push(entry);
                }
                Err(error) => refused.push(FailedEntry {
                    entry_id: entry.entry_id,
                    error,
                }),
            }
        }
        let outcome = |refused: Vec<FailedEntry>| {
            if refused.is_empty() {
                Ok(())
            } else {
                Err(refused)
            }
        };
        if body.is_empty() {
            return outcome(refused);
        }
        let entries = sent;
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
                refused.extend(fail_all(
                    &entries,
                    PublishError::Unavailable(format!("cannot reach the Dapr sidecar: {e}")),
                ));
                return Err(refused);
            }
        };
        let status = response.status();
        if status.is_success() {
            return outcome(refused);
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
        refused.extend(
            failed
                .filter(|f: &Vec<FailedEntry>| !f.is_empty())
                .unwrap_or_else(|| fail_all(&entries, publish_error(status, &text))),
        );
        Err(refused)
    }

    fn start(
        self: Arc<Self>,
        subscriptions: Vec<Subscription>,
        target: Arc<dyn DeliveryTarget>,
    ) -> Vec<Arc<dyn Endpoint>> {
        self.app.start(subscriptions, target);
        vec![self.app.clone()]
    }

    async fn shutdown(&self, grace: Duration) -> u64 {
        self.app.drain(grace).await
    }
}

/// One entry of Dapr's bulk publish API, if that API can carry it exactly.
///
/// The API is JSON: an entry's `event` is a JSON value when its content type
/// is JSON, and a string otherwise. So JSON data must be valid JSON (daprd
/// re-encodes it, as it does any JSON payload) and other data must be UTF-8
/// text. Binary data has no exact spelling there (Dapr would pass on base64
/// text, not the bytes): `publish` carries it exactly, one message at a time.
fn bulk_entry(entry: &BulkEntry) -> Result<serde_json::Value, PublishError> {
    let message = &entry.message;
    let content_type = message
        .content_type
        .clone()
        .unwrap_or_else(|| super::cloudevent::DEFAULT_CONTENT_TYPE.into());
    let event: serde_json::Value = if super::cloudevent::essence(&content_type).contains("json") {
        serde_json::from_slice(&message.data).map_err(|e| {
            PublishError::InvalidMessage(format!(
                "entry {}: content type {content_type} but the data is not JSON ({e})",
                entry.entry_id
            ))
        })?
    } else {
        String::from_utf8(message.data.clone())
            .map_err(|_| {
                PublishError::InvalidMessage(format!(
                    "entry {}: Dapr's bulk publish API carries text and JSON only, and this {content_type} \
                     data is not UTF-8; publish it with `publish`, which carries bytes exactly",
                    entry.entry_id
                ))
            })?
            .into()
    };
    let metadata: serde_json::Map<String, serde_json::Value> = publish_query(message)
        .into_iter()
        .map(|(k, v)| (k.trim_start_matches("metadata.").to_owned(), v.into()))
        .collect();
    Ok(serde_json::json!({
        "entryId": entry.entry_id,
        "event": event,
        "contentType": content_type,
        "metadata": metadata,
    }))
}

/// State goes over gRPC, which carries bytes; see [`super::dapr_state`].
#[async_trait]
impl StateStore for DaprSidecar {
    async fn get(&self, store: &str, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        self.wait_ready().await.map_err(StateError::Unavailable)?;
        self.state.get(store, key).await
    }

    async fn save(&self, store: &str, key: &str, value: Vec<u8>) -> Result<(), StateError> {
        self.wait_ready().await.map_err(StateError::Unavailable)?;
        self.state.save(store, key, value).await
    }

    async fn delete(&self, store: &str, key: &str) -> Result<(), StateError> {
        self.wait_ready().await.map_err(StateError::Unavailable)?;
        self.state.delete(store, key).await
    }

    /// Dapr's state API reads, writes and queries keys it is given; it has
    /// no call that lists them. A key index kept by the host would be wrong
    /// as soon as a second replica or another app wrote to the store, so
    /// listing is refused instead of answered with a partial list.
    async fn keys(&self, store: &str) -> Result<Vec<String>, StateError> {
        Err(StateError::InvalidRequest(format!(
            "cannot list the keys of state store `{store}`: Dapr's state API has no call that lists keys"
        )))
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
    fn bulk_entries_are_exact_or_refused() {
        let entry = |data: &[u8], content_type: &str| BulkEntry {
            entry_id: "e".into(),
            message: message_from_query("", Some(content_type.into()), data.to_vec()).unwrap(),
        };
        let text = bulk_entry(&entry(b"caf\xc3\xa9", "text/plain")).unwrap();
        assert_eq!(text["event"], "caf\u{e9}");
        let json = bulk_entry(&entry(br#"{"a": [1, 2]}"#, "application/json")).unwrap();
        assert_eq!(json["event"], serde_json::json!({"a": [1, 2]}));
        for (data, content_type) in [
            (&[0xff, 0x00, 0x80][..], "application/octet-stream"),
            (b"not json", "application/json"),
        ] {
            let Err(PublishError::InvalidMessage(reason)) = bulk_entry(&entry(data, content_type))
            else {
                panic!("{content_type} {data:?} was not refused")
            };
            assert!(reason.contains("entry e"), "{reason}");
        }
    }
}
