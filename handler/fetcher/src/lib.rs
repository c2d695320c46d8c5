//! A test-only Spin HTTP component (`spin-sdk` 7, outbound `wasi:http` 0.3)
//! for the tests of the outbound edge (`host-bridge/tests/security/outbound.rs`).
//!
//! A request carrying `x-fetch-url: URL` makes the component `GET` that URL
//! and answer, with status 200 either way:
//!
//! - `fetched STATUS` when an answer came back, whatever its status;
//! - `error CODE` when none did, `CODE` being the `wasi:http` error code
//!   the host gave, as `wasip3` prints it (`ErrorCode::DestinationIpProhibited`,
//!   `ErrorCode::HttpRequestDenied`, ...).
//!
//! A request without the header answers 400.

use spin_sdk::http::{IntoResponse, Request};

#[spin_sdk::http_service]
async fn handle(request: Request) -> impl IntoResponse {
    let url = request
        .headers()
        .get("x-fetch-url")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (status, body) = match url {
        None => (
            http::StatusCode::BAD_REQUEST,
            "send the URL to fetch in x-fetch-url\n".to_owned(),
        ),
        Some(url) => match spin_sdk::http::get(&url).await {
            Ok(response) => (
                http::StatusCode::OK,
                format!("fetched {}\n", response.status().as_u16()),
            ),
            Err(code) => (http::StatusCode::OK, format!("error {code:?}\n")),
        },
    };
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain")
        .body(body)
}
