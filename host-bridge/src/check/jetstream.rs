//! `pubsub.jetstream`: the settings that lose a message, read from
//! components-contrib v1.18.4 `pubsub/jetstream/metadata.go` (keys and
//! defaults: `parseMetadata`) and `pubsub/jetstream/jetstream.go` (the
//! consumer it creates in `Subscribe`, and how `natsHandler` acks).

use super::finding::{ComponentFindings, Finding};
use super::resources::{Component, Folder};
use super::subscriptions::dead_letter_cover;

/// Every finding for one `pubsub.jetstream` component.
pub fn check(component: &Component, folder: &Folder) -> Vec<Finding> {
    let mut found = ComponentFindings::new(component);

    // metadata.go: ackPolicy "explicit", "all" or "none", exact strings;
    // anything else is explicit. jetstream.go acks and nacks only under
    // explicit or all.
    match component.value("ackPolicy") {
        Some("none") => found.add(
            "ackPolicy",
            String::from("ackPolicy is \"none\""),
            vec![String::from(
                "JetStream counts a message as done once it has sent it: one whose delivery fails, or that is in \
                 flight when daprd or the app stops, is never sent again",
            )],
            "ackPolicy: \"explicit\"",
        ),
        Some("all") => found.add(
            "ackPolicy",
            String::from("ackPolicy is \"all\""),
            vec![String::from(
                "acking a message acks every earlier one too: a message nacked for redelivery is acked away by the \
                 next message that succeeds, and is never sent again",
            )],
            "ackPolicy: \"explicit\"",
        ),
        _ => {}
    }

    // metadata.go: maxDeliver, an int; jetstream.go sets the consumer's
    // MaxDeliver when it is not 0 (the server's default, -1, is no limit).
    // Past it the server stops sending the message. daprd moves a message
    // whose retries ran out to the deadLetterTopic and acks it, so a finite
    // maxDeliver loses messages only on subscriptions without one.
    if let Some(n) = component
        .value("maxDeliver")
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|n| *n > 0)
        && let Some(cover) = dead_letter_cover(folder, &component.name)
            .explain(&component.name, folder.manifest.is_some())
    {
        found.add(
            "maxDeliver",
            format!("maxDeliver is \"{n}\""),
            vec![
                format!(
                    "JetStream stops sending a message after {n} deliveries: one that has failed that often stays \
                     in the stream and is never delivered again"
                ),
                cover,
            ],
            "maxDeliver: \"-1\"",
        );
    }

    // metadata.go: deliverPolicy "all" (default), "last", "new",
    // "sequence", "time". Without durableName, jetstream.go creates a new
    // consumer on every Subscribe: a daprd restart, or the app health check
    // resuming a paused subscription.
    let durable = component
        .value("durableName")
        .is_some_and(|v| !v.is_empty())
        || component.is_elsewhere("durableName");
    if !durable && let Some(policy @ ("new" | "last")) = component.value("deliverPolicy") {
        found.add(
            "deliverPolicy",
            format!("deliverPolicy is \"{policy}\" and durableName is not set"),
            vec![String::from(
                "every time daprd subscribes (it restarted, or the app health check resumed the subscription) it \
                 creates a new consumer that starts at the end of the stream: messages published while it was away \
                 are never delivered",
            )],
            "deliverPolicy: \"all\"",
        );
    }
    found.findings
}

/// What a catch-all stream does that no component setting changes.
pub fn warnings(component: &Component) -> Vec<Finding> {
    vec![
        Finding::broker_warning(
            component,
            "deadLetterTopic",
            String::from("a DROP's dead letter can be dropped as a duplicate"),
            vec![String::from(
                "jetstream.go publishes with the CloudEvent id as Nats-MsgId, and daprd publishes a dead letter with \
                 its original's id: in one stream covering both topics, a dead letter within the stream's \
                 duplicate_window (100 ms at the least; scripts/broker.sh sets that) is discarded",
            )],
        ),
        Finding::broker_warning(
            component,
            "durableName",
            String::from("without durableName, every new consumer delivers the whole stream again"),
            vec![String::from(
                "durableName names one consumer for the whole component, which a second topic cannot bind to; \
                 without it each topic gets an ephemeral consumer, which the server deletes once daprd let go of it \
                 (a restart, or a pause of the app health check): the next one starts at the stream's first message, \
                 and replicas each get every message (see components/jetstream/pubsub.yaml)",
            )],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(settings: &[(&str, &str)]) -> Vec<String> {
        crate::check::keys_found(check, "pubsub.jetstream", settings)
    }

    #[test]
    fn the_shipped_settings_pass() {
        assert!(keys(&[]).is_empty());
        assert!(
            keys(&[
                ("ackPolicy", "explicit"),
                ("deliverPolicy", "all"),
                ("maxDeliver", "-1")
            ])
            .is_empty()
        );
        assert!(keys(&[("deliverPolicy", "new"), ("durableName", "orders")]).is_empty());
    }

    #[test]
    fn each_losing_setting_fires() {
        assert_eq!(keys(&[("ackPolicy", "none")]), ["ackPolicy"]);
        assert_eq!(keys(&[("ackPolicy", "all")]), ["ackPolicy"]);
        assert_eq!(keys(&[("maxDeliver", "5")]), ["maxDeliver"]);
        assert_eq!(keys(&[("deliverPolicy", "new")]), ["deliverPolicy"]);
        assert_eq!(keys(&[("deliverPolicy", "last")]), ["deliverPolicy"]);
    }
}
