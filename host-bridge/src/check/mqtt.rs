//! `pubsub.mqtt3` (also registered as `pubsub.mqtt`): the settings that
//! lose a message, read from components-contrib v1.18.4
//! `pubsub/mqtt3/metadata.go` (keys and defaults: `qos` 1, `cleanSession`
//! false, in `parseMQTTMetaData`) and `pubsub/mqtt3/mqtt.go` (what they
//! do), and the warning every MQTT 3 component gets.

use super::finding::{ComponentFindings, Finding};
use super::resources::{Component, Folder};
use super::{Flag, flag, shown};

/// Every finding for one MQTT 3 component.
pub fn check(component: &Component, _folder: &Folder) -> Vec<Finding> {
    let mut found = ComponentFindings::new(component);
    // metadata.go: Qos is a byte (DecodeMetadata), default 1; the same QoS
    // is used to publish and to subscribe (mqtt.go).
    if let Some(qos) = component.value("qos")
        && qos.trim().parse::<u8>() == Ok(0)
    {
        found.add(
            "qos",
            format!("qos is \"{qos}\""),
            vec![String::from(
                "QoS 0 is at most once: the broker forgets a message as soon as it sent it, acked or not, and \
                 need not keep one for daprd while it is disconnected (Mosquitto does not)",
            )],
            String::from("qos: \"1\""),
        );
    }
    // metadata.go: CleanSession, a DecodeMetadata bool, default false.
    // mqtt.go, createClientOptions: SetCleanSession; and Subscribe
    // unsubscribes when a subscription's context ends only with it.
    if let Flag::Set { value: true, text } = flag(component, "cleanSession") {
        found.add(
            "cleanSession",
            shown("cleanSession", &text, true),
            vec![
                String::from(
                    "the broker drops daprd's session whenever it disconnects (a daprd restart, a network break): \
                     messages published until it is back are not kept for it",
                ),
                String::from(
                    "and daprd unsubscribes whenever the app health check pauses a subscription (mqtt.go, Subscribe): \
                     messages published until it resumes are not kept either",
                ),
            ],
            String::from("cleanSession: \"false\""),
        );
    }
    found.findings
}

/// What MQTT 3.1.1 does that no setting changes.
pub fn warnings(component: &Component) -> Vec<Finding> {
    vec![Finding::broker_warning(
        component,
        "redelivery",
        String::from("a delivery that failed is never acked, and in practice never comes back"),
        vec![
            String::from(
                "a delivery that fails after daprd's retries is left unacked (mqtt.go, onMessage); MQTT 3.1.1 sends it \
                 again only when the client reconnects, and then it arrives before daprd has subscribed again, finds \
                 no handler and is left unacked once more",
            ),
            String::from(
                "so is a message that arrives while the app health check has paused the subscription: measured here, \
                 host-bridge down for 30 s lost 483 and 546 of 1,000 messages in two runs (RELIABILITY.md)",
            ),
            String::from(
                "give every subscription a deadLetterTopic (a message whose retries ran out is then moved there and \
                 acked), and prefer another broker for messages that must not be lost",
            ),
        ],
    )]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(settings: &[(&str, &str)]) -> Vec<String> {
        crate::check::keys_found(check, "pubsub.mqtt3", settings)
    }

    #[test]
    fn the_defaults_and_the_shipped_settings_pass() {
        assert!(keys(&[]).is_empty());
        assert!(keys(&[("qos", "1"), ("cleanSession", "false")]).is_empty());
        assert!(keys(&[("qos", "2")]).is_empty());
    }

    #[test]
    fn qos_0_and_clean_session_fire() {
        assert_eq!(keys(&[("qos", "0")]), ["qos"]);
        assert_eq!(keys(&[("cleanSession", "true")]), ["cleanSession"]);
        assert_eq!(
            keys(&[("CleanSession", "1"), ("qos", "0")]),
            ["qos", "cleanSession"]
        );
    }
}
