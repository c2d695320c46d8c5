//! Hello, world as a Spin HTTP component (`spin-sdk` 7, `wasi:http`).
//!
//! It does no work on purpose: the benchmark runs it to measure what one
//! request costs in a runtime itself (instantiate, call, answer), with
//! nothing of the app's own in the way. The native baseline's `GET /hello`
//! answers the same bytes.

use spin_sdk::http::{IntoResponse, Request};

#[spin_sdk::http_service]
async fn handle(_req: Request) -> impl IntoResponse {
    // The builder only fails on an invalid header, and these are constants;
    // spin-sdk turns an `Err` into a 500 rather than a trap either way.
    http::Response::builder()
        .status(http::StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "text/plain")
        .body(String::from("Hello, world!\n"))
}
