//! Every listener is bounded: headers have a deadline (which is also the
//! idle keep-alive timeout), their size a cap, open connections a cap with
//! backpressure on accept; requests in flight are answered on SIGTERM; and
//! the URL a guest is handed is not built from an unchecked `Host` header.

use crate::common::{Host, free_port, wasm};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// An app with the probe component on `/probe/...`, with the clock its
/// slow answer measures time by.
fn probe_manifest() -> String {
    format!(
        "spin_manifest_version = 2\n[application]\nname = \"probe\"\n\n\
         [[trigger.http]]\nroute = \"/probe/...\"\ncomponent = \"probe\"\n\n\
         [component.probe]\nsource = \"{}\"\n\
         [component.probe.tool.host-bridge]\nclock = true\n",
        wasm("http_probe")
    )
}

fn start_probe(args: &[&str]) -> Host {
    Host::start_with_args(
        tempfile::tempdir().unwrap(),
        &probe_manifest(),
        free_port(),
        &[],
        None,
        args,
    )
}

fn address(host: &Host) -> String {
    host.url.trim_start_matches("http://").to_owned()
}

/// Whether the server has closed `stream`: a read returns end of file or
/// an error (a reset), rather than timing out.
fn closed_by_server(mut stream: &TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            // A 408 or similar before the close is fine: read on to the end.
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// Sends one whole request on `stream` and reads its answer's status line.
fn request_on(stream: &mut TcpStream, host_header: &str, path: &str) -> String {
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {host_header}\r\n\r\n").unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the connection closed before an answer");
        answer.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// Row 7, with the defaults: connections that send half a request header
/// are closed within 30 s (the old host kept them all past 35 s).
#[test]
fn half_sent_headers_are_cut_off_by_the_default_deadline() {
    let host = start_probe(&[]);
    let addr = address(&host);
    let slow: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut stream = TcpStream::connect(&addr).unwrap();
            stream
                .write_all(b"POST /probe/url HTTP/1.1\r\nHost: x\r\nX-Half: ")
                .unwrap();
            stream
        })
        .collect();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(35);
    let mut open = slow.len();
    while open > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        open = slow.iter().filter(|s| !closed_by_server(s)).count();
    }
    assert_eq!(
        open,
        0,
        "{open} of 200 half-header connections were still open {:?} after they stalled",
        started.elapsed()
    );
    assert!(
        started.elapsed() >= Duration::from_secs(20),
        "closed after {:?}: sooner than a header deadline would",
        started.elapsed()
    );
    // And the host still serves.
    assert_eq!(host.get("/healthz").status(), 200);
}

/// An idle keep-alive connection is closed after the same deadline.
#[test]
fn idle_keep_alive_connections_are_closed() {
    let host = start_probe(&["--header-read-timeout", "2s"]);
    let mut stream = TcpStream::connect(address(&host)).unwrap();
    let answer = request_on(&mut stream, "localhost", "/healthz");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        closed_by_server(&stream),
        "an idle keep-alive connection was still open 4 s after a 2 s deadline"
    );
}

/// At `--max-connections`, the listener stops accepting: a new client
/// waits (in the kernel's backlog) until a slot frees, then is served.
#[test]
fn connections_are_capped_with_backpressure() {
    let host = start_probe(&["--max-connections", "20", "--header-read-timeout", "3s"]);
    let addr = address(&host);
    let _slow: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut stream = TcpStream::connect(&addr).unwrap();
            stream.write_all(b"GET /probe/url HTTP/1.1\r\n").unwrap();
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let mut stream = TcpStream::connect(&addr).unwrap();
    let answer = request_on(&mut stream, "localhost", "/healthz");
    let waited = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        waited >= Duration::from_millis(1500),
        "the 21st connection was served after {waited:?}, while 20 others held every slot"
    );
    assert!(
        waited < Duration::from_secs(15),
        "served only after {waited:?}"
    );
}

/// Headers over the cap are refused with 431, and the host goes on.
#[test]
fn oversized_headers_are_refused() {
    let host = start_probe(&[]);
    let mut stream = TcpStream::connect(address(&host)).unwrap();
    let big = "a".repeat(100 << 10);
    let answer = request_on(
        &mut stream,
        &format!("localhost\r\nX-Big: {big}"),
        "/probe/url",
    );
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "{}",
        &answer[..answer.len().min(200)]
    );
    assert_eq!(host.get("/healthz").status(), 200);
}

/// An HTTP request in flight when SIGTERM arrives is answered before the
/// process exits, as a delivery in flight is: here a guest still waiting
/// for the rest of a body that its client sends over three seconds.
#[test]
fn http_requests_in_flight_are_answered_on_sigterm() {
    let mut host = start_probe(&[]);
    let mut stream = TcpStream::connect(address(&host)).unwrap();
    write!(
        stream,
        "POST /probe/length HTTP/1.1\r\nHost: localhost\r\nContent-Length: 30\r\n\r\n"
    )
    .unwrap();
    let sender = std::thread::spawn(move || {
        for _ in 0..3 {
            stream.write_all(b"0123456789").unwrap();
            std::thread::sleep(Duration::from_secs(1));
        }
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    });
    std::thread::sleep(Duration::from_millis(800));
    let status = host.terminate(Duration::from_secs(20));
    assert!(status.success(), "host-bridge exited with {status}");
    let answer = sender.join().unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.contains("\r\n30\n"),
        "the request in flight on SIGTERM was answered {answer:?}"
    );
}

/// A guest that computes for a long time yields its thread at every epoch
/// tick, so more looping guests than the runtime has workers do not hold
/// up the host's other requests.
#[test]
fn looping_guests_do_not_hold_up_other_requests() {
    let host = start_probe(&[]);
    let loops: Vec<_> = (0..4)
        .map(|_| {
            let url = format!("{}/probe/slow?ms=4000", host.url);
            std::thread::spawn(move || reqwest::blocking::get(url).map(|r| r.status()))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    assert_eq!(host.get("/healthz").status(), 200);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_millis(1500),
        "/healthz took {waited:?} while four guests looped"
    );
    for looping in loops {
        assert_eq!(looping.join().unwrap().unwrap(), 200);
    }
}

/// `spin-full-url` and the guest's URI come from a `Host` header only if it
/// is a plain `host[:port]`; anything else is refused.
#[test]
fn a_forged_host_header_does_not_reach_the_guest() {
    let host = start_probe(&[]);
    let addr = address(&host);
    let mut stream = TcpStream::connect(&addr).unwrap();
    let forged = request_on(&mut stream, "evil.example/admin?x=", "/probe/url");
    assert!(forged.starts_with("HTTP/1.1 400"), "{forged}");

    let plain = reqwest::blocking::Client::new()
        .get(format!("{}/probe/url", host.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let expected = format!("http://{addr}/probe/url");
    assert_eq!(plain, format!("{expected}\n{expected}\n"));
}
