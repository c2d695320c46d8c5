//! Rule 3: how daprd retries a delivery to the app, per pub/sub component,
//! as daprd 1.18.3 works it out from the folder's Resiliency documents.
//!
//! What daprd loads (`pkg/resiliency/resiliency.go`):
//! - at startup, the first document of each YAML file whose `kind` is
//!   `Resiliency` (`loadLocalResiliencyPath`), in file-name order; a later
//!   document of the same file is never read;
//! - a Resiliency whose file does not decode (a quoted `maxRetries`), or
//!   whose policies do not (an unknown `policy`, a duration it cannot parse),
//!   contributes nothing: `FromConfigurations` logs the error and goes on,
//!   and `DecodeConfiguration` decodes targets only after every policy;
//! - a component's inbound policy (`ComponentInboundPolicy`) is its entry
//!   under `spec.targets.components`; only when it has none, the first
//!   retry policy named `DefaultPubsubComponentInboundRetryPolicy`,
//!   `DefaultComponentInboundRetryPolicy`, `DefaultComponentRetryPolicy` or
//!   `DefaultRetryPolicy`. An entry without `inbound.retry`, or naming a
//!   policy that does not exist, means no retries at all.
//!
//! A retry policy is dapr/kit's `retry.Config` (kit v0.18.3, `retry/
//! retry.go`), decoded by `config.Decode`: `duration` and `maxInterval` are
//! Go durations or bare milliseconds; `maxRetries` -1 (the default) is no
//! limit. `constant` waits `duration` (default 5 s) between attempts.
//! `exponential` ignores `duration`: the YAML cannot set its other fields,
//! so it starts at 500 ms, grows ×1.5 up to `maxInterval` (default 60 s),
//! randomises each wait by ±50 %, and stops after 15 min in all
//! (cenkalti/backoff v4's defaults). [`RetryPolicy::total_wait`] bounds the
//! time a message spends in retries from that.

use super::durations::{go_duration, show};
use super::finding::{Finding, Subject};
use super::resources::{Component, Folder, Resiliency, Scalar};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The default retry policy names daprd tries for a pub/sub component's
/// inbound side, in order (`getDefaultRetryPolicy` with the levels of
/// `ComponentPolicy.getPolicyLevels`).
const DEFAULT_POLICIES: [&str; 4] = [
    "DefaultPubsubComponentInboundRetryPolicy",
    "DefaultComponentInboundRetryPolicy",
    "DefaultComponentRetryPolicy",
    "DefaultRetryPolicy",
];

/// The longest a delivery to a host-bridge that just went down can keep
/// failing before daprd's app health check pauses the subscription, with
/// the README's flags (`--app-health-probe-interval 1
/// --app-health-threshold 1`): a probe a second, which fails at once on a
/// refused connection. Retries on Redis must outlast it, with room.
const HEALTH_CHECK_GAP: Duration = Duration::from_secs(2);

/// A retry policy as daprd runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub name: String,
    /// The file of the Resiliency that defines it.
    pub file: PathBuf,
    pub backoff: Backoff,
    /// `None`: no limit.
    pub max_retries: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Backoff {
    Constant(Duration),
    Exponential { max_interval: Duration },
}

const EXPONENTIAL_INITIAL: Duration = Duration::from_millis(500);
const EXPONENTIAL_MULTIPLIER: f64 = 1.5;
const EXPONENTIAL_RANDOMIZATION: f64 = 0.5;
const EXPONENTIAL_MAX_ELAPSED: Duration = Duration::from_secs(15 * 60);

impl RetryPolicy {
    /// The least and the most time a message spends waiting between
    /// attempts before daprd gives up on it; the most is `None` when it
    /// never does. The deliveries themselves take time on top.
    ///
    /// Constant: `duration × maxRetries`, exactly. Exponential: the i-th
    /// wait is `min(500 ms × 1.5^i, maxInterval) × (1 ± 0.5)`, summed over
    /// the retries, and never past the 15 min the back-off allows in all.
    pub fn total_wait(&self) -> (Duration, Option<Duration>) {
        match (&self.backoff, self.max_retries) {
            (Backoff::Constant(d), Some(n)) => {
                let total = d.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX));
                (total, Some(total))
            }
            (Backoff::Constant(d), None) if d.is_zero() => (Duration::ZERO, None),
            (Backoff::Constant(_), None) => (Duration::MAX, None),
            (Backoff::Exponential { max_interval }, n) => {
                let cap = EXPONENTIAL_MAX_ELAPSED.as_secs_f64();
                let max_interval = max_interval.as_secs_f64();
                let (mut low, mut high) = (0f64, 0f64);
                let mut current = EXPONENTIAL_INITIAL.as_secs_f64().min(max_interval);
                let mut i = 0u64;
                while n.is_none_or(|n| i < n) && low < cap {
                    low += current * (1.0 - EXPONENTIAL_RANDOMIZATION);
                    high += current * (1.0 + EXPONENTIAL_RANDOMIZATION);
                    current = if current >= max_interval / EXPONENTIAL_MULTIPLIER {
                        max_interval
                    } else {
                        current * EXPONENTIAL_MULTIPLIER
                    };
                    i += 1;
                }
                let secs = |s: f64| Duration::from_secs_f64(s.min(cap));
                (secs(low), Some(secs(high)))
            }
        }
    }

    /// How it retries, in a few words.
    pub fn describe(&self) -> String {
        let retries = match self.max_retries {
            Some(n) => format!("{n} retries"),
            None => String::from("no limit on retries"),
        };
        match &self.backoff {
            Backoff::Constant(d) => format!("constant, {} apart, {retries}", show(*d)),
            Backoff::Exponential { max_interval } => format!(
                "exponential from 500ms to {} apart, {retries}",
                show(*max_interval)
            ),
        }
    }
}

/// A pub/sub component's inbound retries.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    Retry(RetryPolicy),
    /// No retries, and why.
    None(String),
}

/// Why daprd does not load a Resiliency, as a finding.
fn not_loaded(
    resiliency: &Resiliency,
    key: String,
    problem: String,
    why: &str,
    fix: String,
) -> Box<Finding> {
    Box::new(Finding::new(
        resiliency.file.clone(),
        Subject::Resiliency {
            name: resiliency.name.clone(),
        },
        key,
        problem,
        vec![format!(
            "{why}: none of its retry policies or targets take effect"
        )],
        fix,
    ))
}

/// Decodes one Resiliency's policies as daprd does: the retry policies, or
/// the finding that says why daprd loads none of it.
fn decode(resiliency: &Resiliency) -> Result<BTreeMap<String, RetryPolicy>, Box<Finding>> {
    if resiliency.document != 0 {
        return Err(not_loaded(
            resiliency,
            String::from("document"),
            format!(
                "is document {} of its file, and daprd 1.18.3 reads only a file's first document when it loads Resiliency at startup",
                resiliency.document + 1
            ),
            "daprd never reads it",
            String::from("move it to a file of its own"),
        ));
    }
    let undecodable = "daprd cannot decode the file: it logs an error and skips this Resiliency";
    let rejected = "daprd rejects its policies: it logs an error and skips this Resiliency";
    let duration = |value: &Scalar| -> Option<Duration> {
        let text = value.text();
        // config.Decode and resiliency.parseDuration: a bare number is
        // milliseconds, else a Go duration.
        match text.trim().parse::<u64>() {
            Ok(ms) => Some(Duration::from_millis(ms)),
            Err(_) => go_duration(text.trim()),
        }
    };
    for (name, value) in &resiliency.timeouts {
        if duration(value).is_none() {
            return Err(not_loaded(
                resiliency,
                format!("policies.timeouts.{name}"),
                format!("policies.timeouts.{name} is {value}, not a duration"),
                rejected,
                format!("{name}: 5s (a Go duration, or a number of milliseconds)"),
            ));
        }
    }
    let mut policies = BTreeMap::new();
    for (name, spec) in &resiliency.retries {
        let key = |field: &str| format!("policies.retries.{name}.{field}");
        // maxRetries is a Go *int in the Resiliency type: a YAML string or
        // bool fails the whole file's decoding.
        let max_retries = match &spec.max_retries {
            None | Some(Scalar::Null) => None,
            Some(Scalar::Int(n)) => u64::try_from(*n).ok(),
            Some(Scalar::Float(f)) if f.fract() == 0.0 => (*f >= 0.0).then_some(*f as u64),
            Some(other) => {
                return Err(not_loaded(
                    resiliency,
                    key("maxRetries"),
                    format!("{} is {other}, not an integer", key("maxRetries")),
                    undecodable,
                    format!("maxRetries: {}", other.text().trim()),
                ));
            }
        };
        let policy = spec
            .policy
            .as_ref()
            .map(|p| p.text().to_ascii_lowercase())
            .unwrap_or_else(|| String::from("constant"));
        let parse = |field: &str, value: &Option<Scalar>, default: Duration| match value {
            None | Some(Scalar::Null) => Ok(default),
            Some(value) => duration(value).ok_or_else(|| {
                not_loaded(
                    resiliency,
                    key(field),
                    format!("{} is {value}, not a duration", key(field)),
                    rejected,
                    format!("{field}: 1s (a Go duration, or a number of milliseconds)"),
                )
            }),
        };
        let backoff = match policy.as_str() {
            "constant" => {
                Backoff::Constant(parse("duration", &spec.duration, Duration::from_secs(5))?)
            }
            "exponential" => {
                parse("duration", &spec.duration, Duration::from_secs(5))?;
                Backoff::Exponential {
                    max_interval: parse(
                        "maxInterval",
                        &spec.max_interval,
                        Duration::from_secs(60),
                    )?,
                }
            }
            other => {
                return Err(not_loaded(
                    resiliency,
                    key("policy"),
                    format!(
                        "{} is \"{other}\", neither constant nor exponential",
                        key("policy")
                    ),
                    rejected,
                    String::from("policy: constant"),
                ));
            }
        };
        policies.insert(
            name.clone(),
            RetryPolicy {
                name: name.clone(),
                file: resiliency.file.clone(),
                backoff,
                max_retries,
            },
        );
    }
    Ok(policies)
}

/// Every Resiliency that daprd does not load, and why.
pub fn check_documents(folder: &Folder) -> Vec<Finding> {
    folder
        .resiliencies
        .iter()
        .filter_map(|r| decode(r).err())
        .map(|finding| *finding)
        .collect()
}

/// The inbound retries daprd gives `component`.
pub fn inbound(folder: &Folder, component: &str) -> Inbound {
    // Later Resiliency documents overwrite earlier ones, name by name.
    let mut retries: BTreeMap<String, RetryPolicy> = BTreeMap::new();
    let mut targets: BTreeMap<&str, (Option<&str>, &Resiliency)> = BTreeMap::new();
    for resiliency in &folder.resiliencies {
        let Ok(policies) = decode(resiliency) else {
            continue;
        };
        retries.extend(policies);
        for (name, retry) in &resiliency.inbound_retry {
            targets.insert(name, (retry.as_deref(), resiliency));
        }
    }
    match targets.get(component) {
        Some((Some(name), _)) => match retries.get(*name) {
            Some(policy) => Inbound::Retry(policy.clone()),
            None => Inbound::None(format!(
                "its Resiliency target names retry policy \"{name}\", which no Resiliency daprd loads defines"
            )),
        },
        Some((None, resiliency)) => Inbound::None(format!(
            "Resiliency \"{}\" ({}) targets it without an inbound retry",
            resiliency.name,
            resiliency.file.display()
        )),
        None => DEFAULT_POLICIES
            .iter()
            .find_map(|name| retries.get(*name))
            .map_or_else(
                || {
                    Inbound::None(String::from(
                        "no Resiliency daprd loads sets targets.components.NAME.inbound.retry for it",
                    ))
                },
                |policy| Inbound::Retry(policy.clone()),
            ),
    }
}

/// What a delivery that fails once meets on each broker, when daprd does
/// not retry it.
fn without_retries(component_type: &str) -> &'static str {
    match component_type {
        "pubsub.redis" => "Redis acks it: it is lost",
        "pubsub.in-memory" => "the in-memory broker logs it and drops it",
        "pubsub.rabbitmq" => {
            "it goes straight back to RabbitMQ: requeued at once with requeueInFailure, dropped without"
        }
        "pubsub.kafka" => {
            "it goes back to the Kafka component, which retries it every backOffDuration"
        }
        "pubsub.jetstream" => {
            "it is nacked, and JetStream sends it again at once (or after ackWait)"
        }
        _ => "it stays unacked until daprd reconnects to the broker",
    }
}

/// Rule 3 for one pub/sub component: retries exist, and on Redis they fit
/// the health check's gap and processingTimeout.
pub fn check_component(folder: &Folder, component: &Component) -> Vec<Finding> {
    let mut findings = Vec::new();
    let subject = || Subject::of(component);
    let name = &component.name;
    let policy = match inbound(folder, name) {
        Inbound::Retry(policy) if policy.max_retries != Some(0) => policy,
        other => {
            let reason = match other {
                Inbound::None(reason) => reason.replace("NAME", name),
                Inbound::Retry(policy) => format!(
                    "its inbound retry policy \"{}\" ({}) has maxRetries 0",
                    policy.name,
                    policy.file.display()
                ),
            };
            findings.push(Finding::new(
                component.file.clone(),
                subject(),
                "inbound.retry",
                format!("daprd does not retry a failed delivery: {reason}"),
                vec![
                    format!(
                        "a delivery that fails once (the app answered RETRY, or was restarting) is not tried again: {}",
                        without_retries(&component.component_type)
                    ),
                    String::from(
                        "and a subscription with a deadLetterTopic has it moved there after that one attempt",
                    ),
                ],
                format!(
                    "a Resiliency in {} with spec.policies.retries.pubsubRetry {{policy: constant, duration: 1s, maxRetries: 8}} and spec.targets.components.{name}.inbound.retry: pubsubRetry",
                    folder.dir.display()
                ),
            ));
            return findings;
        }
    };
    if component.component_type != "pubsub.redis" {
        return findings;
    }
    let (least, most) = policy.total_wait();
    let from = format!(
        "inbound retry policy \"{}\" ({}, {})",
        policy.name,
        policy.file.display(),
        policy.describe()
    );
    if least < HEALTH_CHECK_GAP {
        findings.push(Finding::new(
            component.file.clone(),
            subject(),
            "inbound.retry",
            format!(
                "{from} can give up after {}, before the app health check pauses the subscription",
                show(least)
            ),
            vec![
                String::from(
                    "a delivery to a host-bridge that just went down fails until daprd's next probe (a second apart with \
                     --app-health-probe-interval 1) finds it down; one whose retries end first is acked by Redis and lost",
                ),
            ],
            format!(
                "in policy \"{}\": policy: constant, duration: 1s, maxRetries: 8",
                policy.name
            ),
        ));
    }
    let super::durations::Effective::Known {
        value: processing_timeout,
        ..
    } = super::durations::effective(component, "processingTimeout")
    else {
        return findings;
    };
    if processing_timeout.is_zero() {
        // Redelivery is off: the redis rules say so.
        return findings;
    }
    if most.is_none_or(|most| most >= processing_timeout) {
        let (how_long, fix) = match most {
            Some(most) => (
                format!("for up to {}", show(most)),
                format!(
                    "processingTimeout: \"{}s\" (twice the retries, leaving as long again for the deliveries)",
                    (most.as_secs_f64() * 2.0).ceil() as u64
                ),
            ),
            None => (
                String::from("without end"),
                format!("in policy \"{}\": maxRetries: 8", policy.name),
            ),
        };
        findings.push(Finding::new(
            component.file.clone(),
            subject(),
            "processingTimeout",
            format!(
                "{from} retries {how_long}, not less than processingTimeout ({})",
                show(processing_timeout)
            ),
            vec![
                String::from(
                    "a delivery still retrying when processingTimeout passes is never acked: Redis claims it again and \
                     daprd delivers it a second time next to the first (pubsub/redis/redis.go, processMessage)",
                ),
                String::from(
                    "a message the app always answers RETRY for is then never given up on, and never reaches a deadLetterTopic",
                ),
            ],
            fix,
        ));
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::resources::read_file;
    use std::path::Path;

    fn folder(redis: &str, resiliency: &str) -> Folder {
        let mut folder = Folder {
            dir: PathBuf::from("dir"),
            ..Folder::default()
        };
        read_file(
            &mut folder,
            Path::new("dir/pubsub.yaml"),
            &format!(
                "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {{name: pubsub}}\n\
                 spec:\n  type: pubsub.redis\n  metadata:\n{redis}"
            ),
        )
        .unwrap();
        read_file(&mut folder, Path::new("dir/resiliency.yaml"), resiliency).unwrap();
        folder
    }

    fn resiliency(policy: &str) -> String {
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata: {{name: r}}\nspec:\n  policies:\n    retries:\n      \
             pubsubRetry:\n{policy}  targets:\n    components:\n      pubsub:\n        inbound:\n          retry: pubsubRetry\n"
        )
    }

    const SHIPPED: &str = "        policy: constant\n        duration: 1s\n        maxRetries: 8\n";
    const TIMEOUT_15S: &str = "    - name: processingTimeout\n      value: 15s\n";

    fn check(folder: &Folder) -> Vec<Finding> {
        check_component(folder, &folder.components[0])
    }

    #[test]
    fn the_shipped_policy_passes() {
        assert_eq!(check(&folder(TIMEOUT_15S, &resiliency(SHIPPED))), vec![]);
    }

    #[test]
    fn no_policy_is_a_finding() {
        let f = folder(TIMEOUT_15S, "");
        let findings = check(&f);
        assert_eq!(findings.len(), 1);
        assert_eq!(
            findings[0].to_string(),
            "dir/pubsub.yaml: component \"pubsub\" (pubsub.redis): daprd does not retry a failed delivery: \
             no Resiliency daprd loads sets targets.components.pubsub.inbound.retry for it\n  \
             a delivery that fails once (the app answered RETRY, or was restarting) is not tried again: \
             Redis acks it: it is lost\n  \
             and a subscription with a deadLetterTopic has it moved there after that one attempt\n  \
             fix: a Resiliency in dir with spec.policies.retries.pubsubRetry {policy: constant, duration: 1s, \
             maxRetries: 8} and spec.targets.components.pubsub.inbound.retry: pubsubRetry\n"
        );
    }

    #[test]
    fn a_default_policy_counts_and_a_target_without_retry_does_not() {
        let default = "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata: {name: r}\nspec:\n  policies:\n    \
                       retries:\n      DefaultPubsubComponentInboundRetryPolicy:\n        duration: 1s\n        maxRetries: 8\n";
        assert_eq!(check(&folder(TIMEOUT_15S, default)), vec![]);
        let outbound_only = format!(
            "{default}  targets:\n    components:\n      pubsub:\n        outbound:\n          retry: x\n"
        );
        let findings = check(&folder(TIMEOUT_15S, &outbound_only));
        assert_eq!(findings.len(), 1);
        assert!(findings[0].problem.contains("without an inbound retry"));
    }

    #[test]
    fn retries_longer_than_processing_timeout_are_a_finding() {
        // Constant: 2 s × 10 = 20 s against 15 s.
        let long = "        policy: constant\n        duration: 2s\n        maxRetries: 10\n";
        let findings = check(&folder(TIMEOUT_15S, &resiliency(long)));
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].key, "processingTimeout");
        assert!(
            findings[0].problem.contains("for up to 20s"),
            "{}",
            findings[0]
        );
        assert_eq!(
            findings[0].fix.as_deref(),
            Some(
                "processingTimeout: \"40s\" (twice the retries, leaving as long again for the deliveries)"
            )
        );
        // The default processingTimeout is 60 s: the same policy fits.
        assert_eq!(check(&folder("", &resiliency(long))), vec![]);
        // Exponential with no limit runs up to 15 min.
        let forever = "        policy: exponential\n        maxInterval: 10s\n";
        let findings = check(&folder("", &resiliency(forever)));
        assert_eq!(findings.len(), 1);
        assert!(
            findings[0].problem.contains("for up to 15m"),
            "{}",
            findings[0]
        );
    }

    #[test]
    fn retries_shorter_than_the_health_check_gap_are_a_finding() {
        // A bare number is milliseconds: 1 ms × 8.
        let short = "        policy: constant\n        duration: 1\n        maxRetries: 8\n";
        let findings = check(&folder(TIMEOUT_15S, &resiliency(short)));
        assert_eq!(findings.len(), 1);
        assert!(
            findings[0].problem.contains("can give up after 8ms"),
            "{}",
            findings[0]
        );
    }

    #[test]
    fn a_resiliency_daprd_cannot_decode_is_a_finding_and_counts_for_nothing() {
        let quoted = "        policy: constant\n        duration: 1s\n        maxRetries: \"8\"\n";
        let f = folder(TIMEOUT_15S, &resiliency(quoted));
        let documents = check_documents(&f);
        assert_eq!(documents.len(), 1);
        assert_eq!(documents[0].key, "policies.retries.pubsubRetry.maxRetries");
        assert_eq!(documents[0].fix.as_deref(), Some("maxRetries: 8"));
        assert_eq!(check(&f).len(), 1);
        let unknown = "        policy: linear\n";
        assert_eq!(check_documents(&folder("", &resiliency(unknown))).len(), 1);
        assert!(check_documents(&folder("", &resiliency(SHIPPED))).is_empty());
    }

    #[test]
    fn a_resiliency_after_another_document_counts_for_nothing() {
        let second = format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {{name: s}}\nspec: {{type: state.redis}}\n---\n{}",
            resiliency(SHIPPED)
        );
        let f = folder(TIMEOUT_15S, &second);
        assert_eq!(check_documents(&f).len(), 1);
        assert_eq!(check(&f).len(), 1);
    }

    #[test]
    fn exponential_bounds() {
        let policy = RetryPolicy {
            name: String::from("p"),
            file: PathBuf::new(),
            backoff: Backoff::Exponential {
                max_interval: Duration::from_secs(60),
            },
            max_retries: Some(3),
        };
        // 0.5 + 0.75 + 1.125 = 2.375 s, ±50 %.
        let (least, most) = policy.total_wait();
        assert_eq!(least, Duration::from_secs_f64(1.1875));
        assert_eq!(most, Some(Duration::from_secs_f64(3.5625)));
    }
}
