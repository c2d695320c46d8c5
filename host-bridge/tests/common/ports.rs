//! Ports for the processes a test starts.
//!
//! Why not "bind port 0, read the port, close it": the kernel hands out
//! ports from its ephemeral range (`ip_local_port_range`, 32768–60999 by
//! default) both for `bind(0)` and as the source port of every outgoing
//! connection. A port learned that way is free only for an instant. Until
//! the process it is meant for binds it, the kernel may give it to another
//! test's `bind(0)`, or to an outgoing connection (daprd to Redis, a client
//! to daprd), or even to daprd's own dial of the not-yet-listening app port,
//! which then connects to itself. Any of these makes that process fail to
//! bind.
//!
//! So ports come from below the ephemeral range, where the kernel never
//! picks one by itself, and each is handed out once per test process by an
//! atomic counter. Each process starts at its own offset, so two test
//! binaries running at once do not walk the same ports, and a port that is
//! busy (a server someone started by hand) is skipped.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// The lowest port handed out: above the well-known and most fixed service ports.
const LOWEST: u32 = 10_000;

/// A port that nothing listens on and that no other caller in this process
/// will be given.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static START: OnceLock<u32> = OnceLock::new();
    let span = ephemeral_low() - LOWEST;
    let start = *START.get_or_init(|| (std::process::id().wrapping_mul(7919)) % span);
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOWEST + (start + n) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {LOWEST} and {}", ephemeral_low());
}

/// The first port of the kernel's ephemeral range.
fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .filter(|low| *low > LOWEST + 1_000)
        .unwrap_or(32_768)
}
