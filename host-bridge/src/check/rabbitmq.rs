//! `pubsub.rabbitmq`: the settings that lose a message, read from
//! components-contrib v1.18.4 `pubsub/rabbitmq/metadata.go` (keys and
//! defaults: `createMetadata`, decoded by dapr/kit's `DecodeMetadata`, so a
//! bool is true for `true`, `1`, `yes`, `on`, `y` or `t`) and
//! `pubsub/rabbitmq/rabbitmq.go` (what each does).
//!
//! Not a rule, but worth knowing: `publisherConfirm: "true"` makes a publish
//! wait for the broker's confirmation, yet `publishSync` returns success
//! even when that confirmation is a nack or never comes (the error it makes
//! is logged and dropped), so it does not tell a publisher its message was
//! lost.

use super::finding::{ComponentFindings, Finding};
use super::resources::{Component, Folder};
use super::{Flag, flag, shown};

/// Every finding for one `pubsub.rabbitmq` component.
pub fn check(component: &Component, _folder: &Folder) -> Vec<Finding> {
    let mut found = ComponentFindings::new(component);

    // rabbitmq.go, handleMessage: on any error from daprd's handler (the
    // retries ran out, or the subscription is stopping and the handler
    // returned the context's error) it calls d.Nack(false, requeueInFailure).
    // Default false (createMetadata leaves it unset).
    if let Some(problem) = false_or_unset(component, "requeueInFailure", false) {
        let mut consequence = vec![
            String::from(
                "a message whose delivery fails (the app answered RETRY, or could not be reached) is nacked without requeue and dropped",
            ),
            String::from(
                "and so is one in flight when daprd stops the subscription (the app health check pausing it, a shutdown)",
            ),
        ];
        if matches!(
            flag(component, "enableDeadLetter"),
            Flag::Set { value: true, .. }
        ) {
            consequence.push(String::from(
                "(enableDeadLetter has RabbitMQ move it to the queue dlq-QUEUE, from which nothing delivers it to the app)",
            ));
        }
        found.add(
            "requeueInFailure",
            problem,
            consequence,
            "requeueInFailure: \"true\"",
        );
    }

    // rabbitmq.go, subscribeForever: channel.Consume(q.Name, tag,
    // autoAck, ...). With autoAck the broker forgets a message as it hands
    // it over, and handleMessage neither acks nor nacks. Default false.
    if let Flag::Set { value: true, text } = flag(component, "autoAck") {
        found.add(
            "autoAck",
            shown("autoAck", &text, true),
            vec![String::from(
                "RabbitMQ counts a message as acked the moment it hands it to daprd: one whose delivery fails, \
                 or that is in flight when daprd or the app stops, is never delivered again",
            )],
            "autoAck: \"false\"",
        );
    }

    // rabbitmq.go, prepareSubscription: QueueDeclare(queueName, durable,
    // deletedWhenUnused, ...) and ensureExchangeDeclared(..., durable,
    // deletedWhenUnused). Default true: an auto-delete queue is deleted
    // with its messages when its last consumer is cancelled, which
    // subscribeForever does whenever the subscription's context ends.
    if let Some(problem) = true_or_unset(component, "deletedWhenUnused", true) {
        found.add(
            "deletedWhenUnused",
            problem,
            vec![
                String::from(
                    "the topic's queue is auto-delete: RabbitMQ deletes it, with every message in it, when its last consumer goes, \
                     and daprd cancels its consumer whenever the app health check pauses the subscription or daprd stops",
                ),
                String::from(
                    "messages published until daprd subscribes again find no queue bound to the topic's exchange and are dropped",
                ),
            ],
            "deletedWhenUnused: \"false\"",
        );
    }

    // Same QueueDeclare: durable. Default true.
    if let Flag::Set { value: false, text } = flag(component, "durable") {
        found.add(
            "durable",
            shown("durable", &text, false),
            vec![String::from(
                "the topic's queue and exchange are not durable: a RabbitMQ restart deletes them, with every message waiting in the queue",
            )],
            "durable: \"true\"",
        );
    }

    // rabbitmq.go, publishSync: amqp.Publishing{DeliveryMode:
    // deliveryMode}. A uint8, default 0; 0 and 1 are transient, 2
    // persistent. A value that is not a uint8 fails the component's start.
    match component
        .value("deliveryMode")
        .map(|v| (v, v.trim().parse::<u8>()))
    {
        Some((_, Ok(2))) | Some((_, Err(_))) => {}
        _ if component.is_elsewhere("deliveryMode") => {}
        written => {
            let problem = match written {
                Some((text, _)) => format!("deliveryMode is \"{text}\" (transient)"),
                None => String::from("deliveryMode is not set (default 0, transient)"),
            };
            found.add(
                "deliveryMode",
                problem,
                vec![String::from(
                    "the messages daprd publishes are transient: a RabbitMQ restart loses every one waiting in a queue, durable or not",
                )],
                "deliveryMode: \"2\"",
            );
        }
    }

    // metadata.go: maxLen and maxLenBytes become the queue's x-max-length
    // and x-max-length-bytes (formatQueueDeclareArgs); RabbitMQ's default
    // overflow drops the oldest message. ttlInSeconds becomes every
    // message's expiration (publishSync): an expired message is dropped.
    for (key, what) in [("maxLen", "messages"), ("maxLenBytes", "bytes of messages")] {
        if let Some(limit) = component
            .value(key)
            .and_then(|v| v.trim().parse::<i64>().ok())
            && limit > 0
        {
            found.add(
                key,
                format!("{key} is \"{limit}\""),
                vec![format!(
                    "the topic's queue holds at most {limit} {what}: past that RabbitMQ drops the oldest, \
                     delivered or not (a backlog while the app is down, say)"
                )],
                format!("remove {key}"),
            );
        }
    }
    if let Some(ttl) = component
        .value("ttlInSeconds")
        .filter(|v| !v.trim().is_empty())
    {
        found.add(
            "ttlInSeconds",
            format!("ttlInSeconds is \"{ttl}\""),
            vec![format!(
                "every message daprd publishes expires after {ttl} s: RabbitMQ drops one still waiting in the queue then"
            )],
            "remove ttlInSeconds",
        );
    }
    found.findings
}

/// Broker properties, not settings: printed once per component.
pub fn warnings(component: &Component) -> Vec<Finding> {
    vec![
        Finding::broker_warning(
            component,
            "queue",
            String::from("a topic's queue exists only once daprd has subscribed to it"),
            vec![String::from(
                "rabbitmq.go declares and binds the queue in prepareSubscription: a message published to a topic before \
                 the app's first subscription to it (its first start, or a new deadLetterTopic) has no queue and is dropped",
            )],
        ),
        Finding::broker_warning(
            component,
            "consumer_timeout",
            String::from(
                "the broker's consumer_timeout bounds how long a paused subscription holds messages",
            ),
            vec![String::from(
                "when the app health check pauses a subscription, rabbitmq.go cancels its consumer but keeps the \
                 channel, so the messages daprd had prefetched stay unacked until the channel closes: set \
                 consumer_timeout in rabbitmq.conf (scripts/broker.sh sets 60000 ms; RabbitMQ's default is 30 minutes)",
            )],
        ),
    ]
}

/// The problem line when the bool `key` (default `default`) is false.
fn false_or_unset(component: &Component, key: &str, default: bool) -> Option<String> {
    match flag(component, key) {
        Flag::Default if !default => Some(format!("{key} is not set (default false)")),
        Flag::Set { value: false, text } => Some(shown(key, &text, false)),
        _ => None,
    }
}

/// The problem line when the bool `key` (default `default`) is true.
fn true_or_unset(component: &Component, key: &str, default: bool) -> Option<String> {
    match flag(component, key) {
        Flag::Default if default => Some(format!("{key} is not set (default true)")),
        Flag::Set { value: true, text } => Some(shown(key, &text, true)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::resources::{Setting, test_component};

    fn rabbitmq(settings: &[(&str, &str)]) -> Component {
        test_component("pubsub.rabbitmq", settings)
    }

    const SAFE: [(&str, &str); 3] = [
        ("requeueInFailure", "true"),
        ("deletedWhenUnused", "false"),
        ("deliveryMode", "2"),
    ];

    fn keys(settings: &[(&str, &str)]) -> Vec<String> {
        crate::check::keys_found(check, "pubsub.rabbitmq", settings)
    }

    fn with(change: (&'static str, &'static str)) -> Vec<(&'static str, &'static str)> {
        let mut settings: Vec<_> = SAFE
            .iter()
            .copied()
            .filter(|(k, _)| *k != change.0)
            .collect();
        settings.push(change);
        settings
    }

    #[test]
    fn the_safe_settings_pass() {
        assert!(keys(&SAFE).is_empty());
        assert!(keys(&with(("durable", "true"))).is_empty());
        assert!(keys(&with(("autoAck", "false"))).is_empty());
    }

    #[test]
    fn requeue_in_failure_unset_is_the_brief_s_example() {
        let settings: Vec<_> = SAFE
            .iter()
            .copied()
            .filter(|(k, _)| *k != "requeueInFailure")
            .collect();
        let findings = check(&rabbitmq(&settings), &Folder::default());
        assert_eq!(findings.len(), 1);
        assert_eq!(
            findings[0].to_string(),
            "c/pubsub.yaml: component \"pubsub\" (pubsub.rabbitmq): requeueInFailure is not set (default false)\n  \
             a message whose delivery fails (the app answered RETRY, or could not be reached) is nacked without requeue and dropped\n  \
             and so is one in flight when daprd stops the subscription (the app health check pausing it, a shutdown)\n  \
             fix: requeueInFailure: \"true\"\n"
        );
        assert_eq!(
            keys(&with(("requeueInFailure", "no"))),
            ["requeueInFailure"]
        );
        assert!(keys(&with(("requeueInFailure", "YES"))).is_empty());
    }

    #[test]
    fn each_losing_setting_fires() {
        assert_eq!(keys(&with(("autoAck", "true"))), ["autoAck"]);
        assert_eq!(
            keys(&with(("deletedWhenUnused", "true"))),
            ["deletedWhenUnused"]
        );
        assert_eq!(keys(&with(("durable", "false"))), ["durable"]);
        assert_eq!(keys(&with(("deliveryMode", "1"))), ["deliveryMode"]);
        assert_eq!(keys(&with(("maxLen", "1000"))), ["maxLen"]);
        assert_eq!(keys(&with(("ttlInSeconds", "60"))), ["ttlInSeconds"]);
        assert!(keys(&with(("maxLen", "0"))).is_empty());
    }

    #[test]
    fn unset_defaults_fire() {
        assert_eq!(
            keys(&[]),
            ["requeueInFailure", "deletedWhenUnused", "deliveryMode"]
        );
    }

    #[test]
    fn a_secret_is_not_judged() {
        let mut c = rabbitmq(&SAFE);
        c.metadata[0].1 = Setting::Elsewhere;
        c.metadata[2].1 = Setting::Elsewhere;
        assert!(check(&c, &Folder::default()).is_empty());
    }
}
