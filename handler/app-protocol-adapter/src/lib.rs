//! The app-protocol adapter: Dapr's app-side protocol as a `wasi:http`
//! handler, in front of an imported `hostbridge:pubsub/subscriber`.
//!
//! Composed with a subscriber (`make compose`), it makes one component that
//! any `wasi:http` runtime can serve next to daprd, the way host-bridge
//! serves it:
//! - `GET /dapr/subscribe` lists one subscription per topic in
//!   `SUBSCRIBE_TOPICS` (comma-separated, required), on the pub/sub component
//!   `SUBSCRIBE_PUBSUB` (default `pubsub`), routed to `/events/{topic}`, with
//!   `SUBSCRIBE_DEAD_LETTER_TOPIC` as the dead-letter topic when set;
//! - `POST /events/{topic}` reads the CloudEvent, calls `handle` once, and
//!   answers its status as Dapr reads it (`{"status": "SUCCESS"}`, `RETRY`
//!   or `DROP`). An event that cannot be read is `DROP`: it would not read
//!   better on a redelivery. A trap in the subscriber fails the request, so
//!   daprd redelivers the event;
//! - `GET /healthz` answers 200, for daprd's app health check.
//!
//! Bulk deliveries are not served: a bulk envelope is answered 500, so daprd
//! retries its entries instead of losing them, and the log says why.

mod cloudevent;

wit_bindgen::generate!({ path: "../../wit", world: "app-protocol-adapter" });

use hostbridge::pubsub::subscriber;
use hostbridge::pubsub::types::Status;
use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{IntoResponse, Method, Request, StatusCode};

/// Where deliveries of a topic arrive: `/events/{topic}`.
const EVENTS_PREFIX: &str = "/events/";

#[spin_sdk::http_service]
async fn handle(req: Request) -> impl IntoResponse {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header("content-type").unwrap_or_default();
    let trace = (header("traceparent"), header("tracestate"));
    match (method, path.as_str()) {
        (Method::GET, "/dapr/subscribe") => match subscriptions() {
            Ok(list) => json(StatusCode::OK, list.to_string()),
            Err(reason) => {
                eprintln!("app-protocol-adapter: {reason}");
                json(StatusCode::INTERNAL_SERVER_ERROR, error(&reason))
            }
        },
        (Method::GET, "/healthz") => json(StatusCode::OK, "{}".to_owned()),
        (Method::POST, p) if p.starts_with(EVENTS_PREFIX) => {
            let topic = p[EVENTS_PREFIX.len()..].to_owned();
            match req.into_body().bytes().await {
                Ok(body) => deliver(&topic, &content_type, &body, trace),
                // A body that broke off may arrive whole next time.
                Err(err) => json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    error(&format!("cannot read the delivery: {err:?}")),
                ),
            }
        }
        _ => json(StatusCode::NOT_FOUND, error("no such route")),
    }
}

/// Hands one delivery to the subscriber and answers its status.
fn deliver(
    topic: &str,
    content_type: &str,
    body: &[u8],
    (traceparent, tracestate): (Option<String>, Option<String>),
) -> http::Response<String> {
    if cloudevent::is_bulk(body) {
        let reason = "a bulk delivery arrived, and this adapter serves single deliveries \
                      only; turn bulkSubscribe off for this subscription";
        eprintln!("app-protocol-adapter: topic {topic}: {reason}");
        return json(StatusCode::INTERNAL_SERVER_ERROR, error(reason));
    }
    let status = match cloudevent::read(content_type, body) {
        Ok(mut event) => {
            if event.topic.is_empty() {
                event.topic = topic.to_owned();
            }
            if event.traceparent.is_none() {
                event.traceparent = traceparent;
            }
            if event.tracestate.is_none() {
                event.tracestate = tracestate;
            }
            subscriber::handle(&event)
        }
        Err(reason) => {
            eprintln!(
                "app-protocol-adapter: topic {topic}: undeliverable event, answering DROP: {reason}"
            );
            Status::Drop
        }
    };
    let status = match status {
        Status::Success => "SUCCESS",
        Status::Retry => "RETRY",
        Status::Drop => "DROP",
    };
    json(
        StatusCode::OK,
        serde_json::json!({ "status": status }).to_string(),
    )
}

/// The subscriptions the environment asks for, as `/dapr/subscribe` lists them.
fn subscriptions() -> Result<serde_json::Value, String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let topics = var("SUBSCRIBE_TOPICS").ok_or(
        "SUBSCRIBE_TOPICS is not set: give the topics to subscribe to, comma-separated \
         (for example `wasmtime serve --env SUBSCRIBE_TOPICS=orders ...`)",
    )?;
    let pubsubname = var("SUBSCRIBE_PUBSUB").unwrap_or_else(|| "pubsub".to_owned());
    let dead_letter = var("SUBSCRIBE_DEAD_LETTER_TOPIC");
    let mut list = Vec::new();
    for topic in topics.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        if !topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        {
            return Err(format!(
                "SUBSCRIBE_TOPICS: topic {topic:?} may hold only letters, digits and -._~, \
                 as it becomes the route /events/{{topic}}"
            ));
        }
        let mut subscription = serde_json::json!({
            "pubsubname": pubsubname,
            "topic": topic,
            "routes": { "default": format!("{EVENTS_PREFIX}{topic}") },
        });
        if let Some(dead_letter) = &dead_letter {
            subscription["deadLetterTopic"] = dead_letter.clone().into();
        }
        list.push(subscription);
    }
    Ok(serde_json::Value::Array(list))
}

fn error(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

fn json(status: StatusCode, body: String) -> http::Response<String> {
    let mut response = http::Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}
