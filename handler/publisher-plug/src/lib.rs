//! The publisher plug: `hostbridge:pubsub`'s `publisher` and `state`
//! interfaces, implemented by calling the Dapr sidecar's HTTP API.
//!
//! Under host-bridge the host implements these imports. On another
//! `wasi:http` runtime (`wasmtime serve`, Spin) nothing does, so this
//! component is plugged into the guest with `wac plug` (`make compose`) and
//! the composition imports only WASI. The sidecar's address comes from the
//! environment (`DAPR_HTTP_ENDPOINT` or `DAPR_HTTP_PORT`, default
//! `127.0.0.1:3500`), as in Dapr's SDKs.
//!
//! What carries over from host-bridge, and what does not:
//! - `publish` is exact: the bytes, the content type and every option go out
//!   as host-bridge's Dapr backend sends them.
//! - `publish-bulk` carries JSON and UTF-8 text only: Dapr's bulk API is
//!   JSON. Other entries are refused one by one, each with the reason.
//! - `state` goes over daprd's HTTP state API, which stores JSON values, not
//!   bytes (host-bridge uses daprd's gRPC API instead, which a `wasi:http`
//!   component cannot speak). A value that is JSON is saved as that JSON,
//!   and daprd may re-encode it (key order, spacing); any other value is
//!   refused with `invalid-request` rather than changed.

mod sidecar;

wit_bindgen::generate!({ path: "../../wit", world: "publisher-plug" });

use exports::hostbridge::pubsub::{publisher, state};
use hostbridge::pubsub::types::{BulkEntry, FailedEntry, Message, PublishError, StateError};
use serde_json::value::RawValue;
use sidecar::Answer;
use wasip2::http::types::Method;

struct Plug;

impl publisher::Guest for Plug {
    fn publish(pubsubname: String, topic: String, message: Message) -> Result<(), PublishError> {
        let path = format!(
            "/v1.0/publish/{}/{}{}",
            encode(&pubsubname),
            encode(&topic),
            query(&publish_metadata(&message))
        );
        let answer = sidecar::send(
            Method::Post,
            &path,
            message.content_type.as_deref(),
            &message.data,
        )
        .map_err(PublishError::Unavailable)?;
        if is_success(answer.status) {
            Ok(())
        } else {
            Err(publish_error(&answer))
        }
    }

    fn publish_bulk(
        pubsubname: String,
        topic: String,
        entries: Vec<BulkEntry>,
    ) -> Result<(), Vec<FailedEntry>> {
        let mut failed = Vec::new();
        let mut body = Vec::new();
        let mut sent = Vec::new();
        for entry in entries {
            match bulk_entry(&entry) {
                Ok(value) => {
                    body.push(value);
                    sent.push(entry.entry_id);
                }
                Err(error) => failed.push(FailedEntry {
                    entry_id: entry.entry_id,
                    error,
                }),
            }
        }
        let fail_all = |ids: &[String], error: PublishError| {
            ids.iter()
                .map(|id| FailedEntry {
                    entry_id: id.clone(),
                    error: error.clone(),
                })
                .collect::<Vec<_>>()
        };
        if !body.is_empty() {
            let path = format!(
                "/v1.0-alpha1/publish/bulk/{}/{}",
                encode(&pubsubname),
                encode(&topic)
            );
            let sent_body = serde_json::Value::Array(body).to_string();
            let outcome = sidecar::send(
                Method::Post,
                &path,
                Some("application/json"),
                sent_body.as_bytes(),
            );
            match outcome {
                Err(reason) => failed.extend(fail_all(&sent, PublishError::Unavailable(reason))),
                Ok(answer) if is_success(answer.status) => {}
                Ok(answer) => failed.extend(
                    bulk_failures(&answer)
                        .unwrap_or_else(|| fail_all(&sent, publish_error(&answer))),
                ),
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed)
        }
    }
}

impl state::Guest for Plug {
    fn get(store: String, key: String) -> Result<Option<Vec<u8>>, StateError> {
        let path = format!("/v1.0/state/{}/{}", encode(&store), encode(&key));
        let answer =
            sidecar::send(Method::Get, &path, None, &[]).map_err(StateError::Unavailable)?;
        match answer.status {
            // daprd answers 204 for a key it does not have.
            204 => Ok(None),
            status if is_success(status) => Ok(Some(answer.body)),
            _ => Err(state_error(&answer)),
        }
    }

    fn save(store: String, key: String, value: Vec<u8>) -> Result<(), StateError> {
        // The value's own JSON text goes out unchanged; only daprd may re-encode it.
        let json: &RawValue = serde_json::from_slice(&value).map_err(|_| {
            StateError::InvalidRequest(format!(
                "the value for `{key}` is not JSON, and daprd's HTTP state API stores JSON values \
                 only; it was not saved (host-bridge's own Dapr backend stores any bytes)"
            ))
        })?;
        let body = format!(
            r#"[{{"key":{},"value":{}}}]"#,
            serde_json::Value::String(key),
            json.get()
        );
        let path = format!("/v1.0/state/{}", encode(&store));
        let answer = sidecar::send(
            Method::Post,
            &path,
            Some("application/json"),
            body.as_bytes(),
        )
        .map_err(StateError::Unavailable)?;
        if is_success(answer.status) {
            Ok(())
        } else {
            Err(state_error(&answer))
        }
    }

    fn delete(store: String, key: String) -> Result<(), StateError> {
        let path = format!("/v1.0/state/{}/{}", encode(&store), encode(&key));
        let answer =
            sidecar::send(Method::Delete, &path, None, &[]).map_err(StateError::Unavailable)?;
        if is_success(answer.status) {
            Ok(())
        } else {
            Err(state_error(&answer))
        }
    }
}

export!(Plug);

fn is_success(status: u16) -> bool {
    (200..300).contains(&status)
}

/// The metadata of a publish, as Dapr's publish API takes it (`metadata.NAME`).
fn publish_metadata(message: &Message) -> Vec<(String, String)> {
    let meta = &message.metadata;
    let mut pairs = Vec::new();
    if let Some(ttl) = meta.ttl_seconds {
        pairs.push(("ttlInSeconds".to_owned(), ttl.to_string()));
    }
    if meta.raw_payload {
        pairs.push(("rawPayload".to_owned(), "true".to_owned()));
    }
    let ce = &meta.cloudevent;
    let overrides = [
        ("id", &ce.id),
        ("source", &ce.source),
        ("type", &ce.type_),
        ("subject", &ce.subject),
        ("traceparent", &ce.traceparent),
        ("tracestate", &ce.tracestate),
    ];
    for (name, value) in overrides {
        if let Some(value) = value {
            pairs.push((format!("cloudevent.{name}"), value.clone()));
        }
    }
    pairs.extend(meta.extra.iter().cloned());
    pairs
}

fn query(metadata: &[(String, String)]) -> String {
    let pairs: Vec<String> = metadata
        .iter()
        .map(|(name, value)| format!("metadata.{}={}", encode(name), encode(value)))
        .collect();
    if pairs.is_empty() {
        String::new()
    } else {
        format!("?{}", pairs.join("&"))
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// One entry of Dapr's bulk publish body. JSON data goes as a JSON value,
/// other data as a string, so data that is neither JSON nor UTF-8 is refused.
fn bulk_entry(entry: &BulkEntry) -> Result<serde_json::Value, PublishError> {
    let message = &entry.message;
    let content_type = message.content_type.as_deref().unwrap_or("text/plain");
    let event = if content_type.to_ascii_lowercase().contains("json") {
        serde_json::from_slice(&message.data).map_err(|e| {
            PublishError::InvalidMessage(format!(
                "entry {}: content type {content_type} but the data is not JSON ({e})",
                entry.entry_id
            ))
        })?
    } else {
        let text = std::str::from_utf8(&message.data).map_err(|_| {
            PublishError::InvalidMessage(format!(
                "entry {}: Dapr's bulk publish API carries JSON and text only, and this \
                 {content_type} data is not UTF-8; publish it with `publish`",
                entry.entry_id
            ))
        })?;
        serde_json::Value::String(text.to_owned())
    };
    let metadata: serde_json::Map<String, serde_json::Value> = publish_metadata(message)
        .into_iter()
        .map(|(name, value)| (name, serde_json::Value::String(value)))
        .collect();
    Ok(serde_json::json!({
        "entryId": entry.entry_id,
        "event": event,
        "contentType": content_type,
        "metadata": metadata,
    }))
}

/// The `failedEntries` of a failed bulk publish, if daprd listed them.
fn bulk_failures(answer: &Answer) -> Option<Vec<FailedEntry>> {
    let body: serde_json::Value = serde_json::from_slice(&answer.body).ok()?;
    let failed = body["failedEntries"].as_array()?;
    let failed: Vec<FailedEntry> = failed
        .iter()
        .map(|f| FailedEntry {
            entry_id: f["entryId"].as_str().unwrap_or_default().to_owned(),
            error: PublishError::Broker(f["error"].as_str().unwrap_or("failed").to_owned()),
        })
        .collect();
    (!failed.is_empty()).then_some(failed)
}

/// daprd's reason: `{status}: {errorCode} {message}` from its JSON error body.
fn reason(answer: &Answer) -> String {
    let text = String::from_utf8_lossy(&answer.body);
    match serde_json::from_slice::<serde_json::Value>(&answer.body) {
        Ok(body) => format!(
            "{}: {} {}",
            answer.status,
            body["errorCode"].as_str().unwrap_or_default(),
            body["message"].as_str().unwrap_or(&text)
        ),
        Err(_) => format!("{}: {text}", answer.status),
    }
}

/// A failed publish as the WIT's error, by daprd's status and error code.
fn publish_error(answer: &Answer) -> PublishError {
    let text = String::from_utf8_lossy(&answer.body);
    let unknown = text.contains("ERR_PUBSUB_NOT_FOUND") || text.contains("not configured");
    let reason = reason(answer);
    match answer.status {
        400 | 500 if unknown => PublishError::UnknownPubsub(reason),
        400 => PublishError::InvalidMessage(reason),
        401 | 403 => PublishError::Forbidden(reason),
        404 => PublishError::UnknownPubsub(reason),
        503 => PublishError::Unavailable(reason),
        _ => PublishError::Broker(reason),
    }
}

/// A failed state call as the WIT's error.
fn state_error(answer: &Answer) -> StateError {
    let text = String::from_utf8_lossy(&answer.body);
    let reason = reason(answer);
    if text.contains("ERR_STATE_STORE_NOT_FOUND")
        || text.contains("ERR_STATE_STORES_NOT_CONFIGURED")
    {
        StateError::UnknownStore(reason)
    } else if answer.status == 400 {
        StateError::InvalidRequest(reason)
    } else {
        StateError::Unavailable(reason)
    }
}
