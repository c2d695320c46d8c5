//! `pubsub.kafka`: the settings that lose a message, read from
//! components-contrib v1.18.4 `common/component/kafka/` (`metadata.go` for
//! keys and defaults, `kafka.go` for the retry settings, `consumer.go` for
//! what they do) and `pubsub/kafka/kafka.go` (`consumeRetryEnabled`
//! defaults to true for the pub/sub component).
//!
//! How a message is lost: `consumer.go`, `ConsumeClaim`, marks a message's
//! offset only after daprd's handler returned success, but goes on to the
//! next message whether or not it did, and marking the next one commits
//! past the failed one. The component retries a failed message in place
//! while `consumeRetryEnabled` is true, with dapr/kit's back-off under the
//! `backOff` prefix (default: constant 5 s, no limit). When it stops
//! retrying, the message is lost, unless daprd had already moved it to the
//! subscription's deadLetterTopic (daprd then returns success), which is why
//! those two rules ask whether every subscription to the pubsub has one.

use super::durations::{Effective, KeyCase, effective, show};
use super::finding::{ComponentFindings, Finding};
use super::resources::{Component, Folder, Setting};
use super::subscriptions::dead_letter_cover;
use super::{Flag, flag, shown};
use std::time::Duration;

/// Every finding for one `pubsub.kafka` component.
pub fn check(component: &Component, folder: &Folder) -> Vec<Finding> {
    let mut found = ComponentFindings::new(component);
    let cover = dead_letter_cover(folder, &component.name)
        .explain(&component.name, folder.manifest.is_some());
    let passed = String::from(
        "a message whose delivery still fails after daprd's retries is left uncommitted, and the commit of the next \
         message passes it: it is never read again (consumer.go, ConsumeClaim)",
    );

    // metadata.go: ConsumeRetryEnabled, a DecodeMetadata bool; default
    // true (pubsub/kafka/kafka.go, NewKafka).
    let retrying = match flag(component, "consumeRetryEnabled") {
        Flag::Set { value: false, text } => {
            if let Some(cover) = &cover {
                found.add(
                    "consumeRetryEnabled",
                    shown("consumeRetryEnabled", &text, false),
                    vec![passed.clone(), cover.clone()],
                    String::from("consumeRetryEnabled: \"true\""),
                );
            }
            false
        }
        Flag::Unknown => false,
        _ => true,
    };

    // kafka.go, Init: retry.DecodeConfigWithPrefix(&backOffConfig, meta,
    // "backOff"): backOffMaxRetries is an int64, -1 (no limit) by default;
    // backOffPolicy exponential also stops once backOffMaxElapsedTime
    // (default 15 min, 0 = never) has passed (cenkalti/backoff v4).
    if retrying && let Some(cover) = &cover {
        let backoff = |key: &str| match KeyCase::ExactPrefix("backOff").lookup(component, key) {
            Some(Setting::Value(v)) if !v.trim().is_empty() => Some(v.trim().to_string()),
            _ => None,
        };
        let max_retries = backoff("backOffMaxRetries").and_then(|v| v.parse::<i64>().ok());
        let exponential =
            backoff("backOffPolicy").is_some_and(|p| p.eq_ignore_ascii_case("exponential"));
        if let Some(n) = max_retries.filter(|n| *n >= 0) {
            found.add(
                "backOffMaxRetries",
                format!(
                    "backOffMaxRetries is \"{n}\": the component stops retrying a failed message after {n} retries"
                ),
                vec![passed.clone(), cover.clone()],
                String::from("backOffMaxRetries: \"-1\""),
            );
        } else if exponential
            && let Effective::Known { value, .. } = effective(component, "backOffMaxElapsedTime")
            && value != Duration::ZERO
        {
            found.add(
                "backOffMaxElapsedTime",
                format!(
                    "backOffPolicy is exponential, which stops retrying a failed message after backOffMaxElapsedTime ({})",
                    show(value)
                ),
                vec![passed.clone(), cover.clone()],
                String::from("backOffMaxElapsedTime: \"0\""),
            );
        }
    }

    // metadata.go, getKafkaMetadata: producerRequiredAcks "all" (default),
    // "local" or "none", case-insensitive.
    if let Some(acks) = component.value("producerRequiredAcks") {
        let consequence = match acks.trim().to_ascii_lowercase().as_str() {
            "none" => Some(
                "a publish returns before any broker has written the message: one the broker fails to write is lost, \
                 and the publisher is told it was sent",
            ),
            "local" => Some(
                "a publish returns once the partition's leader has written the message: if the leader fails before \
                 a replica has it, it is lost, and the publisher was told it was sent",
            ),
            _ => None,
        };
        if let Some(consequence) = consequence {
            found.add(
                "producerRequiredAcks",
                format!("producerRequiredAcks is \"{acks}\""),
                vec![String::from(consequence)],
                String::from("producerRequiredAcks: \"all\""),
            );
        }
    }

    // metadata.go, getKafkaMetadata: parseInitialOffset(meta["initialOffset"])
    // (a plain lookup: exact case), "newest" unless "oldest".
    if !component.is_elsewhere("initialOffset") {
        let written = component.get_exact("initialOffset").and_then(|s| match s {
            Setting::Value(v) => Some(v.as_str()),
            Setting::Elsewhere => None,
        });
        if !written.is_some_and(|v| v.eq_ignore_ascii_case("oldest")) {
            found.add(
                "initialOffset",
                match written {
                    Some(v) if !v.is_empty() => format!("initialOffset is \"{v}\""),
                    _ => String::from("initialOffset is not set (default newest)"),
                },
                vec![String::from(
                    "a consumer group with no committed offset yet (the app's first start, a new consumerGroup, \
                     a new deadLetterTopic) starts at the end of the topic: messages published before it are never read",
                )],
                String::from("initialOffset: \"oldest\""),
            );
        }
    }
    found.findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::resources::read_file;
    use std::path::{Path, PathBuf};

    fn folder(settings: &[(&str, &str)], subscriptions: &[(&str, Option<&str>)]) -> Folder {
        let mut text = String::from(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: pubsub}\nspec:\n  type: pubsub.kafka\n  metadata:\n",
        );
        for (k, v) in settings {
            text.push_str(&format!("    - name: {k}\n      value: \"{v}\"\n"));
        }
        for (topic, dlq) in subscriptions {
            text.push_str(&format!(
                "---\napiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata: {{name: {topic}}}\n\
                 spec: {{pubsubname: pubsub, topic: {topic}{}}}\n",
                dlq.map_or(String::new(), |d| format!(", deadLetterTopic: {d}"))
            ));
        }
        let mut folder = Folder {
            dir: PathBuf::from("dir"),
            ..Folder::default()
        };
        read_file(&mut folder, Path::new("dir/pubsub.yaml"), &text).unwrap();
        folder
    }

    fn keys(settings: &[(&str, &str)], subscriptions: &[(&str, Option<&str>)]) -> Vec<String> {
        let f = folder(settings, subscriptions);
        check(&f.components[0], &f)
            .into_iter()
            .map(|f| f.key)
            .collect()
    }

    const OLDEST: (&str, &str) = ("initialOffset", "oldest");

    #[test]
    fn the_defaults_keep_retrying() {
        assert!(keys(&[OLDEST], &[]).is_empty());
        assert!(
            keys(
                &[
                    OLDEST,
                    ("backOffMaxRetries", "-1"),
                    ("consumeRetryEnabled", "true")
                ],
                &[]
            )
            .is_empty()
        );
    }

    #[test]
    fn finite_retries_without_a_dead_letter_topic_fire() {
        assert_eq!(
            keys(&[OLDEST, ("backOffMaxRetries", "3")], &[]),
            ["backOffMaxRetries"]
        );
        assert_eq!(
            keys(&[OLDEST, ("backOffMaxRetries", "3")], &[("orders", None)]),
            ["backOffMaxRetries"]
        );
        assert_eq!(
            keys(&[OLDEST, ("backOffPolicy", "exponential")], &[]),
            ["backOffMaxElapsedTime"]
        );
        assert!(
            keys(
                &[
                    OLDEST,
                    ("backOffPolicy", "exponential"),
                    ("backOffMaxElapsedTime", "0")
                ],
                &[]
            )
            .is_empty()
        );
        // The prefix is exact: `backoffMaxRetries` is not read.
        assert!(keys(&[OLDEST, ("backoffMaxRetries", "3")], &[]).is_empty());
    }

    #[test]
    fn finite_retries_with_dead_letter_topics_everywhere_pass() {
        assert!(
            keys(
                &[
                    OLDEST,
                    ("backOffMaxRetries", "3"),
                    ("consumeRetryEnabled", "false")
                ],
                &[
                    ("orders", Some("dlq")),
                    ("dlq", Some("dlq2")),
                    ("dlq2", Some("dlq"))
                ]
            )
            .is_empty()
        );
    }

    #[test]
    fn consume_retry_disabled_fires() {
        let f = folder(&[OLDEST, ("consumeRetryEnabled", "false")], &[]);
        let findings = check(&f.components[0], &f);
        assert_eq!(findings.len(), 1);
        assert_eq!(
            findings[0].to_string(),
            "dir/pubsub.yaml: component \"pubsub\" (pubsub.kafka): consumeRetryEnabled is \"false\"\n  \
             a message whose delivery still fails after daprd's retries is left uncommitted, and the commit of the next \
             message passes it: it is never read again (consumer.go, ConsumeClaim)\n  \
             no subscription to pubsub \"pubsub\" is known (pass --manifest spin.toml to read the app's own) to say it \
             has a deadLetterTopic\n  \
             fix: consumeRetryEnabled: \"true\"\n"
        );
    }

    #[test]
    fn producer_acks_and_initial_offset() {
        assert_eq!(
            keys(&[OLDEST, ("producerRequiredAcks", "none")], &[]),
            ["producerRequiredAcks"]
        );
        assert_eq!(
            keys(&[OLDEST, ("producerRequiredAcks", "Local")], &[]),
            ["producerRequiredAcks"]
        );
        assert!(keys(&[OLDEST, ("producerRequiredAcks", "all")], &[]).is_empty());
        assert_eq!(keys(&[], &[]), ["initialOffset"]);
        assert_eq!(keys(&[("initialOffset", "newest")], &[]), ["initialOffset"]);
        // Read with a plain lookup: another case is not read.
        assert_eq!(keys(&[("InitialOffset", "oldest")], &[]), ["initialOffset"]);
    }
}
