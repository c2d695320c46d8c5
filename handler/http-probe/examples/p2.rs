//! The counting routes of the probe (see `src/lib.rs`) as a
//! `wasi:http/incoming-handler@0.2` component, the handler generation
//! componentize-js and componentize-py export, for the tests of
//! `instance_reuse` on it (`host-bridge/tests/http_reuse.rs`). Built with
//! `cargo build --release --target wasm32-wasip2 -p http-probe --example p2`.
//!
//! Each request is first counted in a static, which lives as long as the
//! instance does:
//!
//! - `GET /probe/count` answers the count, with a `content-length` (as
//!   componentize-js does);
//! - `GET /probe/empty` answers `204 No Content`, with the count in the
//!   `probe-count` header;
//! - `GET /probe/trap` traps (a panic);
//! - `GET /probe/error` sets an `internal-error` error code as its answer;
//! - `GET /probe/no-answer` returns without answering;
//! - `GET /probe/broken-body` answers 200, writes half a body and drops
//!   it unfinished.

use std::io::Write as _;
use std::sync::atomic::{AtomicU32, Ordering};
use wasip2::http::types::{
    ErrorCode, Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(Probe);

/// Requests this instance has taken.
static COUNT: AtomicU32 = AtomicU32::new(0);

struct Probe;

impl wasip2::exports::http::incoming_handler::Guest for Probe {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let count = COUNT.fetch_add(1, Ordering::Relaxed) + 1;
        let path = request.path_with_query().unwrap_or_default();
        let path = path.split('?').next().unwrap_or_default();
        match path {
            "/probe/trap" => panic!("trapping on purpose, on request {count} of this instance"),
            "/probe/error" => ResponseOutparam::set(
                response_out,
                Err(ErrorCode::InternalError(Some("on purpose".into()))),
            ),
            "/probe/no-answer" => {}
            "/probe/broken-body" => {
                let body = answer(response_out, 200, &[]);
                let mut out = body.write().expect("the body's stream");
                out.write_all(b"half a body\n").expect("writing the body");
                out.flush().expect("flushing the body");
                drop(out);
                // Dropped unfinished: the host sees the body fail.
                drop(body);
            }
            "/probe/count" => text(response_out, &format!("{count}\n")),
            "/probe/empty" => {
                let body = answer(response_out, 204, &[("probe-count", count.to_string())]);
                OutgoingBody::finish(body, None).expect("finishing the body");
            }
            other => text(response_out, &format!("no probe at {other}\n")),
        }
    }
}

/// Answers 200 with `text`, its length declared and its body finished.
fn text(response_out: ResponseOutparam, text: &str) {
    let length = text.len().to_string();
    let body = answer(response_out, 200, &[("content-length", length)]);
    let mut out = body.write().expect("the body's stream");
    out.write_all(text.as_bytes()).expect("writing the body");
    out.flush().expect("flushing the body");
    drop(out);
    OutgoingBody::finish(body, None).expect("finishing the body");
}

/// Answers `status`, `text/plain` with `headers`, and returns the body to
/// write.
fn answer(response_out: ResponseOutparam, status: u16, headers: &[(&str, String)]) -> OutgoingBody {
    let mut fields = vec![("content-type".to_owned(), b"text/plain".to_vec())];
    fields.extend(
        headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone().into_bytes())),
    );
    let response = OutgoingResponse::new(Fields::from_list(&fields).expect("valid headers"));
    response.set_status_code(status).expect("a valid status");
    let body = response.body().expect("the response's body");
    ResponseOutparam::set(response_out, Ok(response));
    body
}
