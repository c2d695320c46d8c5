//! The order processor: subscribes to `orders`, computes each order's total
//! and saves the processed order to the state store.
//!
//! Its answers follow Dapr's contract: an order that can never be processed
//! (malformed JSON, a failed validation) is `drop`ped, so it reaches the
//! dead-letter topic instead of being retried forever; a failure that may
//! pass (the state store is unavailable) is `retry`.

wit_bindgen::generate!({ path: "../../wit", world: "subscriber-component" });

use exports::hostbridge::pubsub::subscriber::Guest;
use hostbridge::pubsub::state;
use hostbridge::pubsub::types::{Event, Status};
use orders::{Order, STATE_STORE, rfc3339, state_key};
use std::time::{SystemTime, UNIX_EPOCH};

struct OrderProcessor;

impl Guest for OrderProcessor {
    fn handle(event: Event) -> Status {
        let order = match Order::parse(&event.data) {
            Ok(order) => order,
            Err(err) => {
                eprintln!("order-processor: dropping event {}: {err}", event.id);
                return Status::Drop;
            }
        };
        // The wall clock is granted to this component in spin.toml.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let key = state_key(&order.order_id);
        let processed = order.process(&event.id, rfc3339(now.as_secs(), now.subsec_nanos()));
        let record = match serde_json::to_vec(&processed) {
            Ok(record) => record,
            Err(err) => {
                eprintln!("order-processor: cannot encode order {key}: {err}");
                return Status::Drop;
            }
        };
        match state::save(STATE_STORE, &key, &record) {
            Ok(()) => Status::Success,
            Err(err) => {
                eprintln!("order-processor: saving {key} failed, will retry: {err:?}");
                Status::Retry
            }
        }
    }
}

export!(OrderProcessor);
