//! CloudEvents as Dapr makes and reads them.
//!
//! [`from_message`] wraps a published message the way daprd does before it
//! hands it to a broker, and [`parse`] reads a structured CloudEvent (JSON)
//! back into a WIT [`Event`]. The invariant both keep: `Event::data` is the
//! payload's exact bytes. A JSON payload is carried as a JSON value and read
//! back as its original text, never re-serialized; a text payload is a JSON
//! string whose contents are the bytes; a binary payload is `data_base64`.

use crate::contract::{Event, Message, PublishError};
use base64::Engine as _;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// The CloudEvent `type` Dapr gives the events it wraps.
pub const DAPR_EVENT_TYPE: &str = "com.dapr.event.sent";
/// The content type of a structured CloudEvent.
pub const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";
/// The content type a message without one gets, as in Dapr.
pub const DEFAULT_CONTENT_TYPE: &str = "text/plain";

/// Wraps a published message into the event subscribers will receive.
///
/// `source` is the publishing app's id. A message whose content type is
/// `application/cloudevents+json` already is a CloudEvent: its attributes
/// are kept and only `topic` and `pubsubname` are filled in. The message's
/// CloudEvent overrides win over everything else.
pub fn from_message(
    source: &str,
    pubsubname: &str,
    topic: &str,
    message: Message,
) -> Result<Event, PublishError> {
    let content_type = message
        .content_type
        .clone()
        .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_owned());
    let meta = message.metadata;
    let mut event = if meta.raw_payload {
        raw(source, pubsubname, topic, message.data)
    } else if essence(&content_type) == CLOUDEVENTS_JSON {
        let mut event = parse(&message.data).map_err(PublishError::InvalidMessage)?;
        event.topic = topic.to_owned();
        event.pubsubname = pubsubname.to_owned();
        event
    } else {
        Event {
            id: uuid::Uuid::new_v4().to_string(),
            source: source.to_owned(),
            type_: DAPR_EVENT_TYPE.to_owned(),
            specversion: "1.0".to_owned(),
            topic: topic.to_owned(),
            pubsubname: pubsubname.to_owned(),
            datacontenttype: content_type,
            subject: None,
            time: Some(now()),
            traceparent: None,
            tracestate: None,
            metadata: Vec::new(),
            data: message.data,
        }
    };
    let o = meta.cloudevent;
    let set = |field: &mut String, value: Option<String>| {
        if let Some(value) = value {
            *field = value;
        }
    };
    set(&mut event.id, o.id);
    set(&mut event.source, o.source);
    set(&mut event.type_, o.type_);
    event.subject = o.subject.or(event.subject);
    event.traceparent = o.traceparent.or(event.traceparent);
    event.tracestate = o.tracestate.or(event.tracestate);
    event.metadata.extend(meta.extra);
    Ok(event)
}

/// Wraps raw bytes that came without an envelope, as daprd does for a
/// `rawPayload` subscription: a fresh id and `application/octet-stream`.
pub fn raw(source: &str, pubsubname: &str, topic: &str, data: Vec<u8>) -> Event {
    Event {
        id: uuid::Uuid::new_v4().to_string(),
        source: source.to_owned(),
        type_: DAPR_EVENT_TYPE.to_owned(),
        specversion: "1.0".to_owned(),
        topic: topic.to_owned(),
        pubsubname: pubsubname.to_owned(),
        datacontenttype: "application/octet-stream".to_owned(),
        subject: None,
        time: Some(now()),
        traceparent: None,
        tracestate: None,
        metadata: Vec::new(),
        data,
    }
}

/// Reads a structured CloudEvent. Attributes without a field of their own
/// go to `metadata`, as strings (non-string values as their JSON text),
/// ordered by name.
///
/// The body is read once: every attribute is borrowed from it as raw JSON
/// ([`Attributes`]) and only the ones the event keeps are copied out. This
/// runs on every delivery, so it allocates only what the [`Event`] owns.
pub fn parse(json: &[u8]) -> Result<Event, String> {
    let mut fields: Attributes = serde_json::from_slice(json)
        .map_err(|e| format!("the body is not a CloudEvent (a JSON object): {e}"))?;
    let text = |name: &str, raw: Option<&RawValue>| -> Result<Option<String>, String> {
        match raw {
            None => Ok(None),
            Some(raw) if raw.get() == "null" => Ok(None),
            Some(raw) => serde_json::from_str::<String>(raw.get())
                .map(Some)
                .map_err(|_| {
                    format!(
                        "CloudEvent attribute `{name}` must be a string, found {}",
                        raw.get()
                    )
                }),
        }
    };
    let id = text("id", fields.id)?.ok_or("the CloudEvent has no `id`")?;
    let source = text("source", fields.source)?.unwrap_or_default();
    let type_ = text("type", fields.type_)?.unwrap_or_else(|| DAPR_EVENT_TYPE.to_owned());
    let specversion = text("specversion", fields.specversion)?.unwrap_or_else(|| "1.0".to_owned());
    // 1.0 is the only CloudEvents version there is, and the one daprd sends.
    if specversion != "1.0" {
        return Err(format!(
            "CloudEvents specversion {specversion:?} is not supported (only \"1.0\")"
        ));
    }
    let topic = text("topic", fields.topic)?.unwrap_or_default();
    let pubsubname = text("pubsubname", fields.pubsubname)?.unwrap_or_default();
    let datacontenttype = text("datacontenttype", fields.datacontenttype)?;
    let subject = text("subject", fields.subject)?;
    let time = text("time", fields.time)?;
    let traceparent = text("traceparent", fields.traceparent)?;
    let tracestate = text("tracestate", fields.tracestate)?;
    let data_base64 = text("data_base64", fields.data_base64)?;
    let data = fields.data;
    let datacontenttype = datacontenttype.unwrap_or_else(|| {
        if data_base64.is_some() {
            "application/octet-stream".to_owned()
        } else if data.is_some_and(|d| !d.get().starts_with('"')) {
            "application/json".to_owned()
        } else {
            DEFAULT_CONTENT_TYPE.to_owned()
        }
    });
    let data = match (data_base64, data) {
        (Some(b64), _) => base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|e| format!("CloudEvent `data_base64` is not valid base64: {e}"))?,
        (None, None) => Vec::new(),
        (None, Some(raw)) if raw.get() == "null" => Vec::new(),
        (None, Some(raw)) if is_json(&datacontenttype) => raw.get().as_bytes().to_vec(),
        (None, Some(raw)) => match serde_json::from_str::<String>(raw.get()) {
            Ok(text) => text.into_bytes(),
            // A JSON value under a non-JSON content type: its text is the payload.
            Err(_) => raw.get().as_bytes().to_vec(),
        },
    };
    // By name, and the last of a repeated name, as a JSON object reads.
    fields.other.sort_by(|a, b| a.0.cmp(&b.0));
    let mut metadata: Vec<(String, String)> = Vec::with_capacity(fields.other.len());
    for (name, raw) in fields.other {
        let value =
            serde_json::from_str::<String>(raw.get()).unwrap_or_else(|_| raw.get().to_owned());
        match metadata.last_mut() {
            Some(last) if last.0 == name => last.1 = value,
            _ => metadata.push((name.into_owned(), value)),
        }
    }
    Ok(Event {
        id,
        source,
        type_,
        specversion,
        topic,
        pubsubname,
        datacontenttype,
        subject,
        time,
        traceparent,
        tracestate,
        metadata,
        data,
    })
}

/// A CloudEvent's attributes as raw JSON borrowed from the body: the ones
/// [`Event`] has a field for, and the rest in the order they came. A
/// repeated attribute keeps its last value.
#[derive(Default)]
struct Attributes<'a> {
    id: Option<&'a RawValue>,
    source: Option<&'a RawValue>,
    type_: Option<&'a RawValue>,
    specversion: Option<&'a RawValue>,
    topic: Option<&'a RawValue>,
    pubsubname: Option<&'a RawValue>,
    datacontenttype: Option<&'a RawValue>,
    subject: Option<&'a RawValue>,
    time: Option<&'a RawValue>,
    traceparent: Option<&'a RawValue>,
    tracestate: Option<&'a RawValue>,
    data_base64: Option<&'a RawValue>,
    data: Option<&'a RawValue>,
    other: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for Attributes<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = Attributes<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Self::Value, M::Error> {
                let mut a = Attributes::default();
                // A name with escapes in it cannot be borrowed; `Cow` copies only those.
                while let Some(name) = map.next_key::<CowStr<'de>>()? {
                    let value: &'de RawValue = map.next_value()?;
                    let slot = match name.0.as_ref() {
                        "id" => &mut a.id,
                        "source" => &mut a.source,
                        "type" => &mut a.type_,
                        "specversion" => &mut a.specversion,
                        "topic" => &mut a.topic,
                        "pubsubname" => &mut a.pubsubname,
                        "datacontenttype" => &mut a.datacontenttype,
                        "subject" => &mut a.subject,
                        "time" => &mut a.time,
                        "traceparent" => &mut a.traceparent,
                        "tracestate" => &mut a.tracestate,
                        "data_base64" => &mut a.data_base64,
                        "data" => &mut a.data,
                        _ => {
                            a.other.push((name.0, value));
                            continue;
                        }
                    };
                    *slot = Some(value);
                }
                Ok(a)
            }
        }
        deserializer.deserialize_map(Visit(std::marker::PhantomData))
    }
}

/// A JSON string borrowed when it has no escapes, copied when it has.
struct CowStr<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for CowStr<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = CowStr<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(s.to_owned())))
            }
        }
        deserializer.deserialize_str(Visit(std::marker::PhantomData))
    }
}

/// The media type without parameters, lowercased: `Application/JSON; charset=utf-8` → `application/json`.
pub fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Whether a content type says its payload is JSON (`application/json`, `…+json`).
pub fn is_json(content_type: &str) -> bool {
    let essence = essence(content_type);
    essence == "application/json" || (essence.ends_with("+json") && essence != CLOUDEVENTS_JSON)
}

/// The current time as an RFC 3339 timestamp, as CloudEvent `time` wants it.
fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(data: &[u8], content_type: Option<&str>) -> Message {
        Message::new(data.to_vec(), content_type.map(str::to_owned))
    }

    #[test]
    fn json_data_keeps_its_exact_text() {
        let ce = br#"{"id":"1","source":"s","type":"t","specversion":"1.0","datacontenttype":"application/json","data":{"b": 1,  "a":[1,2]}}"#;
        let event = parse(ce).unwrap();
        assert_eq!(event.data, br#"{"b": 1,  "a":[1,2]}"#);
        assert_eq!(event.datacontenttype, "application/json");
    }

    #[test]
    fn string_data_is_its_contents_and_base64_is_decoded() {
        let event =
            parse(br#"{"id":"1","datacontenttype":"text/plain","data":"h\u00e9llo\n"}"#).unwrap();
        assert_eq!(event.data, "héllo\n".as_bytes());
        let all: Vec<u8> = (0..=255).collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&all);
        let ce = format!(
            r#"{{"id":"1","datacontenttype":"application/octet-stream","data_base64":"{b64}"}}"#
        );
        assert_eq!(parse(ce.as_bytes()).unwrap().data, all);
    }

    #[test]
    fn other_attributes_become_metadata() {
        let event = parse(br#"{"id":"1","expiration":"2030-01-01T00:00:00Z","n":5,"traceparent":"00-abc-def-01"}"#).unwrap();
        assert_eq!(event.traceparent.as_deref(), Some("00-abc-def-01"));
        assert!(
            event
                .metadata
                .contains(&("expiration".into(), "2030-01-01T00:00:00Z".into()))
        );
        assert!(event.metadata.contains(&("n".into(), "5".into())));
        // By name; a repeated attribute keeps its last value, as a JSON
        // object reads; a name with escapes is unescaped.
        let event = parse(br#"{"x":"a","id":"1","x":"b","a\u0062":"c","id":"2"}"#).unwrap();
        assert_eq!(event.id, "2");
        assert_eq!(
            event.metadata,
            [("ab".into(), "c".into()), ("x".into(), "b".into())]
        );
    }

    #[test]
    fn rejects_what_is_not_a_cloudevent() {
        assert!(parse(b"[1]").unwrap_err().contains("JSON object"));
        assert!(parse(br#"{"source":"s"}"#).unwrap_err().contains("`id`"));
        assert!(
            parse(br#"{"id":5}"#)
                .unwrap_err()
                .contains("`id` must be a string")
        );
        assert!(
            parse(br#"{"id":"x","specversion":"2.0"}"#)
                .unwrap_err()
                .contains("specversion \"2.0\"")
        );
        // Deeply nested data is opaque bytes to the host, and is parsed
        // without recursion; nested where a string belongs, it is refused.
        let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let deep = format!(r#"{{"id":"x","data":{nested}}}"#);
        assert_eq!(parse(deep.as_bytes()).unwrap().data, nested.as_bytes());
        let deep = format!(r#"{{"id":"x","subject":{nested}}}"#);
        assert!(
            parse(deep.as_bytes())
                .unwrap_err()
                .contains("`subject` must be a string")
        );
        assert!(parse(b"{\"id\":\"\xff\"}").is_err());
    }

    #[test]
    fn wraps_messages_like_daprd() {
        let event = from_message("app", "pubsub", "orders", message(b"hi", None)).unwrap();
        assert_eq!(event.datacontenttype, "text/plain");
        assert_eq!(event.type_, DAPR_EVENT_TYPE);
        assert_eq!(event.source, "app");
        assert_eq!(
            (event.topic.as_str(), event.pubsubname.as_str()),
            ("orders", "pubsub")
        );
        assert_eq!(event.data, b"hi");

        let mut m = message(
            br#"{"id":"given","source":"elsewhere","data":"x","datacontenttype":"text/plain"}"#,
            Some(CLOUDEVENTS_JSON),
        );
        m.metadata.cloudevent.subject = Some("subj".into());
        let event = from_message("app", "pubsub", "orders", m).unwrap();
        assert_eq!(
            (event.id.as_str(), event.source.as_str()),
            ("given", "elsewhere")
        );
        assert_eq!(event.topic, "orders");
        assert_eq!(event.subject.as_deref(), Some("subj"));
        assert_eq!(event.data, b"x");

        let bad = message(b"not json", Some(CLOUDEVENTS_JSON));
        assert!(matches!(
            from_message("app", "p", "t", bad),
            Err(PublishError::InvalidMessage(_))
        ));

        let mut m = message(&[0, 255], Some("application/json"));
        m.metadata.raw_payload = true;
        let event = from_message("app", "p", "t", m).unwrap();
        assert_eq!(event.datacontenttype, "application/octet-stream");
        assert_eq!(event.data, [0, 255]);
    }
}
