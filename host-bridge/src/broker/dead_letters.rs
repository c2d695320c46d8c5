//! Dead letters: the messages a subscription gave up on, as the admin page
//! lists them.
//!
//! Each backend keeps what it can and implements [`DeadLetters`]:
//!
//! - **The embedded broker** keeps every message its guest DROPped or that
//!   ran out of attempts, in full, in the journal when durable (in memory
//!   with `--in-memory`), and can replay or delete each
//!   (`broker/embedded/dead_letters.rs`). The record is written in the same
//!   commit that removes or moves the original, so a message is never both
//!   waiting and dead, nor neither.
//! - **Under Dapr** the events themselves are daprd's: a DROP, or RETRYs past
//!   the resiliency policy, sends them to the subscription's
//!   `deadLetterTopic` on the broker. host-bridge only lists what it answered
//!   (`broker/dapr_dead_letters.rs`), and cannot replay.
//!
//! **Replay goes back to one subscription.** A dead letter belongs to the
//! subscription that gave up on it (`pubsubname`, `topic`, `component`).
//! Publishing it to the topic again would deliver it to every subscription
//! of the topic, including those that already handled it; so a replay puts
//! it back on that one subscription's queue, as a fresh message (attempts
//! at 0), and forgets the record, in one commit.
//!
//! **Bounded.** Each list keeps the newest [`MAX_DEAD_LETTERS`]; an older
//! record is evicted, with a log line naming it, when a new one arrives.
//! Replays and deletes are kept in a log of the newest [`MAX_ACTIONS`].

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// The most dead letters a list keeps; the oldest goes first.
pub const MAX_DEAD_LETTERS: usize = 1000;
/// The most replays and deletes the action log keeps.
pub const MAX_ACTIONS: usize = 100;

/// Why a subscription gave up on a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    /// The guest answered DROP.
    Drop,
    /// Every attempt ended in RETRY (or a trap, panic or timeout, which
    /// count as RETRY), up to `max_attempts`.
    OutOfAttempts,
    /// Under Dapr: host-bridge answered RETRY, and daprd may redeliver it
    /// or, past its retries, dead-letter it; the host cannot tell which.
    Retrying,
}

/// One dead letter, as listed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// Its id in the list (not the event's id).
    pub id: String,
    pub pubsubname: String,
    pub topic: String,
    /// The subscription's component.
    pub component: String,
    /// Deliveries made.
    pub attempts: u32,
    pub reason: Reason,
    /// The last answer or error, as text.
    pub last_error: String,
    /// When the subscription gave up, in milliseconds since the epoch.
    pub at_unix_ms: u64,
    /// The dead-letter topic it was also sent to, if any.
    pub dead_letter_topic: Option<String>,
    /// The event's own id (the CloudEvent `id`).
    pub event_id: String,
    pub datacontenttype: String,
    /// The payload, base64-encoded.
    pub data_base64: String,
    /// Whether `data_base64` holds only the start of the payload.
    pub data_truncated: bool,
}

/// A replay or delete, as logged.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Action {
    pub id: String,
    pub topic: String,
    pub component: String,
    /// `replay` or `delete`.
    pub action: String,
    pub at_unix_ms: u64,
}

/// What a list can say about itself, for the page.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Listing {
    /// `embedded` or `dapr`.
    pub kind: &'static str,
    /// Whether the messages can be replayed and deleted here.
    pub replayable: bool,
    /// Where the rest live, and what the list holds.
    pub note: String,
    pub dead_letters: Vec<DeadLetter>,
    pub actions: Vec<Action>,
    /// How many the list holds at most.
    pub max: usize,
}

/// Why a replay or delete did not happen.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("there is no dead letter `{0}` (replayed or deleted already?)")]
    Unknown(String),
    #[error("{0}")]
    NotHere(String),
    #[error(
        "the subscription of dead letter `{id}` ({topic} for `{component}`) is not in the manifest any more; it is kept"
    )]
    NoSubscription {
        id: String,
        topic: String,
        component: String,
    },
    #[error("dead letter `{id}`: {reason}")]
    Failed { id: String, reason: String },
}

/// The seam: what a backend keeps of the messages it gave up on.
#[async_trait]
pub trait DeadLetters: Send + Sync + 'static {
    /// Every dead letter kept, newest first, with the action log.
    async fn list(&self) -> Result<Listing, DeadLetterError>;

    /// Puts dead letter `id` back on its subscription's queue as a fresh
    /// message, and forgets it.
    async fn replay(&self, id: &str) -> Result<(), DeadLetterError>;

    /// Forgets dead letter `id`.
    async fn delete(&self, id: &str) -> Result<(), DeadLetterError>;

    /// A number that changes whenever the list does, so a live view knows
    /// when to read it again.
    fn generation(&self) -> u64;
}

/// The most bytes of a dead letter's payload a listing carries; the rest
/// is kept (and replayed), not listed.
pub const MAX_LISTED_DATA: usize = 16 << 10;

/// A payload as a listing carries it: base64 of at most
/// [`MAX_LISTED_DATA`] bytes, and whether there was more.
pub fn listed_data(data: &[u8]) -> (String, bool) {
    use base64::Engine as _;
    let shown = &data[..data.len().min(MAX_LISTED_DATA)];
    (
        base64::engine::general_purpose::STANDARD.encode(shown),
        shown.len() < data.len(),
    )
}

/// Now, in milliseconds since the epoch.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
