//! The subscriptions daprd ends up with, and rule 6: a dead-letter topic
//! nothing subscribes to.
//!
//! daprd takes subscriptions from two places: `kind: Subscription`
//! documents in the resources folder, and the app's `GET /dapr/subscribe`,
//! which host-bridge answers from its manifest's `[[trigger.pubsub]]`. A
//! programmatic subscription replaces a declarative one to the same pubsub
//! and topic. The manifest is not in the folder, so it is read only when
//! `--manifest` names it; without it, a dead-letter topic the app itself
//! subscribes to looks unsubscribed, and the finding says to pass it.
//!
//! Dead letters are daprd's, not the broker's (`pkg/runtime/subscription/
//! subscription.go`, `sendToDeadLetter`): once a message's retries are
//! over, or the app answered DROP, daprd publishes it to the
//! subscription's `deadLetterTopic` on the same pubsub and acks the
//! original. A dead-letter topic nothing subscribes to is where messages
//! go to be forgotten.

use super::finding::{Finding, Subject};
use super::resources::{Folder, Subscription};

/// The subscriptions daprd uses: the manifest's, and the declarative ones
/// it decodes that no programmatic one replaces.
pub fn effective(folder: &Folder) -> Vec<&Subscription> {
    let programmatic: Vec<&Subscription> = folder
        .subscriptions
        .iter()
        .filter(|s| s.is_programmatic())
        .collect();
    folder
        .subscriptions
        .iter()
        .filter(|s| {
            s.is_programmatic()
                || (s.undecodable.is_empty()
                    && !programmatic
                        .iter()
                        .any(|p| p.pubsubname == s.pubsubname && p.topic == s.topic))
        })
        .collect()
}

/// Whether every subscription to a pubsub has a dead-letter topic, which
/// decides whether a message the component gives up on is lost or moved.
#[derive(Debug)]
pub enum DeadLetterCover<'f> {
    /// Every subscription to it has one.
    All,
    /// These subscriptions to it have none.
    Missing(Vec<&'f Subscription>),
    /// No subscription to it is known.
    NoneKnown,
}

impl DeadLetterCover<'_> {
    /// One line saying which subscriptions lack a dead-letter topic, for a
    /// finding that depends on it; `None` when all have one.
    pub fn explain(&self, pubsubname: &str, manifest_given: bool) -> Option<String> {
        match self {
            DeadLetterCover::All => None,
            DeadLetterCover::Missing(subscriptions) => Some(format!(
                "no deadLetterTopic on: {}",
                subscriptions
                    .iter()
                    .map(|s| Subject::of_subscription(s).to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            )),
            DeadLetterCover::NoneKnown => Some(format!(
                "no subscription to pubsub \"{pubsubname}\" is known{} to say it has a deadLetterTopic",
                if manifest_given {
                    ""
                } else {
                    " (pass --manifest spin.toml to read the app's own)"
                }
            )),
        }
    }
}

/// How the subscriptions to `pubsubname` stand on dead-letter topics.
pub fn dead_letter_cover<'f>(folder: &'f Folder, pubsubname: &str) -> DeadLetterCover<'f> {
    let to_it: Vec<&Subscription> = effective(folder)
        .into_iter()
        .filter(|s| s.pubsubname == pubsubname)
        .collect();
    if to_it.is_empty() {
        return DeadLetterCover::NoneKnown;
    }
    let missing: Vec<&Subscription> = to_it
        .into_iter()
        .filter(|s| s.dead_letter_topic.is_none())
        .collect();
    if missing.is_empty() {
        DeadLetterCover::All
    } else {
        DeadLetterCover::Missing(missing)
    }
}

/// Rule 6, and what else about a subscription sends a message nowhere: a
/// dead-letter topic with no subscriber, a pubsubname naming no component,
/// a declarative subscription daprd cannot decode, or one the manifest
/// replaces.
pub fn check(folder: &Folder) -> Vec<Finding> {
    let manifest_given = folder.manifest.is_some();
    let mut findings = Vec::new();
    let effective = effective(folder);
    let dir = folder.dir.display();
    let pubsubs: Vec<&str> = folder
        .components
        .iter()
        .filter(|c| c.is_pubsub())
        .map(|c| c.name.as_str())
        .collect();

    for s in &folder.subscriptions {
        for (path, problem, fix) in &s.undecodable {
            findings.push(Finding::new(
                s.file().into(),
                Subject::of_subscription(s),
                path.as_str(),
                format!("{path} {problem}"),
                vec![String::from(
                    "daprd cannot decode this document and skips it with a warning in its log: \
                     nothing subscribes to this topic through it",
                )],
                fix.clone(),
            ));
        }
        if !s.is_programmatic()
            && let Some(p) = folder
                .subscriptions
                .iter()
                .find(|p| p.is_programmatic() && p.pubsubname == s.pubsubname && p.topic == s.topic)
        {
            findings.push(Finding::warning(
                s.file().into(),
                Subject::of_subscription(s),
                "topic",
                format!("is replaced by {}", Subject::of_subscription(p)),
                vec![format!(
                    "daprd uses the app's subscription to this topic and ignores this one, \
                     deadLetterTopic ({}) included",
                    s.dead_letter_topic.as_deref().unwrap_or("none")
                )],
            ));
        }
    }

    for s in &effective {
        if !pubsubs.contains(&s.pubsubname.as_str()) {
            findings.push(Finding::new(
                s.file().into(),
                Subject::of_subscription(s),
                "pubsubname",
                format!(
                    "pubsubname \"{}\" names no pub/sub component in {dir}",
                    s.pubsubname
                ),
                vec![String::from(
                    "daprd has no component of that name: nothing is delivered to this \
                     subscription, and nothing it publishes arrives",
                )],
                match pubsubs.as_slice() {
                    [only] => format!("pubsubname: \"{only}\""),
                    [] => format!("add the pub/sub component to {dir}"),
                    many => format!("pubsubname: one of \"{}\"", many.join("\", \"")),
                },
            ));
            continue;
        }
        let Some(dead_letter_topic) = &s.dead_letter_topic else {
            continue;
        };
        let subscribed = effective
            .iter()
            .any(|other| other.pubsubname == s.pubsubname && &other.topic == dead_letter_topic);
        if subscribed {
            continue;
        }
        let component_type = folder
            .components
            .iter()
            .find(|c| c.name == s.pubsubname)
            .map_or("", |c| c.component_type.as_str());
        let mut consequence = vec![String::from(
            "daprd publishes a message it gives up on (its retries ran out, or the app answered DROP) \
             to that topic and acks the original",
        )];
        consequence.push(String::from(match component_type {
            "pubsub.rabbitmq" => {
                "RabbitMQ drops it there: no queue is bound to the topic's exchange until something subscribes"
            }
            "pubsub.mqtt3" | "pubsub.mqtt" => {
                "the MQTT broker drops it there: no session is subscribed to the topic"
            }
            "pubsub.in-memory" => "the in-memory broker drops it there: it has no subscriber",
            _ => "it waits there for a subscriber that is never started",
        }));
        if !manifest_given {
            consequence.push(String::from(
                "(the app's own subscriptions were not read: pass --manifest spin.toml if it subscribes to it)",
            ));
        }
        findings.push(Finding::new(
            s.file().into(),
            Subject::of_subscription(s),
            "deadLetterTopic",
            format!(
                "deadLetterTopic \"{dead_letter_topic}\" has no subscriber: nothing in {dir}{} subscribes to topic \"{dead_letter_topic}\" on pubsub \"{}\"",
                if manifest_given { " or the manifest" } else { "" },
                s.pubsubname
            ),
            consequence,
            format!(
                "subscribe to it: a [[trigger.pubsub]] with pubsubname = \"{}\" and topic = \"{dead_letter_topic}\" in spin.toml, or a Subscription in {dir}",
                s.pubsubname
            ),
        ));
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::resources::read_file;
    use std::path::{Path, PathBuf};

    const PUBSUB: &str = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: pubsub}\n\
                          spec: {type: pubsub.rabbitmq}\n";

    fn folder(docs: &[&str]) -> Folder {
        let mut folder = Folder {
            dir: PathBuf::from("dir"),
            ..Folder::default()
        };
        read_file(&mut folder, Path::new("dir/a.yaml"), &docs.join("---\n")).unwrap();
        folder
    }

    fn subscription(name: &str, topic: &str, dead_letter: Option<&str>) -> String {
        format!(
            "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata: {{name: {name}}}\n\
             spec:\n  pubsubname: pubsub\n  topic: {topic}\n{}",
            dead_letter.map_or(String::new(), |d| format!("  deadLetterTopic: {d}\n"))
        )
    }

    #[test]
    fn a_dead_letter_topic_nothing_subscribes_to_is_a_finding() {
        let orders = subscription("orders", "orders", Some("orders-dlq"));
        let findings = check(&folder(&[PUBSUB, &orders]));
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(
            findings[0].to_string(),
            "dir/a.yaml: Subscription \"orders\" (pubsub \"pubsub\", topic \"orders\"): \
             deadLetterTopic \"orders-dlq\" has no subscriber: nothing in dir subscribes to \
             topic \"orders-dlq\" on pubsub \"pubsub\"\n  \
             daprd publishes a message it gives up on (its retries ran out, or the app answered DROP) \
             to that topic and acks the original\n  \
             RabbitMQ drops it there: no queue is bound to the topic's exchange until something subscribes\n  \
             (the app's own subscriptions were not read: pass --manifest spin.toml if it subscribes to it)\n  \
             fix: subscribe to it: a [[trigger.pubsub]] with pubsubname = \"pubsub\" and topic = \
             \"orders-dlq\" in spin.toml, or a Subscription in dir\n"
        );
    }

    #[test]
    fn a_subscribed_dead_letter_topic_is_fine() {
        let orders = subscription("orders", "orders", Some("orders-dlq"));
        let dlq = subscription("dlq", "orders-dlq", None);
        assert!(check(&folder(&[PUBSUB, &orders, &dlq])).is_empty());
    }

    #[test]
    fn an_unknown_pubsubname_is_a_finding() {
        let orders = subscription("orders", "orders", None).replace("pubsub\n", "pubsb\n");
        let findings = check(&folder(&[PUBSUB, &orders]));
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].key, "pubsubname");
        assert_eq!(findings[0].fix.as_deref(), Some("pubsubname: \"pubsub\""));
    }

    #[test]
    fn dead_letter_cover_needs_every_subscription() {
        let with = subscription("a", "orders", Some("dlq"));
        let without = subscription("b", "payments", None);
        let f = folder(&[PUBSUB, &with]);
        assert!(matches!(
            dead_letter_cover(&f, "pubsub"),
            DeadLetterCover::All
        ));
        let f = folder(&[PUBSUB, &with, &without]);
        assert!(matches!(
            dead_letter_cover(&f, "pubsub"),
            DeadLetterCover::Missing(m) if m.len() == 1
        ));
        let f = folder(&[PUBSUB]);
        assert!(matches!(
            dead_letter_cover(&f, "pubsub"),
            DeadLetterCover::NoneKnown
        ));
    }
}
