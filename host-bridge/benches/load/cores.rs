//! Pinning: the load generator on one core, everything it measures on the
//! others, so that the client never takes CPU from the systems under test
//! and a figure measures the server, not the client.
//!
//! The harness's own thread (the load generator, and every poll of a
//! server's counters) stays on the load core. A server, and whatever the
//! harness starts beside it (daprd, Redis, a broker, the criterion
//! micro-benchmarks), is started from inside [`Cores::on_servers`], which
//! moves the harness's thread to the server cores for the time of the
//! start: a child inherits the affinity of the thread that forks it, and
//! so do its own children and threads. (The harness's threads that read a
//! server's output start there too.) A machine with one core gets no
//! pinning, and the report says so.

use std::fmt;

/// Which CPUs the load generator and the systems under test run on.
pub(crate) struct Cores {
    load: Vec<usize>,
    servers: Vec<usize>,
    /// Every CPU the harness was allowed at start.
    all: Vec<usize>,
}

impl Cores {
    /// Splits the CPUs the harness may use: the first for the load
    /// generator, the rest for the servers; and moves the harness's thread
    /// onto the first.
    pub(crate) fn pin_harness() -> Cores {
        let all = affinity();
        let cores = if all.len() >= 2 {
            Cores {
                load: all[..1].to_vec(),
                servers: all[1..].to_vec(),
                all,
            }
        } else {
            Cores {
                load: all.clone(),
                servers: all.clone(),
                all,
            }
        };
        set_affinity(&cores.load);
        cores
    }

    pub(crate) fn pinned(&self) -> bool {
        self.load != self.servers
    }

    /// Runs `start` with the harness's thread on the server cores, so what
    /// it starts runs there; then puts the thread back on the load core.
    pub(crate) fn on_servers<T>(&self, start: impl FnOnce() -> T) -> T {
        self.on(&self.servers, start)
    }

    /// As [`Cores::on_servers`], on every core (for what is not a load
    /// test: start-up).
    pub(crate) fn on_all<T>(&self, start: impl FnOnce() -> T) -> T {
        self.on(&self.all, start)
    }

    fn on<T>(&self, cpus: &[usize], start: impl FnOnce() -> T) -> T {
        set_affinity(cpus);
        // Put the thread back even if `start` panics (a section that
        // catches a failure goes on measuring).
        struct Back<'a>(&'a [usize]);
        impl Drop for Back<'_> {
            fn drop(&mut self) {
                set_affinity(self.0);
            }
        }
        let _back = Back(&self.load);
        start()
    }
}

impl fmt::Display for Cores {
    /// For the report: "load generator on CPU 0; systems under test on CPU 1".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.pinned() {
            write!(
                f,
                "load generator pinned to CPU {}, the systems under test (and their daprd, Redis, broker) to CPU {}",
                list(&self.load),
                list(&self.servers)
            )
        } else {
            write!(
                f,
                "not pinned: one CPU ({}) for the load generator and the systems under test",
                list(&self.all)
            )
        }
    }
}

fn list(cpus: &[usize]) -> String {
    cpus.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The CPUs the calling thread may run on.
fn affinity() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set, and the call writes
    // at most its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let rc = libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
        assert!(
            rc == 0,
            "sched_getaffinity failed: {}",
            std::io::Error::last_os_error()
        );
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

/// Moves the calling thread (only it: pid 0 is the calling thread) to `cpus`.
fn set_affinity(cpus: &[usize]) {
    // SAFETY: as in `affinity`; CPU_SET stays within the set for the CPUs
    // `affinity` returned.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        let rc = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert!(
            rc == 0,
            "sched_setaffinity to CPUs {cpus:?} failed: {}",
            std::io::Error::last_os_error()
        );
    }
}
