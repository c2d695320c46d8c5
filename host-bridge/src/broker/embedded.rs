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
//!   counted in `/metrics` as discarded. Either way it is also kept in the
//!   dead-letter list, in the same commit (`embedded/dead_letters.rs`), for
//!   the admin page to show, replay to its subscription, or delete.
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
//! dead-letter topic is never refused, and never waits for room either:
//!
//! - **A dead letter holds no delivery slot.** The delivery gives its slot
//!   back before the message moves. The move writes the dead letter's rows
//!   and removes the original in one journal commit, waited for (the
//!   original is gone only once its dead letter is on disk); a queue with no
//!   room gets the row marked "on disk only", and its feeder puts it in the
//!   queue when room frees up. So a slow or full dead-letter topic cannot
//!   stall the topic it serves. (Loops of dead-letter topics are refused
//!   when the manifest is loaded, see `manifest/dead_letters.rs`.)
//! - **Memory is bounded by `max_queued`, not by the journal.** Each
//!   subscription has one feeder task: after a restart it replays the rows
//!   an earlier run left, a page at a time (`journal::PAGE_ROWS`, at most
//!   `journal::PAGE_BYTES`), waiting for room in the queue before each
//!   message; then it takes the spilled dead letters the same way. At most
//!   `max_queued` messages wait in memory per subscription, plus
//!   [`MAX_CONCURRENT_DELIVERIES`] being delivered and one page.
//! - **Order during a replay.** Each subscription's replay goes oldest
//!   first. Publishes are taken meanwhile if the queue has room, so a new
//!   message may be delivered before older ones are replayed (order was
//!   never guaranteed). The replay cannot be starved: it waits for room with
//!   `reserve`, and a freed place goes to a waiter before a publish's
//!   `try_reserve` can take it, so while the replay runs, publishes find the
//!   queue full more often and are refused with `503`, never lost.

mod dead_letters;

use super::dapr_app::DaprAppProtocol;
use super::journal::{self, Journal, JournalError, QueueKey, StoredDeadLetter, StoredMessage};
use super::routing::Rule;
use super::{Broker, DeliveryTarget, InFlight, Metrics, StateStore, Subscription, cloudevent};
use crate::contract::{Event, Message, PublishError, StateError, Status};
use crate::manifest::DeliveryPolicy;
use crate::server::Endpoint;
use crate::telemetry;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};
use tokio::sync::{Notify, Semaphore, mpsc};

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

/// A subscription's queue, as a publish or a dead letter finds it.
#[derive(Clone)]
struct Target {
    tx: mpsc::Sender<Envelope>,
    /// The subscription: its pub/sub, topic and component.
    key: QueueKey,
    /// Wakes the queue's feeder when a dead letter was left on disk for it.
    spilled: Arc<Notify>,
}

/// One subscription's queue on a topic.
struct Queue {
    target: Target,
    /// Whether the topic is routed with `match` rules: then each message
    /// goes to one routed queue, not to all.
    routed: bool,
    /// The queue's rule; `None` on a routed topic is the default.
    rule: Option<Rule>,
}

/// The embedded broker.
pub struct EmbeddedBroker {
    inner: Arc<Inner>,
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
    /// The messages given up on (on disk in `journal`, if there is one).
    dead_letters: dead_letters::Kept,
}

impl EmbeddedBroker {
    pub fn new(
        app_id: &str,
        policy: DeliveryPolicy,
        metrics: Arc<Metrics>,
        journal: Option<Arc<Journal>>,
    ) -> EmbeddedBroker {
        EmbeddedBroker {
            pushed: Arc::new(DaprAppProtocol::new(metrics.clone())),
            inner: Arc::new(Inner {
                app_id: app_id.to_owned(),
                policy,
                in_flight: InFlight::new(metrics.clone()),
                metrics,
                topics: RwLock::new(HashMap::new()),
                journal,
                dead_letters: dead_letters::Kept::default(),
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
        let mut event = cloudevent::from_message(&self.inner.app_id, pubsubname, topic, message)?;
        // A publish made in a span (a guest's) is continued by its delivery.
        if event.traceparent.is_none()
            && let Some(trace) = telemetry::context_of(&tracing::Span::current())
        {
            event.traceparent = trace.traceparent;
            event.tracestate = trace.tracestate;
        }
        let expires = ttl.map(|s| SystemTime::now() + Duration::from_secs(s.into()));
        let targets = self.inner.targets(pubsubname, topic, &event);
        // All or nothing: a place in every queue first, then the journal,
        // then the sends.
        let mut permits = Vec::with_capacity(targets.len());
        for target in &targets {
            match target.tx.try_reserve() {
                Ok(permit) => permits.push((permit, &target.key)),
                Err(mpsc::error::TrySendError::Full(())) => {
                    Metrics::inc(&self.inner.metrics.publishes_refused_queue_full);
                    return Err(PublishError::Unavailable(format!(
                        "the embedded broker's queue for `{}` on {pubsubname}/{topic} is full \
                         ({} messages waiting); try again later",
                        target.key.component, self.inner.policy.max_queued
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
        let (envelopes, rows) = self
            .inner
            .copies(&envelope, permits.iter().map(|(_, key)| *key));
        // A topic nobody subscribes to: nothing to write.
        if let Some(journal) = &self.inner.journal
            && !rows.is_empty()
        {
            journal
                .append(rows)
                .await
                .map_err(|e| PublishError::Broker(e.to_string()))?;
        }
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
        // One feeder per queue key (two triggers of one component on one
        // topic share their rows on disk, so they share a feeder).
        let mut feeders: Vec<Feeder> = Vec::new();
        for subscription in subscriptions {
            let (tx, rx) = mpsc::channel(self.inner.policy.max_queued);
            let rule = subscription.trigger.rule.as_deref().and_then(|source| {
                Rule::compile(source)
                    .inspect_err(|e| tracing::error!(component = %subscription.trigger.component, "match: {e}"))
                    .ok()
            });
            let queue = queue_key(&subscription.trigger);
            let spilled = match feeders.iter().find(|f| f.queue == queue) {
                Some(feeder) => feeder.spilled.clone(),
                None => {
                    let spilled = Arc::new(Notify::new());
                    feeders.push(Feeder {
                        queue: queue.clone(),
                        tx: tx.downgrade(),
                        spilled: spilled.clone(),
                    });
                    spilled
                }
            };
            topics.entry(key(&subscription)).or_default().push(Queue {
                target: Target {
                    tx,
                    key: queue,
                    spilled,
                },
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
        self.inner.clone().start_feeders(feeders);
        vec![self.pushed.clone()]
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
    fn targets(&self, pubsubname: &str, topic: &str, event: &Event) -> Vec<Target> {
        let topics = self.topics.read().unwrap_or_else(|e| e.into_inner());
        let Some(queues) = topics.get(&(pubsubname.to_owned(), topic.to_owned())) else {
            tracing::debug!(%pubsubname, %topic, id = %event.id, "no subscriber; message discarded");
            return Vec::new();
        };
        let target = |q: &Queue| q.target.clone();
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

    /// One copy of `envelope` per queue in `queues`, and with a journal,
    /// each copy's new row (its attempts start again at 0).
    fn copies<'a>(
        &self,
        envelope: &Envelope,
        queues: impl Iterator<Item = &'a QueueKey>,
    ) -> (Vec<Envelope>, Vec<(u64, StoredMessage)>) {
        let mut rows = Vec::new();
        let mut copies = Vec::new();
        for queue in queues {
            let copy = Envelope {
                seq: self.journal.as_ref().map(|j| j.next_seq()),
                attempts: 0,
                ..envelope.clone()
            };
            if let Some(seq) = copy.seq {
                rows.push((seq, copy.stored(queue)));
            }
            copies.push(copy);
        }
        (copies, rows)
    }

    /// Moves a message that will not be handled to the queues of its
    /// dead-letter topic `pubsubname/topic`.
    ///
    /// Invariant: the move never waits for room, so it holds nothing up (the
    /// delivery has given back its slot already). A queue with room gets the
    /// message at once; a full one gets it on disk only, marked for its
    /// feeder. On disk the new rows, their marks and the removal of the
    /// original are one commit, waited for: the original is forgotten only
    /// once its dead letters are on disk, and if the commit fails, the
    /// original stays and is delivered again after a restart. `record`, the
    /// entry of the dead-letter list, is written in that same commit.
    async fn move_to(
        self: &Arc<Self>,
        pubsubname: &str,
        topic: &str,
        envelope: Envelope,
        record: StoredDeadLetter,
    ) {
        let targets = self.targets(pubsubname, topic, &envelope.event);
        let mut ready = Vec::with_capacity(targets.len());
        let mut full = Vec::new();
        for target in &targets {
            match target.tx.try_reserve() {
                Ok(permit) => ready.push((permit, target)),
                // Full, or closed because the host is stopping: on disk, it
                // is delivered after the restart.
                Err(_) => full.push(target),
            }
        }
        let keys = ready
            .iter()
            .map(|(_, t)| &t.key)
            .chain(full.iter().map(|t| &t.key));
        let (copies, rows) = self.copies(&envelope, keys);
        let (Some(journal), Some(seq)) = (&self.journal, envelope.seq) else {
            self.dead_letters.keep_in_memory(record);
            // --in-memory: there is no disk to leave a copy on, so a copy
            // for a full queue waits for room in a task of its own, which
            // holds no slot either.
            let mut copies = copies.into_iter();
            for ((permit, _), copy) in ready.into_iter().zip(copies.by_ref()) {
                self.in_flight.enter();
                permit.send(copy);
            }
            for (target, copy) in full.into_iter().zip(copies) {
                self.in_flight.enter();
                let (inner, tx) = (self.clone(), target.tx.clone());
                tokio::spawn(async move {
                    if tx.send(copy).await.is_err() {
                        inner.in_flight.leave();
                    }
                });
            }
            return;
        };
        let spilled: Vec<u64> = copies[ready.len()..].iter().filter_map(|c| c.seq).collect();
        match journal.replace(seq, rows, &spilled, Some(&record)).await {
            Ok(()) => {
                self.dead_letters.kept(&record);
                for ((permit, _), copy) in ready.into_iter().zip(copies) {
                    self.in_flight.enter();
                    permit.send(copy);
                }
                for target in full {
                    tracing::debug!(topic = %target.key.topic, component = %target.key.component, id = %envelope.event.id, "the dead-letter queue is full; the message waits on disk");
                    target.spilled.notify_one();
                }
            }
            Err(e) => {
                tracing::error!(%topic, id = %envelope.event.id, "cannot move the message to the dead-letter topic; it stays on disk and is delivered again after a restart: {e}")
            }
        }
    }

    /// Forgets a message given up on, with nowhere to send it, and keeps
    /// `record` of it: on disk, one commit, waited for (if it fails, the
    /// message stays and is delivered again after a restart).
    async fn give_up(&self, envelope: &Envelope, record: StoredDeadLetter) {
        let (Some(journal), Some(seq)) = (&self.journal, envelope.seq) else {
            self.dead_letters.keep_in_memory(record);
            return;
        };
        match journal.replace(seq, Vec::new(), &[], Some(&record)).await {
            Ok(()) => self.dead_letters.kept(&record),
            Err(e) => {
                tracing::error!(topic = %record.queue.topic, id = %envelope.event.id, "cannot record the dead letter; the message stays on disk and is delivered again after a restart: {e}")
            }
        }
    }

    /// The journal forgets a message that is done.
    fn ack(&self, envelope: &Envelope) {
        if let (Some(journal), Some(seq)) = (&self.journal, envelope.seq) {
            journal.remove(seq);
        }
    }

    /// Starts each queue's feeder, which hands the messages the journal
    /// kept from an earlier run back to their subscription as it has room,
    /// and after that, dead letters left on disk. A message whose
    /// subscription is gone from the manifest stays on disk, and is
    /// reported.
    fn start_feeders(self: Arc<Self>, feeders: Vec<Feeder>) {
        let Some(journal) = self.journal.clone() else {
            return;
        };
        let kept = match journal.replay_counts() {
            Ok(kept) => kept,
            Err(e) => {
                tracing::error!(
                    "{e}; nothing kept from an earlier run is delivered until the next start"
                );
                Vec::new()
            }
        };
        let mut replayed = 0;
        for (queue, count) in kept {
            if feeders.iter().any(|f| f.queue == queue) {
                replayed += count;
            } else {
                tracing::warn!(
                    pubsubname = %queue.pubsubname,
                    topic = %queue.topic,
                    component = %queue.component,
                    count,
                    "messages kept for a subscription that is not in the manifest; they stay on disk"
                );
            }
        }
        if replayed > 0 {
            crate::say!(
                "{replayed} message(s) kept in {} from an earlier run are delivered again, \
                 at most {} waiting in memory per subscription",
                journal.path().display(),
                self.policy.max_queued
            );
        }
        for feeder in feeders {
            tokio::spawn(feed(self.clone(), journal.clone(), feeder));
        }
    }

    /// Puts a message read back from the journal in its queue, waiting for
    /// room. Returns `false` once the queue is closed (the host is
    /// stopping): what is left stays on disk for the next start.
    async fn enqueue(
        &self,
        tx: &mpsc::WeakSender<Envelope>,
        seq: u64,
        stored: StoredMessage,
    ) -> bool {
        let event = match stored.event.to_event() {
            Ok(event) => event,
            Err(e) => {
                tracing::error!(seq, "{e}; it stays on disk");
                return true;
            }
        };
        let Some(tx) = tx.upgrade() else {
            return false;
        };
        let Ok(permit) = tx.reserve().await else {
            return false;
        };
        self.in_flight.enter();
        permit.send(Envelope {
            event,
            expires: stored.expires_unix_ms.map(journal::from_unix_ms),
            seq: Some(seq),
            attempts: stored.attempts,
        });
        true
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

/// What a queue's feeder needs: which rows are its, where to put them, and
/// what wakes it when a dead letter was left on disk for it.
struct Feeder {
    queue: QueueKey,
    /// Weak, so that the feeder does not keep the queue open at shutdown.
    tx: mpsc::WeakSender<Envelope>,
    spilled: Arc<Notify>,
}

/// Runs `read` on the journal off the async threads (redb reads block).
async fn read_journal<T: Send + 'static>(
    journal: &Arc<Journal>,
    read: impl FnOnce(&Journal) -> Result<T, JournalError> + Send + 'static,
) -> Result<T, String> {
    let journal = journal.clone();
    match tokio::task::spawn_blocking(move || read(&journal)).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(e) => Err(format!("the journal read stopped: {e}")),
    }
}

/// A queue's feeder: puts the messages of `feeder.queue` that are on disk
/// only into the queue, one page at a time, as it has room. First the rows
/// an earlier run left (the replay, oldest first, and stopping at
/// [`Journal::replay_end`], since later rows are in the queue already), then,
/// for as long as the host runs, dead letters that found the queue full.
///
/// Invariant: besides the queue (`max_queued`), it holds at most one page
/// in memory, however many messages the disk holds.
async fn feed(inner: Arc<Inner>, journal: Arc<Journal>, feeder: Feeder) {
    let Feeder { queue, tx, spilled } = feeder;
    let mut from = 0;
    loop {
        let key = queue.clone();
        let page = match read_journal(&journal, move |j| j.replay_page(&key, from)).await {
            Ok(page) => page,
            Err(e) => {
                tracing::error!(topic = %queue.topic, component = %queue.component, "cannot replay the journal: {e}; the rest stays on disk until the next start");
                break;
            }
        };
        for (seq, stored) in page.rows {
            if !inner.enqueue(&tx, seq, stored).await {
                return;
            }
        }
        match page.next {
            Some(next) => from = next,
            None => break,
        }
    }
    loop {
        let key = queue.clone();
        let page = match read_journal(&journal, move |j| j.spilled_page(&key)).await {
            Ok(page) => page,
            Err(e) => {
                tracing::error!(topic = %queue.topic, component = %queue.component, "cannot read dead letters left on disk: {e}; they are delivered after the next start");
                return;
            }
        };
        if page.is_empty() {
            spilled.notified().await;
            continue;
        }
        let mut taken = Vec::with_capacity(page.len());
        for (seq, stored) in page {
            if let Some(stored) = stored
                && !inner.enqueue(&tx, seq, stored).await
            {
                return;
            }
            taken.push(seq);
        }
        // Waited for, so the next page does not hold these again.
        if let Err(e) = journal.unspill(&queue, &taken).await {
            tracing::error!(topic = %queue.topic, component = %queue.component, "{e}; dead letters left on disk are delivered after the next start");
            return;
        }
        tracing::debug!(topic = %queue.topic, component = %queue.component, count = taken.len(), "dead letters left on disk are queued");
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
            let gave_up = deliver(&inner, &subscription, target.as_ref(), envelope).await;
            // The slot goes back before a dead letter moves: a move never
            // holds one, so a slow dead-letter topic cannot stall this one.
            drop(slot);
            if let Some((envelope, why)) = gave_up {
                dead_letter(&inner, &subscription.trigger, envelope, why).await;
            }
            inner.in_flight.leave();
        });
    }
}

/// Delivers one message until it is acked or expired, or returns it with
/// why it will not be handled, for [`dead_letter`].
///
/// Invariant: the message is acked here only after the guest answered
/// SUCCESS (or it expired); DROP and running out of attempts hand it back.
async fn deliver(
    inner: &Inner,
    subscription: &Subscription,
    target: &dyn DeliveryTarget,
    envelope: Envelope,
) -> Option<(Envelope, GaveUp)> {
    let trigger = &subscription.trigger;
    let id = envelope.event.id.clone();
    let mut envelope = envelope;
    loop {
        if envelope.expires.is_some_and(|t| SystemTime::now() >= t) {
            tracing::info!(topic = %trigger.topic, component = %trigger.component, %id, "message expired (ttl) before it was handled; discarded");
            Metrics::inc(&inner.metrics.discarded_expired);
            inner.ack(&envelope);
            return None;
        }
        match target
            .deliver(subscription.index, envelope.event.clone())
            .await
        {
            Status::Success => {
                inner.ack(&envelope);
                return None;
            }
            Status::Drop => {
                tracing::info!(topic = %trigger.topic, component = %trigger.component, %id, "guest dropped the message");
                return Some((envelope, GaveUp::Dropped));
            }
            Status::Retry => {
                envelope.attempts += 1;
                if envelope.attempts >= inner.policy.max_attempts {
                    tracing::warn!(topic = %trigger.topic, component = %trigger.component, %id, attempts = envelope.attempts, "message still not handled after the last attempt");
                    return Some((envelope, GaveUp::OutOfAttempts));
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

/// Sends a message that will not be handled to the dead-letter topic
/// ([`Inner::move_to`]). With none, a dropped message is simply acked, and
/// one out of attempts is logged and counted as discarded. Either way it
/// is kept in the dead-letter list, in the commit that moves or removes it.
async fn dead_letter(
    inner: &Arc<Inner>,
    trigger: &crate::manifest::PubsubTrigger,
    envelope: Envelope,
    why: GaveUp,
) {
    let record = inner.dead_letters.record(
        inner.journal.as_deref(),
        queue_key(trigger),
        &envelope,
        why,
        trigger.dead_letter_topic.clone(),
    );
    match &trigger.dead_letter_topic {
        Some(dlt) => {
            tracing::info!(topic = %trigger.topic, dead_letter_topic = %dlt, id = %envelope.event.id, ?why, "sent to the dead-letter topic");
            Metrics::inc(&inner.metrics.dead_lettered);
            // The event goes on unchanged, so the dead-letter handler sees
            // the original id, topic and payload.
            inner
                .move_to(
                    &trigger.pubsubname,
                    dlt,
                    Envelope {
                        expires: None,
                        ..envelope
                    },
                    record,
                )
                .await;
        }
        None => {
            if why == GaveUp::OutOfAttempts {
                tracing::error!(topic = %trigger.topic, component = %trigger.component, id = %envelope.event.id, "out of attempts and no dead_letter_topic is set; message discarded (kept in the dead-letter list)");
                Metrics::inc(&inner.metrics.discarded_max_attempts);
            }
            inner.give_up(&envelope, record).await;
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
