//! A child process whose output is watched: every line goes to a log file
//! (shown by [`super::logs`] when a test fails) and to a channel the harness
//! waits on, for host-bridge, the benchmark's baselines and `wasmtime serve`.

use super::logs;
use std::io::{BufRead, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Process {
    child: Child,
    /// What it is, for messages: "host-bridge on port 4000".
    pub name: String,
    output: mpsc::Receiver<String>,
    log: Vec<String>,
    _log_entry: logs::LogEntry,
}

impl Process {
    /// Spawns `command` with its stdout and stderr captured into `log_path`.
    pub fn spawn(mut command: Command, name: String, log_path: &Path) -> Process {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let log_file = Arc::new(Mutex::new(std::fs::File::create(log_path).unwrap()));
        let log_entry = logs::register(name.clone(), log_path);
        let (tx, rx) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            let log_file = log_file.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = writeln!(log_file.lock().unwrap(), "{line}");
                    let _ = tx.send(line);
                }
            });
        }
        // The readers hold the only senders, so the channel disconnects when
        // the process has exited and closed its pipes.
        drop(tx);
        Process {
            child,
            name,
            output: rx,
            log: Vec::new(),
            _log_entry: log_entry,
        }
    }

    /// Waits until the process prints a line containing `needle`; fails at
    /// once if the process exits first.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.log.iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(line) => self.log.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().unwrap();
                    let log = self.drain_log();
                    panic!(
                        "{} exited ({status}) before printing {needle:?}; it printed:\n{log}",
                        self.name
                    )
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let log = self.drain_log();
                    panic!(
                        "{} did not print {needle:?} within {timeout:?}; it printed:\n{log}",
                        self.name
                    )
                }
            }
        }
    }

    /// Everything the process printed so far.
    pub fn drain_log(&mut self) -> String {
        while let Ok(line) = self.output.try_recv() {
            self.log.push(line);
        }
        self.log.join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process with SIGKILL, as a crash would: nothing is flushed,
    /// nothing is drained.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits at most `timeout` for the process to exit.
    pub fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("cannot run kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {timeout:?} of SIGTERM",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// A field of `/proc/PID/status` in KiB (Linux): `VmRSS` is the resident
    /// memory now, `VmHWM` its peak.
    pub fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("cannot read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/PID/status"))
    }

    /// The CPU time the process has used so far, user and system (Linux).
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("cannot read /proc/PID/stat");
        // The command name may hold spaces; the fields that follow it do not.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        // utime and stime are the 14th and 15th fields; `state` is the 3rd.
        let ticks = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
        let (user, system) = (ticks(14), ticks(15));
        let total = user
            .zip(system)
            .map(|(u, s)| u + s)
            .expect("a malformed /proc/PID/stat");
        // Linux reports in USER_HZ, which is 100 on every architecture it runs on.
        Duration::from_millis(total * 10)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
