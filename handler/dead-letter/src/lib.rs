//! The dead-letter recorder: subscribed to the processor's dead-letter topic,
//! it saves every event it receives to the state store under
//! `deadletter-{event id}`, so an operator (or a test) can see what was
//! dropped and why it never became an order.

wit_bindgen::generate!({ path: "../../wit", world: "subscriber-component" });

use exports::hostbridge::pubsub::subscriber::Guest;
use hostbridge::pubsub::state;
use hostbridge::pubsub::types::{Event, Status};

/// Where the records go; the same store the orders live in.
const STATE_STORE: &str = "statestore";

struct DeadLetter;

impl Guest for DeadLetter {
    fn handle(event: Event) -> Status {
        let record = serde_json::json!({
            "id": event.id,
            "topic": event.topic,
            "pubsubname": event.pubsubname,
            "datacontenttype": event.datacontenttype,
            // Dead letters are often not valid UTF-8 or JSON; keep them readable.
            "data": String::from_utf8_lossy(&event.data),
        });
        let key = format!("deadletter-{}", event.id);
        match state::save(STATE_STORE, &key, record.to_string().as_bytes()) {
            Ok(()) => {
                eprintln!("dead-letter: recorded {key}");
                Status::Success
            }
            Err(err) => {
                eprintln!("dead-letter: saving {key} failed, will retry: {err:?}");
                Status::Retry
            }
        }
    }
}

export!(DeadLetter);
