//! Dapr's app-side protocol: what daprd calls on the app port.
//!
//! - `GET /dapr/subscribe` lists the subscriptions, generated from
//!   `[[trigger.pubsub]]`: `pubsubname`, `topic`, `route` (or `routes` with
//!   CEL `rules` and a `default` when triggers on one topic use `match`),
//!   `deadLetterTopic`, `metadata` (string values only, so daprd can decode
//!   it) and `bulkSubscribe`.
//! - `POST <route>` is one delivery: a structured CloudEvent. Its `data` is
//!   turned into exact bytes (see [`cloudevent::parse`]), the guest runs in a
//!   fresh instance, and the answer is always an explicit
//!   `{"status": "SUCCESS" | "RETRY" | "DROP"}`, because daprd treats an empty
//!   answer as success. A body that is not a CloudEvent can never be handled,
//!   so it is DROPped (and dead-lettered by daprd).
//! - `POST <route>` on a bulk subscription is a batch: every entry runs in
//!   its own instance, concurrently, and the reply lists every entry's status,
//!   so a RETRY redelivers only that entry.
//! - `404` is answered only for a path that is no subscription's route.
//!
//! Invariant: a delivery is answered only after its guest has answered (or
//! failed, which is RETRY); daprd acks on SUCCESS and DROP alone.

use super::cloudevent;
use super::{DeliveryTarget, InFlight, Metrics, Subscription};
use crate::contract::{Event, Status};
use crate::manifest::PubsubTrigger;
use crate::server::{self, Endpoint, Request, Response};
use async_trait::async_trait;
use base64::Engine as _;
use http::{HeaderMap, Method, StatusCode};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The app-side endpoint the Dapr backend mounts.
pub struct DaprAppProtocol {
    metrics: Arc<Metrics>,
    started: OnceLock<Started>,
    in_flight: InFlight,
}

struct Started {
    subscriptions: Vec<Subscription>,
    /// Delivery route → index into `subscriptions`.
    routes: BTreeMap<String, usize>,
    target: Arc<dyn DeliveryTarget>,
}

impl DaprAppProtocol {
    pub fn new(metrics: Arc<Metrics>) -> DaprAppProtocol {
        DaprAppProtocol {
            in_flight: InFlight::new(metrics.clone()),
            metrics,
            started: OnceLock::new(),
        }
    }

    pub fn start(&self, subscriptions: Vec<Subscription>, target: Arc<dyn DeliveryTarget>) {
        let routes = subscriptions
            .iter()
            .enumerate()
            .map(|(i, s)| (s.trigger.route.clone(), i))
            .collect();
        let _ = self.started.set(Started {
            subscriptions,
            routes,
            target,
        });
    }

    /// Waits, at most `grace`, for deliveries in flight; returns how many are left.
    pub async fn drain(&self, grace: Duration) -> u64 {
        self.in_flight.drain(grace).await
    }

    /// The `/dapr/subscribe` answer: one entry per pub/sub and topic. A
    /// topic whose triggers use `match` gets `routes` (the rules in manifest
    /// order, and the trigger without a rule as `default`); any other gets
    /// its trigger's `route`.
    pub fn subscribe_json(&self) -> Value {
        let Some(started) = self.started.get() else {
            return json!([]);
        };
        let mut topics: Vec<(&str, &str, Vec<&PubsubTrigger>)> = Vec::new();
        for s in &started.subscriptions {
            let t = &s.trigger;
            match topics
                .iter_mut()
                .find(|(p, topic, _)| *p == t.pubsubname && *topic == t.topic)
            {
                Some((_, _, group)) => group.push(t),
                None => topics.push((&t.pubsubname, &t.topic, vec![t])),
            }
        }
        let entries: Vec<Value> = topics
            .into_iter()
            .map(|(pubsubname, topic, group)| {
                let first = group[0];
                let mut entry = json!({
                    "pubsubname": pubsubname,
                    "topic": topic,
                    "metadata": first.metadata,
                });
                if group.iter().any(|t| t.rule.is_some()) {
                    let rules: Vec<Value> = group
                        .iter()
                        .filter_map(|t| {
                            t.rule
                                .as_ref()
                                .map(|rule| json!({ "match": rule, "path": t.route }))
                        })
                        .collect();
                    let mut routes = json!({ "rules": rules });
                    if let Some(default) = group.iter().find(|t| t.rule.is_none()) {
                        routes["default"] = default.route.clone().into();
                    }
                    entry["routes"] = routes;
                } else {
                    entry["route"] = first.route.clone().into();
                }
                if let Some(dlt) = &first.dead_letter_topic {
                    entry["deadLetterTopic"] = dlt.clone().into();
                }
                if let Some(bulk) = &first.bulk_subscribe {
                    entry["bulkSubscribe"] = json!({
                        "enabled": true,
                        "maxMessagesCount": bulk.max_messages_count,
                        "maxAwaitDurationMs": bulk.max_await_duration_ms,
                    });
                }
                entry
            })
            .collect();
        Value::Array(entries)
    }

    /// Runs one delivered event, or answers DROP for one that could not be
    /// read: it would never read better on a redelivery. `alone` is a
    /// delivery of one event, whose request's `traceparent` is daprd's span
    /// of this very delivery: the delivery continues it rather than the
    /// CloudEvent's own (daprd's publish, one hop earlier in the same
    /// trace). A bulk delivery's entries keep their own.
    async fn deliver_event(
        &self,
        started: &Started,
        index: usize,
        event: Result<Event, String>,
        headers: &HeaderMap,
        alone: bool,
    ) -> Status {
        let t = &started.subscriptions[index].trigger;
        match event {
            Ok(mut event) => {
                if alone && headers.contains_key("traceparent") {
                    let delivery = crate::telemetry::TraceContext::from_headers(headers);
                    event.traceparent = delivery.traceparent;
                    event.tracestate = delivery.tracestate;
                }
                fill_from_headers(&mut event, &t.pubsubname, &t.topic, headers);
                started.target.deliver(index, event).await
            }
            Err(e) => {
                let content_type = headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("none");
                tracing::warn!(topic = %t.topic, %content_type, "undeliverable event, answering DROP: {e}");
                Status::Drop
            }
        }
    }

    /// Runs every entry of a bulk delivery, each in its own instance, and
    /// answers every entry's status.
    async fn deliver_bulk(
        &self,
        started: &Started,
        index: usize,
        entries: Vec<(String, Result<Event, String>)>,
        headers: &HeaderMap,
    ) -> Response {
        Metrics::inc(&self.metrics.bulk_batches);
        let t = &started.subscriptions[index].trigger;
        let deliveries = entries.into_iter().map(|(entry_id, event)| async {
            let status = self
                .deliver_event(started, index, event, headers, false)
                .await;
            (entry_id, status)
        });
        let results = futures::future::join_all(deliveries).await;
        // One status per entryId. daprd's ids are unique; should an id come
        // twice, its status is the one that loses nothing: RETRY if any copy
        // asked for it, else DROP if any, else SUCCESS.
        let mut statuses: Vec<(String, Status)> = Vec::with_capacity(results.len());
        for (entry_id, status) in results {
            match statuses.iter_mut().find(|(id, _)| *id == entry_id) {
                Some((_, kept)) => {
                    tracing::warn!(topic = %t.topic, %entry_id, "a bulk delivery repeats an entryId; answering it once");
                    if status == Status::Retry
                        || (status == Status::Drop && *kept == Status::Success)
                    {
                        *kept = status;
                    }
                }
                None => statuses.push((entry_id, status)),
            }
        }
        let statuses: Vec<Value> = statuses
            .into_iter()
            .map(|(id, status)| json!({ "entryId": id, "status": status.as_str() }))
            .collect();
        server::json(StatusCode::OK, &json!({ "statuses": statuses }))
    }
}

/// The entries of a bulk delivery for `pubsubname/topic`, each with its
/// event or the reason it has none; `None` if `body` is not a bulk
/// envelope. A rawPayload entry's `event` is its payload, base64-encoded.
pub fn bulk_entries(
    body: &[u8],
    pubsubname: &str,
    topic: &str,
) -> Option<Vec<(String, Result<Event, String>)>> {
    let bulk: Bulk = serde_json::from_slice(body).ok()?;
    let entries = bulk.entries.into_iter().map(|entry| {
        let event = match serde_json::from_str::<String>(entry.event.get()) {
            Ok(b64) => base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map(|bytes| {
                    let mut event = cloudevent::raw("", pubsubname, topic, bytes);
                    event.id = entry.entry_id.clone();
                    if let Some(ct) = &entry.content_type {
                        event.datacontenttype = ct.clone();
                    }
                    event
                })
                .map_err(|e| format!("raw entry {} is not base64: {e}", entry.entry_id)),
            Err(_) => cloudevent::parse(entry.event.get().as_bytes()),
        };
        (entry.entry_id, event)
    });
    Some(entries.collect())
}

/// A bulk delivery, as far as host-bridge reads it.
#[derive(serde::Deserialize)]
struct Bulk {
    entries: Vec<BulkEntry>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct BulkEntry {
    entry_id: String,
    event: Box<RawValue>,
    #[serde(default)]
    content_type: Option<String>,
}

/// Fills what the CloudEvent left out from the delivery's headers and subscription.
fn fill_from_headers(event: &mut Event, pubsubname: &str, topic: &str, headers: &HeaderMap) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if event.traceparent.is_none() {
        event.traceparent = header("traceparent");
    }
    if event.tracestate.is_none() {
        event.tracestate = header("tracestate");
    }
    if event.topic.is_empty() {
        event.topic = topic.to_owned();
    }
    if event.pubsubname.is_empty() {
        event.pubsubname = pubsubname.to_owned();
    }
}

/// The answer to one delivery: `{"status":"…"}`, from a constant, since
/// every delivery sends one.
fn status_answer(status: Status) -> Response {
    let body: &'static str = match status {
        Status::Success => r#"{"status":"SUCCESS"}"#,
        Status::Retry => r#"{"status":"RETRY"}"#,
        Status::Drop => r#"{"status":"DROP"}"#,
    };
    server::full(StatusCode::OK, "application/json", body)
}

#[async_trait]
impl Endpoint for DaprAppProtocol {
    fn serves(&self, method: &Method, path: &str) -> bool {
        (method == Method::GET && path == "/dapr/subscribe")
            || (method == Method::POST
                && self
                    .started
                    .get()
                    .is_some_and(|s| s.routes.contains_key(path)))
            || path.starts_with("/dapr/")
    }

    async fn serve(&self, request: Request) -> Response {
        let path = request.uri().path().to_owned();
        if path == "/dapr/subscribe" {
            return server::json(StatusCode::OK, &self.subscribe_json());
        }
        let Some(started) = self.started.get() else {
            return server::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ERR_NOT_READY",
                "subscriptions are not started yet",
            );
        };
        let Some(&index) = started.routes.get(&path) else {
            return server::error(
                StatusCode::NOT_FOUND,
                "ERR_NOT_FOUND",
                format!("no subscription has route {path}"),
            );
        };
        let (parts, body) = match server::read_body(request).await {
            Ok(read) => read,
            // A message this app can never read: DROP, so daprd sends it to
            // the dead-letter topic (a 413 would only be retried, and then
            // acked and lost once daprd's retries are over).
            Err(e @ server::BodyError::TooLarge { .. }) => {
                tracing::warn!(%path, "dropping a delivery: {e}");
                return server::unread_body(status_answer(Status::Drop));
            }
            // A broken upload: daprd redelivers on any non-2xx answer.
            Err(e) => return e.response(),
        };
        let headers = parts.headers;
        let _in_flight = self.in_flight.scope();
        // A bulk subscription's body is a batch, unless daprd sent a single
        // event (it may, for a redelivery); the body is parsed once either way.
        let trigger = &started.subscriptions[index].trigger;
        let bulk = trigger
            .bulk_subscribe
            .and_then(|_| bulk_entries(&body, &trigger.pubsubname, &trigger.topic));
        match bulk {
            Some(entries) => self.deliver_bulk(started, index, entries, &headers).await,
            None => {
                let event = cloudevent::parse(&body);
                let status = self
                    .deliver_event(started, index, event, &headers, true)
                    .await;
                status_answer(status)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn status_strings_are_daprs() {
        assert_eq!(Status::Success.as_str(), "SUCCESS");
        assert_eq!(Status::Retry.as_str(), "RETRY");
        assert_eq!(Status::Drop.as_str(), "DROP");
    }

    #[test]
    fn a_delivery_answer_is_its_status_as_json() {
        for status in [Status::Success, Status::Retry, Status::Drop] {
            let response = status_answer(status);
            let body = futures::executor::block_on(response.into_body().collect())
                .unwrap()
                .to_bytes();
            let json: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(json, json!({ "status": status.as_str() }));
        }
    }
}
