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
//!
//! For the tests of `instance_reuse` (`host-bridge/tests/http_reuse.rs`),
//! every request is first counted in a static, which lives as long as the
//! instance does, and:
//!
//! - `GET /probe/count` answers the count: 1 on a fresh instance, one more
//!   on each request an instance kept from earlier requests takes;
//! - `GET /probe/empty` answers `204 No Content`, with the count in the
//!   `probe-count` header;
//! - `GET /probe/trap` traps (a panic);
//! - `GET /probe/error` answers an `internal-error` error code instead of a
//!   response;
//! - `GET /probe/broken-body` answers 200 and a body that fails half way.
//!
//! `examples/p2.rs` is the same counting routes as a
//! `wasi:http/incoming-handler@0.2` component.

use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::wasip3::http::types::{ErrorCode, Response};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Requests this instance has taken.
static COUNT: AtomicU32 = AtomicU32::new(0);

/// A body that yields one chunk, then fails.
struct BrokenBody {
    sent: bool,
}

#[derive(Debug)]
struct Broken;

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the body broke half way, on purpose")
    }
}

impl std::error::Error for Broken {}

impl http_body::Body for BrokenBody {
    type Data = &'static [u8];
    type Error = Broken;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<&'static [u8]>, Broken>>> {
        if self.sent {
            Poll::Ready(Some(Err(Broken)))
        } else {
            self.sent = true;
            Poll::Ready(Some(Ok(http_body::Frame::data(b"half a body\n"))))
        }
    }
}

#[spin_sdk::http_service]
async fn handle(request: Request) -> Result<Response, ErrorCode> {
    let count = COUNT.fetch_add(1, Ordering::Relaxed) + 1;
    let uri = request.uri().clone();
    let body = match uri.path() {
        "/probe/count" => format!("{count}\n"),
        "/probe/empty" => {
            return http::Response::builder()
                .status(http::StatusCode::NO_CONTENT)
                .header("probe-count", count)
                .body(String::new())
                .map_err(|e| ErrorCode::InternalError(Some(e.to_string())))?
                .into_response();
        }
        "/probe/trap" => panic!("trapping on purpose, on request {count} of this instance"),
        "/probe/error" => return Err(ErrorCode::InternalError(Some("on purpose".into()))),
        "/probe/broken-body" => {
            return http::Response::new(BrokenBody { sent: false }).into_response();
        }
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
        .map_err(|e| ErrorCode::InternalError(Some(e.to_string())))?
        .into_response()
}
