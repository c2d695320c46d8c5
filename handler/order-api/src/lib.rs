//! The orders Web API, an HTTP component written with `spin-sdk`.
//!
//! - `POST /orders` validates the order, publishes it to topic `orders` on
//!   pub/sub `pubsub` and answers `202 Accepted` with the order id. An
//!   invalid body gets `400` with the reason, and nothing is published.
//! - `GET /orders/{id}` answers the processed order from the state store, or
//!   `404` while the order is unknown (not yet processed, or never placed).
//!
//! Publishing and state come from host-bridge's WIT imports
//! (`hostbridge:pubsub/publisher` and `state`); the HTTP export is spin-sdk's
//! `wasi:http/handler@0.3.0`.

wit_bindgen::generate!({ path: "../../wit", world: "http-component" });

use hostbridge::pubsub::types::{CloudeventOverrides, Message, MessageMetadata, PublishError};
use hostbridge::pubsub::{publisher, state};
use orders::{Order, PUBSUB_NAME, STATE_STORE, TOPIC, is_valid_id, state_key};
use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{IntoResponse, Method, Request, StatusCode};

#[spin_sdk::http_service]
async fn handle(req: Request) -> impl IntoResponse {
    let path = req.uri().path().trim_end_matches('/').to_owned();
    let method = req.method().clone();
    match (method, path.strip_prefix("/orders")) {
        (Method::POST, Some("")) => match req.into_body().bytes().await {
            Ok(body) => place_order(&body),
            Err(err) => json(
                StatusCode::BAD_REQUEST,
                error(&format!("cannot read the body: {err:?}")),
            ),
        },
        (Method::GET, Some(rest)) if rest.starts_with('/') => get_order(&rest[1..]),
        (_, Some(rest)) if rest.is_empty() || rest.starts_with('/') => json(
            StatusCode::METHOD_NOT_ALLOWED,
            error("use POST /orders or GET /orders/{id}"),
        ),
        _ => json(StatusCode::NOT_FOUND, error("no such route")),
    }
}

/// Validates and publishes an order. The published bytes are the body as
/// the client sent it, so subscribers see exactly what was accepted.
fn place_order(body: &[u8]) -> http::Response<String> {
    let order = match Order::parse(body) {
        Ok(order) => order,
        Err(err) => return json(StatusCode::BAD_REQUEST, error(&err.0)),
    };
    let message = Message {
        data: body.to_vec(),
        content_type: Some("application/json".into()),
        metadata: MessageMetadata {
            ttl_seconds: None,
            raw_payload: false,
            cloudevent: CloudeventOverrides {
                id: None,
                source: None,
                type_: None,
                subject: Some(order.order_id.clone()),
                traceparent: None,
                tracestate: None,
            },
            extra: Vec::new(),
        },
    };
    match publisher::publish(PUBSUB_NAME, TOPIC, &message) {
        Ok(()) => json(
            StatusCode::ACCEPTED,
            serde_json::json!({ "orderId": order.order_id, "status": "accepted" }).to_string(),
        ),
        Err(err) => {
            let (status, reason) = match err {
                PublishError::Unavailable(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason),
                PublishError::UnknownPubsub(reason)
                | PublishError::InvalidMessage(reason)
                | PublishError::Forbidden(reason)
                | PublishError::Broker(reason) => (StatusCode::INTERNAL_SERVER_ERROR, reason),
            };
            json(
                status,
                error(&format!("the order was not published: {reason}")),
            )
        }
    }
}

/// Answers the processed order with id `id` from the state store.
fn get_order(id: &str) -> http::Response<String> {
    if !is_valid_id(id) {
        return json(StatusCode::NOT_FOUND, error(&format!("no order {id:?}")));
    }
    match state::get(STATE_STORE, &state_key(id)) {
        Ok(Some(record)) => json(
            StatusCode::OK,
            String::from_utf8_lossy(&record).into_owned(),
        ),
        Ok(None) => json(
            StatusCode::NOT_FOUND,
            error(&format!("no processed order {id:?} yet")),
        ),
        Err(err) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            error(&format!("the state store failed: {err:?}")),
        ),
    }
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
