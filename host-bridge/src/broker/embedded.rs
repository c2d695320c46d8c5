//! The embedded default broker and state store: the app runs with no Dapr.
//!
//! Messages waiting for delivery and saved state are kept in a
//! [`Journal`] on disk (`--data-dir`), so they survive a crash or a restart:
//! a publish is acknowledged only once it is on disk, and a message leaves
//! the disk only once it is done (see `journal.rs`). With `--in-memory` there
//! is no journal, and both are gone when the process exits. Either way the
//! broker keeps Dapr's delivery contract:
//!
//! - **Fan-out.** Every subscription on a topic gets its own copy of every
//!   message published to it; on a topic routed with `match` rules, the
//!   first matching trigger (else the default) gets it, as under Dapr.
//! - **At least once.** A message stays with the broker until its guest has
//!   answered SUCCESS or DROP; only then is it acked (forgotten).
//! - **Redelivery.** RETRY (and a trap, panic or timeout, which the trigger
//!   reports as RETRY) redelivers the message after an exponential backoff,
//!   up to `max_attempts` deliveries in all.
//! - **Dead letters.** DROP, and running out of attempts, send the message
//!   to the subscription's `dead_letter_topic` when it has one. With none, a
//!   dropped message is acked and a message out of attempts is logged and
//!   counted in `/metrics` as discarded.
//! - **TTL.** A message published with `ttl-seconds` that has not been
//!   delivered successfully in time is discarded, as Dapr does.
//!
//! Each subscription delivers up to [`MAX_CONCURRENT_DELIVERIES`] messages at
//! once, so one slow or retrying message does not hold up the others; like
//! Dapr with most brokers, order is therefore not guaranteed.
//!
//! **Pushed deliveries.** Dapr's app-side protocol is mounted too: a
//! CloudEvent POSTed to a subscription's `route`, as daprd would send it,
//! runs the subscriber at once and is answered SUCCESS, RETRY or DROP. Such
//! a delivery never enters the queues; as under Dapr, redelivering it is the
//! caller's job. It lets a subscriber be tried with `curl`, and the delivery
//! path be measured with no daprd in front (`make bench`).
//!
//! **Bounded.** Each subscription's queue holds at most `max_queued`
//! messages. A publish is all or nothing: it takes a place in every queue it
//! goes to, or, if one is full, it is refused as `unavailable` (a `503` on
//! the sidecar API) and counted, and goes nowhere. A message on its way to a
//! dead-letter topic is never refused: it waits for room.

use super::dapr_app::DaprAppProtocol;
use super::journal::{self, Journal, QueueKey, StoredMessage};
use super::routing::Rule;
use super::sidecar_api::SidecarApi;
use super::{Broker, DeliveryTarget, InFlight, Metrics, StateStore, Subscription, cloudevent};
use crate::contract::{Event, Message, PublishError, StateError, Status};
use crate::manifest::DeliveryPolicy;
use crate::server::Endpoint;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};
use tokio::sync::{Semaphore, mpsc};

/// How many messages one subscription handles at the same time.
pub const MAX_CONCURRENT_DELIVERIES: usize = 32;

/// A message on its way to one subscription.
#[derive(Clone)]
struct Envelope {
    event: Event,
    /// When the message expires, if it was published with a TTL.
    expires: Option<SystemTime>,
    /// Its row in the journal, when there is one.
    seq: Option<u64>,
    /// Deliveries so far that did not succeed.
    attempts: u32,
}

impl Envelope {
    fn stored(&self, queue: &QueueKey) -> StoredMessage {
        StoredMessage {
            queue: queue.clone(),
            event: (&self.event).into(),
            attempts: self.attempts,
            expires_unix_ms: self.expires.map(journal::to_unix_ms),
        }
    }
}

type TopicKey = (String, String);

/// One subscription's queue on a topic.
struct Queue {
    tx: mpsc::Sender<Envelope>,
    /// The subscription: its pub/sub, topic and component.
    key: QueueKey,
    /// Whether the topic is routed with `match` rules: then each message
    /// goes to one routed queue, not to all.
    routed: bool,
    /// The queue's rule; `None` on a routed topic is the default.
    rule: Option<Rule>,
}

/// The embedded broker.
pub struct EmbeddedBroker {
    inner: Arc<Inner>,
    /// Served with the broker on the sidecar API.
    state_store: Arc<dyn StateStore>,
    /// Deliveries pushed over Dapr's app-side protocol.
    pushed: Arc<DaprAppProtocol>,
}

struct Inner {
    /// The CloudEvent `source` of what this app publishes.
    app_id: String,
    policy: DeliveryPolicy,
    metrics: Arc<Metrics>,
    /// Each topic's subscription queues. Filled once, by `start`.
    topics: RwLock<HashMap<TopicKey, Vec<Queue>>>,
    /// Messages handed to a subscription and not yet acked or given up on.
    in_flight: InFlight,
    /// Where messages wait on disk; `None` with `--in-memory`.
    journal: Option<Arc<Journal>>,
}

impl EmbeddedBroker {
    pub fn new(
        app_id: &str,
        policy: DeliveryPolicy,
        metrics: Arc<Metrics>,
        state_store: Arc<dyn StateStore>,
        journal: Option<Arc<Journal>>,
    ) -> EmbeddedBroker {
        EmbeddedBroker {
            state_store,
            pushed: Arc::new(DaprAppProtocol::new(metrics.clone())),
            inner: Arc::new(Inner {
                app_id: app_id.to_owned(),
                policy,
                in_flight: InFlight::new(metrics.clone()),
                metrics,
                topics: RwLock::new(HashMap::new()),
                journal,
            }),
        }
    }
}

#[async_trait]
impl Broker for EmbeddedBroker {
    fn name(&self) -> &'static str {
        "embedded"
    }

    async fn publish(
        &self,
        pubsubname: &str,
        topic: &str,
        message: Message,
    ) -> Result<(), PublishError> {
        let ttl = message.metadata.ttl_seconds;
        let event = cloudevent::from_message(&self.inner.app_id, pubsubname, topic, message)?;
        let expires = ttl.map(|s| SystemTime::now() + Duration::from_secs(s.into()));
        let targets = self.inner.targets(pubsubname, topic, &event);
        // All or nothing: a place in every queue first, then the journal,
        // then the sends.
        let mut permits = Vec::with_capacity(targets.len());
        for (tx, key) in &targets {
            match tx.try_reserve() {
                Ok(permit) => permits.push((permit, key)),
                Err(mpsc::error::TrySendError::Full(())) => {
                    Metrics::inc(&self.inner.metrics.publishes_refused_queue_full);
                    return Err(PublishError::Unavailable(format!(
                        "the embedded broker's queue for `{}` on {pubsubname}/{topic} is full \
                         ({} messages waiting); try again later",
                        key.component, self.inner.policy.max_queued
                    )));
                }
                // Shutting down: the subscription no longer takes messages.
                Err(mpsc::error::TrySendError::Closed(())) => {}
            }
        }
        let envelope = Envelope {
            event,
            expires,
            seq: None,
            attempts: 0,
        };
        let envelopes = self
            .inner
            .persist(&envelope, permits.iter().map(|(_, key)| *key))
            .await?;
        Metrics::inc(&self.inner.metrics.published);
        for ((permit, _), envelope) in permits.into_iter().zip(envelopes) {
            self.inner.in_flight.enter();
            permit.send(envelope);
        }
        Ok(())
    }

    fn start(
        self: Arc<Self>,
        subscriptions: Vec<Subscription>,
        target: Arc<dyn DeliveryTarget>,
    ) -> Vec<Arc<dyn Endpoint>> {
        self.pushed.start(subscriptions.clone(), target.clone());
        let mut topics = self.inner.topics.write().unwrap_or_else(|e| e.into_inner());
        let key = |s: &Subscription| (s.trigger.pubsubname.clone(), s.trigger.topic.clone());
        let routed: Vec<TopicKey> = subscriptions
            .iter()
            .filter(|s| s.trigger.rule.is_some())
            .map(key)
            .collect();
        for subscription in subscriptions {
            let (tx, rx) = mpsc::channel(self.inner.policy.max_queued);
            let rule = subscription.trigger.rule.as_deref().and_then(|source| {
                Rule::compile(source)
                    .inspect_err(|e| tracing::error!(component = %subscription.trigger.component, "match: {e}"))
                    .ok()
            });
            topics.entry(key(&subscription)).or_default().push(Queue {
                tx,
                key: queue_key(&subscription.trigger),
                routed: routed.contains(&key(&subscription)),
                rule,
            });
            tokio::spawn(run_subscription(
                self.inner.clone(),
                Arc::new(subscription),
                target.clone(),
                rx,
            ));
        }
        drop(topics);
        self.inner.clone().resume();
        let pushed = self.pushed.clone();
        vec![
            Arc::new(SidecarApi {
                state_store: self.state_store.clone(),
                broker: self,
            }),
            pushed,
        ]
    }

    async fn shutdown(&self, grace: Duration) -> u64 {
        // Closing the queues ends each subscription's loop once it is empty.
        self.inner
            .topics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let (queued, pushed) =
            tokio::join!(self.inner.in_flight.drain(grace), self.pushed.drain(grace));
        if let Some(journal) = &self.inner.journal
            && let Err(e) = journal.flush().await
        {
            tracing::error!("{e}");
        }
        queued + pushed
    }
}

impl Inner {
    /// The queues a message on `pubsubname/topic` goes to, with their
    /// components: every subscription of the topic, or on a topic routed
    /// with `match` rules, the first whose rule holds (else the default). A
    /// topic nobody subscribes to drops the message, as Dapr's in-memory
    /// broker does.
    fn targets(
        &self,
        pubsubname: &str,
        topic: &str,
        event: &Event,
    ) -> Vec<(mpsc::Sender<Envelope>, QueueKey)> {
        let topics = self.topics.read().unwrap_or_else(|e| e.into_inner());
        let Some(queues) = topics.get(&(pubsubname.to_owned(), topic.to_owned())) else {
            tracing::debug!(%pubsubname, %topic, id = %event.id, "no subscriber; message discarded");
            return Vec::new();
        };
        let target = |q: &Queue| (q.tx.clone(), q.key.clone());
        let mut targets: Vec<_> = queues.iter().filter(|q| !q.routed).map(target).collect();
        let routed: Vec<&Queue> = queues.iter().filter(|q| q.routed).collect();
        if !routed.is_empty() {
            let chosen = routed
                .iter()
                .find(|q| q.rule.as_ref().is_some_and(|r| r.matches(event)))
                .or_else(|| routed.iter().find(|q| q.rule.is_none()));
            match chosen {
                Some(queue) => targets.push(target(queue)),
                None => {
                    tracing::debug!(%pubsubname, %topic, id = %event.id, "no rule matched and there is no default; message discarded")
                }
            }
        }
        targets
    }

    /// One copy of `envelope` per queue in `queues`, each written to the
    /// journal (in one commit, waited for) when there is one.
    async fn persist<'a>(
        &self,
        envelope: &Envelope,
        queues: impl Iterator<Item = &'a QueueKey>,
    ) -> Result<Vec<Envelope>, PublishError> {
        let Some(journal) = &self.journal else {
            return Ok(queues.map(|_| envelope.clone()).collect());
        };
        let mut rows = Vec::new();
        let mut copies = Vec::new();
        for queue in queues {
            let copy = Envelope {
                seq: Some(journal.next_seq()),
                attempts: 0,
                ..envelope.clone()
            };
            rows.push((copy.seq.unwrap_or_default(), copy.stored(queue)));
            copies.push(copy);
        }
        let written = match envelope.seq {
            Some(seq) => journal.replace(seq, rows).await,
            // A topic nobody subscribes to: nothing to write.
            None if rows.is_empty() => Ok(()),
            None => journal.append(rows).await,
        };
        written.map_err(|e| PublishError::Broker(e.to_string()))?;
        Ok(copies)
    }

    /// Moves a message to the queues of `pubsubname/topic`, waiting for
    /// room in full ones (dead letters are never refused). On disk, the new
    /// rows and the removal of the old one are one commit.
    async fn route_waiting(&self, pubsubname: &str, topic: &str, envelope: Envelope) {
        let targets = self.targets(pubsubname, topic, &envelope.event);
        let mut permits = Vec::with_capacity(targets.len());
        for (tx, key) in &targets {
            if let Ok(permit) = tx.reserve().await {
                permits.push((permit, key));
            }
        }
        match self
            .persist(&envelope, permits.iter().map(|(_, key)| *key))
            .await
        {
            Ok(copies) => {
                for ((permit, _), copy) in permits.into_iter().zip(copies) {
                    self.in_flight.enter();
                    permit.send(copy);
                }
            }
            // The old row stays, so the message is delivered again after a
            // restart rather than lost.
            Err(e) => {
                tracing::error!(%topic, id = %envelope.event.id, "cannot move the message to the dead-letter topic: {e:?}")
            }
        }
    }

    /// The journal forgets a message that is done.
    fn ack(&self, envelope: &Envelope) {
        if let (Some(journal), Some(seq)) = (&self.journal, envelope.seq) {
            journal.remove(seq);
        }
    }

    /// Hands the messages the journal kept from an earlier run back to their
    /// subscriptions. A message whose subscription is gone from the manifest
    /// stays on disk, and is reported.
    fn resume(self: Arc<Self>) {
        let Some(journal) = self.journal.clone() else {
            return;
        };
        let rows = match journal.load() {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!("{e}");
                return;
            }
        };
        if rows.is_empty() {
            return;
        }
        let queues: HashMap<QueueKey, mpsc::Sender<Envelope>> = self
            .topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .flatten()
            .map(|q| (q.key.clone(), q.tx.clone()))
            .collect();
        eprintln!(
            "host-bridge: {} message(s) kept in {} from an earlier run are delivered again",
            rows.len(),
            journal.path().display()
        );
        for (seq, stored) in rows {
            let Some(tx) = queues.get(&stored.queue).cloned() else {
                tracing::warn!(queue = ?stored.queue, seq, "a kept message's subscription is not in the manifest; it stays on disk");
                continue;
            };
            let event = match stored.event.to_event() {
                Ok(event) => event,
                Err(e) => {
                    tracing::error!(seq, "{e}; it stays on disk");
                    continue;
                }
            };
            let envelope = Envelope {
                event,
                expires: stored.expires_unix_ms.map(journal::from_unix_ms),
                seq: Some(seq),
                attempts: stored.attempts,
            };
            self.in_flight.enter();
            let inner = self.clone();
            tokio::spawn(async move {
                if tx.send(envelope).await.is_err() {
                    inner.in_flight.leave();
                }
            });
        }
    }

    /// The wait before delivery `attempt + 1`, after `attempt` failed ones.
    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.policy
            .initial_backoff
            .saturating_mul(factor)
            .min(self.policy.max_backoff)
    }
}

/// Takes a subscription's messages off its queue and delivers each in its own task.
async fn run_subscription(
    inner: Arc<Inner>,
    subscription: Arc<Subscription>,
    target: Arc<dyn DeliveryTarget>,
    mut queue: mpsc::Receiver<Envelope>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT_DELIVERIES));
    while let Some(envelope) = queue.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let (inner, subscription, target) = (inner.clone(), subscription.clone(), target.clone());
        tokio::spawn(async move {
            deliver(&inner, &subscription, target.as_ref(), envelope).await;
            inner.in_flight.leave();
            drop(slot);
        });
    }
}

/// Delivers one message until it is acked, dead-lettered or given up on.
///
/// Invariant: the message is acked (this function returns without sending it
/// anywhere) only after the guest answered SUCCESS, or DROP with no
/// dead-letter topic to send it to.
async fn deliver(
    inner: &Inner,
    subscription: &Subscription,
    target: &dyn DeliveryTarget,
    envelope: Envelope,
) {
    let trigger = &subscription.trigger;
    let id = envelope.event.id.clone();
    let mut envelope = envelope;
    loop {
        if envelope.expires.is_some_and(|t| SystemTime::now() >= t) {
            tracing::info!(topic = %trigger.topic, component = %trigger.component, %id, "message expired (ttl) before it was handled; discarded");
            Metrics::inc(&inner.metrics.discarded_expired);
            inner.ack(&envelope);
            return;
        }
        match target
            .deliver(subscription.index, envelope.event.clone())
            .await
        {
            Status::Success => {
                inner.ack(&envelope);
                return;
            }
            Status::Drop => {
                tracing::info!(topic = %trigger.topic, component = %trigger.component, %id, "guest dropped the message");
                dead_letter(inner, trigger, envelope, GaveUp::Dropped).await;
                return;
            }
            Status::Retry => {
                envelope.attempts += 1;
                if envelope.attempts >= inner.policy.max_attempts {
                    tracing::warn!(topic = %trigger.topic, component = %trigger.component, %id, attempts = envelope.attempts, "message still not handled after the last attempt");
                    dead_letter(inner, trigger, envelope, GaveUp::OutOfAttempts).await;
                    return;
                }
                // The count survives a restart, so the attempts are not
                // started over.
                if let (Some(journal), Some(seq)) = (&inner.journal, envelope.seq) {
                    journal.update(seq, &envelope.stored(&queue_key(trigger)));
                }
                let wait = inner.backoff(envelope.attempts);
                tracing::debug!(topic = %trigger.topic, %id, attempt = envelope.attempts, ?wait, "redelivering after backoff");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// The journal's name for a subscription's queue.
fn queue_key(trigger: &crate::manifest::PubsubTrigger) -> QueueKey {
    QueueKey {
        pubsubname: trigger.pubsubname.clone(),
        topic: trigger.topic.clone(),
        component: trigger.component.clone(),
    }
}

/// Why a message will not be handled by its subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GaveUp {
    /// The guest answered DROP.
    Dropped,
    /// Every attempt ended in RETRY.
    OutOfAttempts,
}

/// Sends a message that will not be handled to the dead-letter topic. With
/// none, a dropped message is simply acked, and one out of attempts is
/// logged and counted as discarded.
async fn dead_letter(
    inner: &Inner,
    trigger: &crate::manifest::PubsubTrigger,
    envelope: Envelope,
    why: GaveUp,
) {
    match &trigger.dead_letter_topic {
        Some(dlt) => {
            tracing::info!(topic = %trigger.topic, dead_letter_topic = %dlt, id = %envelope.event.id, ?why, "sent to the dead-letter topic");
            Metrics::inc(&inner.metrics.dead_lettered);
            // The event goes on unchanged, so the dead-letter handler sees
            // the original id, topic and payload.
            inner
                .route_waiting(
                    &trigger.pubsubname,
                    dlt,
                    Envelope {
                        expires: None,
                        ..envelope
                    },
                )
                .await;
        }
        None if why == GaveUp::Dropped => inner.ack(&envelope),
        None => {
            tracing::error!(topic = %trigger.topic, component = %trigger.component, id = %envelope.event.id, "out of attempts and no dead_letter_topic is set; message discarded");
            Metrics::inc(&inner.metrics.discarded_max_attempts);
            inner.ack(&envelope);
        }
    }
}

/// The embedded state store: one in-memory map per store name. Any store
/// name works; it is created on first use.
#[derive(Default)]
pub struct MemoryStateStore {
    stores: Mutex<HashMap<String, HashMap<String, Vec<u8>>>>,
}

fn check_key(key: &str) -> Result<(), StateError> {
    if key.is_empty() {
        Err(StateError::InvalidRequest(
            "the key must not be empty".into(),
        ))
    } else {
        Ok(())
    }
}

#[async_trait]
impl StateStore for MemoryStateStore {
    async fn get(&self, store: &str, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        check_key(key)?;
        let stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        Ok(stores.get(store).and_then(|s| s.get(key)).cloned())
    }

    async fn save(&self, store: &str, key: &str, value: Vec<u8>) -> Result<(), StateError> {
        check_key(key)?;
        let mut stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        stores
            .entry(store.to_owned())
            .or_default()
            .insert(key.to_owned(), value);
        Ok(())
    }

    async fn delete(&self, store: &str, key: &str) -> Result<(), StateError> {
        check_key(key)?;
        let mut stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = stores.get_mut(store) {
            s.remove(key);
        }
        Ok(())
    }

    async fn keys(&self, store: &str) -> Result<Vec<String>, StateError> {
        let stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        let mut keys: Vec<String> = stores
            .get(store)
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default();
        keys.sort();
        Ok(keys)
    }
}

/// The embedded state store on disk, in the broker's [`Journal`]: a value
/// is on disk before `save` returns.
pub struct DurableStateStore {
    journal: Arc<Journal>,
}

impl DurableStateStore {
    pub fn new(journal: Arc<Journal>) -> DurableStateStore {
        DurableStateStore { journal }
    }
}

#[async_trait]
impl StateStore for DurableStateStore {
    async fn get(&self, store: &str, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        check_key(key)?;
        self.journal
            .get_state(store, key)
            .map_err(|e| StateError::Unavailable(e.to_string()))
    }

    async fn save(&self, store: &str, key: &str, value: Vec<u8>) -> Result<(), StateError> {
        check_key(key)?;
        self.journal
            .set_state(store, key, Some(value))
            .await
            .map_err(|e| StateError::Unavailable(e.to_string()))
    }

    async fn delete(&self, store: &str, key: &str) -> Result<(), StateError> {
        check_key(key)?;
        self.journal
            .set_state(store, key, None)
            .await
            .map_err(|e| StateError::Unavailable(e.to_string()))
    }

    async fn keys(&self, store: &str) -> Result<Vec<String>, StateError> {
        self.journal
            .state_keys(store)
            .map_err(|e| StateError::Unavailable(e.to_string()))
    }
}
