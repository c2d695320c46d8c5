//! Loops of dead-letter topics, refused when the manifest is loaded.
//!
//! A subscription's `dead_letter_topic` is where its dropped messages go, and
//! that topic's own subscriptions may have a dead-letter topic too. If those
//! hops lead back to where they started (`a` → `a`, `a` → `b` → `a`, or
//! longer), a message every subscriber drops is moved round the loop forever,
//! and each move is a write. On the embedded broker the topics of a loop
//! also feed each other's queues; under Dapr, daprd moves dead letters the
//! same way, so the loop is just as endless there. Both brokers therefore
//! refuse it, here, naming every topic and trigger on it.
//!
//! Topics are keyed by `(pubsubname, topic)`: a dead-letter topic is on its
//! subscription's pub/sub component.

use super::PubsubTrigger;
use std::collections::{BTreeMap, BTreeSet};

/// A topic: `(pubsubname, topic)`.
type Topic<'a> = (&'a str, &'a str);

/// One problem per loop of dead-letter topics among `triggers` (the
/// manifest's `[[trigger.pubsub]]` list, in file order), naming its topics
/// and the triggers that close it. Empty when there is none.
pub fn loops(triggers: &[PubsubTrigger]) -> Vec<String> {
    // Each hop: topic → its dead-letter topic, with the triggers making it.
    let mut hops: BTreeMap<Topic, BTreeMap<Topic, Vec<usize>>> = BTreeMap::new();
    for (index, t) in triggers.iter().enumerate() {
        if let Some(dlt) = &t.dead_letter_topic {
            hops.entry((t.pubsubname.as_str(), t.topic.as_str()))
                .or_default()
                .entry((t.pubsubname.as_str(), dlt.as_str()))
                .or_default()
                .push(index);
        }
    }
    let reach: BTreeMap<Topic, BTreeSet<Topic>> = hops
        .keys()
        .map(|&from| (from, reachable(&hops, from)))
        .collect();
    // A topic is on a loop if it can reach itself; the topics of one loop
    // (one strongly connected group) are those that reach each other.
    let mut groups: BTreeSet<BTreeSet<Topic>> = BTreeSet::new();
    for (&topic, reached) in &reach {
        if reached.contains(&topic) {
            groups.insert(
                reached
                    .iter()
                    .copied()
                    .filter(|other| reach.get(other).is_some_and(|r| r.contains(&topic)))
                    .collect(),
            );
        }
    }
    groups
        .iter()
        .map(|group| describe(triggers, &hops, group))
        .collect()
}

/// Every topic a message dropped on `from` can be moved to, hop by hop.
fn reachable<'a>(
    hops: &BTreeMap<Topic<'a>, BTreeMap<Topic<'a>, Vec<usize>>>,
    from: Topic<'a>,
) -> BTreeSet<Topic<'a>> {
    let mut seen = BTreeSet::new();
    let mut next = vec![from];
    while let Some(topic) = next.pop() {
        for &to in hops.get(&topic).into_iter().flat_map(|h| h.keys()) {
            if seen.insert(to) {
                next.push(to);
            }
        }
    }
    seen
}

/// The problem for one loop: its topics, then each trigger on it.
fn describe(
    triggers: &[PubsubTrigger],
    hops: &BTreeMap<Topic, BTreeMap<Topic, Vec<usize>>>,
    group: &BTreeSet<Topic>,
) -> String {
    let topics: Vec<String> = group.iter().map(|(p, t)| format!("{p}/{t}")).collect();
    let mut closing = Vec::new();
    for &from in group {
        for (to, indexes) in hops.get(&from).into_iter().flatten() {
            if group.contains(to) {
                for &index in indexes {
                    let t = &triggers[index];
                    closing.push(format!(
                        "[[trigger.pubsub]] #{} (component {:?}) sends what it drops on {}/{} to {}",
                        index + 1,
                        t.component,
                        from.0,
                        from.1,
                        to.1
                    ));
                }
            }
        }
    }
    let what = if group.len() == 1 {
        "dead_letter_topic: must differ from topic, or dropped messages would loop"
    } else {
        "dead_letter_topic: these dead-letter topics form a loop, so a message every subscriber drops would go round it forever"
    };
    format!(
        "{what}: {} ({}); this is refused under Dapr as well, as daprd would move it round the same loop. \
         Point one of them at a topic that is not on the loop, or remove its dead_letter_topic",
        topics.join(", "),
        closing.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A trigger of `component` on `pubsub/topic`, dead-lettering to `dlt`.
    fn trigger(component: &str, topic: &str, dlt: Option<&str>) -> PubsubTrigger {
        on("pubsub", component, topic, dlt)
    }

    fn on(pubsubname: &str, component: &str, topic: &str, dlt: Option<&str>) -> PubsubTrigger {
        PubsubTrigger {
            component: component.into(),
            pubsubname: pubsubname.into(),
            topic: topic.into(),
            route: format!("/dapr/pubsub/{pubsubname}/{topic}"),
            dead_letter_topic: dlt.map(Into::into),
            metadata: Default::default(),
            bulk_subscribe: None,
            rule: None,
        }
    }

    #[test]
    fn a_topic_that_is_its_own_dead_letter_topic_is_a_loop() {
        let problems = loops(&[trigger("x", "a", Some("a"))]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("dead_letter_topic: must differ from topic"),
            "{problems:?}"
        );
        assert!(problems[0].contains("pubsub/a"), "{problems:?}");
        assert!(problems[0].contains("#1 (component \"x\")"), "{problems:?}");
    }

    #[test]
    fn two_topics_pointing_at_each_other_are_one_loop_naming_both() {
        let problems = loops(&[trigger("x", "a", Some("b")), trigger("y", "b", Some("a"))]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        let p = &problems[0];
        assert!(p.contains(": pubsub/a, pubsub/b ("), "{p}");
        assert!(p.contains("#1 (component \"x\")"), "{p}");
        assert!(p.contains("#2 (component \"y\")"), "{p}");
        assert!(p.contains("under Dapr"), "{p}");
    }

    #[test]
    fn a_loop_of_three_names_its_three_topics_and_not_the_way_in() {
        let problems = loops(&[
            trigger("w", "entry", Some("a")),
            trigger("x", "a", Some("b")),
            trigger("y", "b", Some("c")),
            trigger("z", "c", Some("a")),
        ]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        let p = &problems[0];
        assert!(p.contains(": pubsub/a, pubsub/b, pubsub/c ("), "{p}");
        assert!(
            !p.contains("entry"),
            "the way into the loop is not on it: {p}"
        );
        assert!(!p.contains("#1 "), "{p}");
    }

    #[test]
    fn a_chain_of_dead_letter_topics_is_fine() {
        assert_eq!(
            loops(&[
                trigger("x", "a", Some("b")),
                trigger("y", "b", Some("c")),
                trigger("z", "c", None),
                trigger("w", "d", Some("c")),
            ]),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_topic_subscribed_by_two_triggers_loops_through_the_one_that_closes_it() {
        // `a` has two subscriptions: y's dead letters go nowhere loopy, x's
        // go to `b`, whose dead letters come back to `a`.
        let problems = loops(&[
            trigger("x", "a", Some("b")),
            trigger("y", "a", Some("c")),
            trigger("z", "b", Some("a")),
        ]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        let p = &problems[0];
        assert!(p.contains("#1 (component \"x\")"), "{p}");
        assert!(p.contains("#3 (component \"z\")"), "{p}");
        assert!(!p.contains("#2 "), "y's hop to c is not on the loop: {p}");
        // Both subscriptions of `a` sending to `b`: one loop, both named.
        let problems = loops(&[
            trigger("x", "a", Some("b")),
            trigger("y", "a", Some("b")),
            trigger("z", "b", Some("a")),
        ]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("#2 (component \"y\")"), "{problems:?}");
    }

    #[test]
    fn the_same_topic_names_on_two_pubsub_components_are_two_topics() {
        // pubsub/a → pubsub/b, and other/b → other/a: no hop crosses over.
        assert_eq!(
            loops(&[
                on("pubsub", "x", "a", Some("b")),
                on("other", "y", "b", Some("a")),
            ]),
            Vec::<String>::new()
        );
        let problems = loops(&[
            on("pubsub", "x", "a", Some("b")),
            on("pubsub", "y", "b", Some("a")),
            on("other", "z", "b", Some("a")),
            on("other", "w", "a", Some("b")),
        ]);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("other/a, other/b")));
        assert!(problems.iter().any(|p| p.contains("pubsub/a, pubsub/b")));
    }
}
