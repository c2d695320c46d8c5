//! The payload of a structured CloudEvent, as Dapr delivers it to an app
//! that reads deliveries itself: `order-processor-http` and the benchmark's
//! native baseline, which must not read events differently.
//!
//! It reads only what the order processor uses: `id`, and the payload from
//! `data_base64`, `data` and `datacontenttype`. The rules for the payload's
//! bytes are host-bridge's (`host-bridge/src/broker/cloudevent.rs`): a JSON
//! payload is its original text, never re-serialized; a JSON string under a
//! non-JSON content type (or none) is the string's contents; a binary payload
//! is `data_base64`.

use base64::Engine as _;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// A structured CloudEvent, borrowing its `data` from the delivery's body.
#[derive(Deserialize)]
pub struct CloudEvent<'a> {
    pub id: String,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    data_base64: Option<String>,
    #[serde(default)]
    datacontenttype: Option<String>,
}

impl<'a> CloudEvent<'a> {
    /// Reads a structured CloudEvent (a JSON object with at least an `id`).
    pub fn parse(json: &'a [u8]) -> Result<Self, String> {
        serde_json::from_slice(json).map_err(|e| format!("the body is not a CloudEvent: {e}"))
    }

    /// The payload's exact bytes; empty when the event has no `data`.
    pub fn data(&self) -> Result<Cow<'a, [u8]>, String> {
        if let Some(b64) = &self.data_base64 {
            return base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map(Cow::Owned)
                .map_err(|e| format!("CloudEvent {}: `data_base64` is not base64: {e}", self.id));
        }
        let Some(raw) = self.data else {
            return Ok(Cow::Borrowed(&[]));
        };
        let text = raw.get();
        let is_json = self.datacontenttype.as_deref().is_some_and(is_json);
        if text.starts_with('"') && !is_json {
            serde_json::from_str::<String>(text)
                .map(|s| Cow::Owned(s.into_bytes()))
                .map_err(|e| format!("CloudEvent {}: `data` is not a string: {e}", self.id))
        } else {
            Ok(Cow::Borrowed(text.as_bytes()))
        }
    }
}

/// Whether a content type says its payload is JSON (`application/json`,
/// `…+json`), parameters and case aside.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn data(json: &str) -> Vec<u8> {
        CloudEvent::parse(json.as_bytes())
            .unwrap()
            .data()
            .unwrap()
            .into_owned()
    }

    #[test]
    fn json_data_is_its_original_text() {
        let event = r#"{"id":"e","datacontenttype":"application/json","data":{"b": 1,  "a":[2]}}"#;
        assert_eq!(data(event), br#"{"b": 1,  "a":[2]}"#);
        // A JSON string under a JSON content type is JSON text too.
        let event = r#"{"id":"e","datacontenttype":"application/json","data":"x"}"#;
        assert_eq!(data(event), br#""x""#);
    }

    #[test]
    fn text_and_binary_data_are_their_bytes() {
        let event = r#"{"id":"e","datacontenttype":"text/plain","data":"h\u00e9"}"#;
        assert_eq!(data(event), "hé".as_bytes());
        let event = r#"{"id":"e","data_base64":"AAEC/w=="}"#;
        assert_eq!(data(event), [0, 1, 2, 255]);
        assert!(data(r#"{"id":"e"}"#).is_empty());
    }

    #[test]
    fn what_is_not_a_cloudevent_is_an_error() {
        assert!(CloudEvent::parse(b"[1]").is_err());
        assert!(CloudEvent::parse(br#"{"data":{}}"#).is_err());
        let bad = CloudEvent::parse(br#"{"id":"e","data_base64":"!"}"#).unwrap();
        assert!(bad.data().is_err());
    }
}
