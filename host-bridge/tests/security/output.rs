//! A guest's output cannot pass for the host's (issue 18, item 4).
//!
//! The test subscriber, on a `print` topic, writes an event's data to its
//! stderr byte for byte (`print-stdout`: to its stdout). The data here is
//! what an attacker would print: a line shaped like host-bridge's own
//! "is ready" line, a line shaped like a `tracing` line, ANSI escapes, a
//! carriage return, and a last line with no newline. The host's log must
//! show each only behind the `[test-subscriber] ` prefix, escaped.

use crate::common::{Host, free_port, test_subscriber_manifest};
use std::time::{Duration, Instant};

const SLOW: Duration = Duration::from_secs(30);

/// A line shaped like the one host-bridge prints when it is ready, which
/// the tests themselves (and anyone's scripts) wait for.
const FORGED_READY: &str = "host-bridge: app `bank` is ready on http://127.0.0.1:9/";
/// A line shaped like one of host-bridge's `tracing` lines.
const FORGED_TRACING: &str =
    "2026-01-01T00:00:00.000000Z  INFO host_bridge::app: forged-admin-token-accepted";

/// What the guest prints: the forged lines, an ANSI sequence that would
/// clear the screen and colour the text, a carriage return that would move
/// the cursor back over the prefix, and a last line without a newline.
fn forged_output() -> String {
    format!(
        "{FORGED_READY}\n{FORGED_TRACING}\n\x1b[2J\x1b[31mansi-red\x1b[0m\nhidden\rcarriage-return\nlast-line-without-newline"
    )
}

fn start(args: &[&str]) -> Host {
    let manifest = test_subscriber_manifest(&["print", "print-stdout"], 1, "", "");
    Host::start_with_args(
        tempfile::tempdir().unwrap(),
        &manifest,
        free_port(),
        &[],
        None,
        args,
    )
}

/// The lines of the host's log that mention `needle`.
fn lines_with<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(needle)).collect()
}

#[test]
fn a_guest_line_cannot_pass_for_a_host_line() {
    let mut host = start(&[]);
    host.publish("print", "forge-1", "text/plain", forged_output());
    host.publish(
        "print-stdout",
        "forge-2",
        "text/plain",
        format!("{FORGED_READY} (stdout)\n"),
    );
    // The partial last line is written when the instance is dropped, after
    // the delivery; and the stdout line arrives on its own.
    host.wait_for_line("last-line-without-newline", SLOW);
    host.wait_for_line(&format!("{FORGED_READY} (stdout)"), SLOW);
    let log = host.drain_log();

    for needle in [
        FORGED_READY,
        "forged-admin-token-accepted",
        "ansi-red",
        "carriage-return",
        "last-line-without-newline",
    ] {
        let lines = lines_with(&log, needle);
        assert!(!lines.is_empty(), "no line has {needle:?}:\n{log}");
        for line in lines {
            assert!(
                line.starts_with("[test-subscriber] "),
                "a guest line reached the host's log without the component's prefix: {line:?}"
            );
        }
    }
    assert!(
        !log.lines()
            .any(|l| l.starts_with("host-bridge: app `bank`") || l.starts_with("2026-01-01T")),
        "a forged host line starts a line of the host's log:\n{log}"
    );
    assert!(
        !log.contains('\x1b') && !log.contains('\r'),
        "a guest's ESC or CR reached the host's log raw:\n{log:?}"
    );
    assert!(
        log.contains("[test-subscriber] \\x1b[2J\\x1b[31mansi-red\\x1b[0m"),
        "the ANSI sequence is not shown escaped:\n{log}"
    );
    assert!(
        log.contains("[test-subscriber] hidden\\x0dcarriage-return"),
        "the carriage return is not shown escaped:\n{log}"
    );
}

#[test]
fn a_guest_output_is_capped_per_line_and_per_instance() {
    let mut host = start(&[]);
    // One 10 KiB line, then 192 KiB of short lines, all in one delivery.
    let long_line = format!("long-line-{}\n", "y".repeat(10 << 10));
    let mut flood = long_line.clone();
    for i in 0..4000 {
        flood.push_str(&format!("flood-line-{i:05}-{}\n", "z".repeat(30)));
    }
    host.publish("print", "flood-1", "text/plain", flood.clone());
    // Once the host says the rest is dropped, no more of this guest's lines
    // are logged.
    host.wait_for_line("the rest of it is dropped", SLOW);
    let log = host.drain_log();

    let prefix = "[test-subscriber] ";
    let long = lines_with(&log, "long-line-");
    assert_eq!(
        long.len(),
        1,
        "not one long line; the log but the flood:\n{}",
        log.lines()
            .filter(|l| !l.contains("flood-line-"))
            .map(|l| &l[..l.len().min(200)])
            .collect::<Vec<_>>()
            .join("\n")
    );
    let cut = long_line.len() - 1 - 4096;
    assert!(
        long[0].len() == prefix.len() + 4096 + format!("…[truncated {cut} bytes]").len()
            && long[0].ends_with(&format!("…[truncated {cut} bytes]")),
        "the long line was not cut at 4 KiB: {} bytes, ending {:?}",
        long[0].len(),
        &long[0][long[0].len().saturating_sub(40)..]
    );
    let flood_lines = lines_with(&log, "flood-line-");
    assert!(
        flood_lines.len() > 100 && flood_lines.len() < 4000,
        "{} of 4000 flood lines logged",
        flood_lines.len()
    );
    let logged: usize = log
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(|l| l.len() + 1)
        .sum();
    assert!(
        logged <= 64 << 10,
        "one instance put {logged} bytes into the host's log"
    );
    // Every byte the guest wrote is logged or counted as dropped.
    let logged_raw: usize = flood_lines.iter().map(|l| l.len() - prefix.len() + 1).sum();
    let expected_dropped = (flood.len() - long_line.len() - logged_raw) as u64;
    let series = "host_bridge_guest_output_dropped_bytes_total{reason=\"instance_cap\"}";
    let deadline = Instant::now() + SLOW;
    while host.metric(series) != expected_dropped {
        assert!(
            Instant::now() < deadline,
            "{series} is {}, not the {expected_dropped} bytes not logged",
            host.metric(series)
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    assert_eq!(
        host.metric("host_bridge_guest_output_dropped_bytes_total{reason=\"line_cap\"}"),
        cut as u64
    );
}

#[test]
fn guest_output_off_drops_it_and_counts_it() {
    let mut host = start(&["--guest-output", "off"]);
    let output = forged_output();
    host.publish("print", "off-1", "text/plain", output.clone());
    let dropped = wait_for_metric(
        &host,
        "host_bridge_guest_output_dropped_bytes_total{reason=\"off\"}",
    );
    assert_eq!(dropped, output.len() as u64);
    // The delivery is over (its output was counted); give the log a moment.
    std::thread::sleep(Duration::from_millis(200));
    let log = host.drain_log();
    for needle in [
        "bank",
        "forged-admin",
        "ansi-red",
        "last-line-without-newline",
    ] {
        assert!(
            lines_with(&log, needle).is_empty(),
            "--guest-output off still logged {needle:?}:\n{log}"
        );
    }
}

/// Polls `series` on /metrics until it is above zero.
fn wait_for_metric(host: &Host, series: &str) -> u64 {
    let deadline = Instant::now() + SLOW;
    loop {
        let value = host.metric(series);
        if value > 0 {
            return value;
        }
        assert!(Instant::now() < deadline, "{series} stayed at 0");
        std::thread::sleep(Duration::from_millis(25));
    }
}
