//! A subscriber for host-bridge's own tests. Its behaviour is chosen by the
//! topic it is delivered on, so one component can play every part:
//!
//! | topic prefix | behaviour |
//! |---|---|
//! | `record` | saves what it received under `received-{id}` and `last-{topic}`, and succeeds |
//! | `bulk`   | answers RETRY on the first delivery of an event whose data is `retry-once`, else SUCCESS |
//! | `flaky`  | answers RETRY on the first two deliveries of an event, then SUCCESS |
//! | `trap`   | executes `unreachable` (a Wasm trap) |
//! | `panic`  | panics |
//! | `loop`   | spins forever, until the host's timeout stops it |
//! | `oom`    | allocates until memory runs out |
//! | `drop`   | answers DROP |
//! | `poison` | answers RETRY, always |
//! | `slow`   | sleeps half a second (it needs the clock grant), then records like `record` |
//! | `relay`  | publishes the data to `record-relayed` with id `relay-{id}`, touching no state; RETRY if that fails |
//! | `probe`  | saves what the sandbox lets it see under `probe-{id}` |
//! | `forward` | publishes the data to `record-forwarded` with id `fwd-{id}`, setting no trace context |
//! | `store`  | saves the data, byte for byte, under `stored-{id}`, reads it back, and saves `same` or `differs` under `readback-{id}` |
//! | `print`  | writes the data, byte for byte, to stderr (`print-stdout`: to stdout), and succeeds |
//!
//! Every delivery but `relay` first increments `attempts-{id}` in the state store, so a
//! test can count deliveries even of guests that then crash. The count is
//! the only way: each delivery runs in a fresh instance with no memory of
//! the last. It is a read-modify-write, so it counts deliveries that follow
//! each other (redeliveries), not concurrent ones (fan-out).

wit_bindgen::generate!({ path: "../../wit", world: "subscriber-component" });

use exports::hostbridge::pubsub::subscriber::Guest;
use hostbridge::pubsub::types::{CloudeventOverrides, Event, Message, MessageMetadata, Status};
use hostbridge::pubsub::{publisher, state};
use std::hint::black_box;

const STATE_STORE: &str = "statestore";

struct TestSubscriber;

impl Guest for TestSubscriber {
    fn handle(event: Event) -> Status {
        if event.topic.starts_with("relay") {
            return relay(&event);
        }
        let attempt = match count_attempt(&event.id) {
            Ok(attempt) => attempt,
            Err(status) => return status,
        };
        let topic = event.topic.as_str();
        if topic.starts_with("record") {
            record(&event)
        } else if topic.starts_with("slow") {
            std::thread::sleep(std::time::Duration::from_millis(500));
            record(&event)
        } else if topic.starts_with("poison") {
            Status::Retry
        } else if topic.starts_with("store") {
            store(&event)
        } else if topic.starts_with("bulk") {
            if event.data == b"retry-once" && attempt == 1 {
                Status::Retry
            } else {
                Status::Success
            }
        } else if topic.starts_with("flaky") {
            if attempt < 3 {
                Status::Retry
            } else {
                Status::Success
            }
        } else if topic.starts_with("trap") {
            core::arch::wasm32::unreachable()
        } else if topic.starts_with("panic") {
            panic!("test-subscriber: asked to panic on attempt {attempt}")
        } else if topic.starts_with("loop") {
            let mut n: u64 = 0;
            loop {
                n = black_box(n.wrapping_add(1));
            }
        } else if topic.starts_with("oom") {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                black_box(&hoard);
            }
        } else if topic.starts_with("forward") {
            forward(&event)
        } else if topic.starts_with("probe") {
            probe(&event)
        } else if topic.starts_with("drop") {
            Status::Drop
        } else if topic.starts_with("print") {
            print(&event)
        } else {
            eprintln!("test-subscriber: no behaviour for topic {topic}");
            Status::Drop
        }
    }
}

/// Increments and returns the delivery count of event `id`.
fn count_attempt(id: &str) -> Result<u32, Status> {
    let key = format!("attempts-{id}");
    let previous = match state::get(STATE_STORE, &key) {
        Ok(Some(bytes)) => String::from_utf8_lossy(&bytes).parse().unwrap_or(0),
        Ok(None) => 0,
        Err(_) => return Err(Status::Retry),
    };
    let attempt = previous + 1;
    state::save(STATE_STORE, &key, attempt.to_string().as_bytes()).map_err(|_| Status::Retry)?;
    Ok(attempt)
}

/// Publishes the data on, and nothing else: the publish is the only call
/// that can fail.
fn relay(event: &Event) -> Status {
    publish_on(event, "record-relayed", "relay")
}

/// Saves the data as the state value itself, then checks that the state
/// store gives back exactly those bytes.
fn store(event: &Event) -> Status {
    let key = format!("stored-{}", event.id);
    if state::save(STATE_STORE, &key, &event.data).is_err() {
        return Status::Retry;
    }
    let verdict: &[u8] = match state::get(STATE_STORE, &key) {
        Ok(Some(value)) if value == event.data => b"same",
        Ok(_) => b"differs",
        Err(_) => return Status::Retry,
    };
    match state::save(STATE_STORE, &format!("readback-{}", event.id), verdict) {
        Ok(()) => Status::Success,
        Err(_) => Status::Retry,
    }
}

/// Saves the event as received, its data hex-encoded so every byte survives.
fn record(event: &Event) -> Status {
    let hex: String = event.data.iter().map(|b| format!("{b:02x}")).collect();
    let record = serde_json::json!({
        "id": event.id,
        "topic": event.topic,
        "pubsubname": event.pubsubname,
        "source": event.source,
        "type": event.type_,
        "specversion": event.specversion,
        "datacontenttype": event.datacontenttype,
        "subject": event.subject,
        "time": event.time,
        "traceparent": event.traceparent,
        "metadata": event.metadata,
        "data_hex": hex,
    });
    let record = record.to_string();
    let saved = state::save(
        STATE_STORE,
        &format!("received-{}", event.id),
        record.as_bytes(),
    )
    .and_then(|()| {
        state::save(
            STATE_STORE,
            &format!("last-{}", event.topic),
            record.as_bytes(),
        )
    });
    match saved {
        Ok(()) => Status::Success,
        Err(_) => Status::Retry,
    }
}

/// Publishes the event's data on; the host is to attach the delivery's
/// trace context, since this guest sets none.
fn forward(event: &Event) -> Status {
    publish_on(event, "record-forwarded", "fwd")
}

/// Publishes the event's data to `topic` with id `{prefix}-{id}`: SUCCESS
/// once published, RETRY (with the error on stderr) if not.
fn publish_on(event: &Event, topic: &str, prefix: &str) -> Status {
    let message = Message {
        data: event.data.clone(),
        content_type: Some(event.datacontenttype.clone()),
        metadata: MessageMetadata {
            ttl_seconds: None,
            raw_payload: false,
            cloudevent: CloudeventOverrides {
                id: Some(format!("{prefix}-{}", event.id)),
                source: None,
                type_: None,
                subject: None,
                traceparent: None,
                tracestate: None,
            },
            extra: Vec::new(),
        },
    };
    match publisher::publish(&event.pubsubname, topic, &message) {
        Ok(()) => Status::Success,
        Err(e) => {
            eprintln!(
                "test-subscriber: publishing {} to {topic} failed: {e:?}",
                event.id
            );
            Status::Retry
        }
    }
}

/// Writes the data as it came, unchecked, so a test can see what the host
/// makes of a guest's output (`print-stdout`: to stdout, else stderr).
fn print(event: &Event) -> Status {
    use std::io::Write;
    let written = if event.topic.starts_with("print-stdout") {
        std::io::stdout().write_all(&event.data)
    } else {
        std::io::stderr().write_all(&event.data)
    };
    match written {
        Ok(()) => Status::Success,
        Err(_) => Status::Retry,
    }
}

/// Saves what the guest can observe of the world: its environment, the
/// files under `/` and `/data`, and the clocks. The sandbox tests compare it
/// with what the manifest granted.
fn probe(event: &Event) -> Status {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let list = |dir: &str| -> Option<Vec<String>> {
        std::fs::read_dir(dir).ok().map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let record = serde_json::json!({
        "env": env,
        "root": list("/"),
        "data": list("/data"),
        "hello": std::fs::read_to_string("/data/hello.txt").ok(),
        "write_denied": std::fs::write("/data/new.txt", b"x").is_err(),
        "wall_clock_secs": now,
    });
    match state::save(
        STATE_STORE,
        &format!("probe-{}", event.id),
        record.to_string().as_bytes(),
    ) {
        Ok(()) => Status::Success,
        Err(_) => Status::Retry,
    }
}

export!(TestSubscriber);
