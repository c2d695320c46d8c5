//! The order processor as a plain `wasi:http` component, for benchmarks.
//!
//! `handler/order-processor` exports `hostbridge:pubsub/subscriber`, a world
//! only host-bridge provides. This component does the same work behind
//! `wasi:http` (spin-sdk's `http_service`), so wasmtime's reference runtime,
//! `wasmtime serve`, can run it too, and a benchmark can compare the two
//! runtimes doing the processor's work:
//!
//! - `POST` on any path, with a Dapr structured CloudEvent as the body: its
//!   payload is parsed as an [`Order`], processed with the time now and
//!   encoded as the record, exactly as `order-processor` does. The answer is
//!   Dapr's `{"status":"SUCCESS"}`.
//! - A body that is not a CloudEvent, or whose payload is not a valid order,
//!   gets `{"status":"DROP"}`, as `order-processor` answers it.
//!
//! What it leaves out: the save. `wasi:http` has no state store, so the work
//! ends where `order-processor` calls `state::save`, and the record is only
//! kept from being optimised away. A comparison against this component
//! therefore favours it by the cost of one save.

use orders::cloudevent::CloudEvent;
use orders::{Order, rfc3339};
use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{IntoResponse, Method, Request, StatusCode};
use std::time::{SystemTime, UNIX_EPOCH};

#[spin_sdk::http_service]
async fn handle(req: Request) -> impl IntoResponse {
    if req.method() != Method::POST {
        return json(
            StatusCode::METHOD_NOT_ALLOWED,
            r#"{"error":"POST a Dapr CloudEvent"}"#,
        );
    }
    let status = match req.into_body().bytes().await {
        Ok(body) => process(&body),
        // The upload broke on the way in; the same event may pass next time.
        Err(_) => "RETRY",
    };
    json(StatusCode::OK, &format!(r#"{{"status":"{status}"}}"#))
}

/// Does the order processor's work on one delivery and returns its Dapr status.
fn process(body: &[u8]) -> &'static str {
    let Ok(event) = CloudEvent::parse(body) else {
        return "DROP";
    };
    let Ok(order) = event
        .data()
        .and_then(|data| Order::parse(&data).map_err(|e| e.0))
    else {
        return "DROP";
    };
    // `wasmtime serve` gives every component the wall clock; under
    // host-bridge the component needs `clock = true`, as order-processor has.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let processed = order.process(&event.id, rfc3339(now.as_secs(), now.subsec_nanos()));
    match serde_json::to_vec(&processed) {
        // Where `order-processor` saves the record; `black_box` keeps the
        // encoding from being optimised away, so the work stays equal.
        Ok(record) => {
            std::hint::black_box(record);
            "SUCCESS"
        }
        Err(_) => "DROP",
    }
}

fn json(status: StatusCode, body: &str) -> http::Response<String> {
    let mut response = http::Response::new(body.to_owned());
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}
