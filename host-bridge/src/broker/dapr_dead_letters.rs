//! Dead letters under Dapr, as far as host-bridge sees them.
//!
//! Under Dapr the broker and daprd own redelivery and dead-lettering: an
//! event the app answers DROP, or RETRY past daprd's resiliency policy,
//! goes to the subscription's `deadLetterTopic` on the broker, where
//! host-bridge cannot reach it. What the host can tell is what it answered,
//! so [`Answered`] sits between the app-side protocol and the pub/sub
//! trigger (a [`DeliveryTarget`] around the trigger) and lists, per
//! subscription and event id:
//!
//! - each event it answered DROP;
//! - each event it answered RETRY, with how many RETRYs it has seen; the
//!   entry goes if the same event later succeeds.
//!
//! The list is read-only: the events are the broker's, so there is nothing
//! here to replay; the page says where they live instead. It is in memory,
//! bounded to the newest [`MAX_DEAD_LETTERS`], and keeps at most
//! [`MAX_LISTED_DATA`](super::dead_letters::MAX_LISTED_DATA) bytes of each
//! payload. Keeping that start of the payload costs one bounded copy per
//! delivery; a SUCCESS with nothing listed takes no lock.

use super::dead_letters::{
    DeadLetter, DeadLetterError, DeadLetters, Listing, MAX_DEAD_LETTERS, Reason, listed_data,
    now_unix_ms,
};
use super::{DeliveryTarget, Subscription};
use crate::contract::{Event, Status};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The pub/sub trigger, with what it answered DROP or RETRY remembered.
pub struct Answered {
    target: Arc<dyn DeliveryTarget>,
    subscriptions: Vec<Subscription>,
    seen: Mutex<Seen>,
    /// How many entries `seen` holds, read without its lock.
    listed: AtomicUsize,
    generation: AtomicU64,
}

#[derive(Default)]
struct Seen {
    /// By list id, oldest first.
    entries: BTreeMap<u64, DeadLetter>,
    /// `(subscription, event id)` to list id.
    index: HashMap<(usize, String), u64>,
    next_id: u64,
}

impl Answered {
    pub fn new(target: Arc<dyn DeliveryTarget>, subscriptions: Vec<Subscription>) -> Arc<Answered> {
        Arc::new(Answered {
            target,
            subscriptions,
            seen: Mutex::new(Seen::default()),
            listed: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
        })
    }

    /// Where the events themselves are: each subscription's dead-letter topic.
    fn note(&self) -> String {
        let topics: Vec<String> = self
            .subscriptions
            .iter()
            .map(|s| {
                let t = &s.trigger;
                match &t.dead_letter_topic {
                    Some(dlt) => format!("{}/{} → {}/{dlt}", t.pubsubname, t.topic, t.pubsubname),
                    None => format!(
                        "{}/{} has no deadLetterTopic, so the broker drops them",
                        t.pubsubname, t.topic
                    ),
                }
            })
            .collect();
        format!(
            "Under Dapr the events live with the broker: daprd sends an event answered DROP, or RETRY past its \
             resiliency policy, to the subscription's deadLetterTopic ({}). This list is what host-bridge \
             answered, as far as it saw (the newest {MAX_DEAD_LETTERS}, in memory); replay them from the \
             dead-letter topic.",
            topics.join("; ")
        )
    }

    fn remember(&self, subscription: usize, event: Snapshot, status: Status) {
        let Some(s) = self.subscriptions.get(subscription) else {
            return;
        };
        let t = &s.trigger;
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let key = (subscription, event.id.clone());
        if status == Status::Success {
            if let Some(id) = seen.index.remove(&key) {
                seen.entries.remove(&id);
            }
        } else {
            let existing = seen.index.get(&key).copied();
            let entry = match existing.and_then(|id| seen.entries.get_mut(&id)) {
                Some(entry) => entry,
                None => {
                    seen.next_id += 1;
                    let id = seen.next_id;
                    seen.index.insert(key, id);
                    let (data_base64, data_truncated) = (event.data_base64, event.data_truncated);
                    seen.entries.entry(id).or_insert(DeadLetter {
                        id: format!("d-{id}"),
                        pubsubname: t.pubsubname.clone(),
                        topic: t.topic.clone(),
                        component: t.component.clone(),
                        attempts: 0,
                        reason: Reason::Retrying,
                        last_error: String::new(),
                        at_unix_ms: 0,
                        dead_letter_topic: t.dead_letter_topic.clone(),
                        event_id: event.id,
                        datacontenttype: event.datacontenttype,
                        data_base64,
                        data_truncated,
                    })
                }
            };
            entry.attempts += 1;
            entry.at_unix_ms = now_unix_ms();
            let (reason, last_error) = if status == Status::Drop {
                (Reason::Drop, "host-bridge answered DROP".to_owned())
            } else {
                (
                    Reason::Retrying,
                    format!(
                        "host-bridge answered RETRY {} time(s); daprd redelivers it, or past its retries sends it to the deadLetterTopic",
                        entry.attempts
                    ),
                )
            };
            entry.reason = reason;
            entry.last_error = last_error;
            while seen.entries.len() > MAX_DEAD_LETTERS {
                if let Some((_, old)) = seen.entries.pop_first() {
                    seen.index
                        .remove(&(subscription_of(&self.subscriptions, &old), old.event_id));
                }
            }
        }
        self.listed.store(seen.entries.len(), Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Relaxed);
    }
}

/// The index of the subscription an entry is of.
fn subscription_of(subscriptions: &[Subscription], entry: &DeadLetter) -> usize {
    subscriptions
        .iter()
        .position(|s| {
            s.trigger.pubsubname == entry.pubsubname
                && s.trigger.topic == entry.topic
                && s.trigger.component == entry.component
        })
        .unwrap_or(usize::MAX)
}

/// What is kept of an event before it goes to the guest.
struct Snapshot {
    id: String,
    datacontenttype: String,
    data_base64: String,
    data_truncated: bool,
}

#[async_trait]
impl DeliveryTarget for Answered {
    async fn deliver(&self, subscription: usize, event: Event) -> Status {
        let (data_base64, data_truncated) = listed_data(&event.data);
        let snapshot = Snapshot {
            id: event.id.clone(),
            datacontenttype: event.datacontenttype.clone(),
            data_base64,
            data_truncated,
        };
        let status = self.target.deliver(subscription, event).await;
        // A success with nothing listed is the common case: no lock.
        if status != Status::Success || self.listed.load(Ordering::Relaxed) > 0 {
            self.remember(subscription, snapshot, status);
        }
        status
    }
}

#[async_trait]
impl DeadLetters for Answered {
    async fn list(&self) -> Result<Listing, DeadLetterError> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        Ok(Listing {
            kind: "dapr",
            replayable: false,
            note: self.note(),
            dead_letters: seen.entries.values().rev().cloned().collect(),
            actions: Vec::new(),
            max: MAX_DEAD_LETTERS,
        })
    }

    async fn replay(&self, id: &str) -> Result<(), DeadLetterError> {
        self.refuse(id)
    }

    async fn delete(&self, id: &str) -> Result<(), DeadLetterError> {
        self.refuse(id)
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }
}

impl Answered {
    /// Replay and delete: there is nothing here to act on.
    fn refuse(&self, id: &str) -> Result<(), DeadLetterError> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = seen.entries.values().find(|e| e.id == id) else {
            return Err(DeadLetterError::Unknown(id.to_owned()));
        };
        let place = match &entry.dead_letter_topic {
            Some(dlt) => format!(
                "the dead-letter topic {}/{dlt} on the broker",
                entry.pubsubname
            ),
            None => format!(
                "nowhere: {}/{} has no deadLetterTopic, so the broker drops it",
                entry.pubsubname, entry.topic
            ),
        };
        Err(DeadLetterError::NotHere(format!(
            "under Dapr, host-bridge holds no copy of event `{}` to replay or delete: daprd sent it to {place}",
            entry.event_id
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Manifest;

    /// Answers by the event's data: `drop`, `retry`, else SUCCESS.
    struct ByData;

    #[async_trait]
    impl DeliveryTarget for ByData {
        async fn deliver(&self, _: usize, event: Event) -> Status {
            match event.data.as_slice() {
                b"drop" => Status::Drop,
                b"retry" => Status::Retry,
                _ => Status::Success,
            }
        }
    }

    fn event(id: &str, data: &str) -> Event {
        let mut event =
            crate::broker::cloudevent::raw("tests", "pubsub", "orders", data.as_bytes().to_vec());
        event.id = id.to_owned();
        event
    }

    #[tokio::test]
    async fn what_was_answered_drop_or_retry_is_listed_until_it_succeeds() {
        let manifest = Manifest::parse(
            std::path::Path::new("spin.toml"),
            "spin_manifest_version = 2\n[application]\nname = \"a\"\n[[trigger.pubsub]]\ncomponent = \"c\"\npubsubname = \"pubsub\"\ntopic = \"orders\"\ndead_letter_topic = \"orders-dead\"\n[component.c]\nsource = \"c.wasm\"\n",
        )
        .unwrap();
        let subscriptions = vec![Subscription {
            index: 0,
            trigger: manifest.pubsub_triggers[0].clone(),
        }];
        let answered = Answered::new(Arc::new(ByData), subscriptions);
        answered.deliver(0, event("a", "drop")).await;
        answered.deliver(0, event("b", "retry")).await;
        answered.deliver(0, event("b", "retry")).await;
        answered.deliver(0, event("c", "ok")).await;
        let listing = answered.list().await.unwrap();
        let seen: Vec<_> = listing
            .dead_letters
            .iter()
            .map(|d| (d.event_id.as_str(), d.reason, d.attempts))
            .collect();
        assert_eq!(
            seen,
            vec![("b", Reason::Retrying, 2), ("a", Reason::Drop, 1)]
        );
        assert!(
            listing.note.contains("pubsub/orders-dead"),
            "{}",
            listing.note
        );

        let refused = answered
            .replay(&listing.dead_letters[1].id)
            .await
            .unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("the dead-letter topic pubsub/orders-dead"),
            "{refused}"
        );
        assert!(matches!(
            answered.delete("d-99").await,
            Err(DeadLetterError::Unknown(_))
        ));

        // b succeeds on a redelivery: it is no longer listed.
        answered.deliver(0, event("b", "ok")).await;
        let listing = answered.list().await.unwrap();
        assert_eq!(listing.dead_letters.len(), 1);
        assert_eq!(listing.dead_letters[0].event_id, "a");
    }
}
