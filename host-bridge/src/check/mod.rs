//! `host-bridge check --resources-path DIR`: names each setting in a Dapr
//! resources folder that can lose a message or deliver it to the wrong
//! place, and what to write instead.
//!
//! It reads the folder as `dapr run --resources-path DIR` has daprd 1.18.3
//! read it ([`resources`]), and judges what it finds against what
//! components-contrib v1.18.4 does with each setting, broker by broker
//! ([`redis`], [`kafka`], [`rabbitmq`], [`jetstream`], [`mqtt`]), plus what
//! holds for every pub/sub: daprd's retries ([`resiliency`]), durations a
//! component silently drops ([`durations`]), and dead-letter topics nothing
//! subscribes to ([`subscriptions`]). Each rule cites the source file it was
//! read from. A pub/sub of another type is listed as not checked.
//!
//! Exit codes: 0 when nothing loses messages, 1 for any finding, 2 when the
//! folder (or the manifest) cannot be read; warnings (properties of a
//! broker, not settings) never change the code. Whatever happens, the last
//! thing printed is the app health-check flags `dapr run` needs, which are
//! daprd's command line and so invisible here.

pub mod durations;
pub mod finding;
mod jetstream;
mod kafka;
mod mqtt;
mod rabbitmq;
mod redis;
pub mod resiliency;
pub mod resources;
pub mod subscriptions;

pub use finding::{Finding, Severity, Subject};
pub use resources::{Component, Folder, LoadError};

use std::io::Write as _;
use std::path::PathBuf;

/// `host-bridge check`'s command line.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The folder given to `dapr run --resources-path`: its *.yaml and *.yml
    /// files, not its sub-folders, as daprd reads them.
    #[arg(long, value_name = "DIR")]
    pub resources_path: PathBuf,
    /// Also read the app's own subscriptions ([[trigger.pubsub]]) from this
    /// manifest: daprd gets them from the app, not from DIR. Without it,
    /// only DIR's Subscription documents are known.
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
}

/// How `host-bridge check` ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No setting that loses messages.
    Clean,
    /// At least one finding.
    Findings,
    /// The folder or the manifest could not be read.
    Unreadable,
}

impl Outcome {
    /// The process exit code.
    pub fn code(self) -> i32 {
        match self {
            Outcome::Clean => 0,
            Outcome::Findings => 1,
            Outcome::Unreadable => 2,
        }
    }
}

/// The flags `dapr run` needs, which this cannot see; printed last, always.
pub const HEALTH_CHECK_FLAGS: &str = "--enable-app-health-check --app-health-check-path /healthz \
                                      --app-health-probe-interval 1 --app-health-threshold 1";

/// Reads the folder, prints the report and the health-check flags to
/// stdout (an unreadable input to stderr), and says how it ended.
pub fn run(args: &Args) -> Outcome {
    let loaded = resources::load(&args.resources_path).and_then(|mut folder| {
        if let Some(manifest) = &args.manifest {
            resources::add_manifest(&mut folder, manifest)?;
        }
        Ok(folder)
    });
    let mut out = std::io::stdout().lock();
    let outcome = match loaded {
        Ok(folder) => {
            let report = check(&folder);
            // A closed stdout (`| head`) is no reason to change the outcome.
            let _ = write!(out, "{report}");
            report.outcome()
        }
        Err(e) => {
            eprintln!("host-bridge check: {e}");
            Outcome::Unreadable
        }
    };
    let _ = write!(out, "\n{}", health_check_reminder());
    let _ = out.flush();
    outcome
}

/// What `check` found in one folder.
#[derive(Debug)]
pub struct Report {
    pub dir: PathBuf,
    /// Findings and warnings, by file, then in the order the rules ran.
    pub findings: Vec<Finding>,
    /// One line per pub/sub component of a type no rule knows.
    pub not_checked: Vec<String>,
}

impl Report {
    pub fn outcome(&self) -> Outcome {
        if self.count(Severity::Finding) > 0 {
            Outcome::Findings
        } else {
            Outcome::Clean
        }
    }

    fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == severity)
            .count()
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for finding in &self.findings {
            writeln!(f, "{finding}")?;
        }
        for line in &self.not_checked {
            writeln!(f, "{line}")?;
        }
        let dir = self.dir.display();
        let warnings = match self.count(Severity::Warning) {
            0 => String::new(),
            1 => String::from(" (and 1 warning)"),
            n => format!(" (and {n} warnings)"),
        };
        match self.count(Severity::Finding) {
            0 => writeln!(f, "no settings that lose messages in {dir}{warnings}"),
            1 => writeln!(f, "1 finding in {dir}{warnings}"),
            n => writeln!(f, "{n} findings in {dir}{warnings}"),
        }
    }
}

/// The rules of one broker: the component types it covers, the findings
/// for one component, and its warnings (properties of the broker).
struct Broker {
    types: &'static [&'static str],
    check: fn(&Component, &Folder) -> Vec<Finding>,
    warnings: fn(&Component) -> Vec<Finding>,
}

/// Every broker with rules. A new broker is a new file and a line here.
const BROKERS: &[Broker] = &[
    Broker {
        types: &["pubsub.redis"],
        check: redis::check,
        warnings: none,
    },
    Broker {
        types: &["pubsub.kafka"],
        check: kafka::check,
        warnings: none,
    },
    Broker {
        types: &["pubsub.rabbitmq"],
        check: rabbitmq::check,
        warnings: rabbitmq::warnings,
    },
    Broker {
        types: &["pubsub.jetstream"],
        check: jetstream::check,
        warnings: jetstream::warnings,
    },
    Broker {
        types: &["pubsub.mqtt3", "pubsub.mqtt"],
        check: mqtt::check,
        warnings: mqtt::warnings,
    },
    Broker {
        types: &["pubsub.in-memory"],
        check: |_, _| Vec::new(),
        warnings: in_memory_warnings,
    },
];

fn none(_: &Component) -> Vec<Finding> {
    Vec::new()
}

/// pubsub/in-memory/in-memory.go: an event bus inside one daprd, whose
/// subscriber logs and drops a message its handler failed.
fn in_memory_warnings(component: &Component) -> Vec<Finding> {
    vec![Finding::broker_warning(
        component,
        "type",
        String::from("the in-memory broker keeps messages inside this one daprd"),
        vec![String::from(
            "they are gone when daprd stops; one whose delivery fails after daprd's retries is logged and dropped; \
             and one published while the subscription is paused has no subscriber and is dropped",
        )],
    )]
}

/// Runs every rule over a loaded folder.
pub fn check(folder: &Folder) -> Report {
    let mut findings = Vec::new();
    let mut not_checked = Vec::new();
    for component in folder.components.iter().filter(|c| c.is_pubsub()) {
        let Some(broker) = BROKERS
            .iter()
            .find(|b| b.types.contains(&component.component_type.as_str()))
        else {
            let known: Vec<&str> = BROKERS
                .iter()
                .flat_map(|b| b.types.iter().copied())
                .collect();
            not_checked.push(format!(
                "{}: {}: not checked: host-bridge check knows {}",
                component.file.display(),
                Subject::of(component),
                known.join(", ")
            ));
            continue;
        };
        findings.extend(durations::silently_ignored(component));
        findings.extend((broker.check)(component, folder));
        findings.extend(resiliency::check_component(folder, component));
        findings.extend((broker.warnings)(component));
    }
    findings.extend(resiliency::check_documents(folder));
    findings.extend(subscriptions::check(folder));
    for skipped in &folder.skipped {
        findings.push(Finding::warning(
            skipped.file.clone(),
            Subject::Document {
                kind: skipped.kind.clone(),
                name: skipped.name.clone(),
                number: skipped.document + 1,
            },
            "apiVersion",
            String::from("daprd skips it"),
            vec![skipped.reason.clone()],
        ));
    }
    // By file, keeping each file's findings in rule order.
    findings.sort_by(|a, b| a.file.cmp(&b.file));
    Report {
        dir: folder.dir.clone(),
        findings,
        not_checked,
    }
}

/// The closing paragraph: the `dapr run` flags, and why.
pub fn health_check_reminder() -> String {
    format!(
        "dapr run also needs the app health check, which host-bridge check cannot see (it is daprd's command line):\n  \
         {HEALTH_CHECK_FLAGS}\n  \
         with them, daprd pauses the app's subscriptions while host-bridge is down, and the messages wait in the broker.\n  \
         without them, daprd goes on delivering to a host that is down: once a message's retries are over, Redis acks it\n  \
         (lost), and a subscription with a deadLetterTopic moves it there, on any broker.\n  \
         see README, \"When host-bridge is down\".\n"
    )
}

/// A boolean setting, as dapr/kit's `DecodeMetadata` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flag {
    /// Not in the file: the component's default applies.
    Default,
    /// Written; `text` as written.
    Set { value: bool, text: String },
    /// From a secret or the environment.
    Unknown,
}

/// The boolean setting `key` of `component`, matched regardless of case.
pub fn flag(component: &Component, key: &str) -> Flag {
    match component.get(key) {
        None => Flag::Default,
        Some(resources::Setting::Elsewhere) => Flag::Unknown,
        Some(resources::Setting::Value(text)) => Flag::Set {
            value: is_truthy(text),
            text: text.clone(),
        },
    }
}

/// `key is "text"`, with what the text means when it is not the bool's own
/// word (`"no"` is false).
pub fn shown(key: &str, text: &str, value: bool) -> String {
    if text.trim().eq_ignore_ascii_case(&value.to_string()) {
        format!("{key} is \"{text}\"")
    } else {
        format!("{key} is \"{text}\" ({value})")
    }
}

/// dapr/kit v0.18.3 `strings.IsTruthy`, which `DecodeMetadata` uses for
/// every bool: `y`, `yes`, `true`, `t`, `on`, `1` in any case; anything else
/// is false.
pub fn is_truthy(text: &str) -> bool {
    matches!(
        text.trim().to_ascii_lowercase().as_str(),
        "y" | "yes" | "true" | "t" | "on" | "1"
    )
}

/// The keys of the findings `check` makes for a `pubsub` component of
/// `component_type` with `settings`, in an empty folder: for the rules'
/// tests.
#[cfg(test)]
pub(crate) fn keys_found(
    check: fn(&Component, &Folder) -> Vec<Finding>,
    component_type: &str,
    settings: &[(&str, &str)],
) -> Vec<String> {
    let component = resources::test_component(component_type, settings);
    check(&component, &Folder::default())
        .into_iter()
        .map(|f| f.key)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn folder(text: &str) -> Folder {
        let mut folder = Folder {
            dir: PathBuf::from("dir"),
            ..Folder::default()
        };
        resources::read_file(&mut folder, Path::new("dir/a.yaml"), text).unwrap();
        folder
    }

    #[test]
    fn truthy_is_kit_s() {
        for yes in ["true", "True", "1", "yes", "Y", "on", "t"] {
            assert!(is_truthy(yes), "{yes}");
        }
        for no in ["false", "0", "no", "", "truthy", "2"] {
            assert!(!is_truthy(no), "{no}");
        }
    }

    #[test]
    fn an_unknown_pubsub_is_listed_as_not_checked_and_state_stores_are_ignored() {
        let folder = folder(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: p}\nspec: {type: pubsub.pulsar}\n---\n\
             apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: s}\nspec: {type: state.redis}\n",
        );
        let report = check(&folder);
        assert!(report.findings.is_empty());
        assert_eq!(report.not_checked.len(), 1);
        assert!(
            report.not_checked[0].starts_with(
                "dir/a.yaml: component \"p\" (pubsub.pulsar): not checked: host-bridge check knows pubsub.redis"
            ),
            "{}",
            report.not_checked[0]
        );
        assert_eq!(report.outcome(), Outcome::Clean);
        assert!(
            report
                .to_string()
                .ends_with("no settings that lose messages in dir\n")
        );
    }

    #[test]
    fn warnings_do_not_count() {
        let folder = folder(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: pubsub}\nspec: {type: pubsub.mqtt3}\n---\n\
             apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata: {name: r}\nspec:\n  policies:\n    retries:\n      \
             DefaultRetryPolicy: {duration: 1s, maxRetries: 8}\n",
        );
        let report = check(&folder);
        // The Resiliency is not first in its file: one finding for it, one
        // for the component it leaves without retries, one warning.
        assert_eq!(report.count(Severity::Finding), 2, "{report}");
        assert_eq!(report.count(Severity::Warning), 1);
        assert!(
            report
                .to_string()
                .ends_with("2 findings in dir (and 1 warning)\n")
        );
    }
}
