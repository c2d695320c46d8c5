//! Dapr's routing rules (`match` in `[[trigger.pubsub]]`), for the embedded
//! broker. Under Dapr, daprd evaluates the same rules itself.
//!
//! A rule is a CEL expression over `event`, with the CloudEvent's attributes
//! as fields (`event.type`, `event.source`, `event.subject`, …) and `data` as
//! the payload: a JSON value when the content type is JSON, else a string.
//! A rule that fails to evaluate, or yields anything but `true`, does not match.

use crate::contract::Event;
use cel_interpreter::{Context, Program};
use serde_json::{Value, json};

/// A compiled rule.
pub struct Rule {
    source: String,
    program: Program,
}

impl Rule {
    /// Compiles a rule; the manifest has already checked that it compiles.
    pub fn compile(source: &str) -> Result<Rule, String> {
        crate::manifest::compile_cel(source).map(|program| Rule {
            source: source.to_owned(),
            program,
        })
    }

    /// Whether the rule holds for `event`.
    pub fn matches(&self, event: &Event) -> bool {
        let data = if super::cloudevent::is_json(&event.datacontenttype) {
            serde_json::from_slice(&event.data).unwrap_or(Value::Null)
        } else {
            Value::String(String::from_utf8_lossy(&event.data).into_owned())
        };
        let attributes = json!({
            "id": event.id,
            "source": event.source,
            "type": event.type_,
            "specversion": event.specversion,
            "topic": event.topic,
            "pubsubname": event.pubsubname,
            "datacontenttype": event.datacontenttype,
            "subject": event.subject,
            "time": event.time,
            "data": data,
        });
        let Ok(value) = cel_interpreter::to_value(attributes) else {
            return false;
        };
        let mut context = Context::default();
        context.add_variable_from_value("event", value);
        match self.program.execute(&context) {
            Ok(cel_interpreter::Value::Bool(true)) => true,
            Ok(_) => false,
            Err(e) => {
                tracing::debug!(rule = %self.source, id = %event.id, "routing rule did not evaluate: {e}");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(type_: &str, content_type: &str, data: &[u8]) -> Event {
        let mut event = super::super::cloudevent::raw("app", "pubsub", "t", data.to_vec());
        event.type_ = type_.into();
        event.datacontenttype = content_type.into();
        event
    }

    #[test]
    fn rules_see_attributes_and_json_data() {
        let by_type = Rule::compile(r#"event.type == "widget""#).unwrap();
        assert!(by_type.matches(&event("widget", "text/plain", b"")));
        assert!(!by_type.matches(&event("gadget", "text/plain", b"")));
        let by_data = Rule::compile("event.data.qty > 2").unwrap();
        assert!(by_data.matches(&event("t", "application/json", br#"{"qty":3}"#)));
        assert!(!by_data.matches(&event("t", "application/json", br#"{"qty":1}"#)));
        // Not JSON: `data` is a string, and the rule errs, so it does not match.
        assert!(!by_data.matches(&event("t", "text/plain", b"qty 3")));
        assert!(Rule::compile("event.type ==").is_err());
    }
}
