//! The embedded broker's dead-letter list: every message a subscription
//! gave up on (DROP, or out of attempts), whether or not it also went to a
//! `dead_letter_topic`.
//!
//! With a journal, the list is the journal's `dead_letters` table, written
//! in the commit that removes or moves the original (`embedded.rs`); with
//! `--in-memory`, it is a list in memory, gone with the process. Either way
//! it keeps the newest [`MAX_DEAD_LETTERS`].
//!
//! **Replay** puts the message back on its own subscription's queue (not
//! the topic: the topic's other subscriptions handled it already) as a
//! fresh message, attempts at 0, and forgets the record: on disk, the new
//! row, the removal of the record and the action's log entry are one
//! commit. Like a dead letter's move, a replay never waits for room: a full
//! queue gets the row on disk only, for its feeder. **Delete** forgets the
//! record. One action runs at a time, so a record cannot be replayed twice.
//! Each is logged (`tracing::info!`, naming the id, topic and action) and
//! kept in the action log.

use super::super::dead_letters::{
    Action, DeadLetterError, DeadLetters, Listing, MAX_ACTIONS, MAX_DEAD_LETTERS, Reason,
    now_unix_ms,
};
use super::{EmbeddedBroker, Envelope, GaveUp, Inner, Target};
use crate::broker::journal::{Journal, QueueKey, StoredDeadLetter};
use async_trait::async_trait;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// The list's state besides the journal.
#[derive(Default)]
pub(super) struct Kept {
    /// `--in-memory`: the records and actions, oldest first.
    memory: Mutex<Memory>,
    /// Ids of records kept in memory.
    next_id: AtomicU64,
    /// Bumped on every change, for [`DeadLetters::generation`].
    generation: AtomicU64,
    /// One replay or delete at a time.
    acting: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Memory {
    records: VecDeque<StoredDeadLetter>,
    actions: VecDeque<Action>,
}

impl Kept {
    /// The record of `envelope`, given up on by subscription `queue` for
    /// `why`, with an id from the journal if there is one.
    pub(super) fn record(
        &self,
        journal: Option<&Journal>,
        queue: QueueKey,
        envelope: &Envelope,
        why: GaveUp,
        dead_letter_topic: Option<String>,
    ) -> StoredDeadLetter {
        let (reason, attempts, last_error) = match why {
            // The DROP was a delivery too, not counted among the failures.
            GaveUp::Dropped => (
                Reason::Drop,
                envelope.attempts + 1,
                "the guest answered DROP".to_owned(),
            ),
            GaveUp::OutOfAttempts => (
                Reason::OutOfAttempts,
                envelope.attempts,
                format!(
                    "out of attempts: every one of {} deliveries ended in RETRY (a trap, panic or timeout counts as RETRY; the log has the cause)",
                    envelope.attempts
                ),
            ),
        };
        StoredDeadLetter {
            id: match journal {
                Some(journal) => journal.next_seq(),
                None => self.next_id.fetch_add(1, Ordering::Relaxed) + 1,
            },
            queue,
            attempts,
            reason,
            last_error,
            at_unix_ms: now_unix_ms(),
            dead_letter_topic,
            event: (&envelope.event).into(),
        }
    }

    /// Says that `record` is on disk.
    pub(super) fn kept(&self, record: &StoredDeadLetter) {
        tracing::info!(id = record.id, topic = %record.queue.topic, component = %record.queue.component, reason = ?record.reason, event = %record.event.id(), "kept in the dead-letter list");
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// Keeps `record` in memory (`--in-memory`), evicting the oldest past
    /// [`MAX_DEAD_LETTERS`].
    pub(super) fn keep_in_memory(&self, record: StoredDeadLetter) {
        self.kept(&record);
        let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        memory.records.push_back(record);
        while memory.records.len() > MAX_DEAD_LETTERS {
            if let Some(old) = memory.records.pop_front() {
                tracing::warn!(
                    id = old.id,
                    topic = %old.queue.topic,
                    "the dead-letter list holds {MAX_DEAD_LETTERS} already; the oldest record is evicted"
                );
            }
        }
    }

    /// Takes record `id` out of memory.
    fn take_from_memory(&self, id: u64) -> Option<StoredDeadLetter> {
        let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        let at = memory.records.iter().position(|r| r.id == id)?;
        memory.records.remove(at)
    }

    fn log_in_memory(&self, action: Action) {
        let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        memory.actions.push_back(action);
        while memory.actions.len() > MAX_ACTIONS {
            memory.actions.pop_front();
        }
    }
}

impl EmbeddedBroker {
    /// The broker's dead-letter list, for the admin API.
    pub fn dead_letters(&self) -> Arc<dyn DeadLetters> {
        Arc::new(EmbeddedDeadLetters {
            inner: self.inner.clone(),
        })
    }
}

/// [`DeadLetters`] on the embedded broker.
struct EmbeddedDeadLetters {
    inner: Arc<Inner>,
}

/// A record's id as the list names it.
fn parse_id(id: &str) -> Result<u64, DeadLetterError> {
    id.parse()
        .map_err(|_| DeadLetterError::Unknown(id.to_owned()))
}

impl EmbeddedDeadLetters {
    fn kept(&self) -> &Kept {
        &self.inner.dead_letters
    }

    /// Runs `read` on the journal off the async threads.
    async fn read<T: Send + 'static>(
        &self,
        journal: &Arc<Journal>,
        read: impl FnOnce(&Journal) -> Result<T, crate::broker::journal::JournalError> + Send + 'static,
    ) -> Result<T, DeadLetterError> {
        super::read_journal(journal, read)
            .await
            .map_err(|reason| DeadLetterError::Failed {
                id: String::new(),
                reason,
            })
    }

    /// The subscription's queue a replay of `record` goes to.
    fn queue_of(&self, record: &StoredDeadLetter) -> Result<Target, DeadLetterError> {
        let topics = self.inner.topics.read().unwrap_or_else(|e| e.into_inner());
        topics
            .get(&(record.queue.pubsubname.clone(), record.queue.topic.clone()))
            .and_then(|queues| queues.iter().find(|q| q.target.key == record.queue))
            .map(|q| q.target.clone())
            .ok_or_else(|| DeadLetterError::NoSubscription {
                id: record.id.to_string(),
                topic: format!("{}/{}", record.queue.pubsubname, record.queue.topic),
                component: record.queue.component.clone(),
            })
    }

    fn action(record: &StoredDeadLetter, action: &str) -> Action {
        tracing::info!(id = record.id, topic = %record.queue.topic, component = %record.queue.component, event = %record.event.id(), action, "dead letter: {action}, by the admin API");
        Action {
            id: record.id.to_string(),
            topic: record.queue.topic.clone(),
            component: record.queue.component.clone(),
            action: action.to_owned(),
            at_unix_ms: now_unix_ms(),
        }
    }
}

#[async_trait]
impl DeadLetters for EmbeddedDeadLetters {
    async fn list(&self) -> Result<Listing, DeadLetterError> {
        let (records, actions) = match &self.inner.journal {
            Some(journal) => self.read(journal, |j| j.dead_letters()).await?,
            None => {
                let memory = self.kept().memory.lock().unwrap_or_else(|e| e.into_inner());
                (
                    memory.records.iter().rev().cloned().collect(),
                    memory.actions.iter().rev().cloned().collect(),
                )
            }
        };
        let kept = if self.inner.journal.is_some() {
            "kept in the journal"
        } else {
            "kept in memory (--in-memory): gone when host-bridge exits"
        };
        Ok(Listing {
            kind: "embedded",
            replayable: true,
            note: format!(
                "Every message a subscription gave up on (its guest answered DROP, or it ran out of attempts), \
                 {kept}, the newest {MAX_DEAD_LETTERS}. Replay puts it back on the queue of the subscription that \
                 gave up on it, not on the topic: the topic's other subscriptions handled it already."
            ),
            dead_letters: records
                .iter()
                .map(StoredDeadLetter::to_dead_letter)
                .collect(),
            actions,
            max: MAX_DEAD_LETTERS,
        })
    }

    async fn replay(&self, id: &str) -> Result<(), DeadLetterError> {
        let key = parse_id(id)?;
        let _one_at_a_time = self.kept().acting.lock().await;
        let record = match &self.inner.journal {
            Some(journal) => self.read(journal, move |j| j.dead_letter(key)).await?,
            None => self
                .kept()
                .memory
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .records
                .iter()
                .find(|r| r.id == key)
                .cloned(),
        }
        .ok_or_else(|| DeadLetterError::Unknown(id.to_owned()))?;
        let target = self.queue_of(&record)?;
        let event = record
            .event
            .to_event()
            .map_err(|reason| DeadLetterError::Failed {
                id: id.to_owned(),
                reason,
            })?;
        let envelope = Envelope {
            event,
            expires: None,
            seq: self.inner.journal.as_ref().map(|j| j.next_seq()),
            attempts: 0,
        };
        let permit = match target.tx.try_reserve() {
            Ok(permit) => Some(permit),
            Err(mpsc::error::TrySendError::Full(())) => None,
            Err(mpsc::error::TrySendError::Closed(())) => {
                return Err(DeadLetterError::Failed {
                    id: id.to_owned(),
                    reason: "host-bridge is stopping; it is kept".to_owned(),
                });
            }
        };
        let action = Self::action(&record, "replay");
        match (&self.inner.journal, envelope.seq) {
            (Some(journal), Some(seq)) => {
                let row = (seq, envelope.stored(&record.queue));
                journal
                    .replay_dead_letter(key, row, permit.is_none(), &action)
                    .await
                    .map_err(|e| DeadLetterError::Failed {
                        id: id.to_owned(),
                        reason: format!("{e}; it is kept"),
                    })?;
            }
            _ => {
                self.kept().take_from_memory(key);
                self.kept().log_in_memory(action);
            }
        }
        self.kept().generation.fetch_add(1, Ordering::Relaxed);
        match permit {
            Some(permit) => {
                self.inner.in_flight.enter();
                permit.send(envelope);
            }
            // On disk only: the feeder puts it in the queue as room frees up.
            None if self.inner.journal.is_some() => target.spilled.notify_one(),
            // In memory: it waits for room in a task of its own.
            None => {
                self.inner.in_flight.enter();
                let (inner, tx) = (self.inner.clone(), target.tx.clone());
                tokio::spawn(async move {
                    if tx.send(envelope).await.is_err() {
                        inner.in_flight.leave();
                    }
                });
            }
        }
        Ok(())
    }

    async fn delete(&self, id: &str) -> Result<(), DeadLetterError> {
        let key = parse_id(id)?;
        let _one_at_a_time = self.kept().acting.lock().await;
        match &self.inner.journal {
            Some(journal) => {
                let record = self
                    .read(journal, move |j| j.dead_letter(key))
                    .await?
                    .ok_or_else(|| DeadLetterError::Unknown(id.to_owned()))?;
                let action = Self::action(&record, "delete");
                journal
                    .delete_dead_letter(key, &action)
                    .await
                    .map_err(|e| DeadLetterError::Failed {
                        id: id.to_owned(),
                        reason: e.to_string(),
                    })?;
            }
            None => {
                let record = self
                    .kept()
                    .take_from_memory(key)
                    .ok_or_else(|| DeadLetterError::Unknown(id.to_owned()))?;
                self.kept().log_in_memory(Self::action(&record, "delete"));
            }
        }
        self.kept().generation.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn generation(&self) -> u64 {
        self.kept().generation.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{Broker, DeliveryTarget, Metrics, Subscription};
    use crate::contract::{Event, Message, Status};
    use crate::manifest::Manifest;
    use std::sync::Mutex as StdMutex;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    /// Subscription 0 DROPs while `broken`; subscription 1 always succeeds.
    /// Every delivery is noted as `(subscription, event id, status)`.
    #[derive(Default)]
    struct Processor {
        broken: AtomicBool,
        seen: StdMutex<Vec<(usize, String, Status)>>,
    }

    #[async_trait]
    impl DeliveryTarget for Processor {
        async fn deliver(&self, subscription: usize, event: Event) -> Status {
            let status = if subscription == 0 && self.broken.load(Ordering::SeqCst) {
                Status::Drop
            } else {
                Status::Success
            };
            let mut seen = self.seen.lock().unwrap();
            seen.push((subscription, event.id, status));
            status
        }
    }

    async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
        for _ in 0..500 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    async fn publish(broker: &EmbeddedBroker, id: &str) {
        let mut message = Message::new(id.as_bytes().to_vec(), Some("text/plain".into()));
        message.metadata.cloudevent.id = Some(id.to_owned());
        broker.publish("pubsub", "orders", message).await.unwrap();
    }

    #[tokio::test]
    async fn in_memory_dead_letters_replay_to_their_own_subscription_and_delete() {
        let manifest = Manifest::parse(
            std::path::Path::new("spin.toml"),
            "spin_manifest_version = 2\n[application]\nname = \"a\"\n\
             [[trigger.pubsub]]\ncomponent = \"processor\"\npubsubname = \"pubsub\"\ntopic = \"orders\"\n\
             [[trigger.pubsub]]\ncomponent = \"audit\"\npubsubname = \"pubsub\"\ntopic = \"orders\"\nroute = \"/audit\"\n\
             [component.processor]\nsource = \"p.wasm\"\n[component.audit]\nsource = \"a.wasm\"\n",
        )
        .unwrap();
        let subscriptions: Vec<Subscription> = manifest
            .pubsub_triggers
            .iter()
            .enumerate()
            .map(|(index, trigger)| Subscription {
                index,
                trigger: trigger.clone(),
            })
            .collect();
        let broker = Arc::new(EmbeddedBroker::new(
            "a",
            manifest.application.delivery,
            Arc::new(Metrics::default()),
            None,
        ));
        let processor = Arc::new(Processor::default());
        processor.broken.store(true, Ordering::SeqCst);
        broker.clone().start(subscriptions, processor.clone());
        let dead_letters = broker.dead_letters();

        publish(&broker, "o-1").await;
        publish(&broker, "o-2").await;
        let mut listing = dead_letters.list().await.unwrap();
        for _ in 0..500 {
            if listing.dead_letters.len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            listing = dead_letters.list().await.unwrap();
        }
        assert_eq!(listing.dead_letters.len(), 2, "{listing:?}");
        assert!(dead_letters.generation() >= 2);
        let by_event = |id: &str| {
            listing
                .dead_letters
                .iter()
                .find(|d| d.event_id == id)
                .unwrap()
                .clone()
        };
        let (first, second) = (by_event("o-1"), by_event("o-2"));
        assert_eq!(first.reason, Reason::Drop);
        assert_eq!(first.component, "processor");
        assert_eq!(first.attempts, 1);

        // Fixed, then replayed: only the processor gets it again.
        processor.broken.store(false, Ordering::SeqCst);
        dead_letters.replay(&first.id).await.unwrap();
        wait_for("the replay", || {
            processor
                .seen
                .lock()
                .unwrap()
                .contains(&(0, "o-1".to_owned(), Status::Success))
        })
        .await;
        let audit_copies = processor
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(s, id, _)| *s == 1 && id == "o-1")
            .count();
        assert_eq!(
            audit_copies, 1,
            "the other subscription is not sent it again"
        );
        assert!(matches!(
            dead_letters.replay(&first.id).await,
            Err(DeadLetterError::Unknown(_))
        ));

        dead_letters.delete(&second.id).await.unwrap();
        let listing = dead_letters.list().await.unwrap();
        assert!(listing.dead_letters.is_empty());
        let actions: Vec<&str> = listing.actions.iter().map(|a| a.action.as_str()).collect();
        assert_eq!(actions, vec!["delete", "replay"]);
        assert!(matches!(
            dead_letters.delete("not-a-number").await,
            Err(DeadLetterError::Unknown(_))
        ));
    }
}
