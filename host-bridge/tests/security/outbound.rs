//! Outbound requests never reach this machine or its networks through a
//! wildcard: loopback, private, link-local and unspecified addresses are
//! reachable only when `allowed_outbound_hosts` names that address (or
//! `localhost`). The check is on the address the name resolved to, so no
//! spelling of the host gets around it, and a redirect is not followed by
//! the host (the guest's next request is checked again).
//!
//! The guest is `handler/fetcher`: it `GET`s the URL in `x-fetch-url` and
//! answers `fetched STATUS` or `error CODE`. The destinations are small
//! servers on 127.0.0.1 started by the test, which count the connections
//! they accept, so a test sees not only what the guest was told but whether
//! anything arrived.

use crate::common::{Host, client, wasm};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A server on 127.0.0.1 that answers every request with `answer` and
/// counts the connections it accepted.
struct TestServer {
    port: u16,
    connections: Arc<AtomicUsize>,
}

impl TestServer {
    fn start(answer: String) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = connections.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                seen.fetch_add(1, Ordering::SeqCst);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        TestServer { port, connections }
    }

    /// A server that answers `204 No Content`.
    fn no_content() -> TestServer {
        TestServer::start(
            "HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".into(),
        )
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Starts the fetcher on `/fetch` with `allowed_outbound_hosts = grants`.
fn start_fetcher(grants: &[String]) -> Host {
    let grants: Vec<String> = grants.iter().map(|g| format!("{g:?}")).collect();
    Host::start(&format!(
        "spin_manifest_version = 2\n[application]\nname = \"outbound\"\n\n\
         [[trigger.http]]\nroute = \"/fetch\"\ncomponent = \"fetcher\"\n\n\
         [component.fetcher]\nsource = \"{}\"\nallowed_outbound_hosts = [{}]\n",
        wasm("fetcher"),
        grants.join(", ")
    ))
}

/// What the fetcher answered when asked to fetch `url`.
fn fetch(host: &Host, url: &str) -> String {
    let response = client()
        .get(format!("{}/fetch", host.url))
        .header("x-fetch-url", url)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200, "the fetcher itself failed on {url}");
    response.text().unwrap().trim().to_owned()
}

/// Row 5: with `http://*:*`, no spelling of this machine's address reaches
/// a server on it, the guest is told `destination-IP-prohibited`, and the
/// host's log names the component, the host and the address. (The old host
/// connected every time.)
#[test]
fn a_wildcard_grant_does_not_reach_this_machine() {
    let server = TestServer::no_content();
    let port = server.port;
    let mut host = start_fetcher(&["http://*:*".into()]);
    for url in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://localhost:{port}/"),
        // Resolved by the system's resolver to 127.0.0.1.
        format!("http://127.1:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        // A connection to the unspecified address reaches this machine.
        format!("http://0.0.0.0:{port}/"),
    ] {
        let answer = fetch(&host, &url);
        assert_eq!(
            answer,
            "error ErrorCode::DestinationIpProhibited",
            "{url} with http://*:* (the test server saw {} connections)",
            server.connections()
        );
    }
    assert_eq!(
        server.connections(),
        0,
        "a request under http://*:* reached the test server on 127.0.0.1"
    );
    let log = host.drain_log();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains(&format!(
                "refused outbound request to http://localhost:{port}"
            ))
        })
        .collect();
    assert!(
        !refusals.is_empty(),
        "no refusal for localhost in the host's log:\n{log}"
    );
    assert!(
        refusals.iter().all(|l| l.contains("fetcher"))
            && refusals
                .iter()
                .any(|l| l.contains("resolved to 127.0.0.1") || l.contains("resolved to ::1")),
        "the refusal should name the component and the address: {refusals:#?}"
    );
}

/// The positive control, and how far an explicit grant goes: an entry
/// naming `127.0.0.1:PORT` reaches that server, one naming `localhost:PORT`
/// reaches that one, and neither (nor the wildcard beside them) reaches a
/// third server on another port of the same address.
#[test]
fn an_explicit_grant_reaches_that_address_and_port_only() {
    let by_address = TestServer::no_content();
    let by_localhost = TestServer::no_content();
    let not_granted = TestServer::no_content();
    let host = start_fetcher(&[
        "http://*:*".into(),
        format!("http://127.0.0.1:{}", by_address.port),
        format!("http://localhost:{}", by_localhost.port),
    ]);

    let url = format!("http://127.0.0.1:{}/", by_address.port);
    assert_eq!(fetch(&host, &url), "fetched 204", "{url}");
    assert_eq!(by_address.connections(), 1);

    let url = format!("http://localhost:{}/", by_localhost.port);
    assert_eq!(fetch(&host, &url), "fetched 204", "{url}");
    assert_eq!(by_localhost.connections(), 1);

    for url in [
        format!("http://127.0.0.1:{}/", not_granted.port),
        format!("http://localhost:{}/", not_granted.port),
    ] {
        assert_eq!(
            fetch(&host, &url),
            "error ErrorCode::DestinationIpProhibited",
            "{url}"
        );
    }
    assert_eq!(
        not_granted.connections(),
        0,
        "a port no entry names was reached through the wildcard"
    );
}

/// A redirect is not followed by the host: a granted server's `302` to a
/// server that is not granted comes back to the guest as is, and the second
/// server sees nothing. (This held before too: it is the reason the address
/// check needs no hook for redirects.)
#[test]
fn a_redirect_comes_back_to_the_guest() {
    let target = TestServer::no_content();
    let redirecting = TestServer::start(format!(
        "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:{}/\r\n\
         content-length: 0\r\nconnection: close\r\n\r\n",
        target.port
    ));
    let host = start_fetcher(&[format!("http://127.0.0.1:{}", redirecting.port)]);
    let url = format!("http://127.0.0.1:{}/", redirecting.port);
    assert_eq!(fetch(&host, &url), "fetched 302", "{url}");
    assert_eq!(redirecting.connections(), 1);
    assert_eq!(target.connections(), 0, "the host followed the redirect");
}
