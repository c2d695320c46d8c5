//! A test-only Spin HTTP component (`spin-sdk` 7) for the tests of the
//! host's edges (`host-bridge/tests/security/listeners.rs`).
//!
//! - `GET /probe/url` answers the URL the guest was handed and the
//!   `spin-full-url` header, one per line: so a test can see whether a
//!   forged `Host` header reaches a guest.
//! - `GET /probe/slow?ms=N` answers `done` after N milliseconds of work
//!   (a loop on the monotonic clock: it needs the clock grant).
//! - `POST /probe/length` answers the number of bytes of the body once it
//!   has all arrived: a request that stays in flight, waiting on the host,
//!   for as long as its client takes to send it.

use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{IntoResponse, Request};
use std::time::{Duration, Instant};

#[spin_sdk::http_service]
async fn handle(request: Request) -> impl IntoResponse {
    let uri = request.uri().clone();
    let body = match uri.path() {
        "/probe/url" => {
            let full_url = request
                .headers()
                .get("spin-full-url")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            format!("{uri}\n{full_url}\n")
        }
        "/probe/slow" => {
            let ms = uri
                .query()
                .and_then(|q| q.strip_prefix("ms="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(1000);
            let until = Instant::now() + Duration::from_millis(ms);
            while Instant::now() < until {
                std::hint::spin_loop();
            }
            "done\n".to_owned()
        }
        "/probe/length" => match request.into_body().bytes().await {
            Ok(body) => format!("{}\n", body.len()),
            Err(e) => format!("cannot read the body: {e:?}\n"),
        },
        other => format!("no probe at {other}\n"),
    };
    http::Response::builder()
        .status(http::StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "text/plain")
        .body(body)
}
