//! The brokers daprd carries messages on, run for real by
//! `scripts/broker.sh NAME` (which installs the broker first if it is
//! missing), each on free ports with its data in a temporary directory, so
//! tests can run several at once. Nothing here fakes a broker.
//!
//! `broker.sh` runs in its own process group: a crash is SIGKILL to the
//! whole group (the script and the broker it started), and dropping a
//! [`Broker`] stops the group with SIGTERM, then SIGKILL.

use super::{Process, free_port, workspace};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A broker a folder of `components/` points daprd at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokerKind {
    Redis,
    Kafka,
    RabbitMq,
    JetStream,
    Mqtt,
}

impl BrokerKind {
    /// Its name for `scripts/broker.sh` and its folder under `components/`.
    pub fn name(self) -> &'static str {
        match self {
            BrokerKind::Redis => "redis",
            BrokerKind::Kafka => "kafka",
            BrokerKind::RabbitMq => "rabbitmq",
            BrokerKind::JetStream => "jetstream",
            BrokerKind::Mqtt => "mqtt",
        }
    }

    /// The address the shipped YAML gives for it.
    fn shipped_address(self) -> &'static str {
        match self {
            BrokerKind::Redis => "localhost:6379",
            BrokerKind::Kafka => "localhost:9092",
            BrokerKind::RabbitMq => "localhost:5672",
            BrokerKind::JetStream => "localhost:4222",
            BrokerKind::Mqtt => "localhost:1883",
        }
    }

    /// The resources folder `dapr run --resources-path` is given for it.
    pub fn components(self) -> PathBuf {
        match self {
            BrokerKind::Redis => workspace().join("components"),
            _ => workspace().join("components").join(self.name()),
        }
    }

    /// Whether a DROP reaches the subscription's dead-letter topic. Not on
    /// JetStream's one stream for every topic: see `dead_letter_is_lost` in
    /// `scenarios.rs`.
    pub fn dead_letters_a_drop(self) -> bool {
        self != BrokerKind::JetStream
    }

    /// How many of 1,000 messages a fault may lose on this broker, as
    /// RELIABILITY.md gives them: none, except
    /// - on MQTT 3, where a delivery that failed is never acked and never
    ///   comes back (measured: a 30 s outage of the host lost 483 and 546,
    ///   a daprd killed 3 and 7, a broker killed none);
    /// - RabbitMQ killed: 1 in one run, among the publishes daprd accepted
    ///   around the crash (components-contrib reports a publish whose
    ///   confirmation never came as a success).
    pub fn loss_bound(self, fault: &str) -> usize {
        match (self, fault) {
            (BrokerKind::Mqtt, "host-down") => 800,
            (BrokerKind::Mqtt, _) => 20,
            (BrokerKind::RabbitMq, "broker-restarted") => 5,
            _ => 0,
        }
    }

    /// How long it takes to be ready on a busy machine (Kafka's JVM is slow).
    fn start_timeout(self) -> Duration {
        match self {
            BrokerKind::Kafka | BrokerKind::RabbitMq => Duration::from_secs(180),
            _ => Duration::from_secs(60),
        }
    }
}

/// A broker started by `scripts/broker.sh`.
pub struct Broker {
    pub kind: BrokerKind,
    pub port: u16,
    port2: u16,
    pub dir: tempfile::TempDir,
    process: Option<Process>,
    starts: u32,
}

impl Broker {
    pub fn start(kind: BrokerKind) -> Broker {
        let mut broker = Broker {
            kind,
            port: free_port(),
            port2: free_port(),
            dir: tempfile::tempdir().unwrap(),
            process: None,
            starts: 0,
        };
        broker.spawn();
        broker
    }

    fn spawn(&mut self) {
        use std::os::unix::process::CommandExt as _;
        let name = self.kind.name();
        let mut command = Command::new("bash");
        command
            .arg(workspace().join("scripts/broker.sh"))
            .arg(name)
            .env("BROKER_PORT", self.port.to_string())
            .env("BROKER_PORT2", self.port2.to_string())
            .env("BROKER_DATA_DIR", self.dir.path().join("data"))
            .process_group(0);
        self.starts += 1;
        let log = self.dir.path().join(format!("broker-{}.log", self.starts));
        let mut process = Process::spawn(command, format!("{name} on port {}", self.port), &log);
        process.wait_for_line(
            &format!("broker.sh: {name} ready on 127.0.0.1:{}", self.port),
            self.kind.start_timeout(),
        );
        self.process = Some(process);
    }

    /// Kills the broker with SIGKILL, as a crash would, and starts it again
    /// on the same ports and data after `down`.
    pub fn crash_and_restart(&mut self, down: Duration) {
        if let Some(mut process) = self.process.take() {
            signal_group(&process, libc::SIGKILL);
            process.kill();
        }
        std::thread::sleep(down);
        self.spawn();
    }

    /// Stops the broker with SIGTERM, waiting for it, then SIGKILL.
    fn stop(&mut self) {
        let Some(mut process) = self.process.take() else {
            return;
        };
        signal_group(&process, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while process.is_running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        // Whatever of the group is left after the grace, as a crash would.
        signal_group(&process, libc::SIGKILL);
    }

    /// Rewrites a shipped YAML file's address of this broker to where it runs.
    fn point_at(&self, text: &str) -> String {
        text.replace(
            self.kind.shipped_address(),
            &format!("127.0.0.1:{}", self.port),
        )
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends `signal` to the process group `process` leads (broker.sh's).
fn signal_group(process: &Process, signal: libc::c_int) {
    // SAFETY: kill(2) with a negative pid signals a process group; it
    // touches no memory of ours.
    unsafe { libc::kill(-(process.pid() as libc::pid_t), signal) };
}

/// Copies the YAML files of `from` into `to`, with the Redis address and,
/// if there is one, the broker's pointed at where they run.
///
/// With `BROKER_DEFAULTS` set, the broker's `pubsub.yaml` keeps only the
/// keys that say where the broker is: every other setting is the
/// component's default, as the negative control of RELIABILITY.md runs it.
pub fn copy_resources(from: &Path, to: &Path, redis_port: u16, broker: Option<&Broker>) {
    fs::create_dir_all(to).unwrap();
    let defaults = std::env::var_os("BROKER_DEFAULTS").is_some_and(|v| v != "0");
    for entry in fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = fs::read_to_string(&path).unwrap();
            let mut text = text.replace("localhost:6379", &format!("127.0.0.1:{redis_port}"));
            if let Some(broker) = broker {
                text = broker.point_at(&text);
                if defaults && path.file_name().is_some_and(|n| n == "pubsub.yaml") {
                    text = only_the_address(&text);
                }
            }
            fs::write(to.join(path.file_name().unwrap()), text).unwrap();
        }
    }
}

/// A component's YAML with only the metadata entries that locate its broker.
fn only_the_address(text: &str) -> String {
    const ADDRESS_KEYS: [&str; 5] = ["brokers", "authType", "connectionString", "natsURL", "url"];
    let mut out = String::new();
    let mut skipping = false;
    for line in text.lines() {
        if let Some(name) = line.trim_start().strip_prefix("- name: ") {
            skipping = !ADDRESS_KEYS.contains(&name.trim());
        } else if !line.trim_start().starts_with("value:") {
            skipping = false;
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}
