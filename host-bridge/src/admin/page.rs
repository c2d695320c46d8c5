//! The admin page: `page.html`, `page.css` and `page.js`, compiled into
//! the binary with `include_str!`. No build step, nothing loaded from
//! outside: the Content-Security-Policy allows only this origin's script,
//! style and calls, and no framing.
//!
//! The files hold no data (the page fetches it with the token), so they
//! are served without one.

use crate::server::{self, Response};
use http::StatusCode;

const HTML: &str = include_str!("page.html");
const CSS: &str = include_str!("page.css");
const JS: &str = include_str!("page.js");

/// Only this origin; no inline script or style, no frames, no forms sent
/// elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page's files: path, content type and content.
const ASSETS: &[(&str, &str, &str)] = &[
    ("/", "text/html; charset=utf-8", HTML),
    ("/page.css", "text/css; charset=utf-8", CSS),
    ("/page.js", "text/javascript; charset=utf-8", JS),
];

/// Whether `path` is one of the page's files.
pub fn serves(path: &str) -> bool {
    ASSETS.iter().any(|(p, _, _)| *p == path)
}

/// The file at `path`, if it is one of the page's.
pub fn asset(path: &str) -> Option<Response> {
    let (_, content_type, body) = ASSETS.iter().find(|(p, _, _)| *p == path)?;
    let mut response = server::full(StatusCode::OK, content_type, *body);
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ] {
        headers.insert(name, http::HeaderValue::from_static(value));
    }
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_nothing_from_outside() {
        for (path, _, body) in ASSETS {
            for outside in ["http://", "https://", "//cdn", "<script>", "style=\""] {
                assert!(!body.contains(outside), "{path} contains {outside}");
            }
        }
        let response = asset("/").unwrap();
        assert!(
            response.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("script-src 'self'")
        );
        assert!(asset("/admin/overview").is_none());
    }
}
