//! Reading a delivered CloudEvent into the WIT `event`, by the rules
//! host-bridge follows: `data` is the payload's exact bytes (a JSON payload
//! its JSON text, a string its contents, `data_base64` decoded), and every
//! attribute without a field of its own goes to `metadata` as a string.

use crate::hostbridge::pubsub::types::Event;
use base64::Engine as _;
use serde_json::value::RawValue;
use std::collections::BTreeMap;

/// Whether `body` is a bulk delivery envelope rather than one event.
pub fn is_bulk(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Envelope {
        #[serde(rename = "type")]
        type_: Option<String>,
    }
    serde_json::from_slice::<Envelope>(body)
        .is_ok_and(|e| e.type_.as_deref() == Some("com.dapr.event.sent.bulk"))
}

/// Reads a structured CloudEvent, as daprd delivers every event
/// (`application/cloudevents+json`, or `application/json`).
pub fn read(content_type: &str, body: &[u8]) -> Result<Event, String> {
    let mut fields: BTreeMap<String, Box<RawValue>> = serde_json::from_slice(body)
        .map_err(|e| format!("the {content_type} body is not a CloudEvent (a JSON object): {e}"))?;
    let mut take = |name: &str| -> Result<Option<String>, String> {
        match fields.remove(name) {
            None => Ok(None),
            Some(raw) if raw.get() == "null" => Ok(None),
            Some(raw) => serde_json::from_str::<String>(raw.get())
                .map(Some)
                .map_err(|_| format!("attribute `{name}` is not a string: {}", raw.get())),
        }
    };
    let id = take("id")?.ok_or("the CloudEvent has no `id`")?;
    let specversion = take("specversion")?.unwrap_or_else(|| "1.0".to_owned());
    if specversion != "1.0" {
        return Err(format!("CloudEvents {specversion:?} is not 1.0"));
    }
    let mut event = Event {
        id,
        source: take("source")?.unwrap_or_default(),
        type_: take("type")?.unwrap_or_else(|| "com.dapr.event.sent".to_owned()),
        specversion,
        topic: take("topic")?.unwrap_or_default(),
        pubsubname: take("pubsubname")?.unwrap_or_default(),
        datacontenttype: String::new(),
        subject: take("subject")?,
        time: take("time")?,
        traceparent: take("traceparent")?,
        tracestate: take("tracestate")?,
        metadata: Vec::new(),
        data: Vec::new(),
    };
    let declared = take("datacontenttype")?;
    let base64 = take("data_base64")?;
    let data = fields.remove("data").filter(|raw| raw.get() != "null");
    event.datacontenttype = declared.unwrap_or_else(|| {
        match (&base64, &data) {
            (Some(_), _) => "application/octet-stream",
            (None, Some(raw)) if !raw.get().starts_with('"') => "application/json",
            _ => "text/plain",
        }
        .to_owned()
    });
    event.data = match (base64, data) {
        (Some(text), _) => base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(|e| format!("`data_base64` is not base64: {e}"))?,
        (None, None) => Vec::new(),
        (None, Some(raw)) if is_json(&event.datacontenttype) => raw.get().as_bytes().to_vec(),
        (None, Some(raw)) => serde_json::from_str::<String>(raw.get())
            .map(String::into_bytes)
            // JSON that is not a string, under a content type that is not JSON: its text.
            .unwrap_or_else(|_| raw.get().as_bytes().to_vec()),
    };
    event.metadata = fields
        .into_iter()
        .map(|(name, raw)| {
            let value =
                serde_json::from_str::<String>(raw.get()).unwrap_or_else(|_| raw.get().to_owned());
            (name, value)
        })
        .collect();
    Ok(event)
}

/// `application/json` and `…+json` (but not a CloudEvent envelope's own type).
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.ends_with("+json") && essence != "application/cloudevents+json")
}
