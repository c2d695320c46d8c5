//! Failure messages that explain themselves.
//!
//! Every process a test starts (host-bridge, daprd, redis-server) writes its
//! output to a file and registers it here, for the test's own thread. A
//! panic hook, installed once, prints the last lines of each registered file
//! after the panic message, whichever assertion failed. A process's entry
//! goes away when its guard drops, which is after the hook has run.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Once;

/// How many lines of each process's output a failure shows.
const TAIL_LINES: usize = 40;

thread_local! {
    static LOGS: RefCell<Vec<(u64, String, PathBuf)>> = const { RefCell::new(Vec::new()) };
}

/// Registration of one process's log; unregisters when dropped.
pub struct LogEntry(u64);

impl Drop for LogEntry {
    fn drop(&mut self) {
        let _ = LOGS.try_with(|logs| logs.borrow_mut().retain(|(id, ..)| *id != self.0));
    }
}

/// Shows the tail of `path`, named `name`, if the current test fails.
pub fn register(name: impl Into<String>, path: &Path) -> LogEntry {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            default(info);
            eprintln!("{}", tails());
        }));
    });
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    LOGS.with(|logs| {
        logs.borrow_mut()
            .push((id, name.into(), path.to_path_buf()))
    });
    LogEntry(id)
}

/// The last lines of every process the current test started.
pub fn tails() -> String {
    let logs = LOGS
        .try_with(|logs| logs.borrow().clone())
        .unwrap_or_default();
    let mut out = String::new();
    for (_, name, path) in logs {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| format!("(unreadable: {e})"));
        let lines: Vec<&str> = text.lines().collect();
        let skip = lines.len().saturating_sub(TAIL_LINES);
        out.push_str(&format!(
            "\n----- last {} of {} lines of {name} ({}) -----\n",
            lines.len() - skip,
            lines.len(),
            path.display()
        ));
        for line in &lines[skip..] {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}
