//! The embedded broker's journal: what it must not forget, on disk.
//!
//! One redb file (`--data-dir`/`embedded.redb`) holds every message a
//! subscription has not acked yet, with its delivery count, and the embedded
//! state store. redb commits are atomic and fsynced, so:
//!
//! - **A publish is on disk before it is acknowledged.** The broker writes
//!   the message's row for every subscription it goes to, and only answers
//!   (`202` from `POST /orders`, `204` from the sidecar API, `Ok` to a guest)
//!   once that commit returned.
//! - **A row goes only when its message is done**: acked (SUCCESS, or DROP
//!   with nowhere to go), moved to a dead-letter topic (the move is one
//!   commit: the new rows, their marks and the removal together, so the
//!   original goes only once its dead letters are on disk), expired, or
//!   given up on. A crash before that means a redelivery, never a loss.
//! - **Redelivery counts survive a restart**: each RETRY updates the row, so
//!   a restarted host does not start the count again.
//! - **A saved state value is on disk before `save` returns.**
//! - **A dead letter is recorded in the commit that gives up on it.** The
//!   record of a message its subscription gave up on (`dead_letters`, see
//!   `broker/dead_letters.rs`) is written in the same commit that removes
//!   or moves the original, and a replay writes the new row and forgets the
//!   record in one commit too; so nothing is half-done. The table keeps the
//!   newest [`MAX_DEAD_LETTERS`]; replays and deletes are logged in
//!   `dead_letter_actions` (the newest [`MAX_ACTIONS`]).
//!
//! The disk can hold more than memory may: after a restart, or when dead
//! letters arrive faster than their topic's subscriber takes them, a
//! subscription's rows are read back in bounded pages ([`Journal::replay_page`],
//! [`Journal::spilled_page`]) as its queue has room, never all at once:
//!
//! - **Replay.** Every row written before this process opened the file
//!   (its sequence number is below [`Journal::replay_end`]) is waiting on
//!   disk only; rows written since are in a queue as well, so a replay
//!   stops at `replay_end` and delivers nothing twice.
//! - **Spilled dead letters.** A dead letter whose queue was full is written
//!   with a marker in `spilled` (in the same commit as its row, and as the
//!   removal of the message it replaces). The marker says "on disk only";
//!   it goes once the row is in its queue. Markers are cleared when the file
//!   is opened, because a replay then covers every row.
//!
//! Writes go through one writer thread, which commits everything that has
//! arrived since its last commit in a single transaction (group commit), so
//! concurrent publishes share an fsync instead of queueing for one each.
//! Removals and delivery counts are not waited for: losing one to a crash
//! only means a redelivery.

use super::dead_letters::{Action, DeadLetter, MAX_ACTIONS, MAX_DEAD_LETTERS, Reason};
use crate::contract::Event;
use base64::Engine as _;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Messages waiting for a subscription, by sequence number.
const MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("messages");
/// The embedded state store: `(store, key)` to value.
const STATE: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("state");
/// Rows of `messages` that are on disk only (dead letters that found their
/// queue full), by `(pubsubname, topic, component, sequence number)`.
const SPILLED: TableDefinition<(&str, &str, &str, u64), ()> = TableDefinition::new("spilled");

/// Messages a subscription gave up on, by id ([`StoredDeadLetter`]).
const DEAD_LETTERS: TableDefinition<u64, &[u8]> = TableDefinition::new("dead_letters");
/// Replays and deletes of dead letters, by id ([`Action`]).
const DEAD_LETTER_ACTIONS: TableDefinition<u64, &[u8]> =
    TableDefinition::new("dead_letter_actions");

/// The most operations one commit takes.
const MAX_BATCH: usize = 4096;

/// The memory redb may use to cache the file's pages (its default is 1 GiB).
/// Reads beyond it go to the file (and the kernel's page cache), so the
/// journal's size does not become the host's.
pub const CACHE_BYTES: usize = 64 << 20;

/// Which subscription a stored message waits for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct QueueKey {
    pub pubsubname: String,
    pub topic: String,
    pub component: String,
}

/// A stored message's queue, read without the rest of the row.
#[derive(Deserialize)]
struct StoredQueue {
    queue: QueueKey,
}

/// A page of a replay: the rows of one queue, oldest first, and where the
/// next page starts (`None`: the replay is over).
#[derive(Debug)]
pub struct ReplayPage {
    pub rows: Vec<(u64, StoredMessage)>,
    pub next: Option<u64>,
}

/// One message waiting for one subscription, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredMessage {
    pub queue: QueueKey,
    pub event: StoredEvent,
    /// Deliveries so far that did not succeed.
    pub attempts: u32,
    /// When the message expires (its TTL), in milliseconds since the epoch.
    pub expires_unix_ms: Option<u64>,
}

/// An [`Event`], in a form serde can write.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredEvent {
    id: String,
    source: String,
    #[serde(rename = "type")]
    type_: String,
    specversion: String,
    topic: String,
    pubsubname: String,
    datacontenttype: String,
    subject: Option<String>,
    time: Option<String>,
    traceparent: Option<String>,
    tracestate: Option<String>,
    metadata: Vec<(String, String)>,
    /// The payload, base64-encoded.
    data: String,
}

impl From<&Event> for StoredEvent {
    fn from(e: &Event) -> StoredEvent {
        StoredEvent {
            id: e.id.clone(),
            source: e.source.clone(),
            type_: e.type_.clone(),
            specversion: e.specversion.clone(),
            topic: e.topic.clone(),
            pubsubname: e.pubsubname.clone(),
            datacontenttype: e.datacontenttype.clone(),
            subject: e.subject.clone(),
            time: e.time.clone(),
            traceparent: e.traceparent.clone(),
            tracestate: e.tracestate.clone(),
            metadata: e.metadata.clone(),
            data: base64::engine::general_purpose::STANDARD.encode(&e.data),
        }
    }
}

impl StoredEvent {
    pub fn to_event(&self) -> Result<Event, String> {
        Ok(Event {
            id: self.id.clone(),
            source: self.source.clone(),
            type_: self.type_.clone(),
            specversion: self.specversion.clone(),
            topic: self.topic.clone(),
            pubsubname: self.pubsubname.clone(),
            datacontenttype: self.datacontenttype.clone(),
            subject: self.subject.clone(),
            time: self.time.clone(),
            traceparent: self.traceparent.clone(),
            tracestate: self.tracestate.clone(),
            metadata: self.metadata.clone(),
            data: base64::engine::general_purpose::STANDARD
                .decode(&self.data)
                .map_err(|e| format!("stored message {}: bad data: {e}", self.id))?,
        })
    }
}

impl StoredEvent {
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// A message its subscription gave up on, as stored: enough to list it,
/// and the whole event, to replay it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredDeadLetter {
    pub id: u64,
    /// The subscription that gave up on it, whose queue a replay goes to.
    pub queue: QueueKey,
    pub attempts: u32,
    pub reason: Reason,
    pub last_error: String,
    pub at_unix_ms: u64,
    pub dead_letter_topic: Option<String>,
    pub event: StoredEvent,
}

impl StoredDeadLetter {
    /// As the admin page lists it (the payload cut at
    /// [`MAX_LISTED_DATA`](super::dead_letters::MAX_LISTED_DATA)).
    pub fn to_dead_letter(&self) -> DeadLetter {
        let data = base64::engine::general_purpose::STANDARD
            .decode(&self.event.data)
            .unwrap_or_default();
        let (data_base64, data_truncated) = super::dead_letters::listed_data(&data);
        DeadLetter {
            id: self.id.to_string(),
            pubsubname: self.queue.pubsubname.clone(),
            topic: self.queue.topic.clone(),
            component: self.queue.component.clone(),
            attempts: self.attempts,
            reason: self.reason,
            last_error: self.last_error.clone(),
            at_unix_ms: self.at_unix_ms,
            dead_letter_topic: self.dead_letter_topic.clone(),
            event_id: self.event.id.clone(),
            datacontenttype: self.event.datacontenttype.clone(),
            data_base64,
            data_truncated,
        }
    }
}

/// A TTL's deadline as stored, and back.
pub fn to_unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Why the journal could not be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(
        "{path} is open in another host-bridge: give each running host its own --data-dir (or run with --in-memory)"
    )]
    InUse { path: PathBuf },
    #[error("cannot open the embedded broker's data file {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("cannot write to {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
}

/// One change, as the writer thread applies it.
enum Op {
    Put(u64, Vec<u8>),
    Remove(u64),
    SetState(String, String, Option<Vec<u8>>),
    /// Marks a row as on disk only; `false` takes the mark away.
    Spilled(QueueKey, u64, bool),
    PutDeadLetter(u64, Vec<u8>),
    RemoveDeadLetter(u64),
    PutAction(u64, Vec<u8>),
}

/// Changes committed together, and whom to tell.
struct Batch {
    ops: Vec<Op>,
    done: Option<tokio::sync::oneshot::Sender<Result<(), String>>>,
}

/// The journal: a redb file and its writer thread.
pub struct Journal {
    db: std::sync::Arc<Database>,
    path: PathBuf,
    next_seq: AtomicU64,
    /// The first sequence number this process hands out: every row below it
    /// was written by an earlier run.
    replay_end: u64,
    writer: mpsc::Sender<Batch>,
}

/// How many rows one page of a replay holds at most...
pub const PAGE_ROWS: usize = 256;
/// ...and how many bytes of them (but always at least one row).
pub const PAGE_BYTES: usize = 1 << 20;
/// How many rows of other queues one page may step over, so that a read
/// transaction stays short.
const PAGE_SCAN: usize = 8192;

impl Journal {
    /// Opens (or creates) `dir/embedded.redb`.
    pub fn open(dir: &Path) -> Result<Journal, JournalError> {
        let path = dir.join("embedded.redb");
        std::fs::create_dir_all(dir).map_err(|e| JournalError::Open {
            path: path.clone(),
            reason: format!("cannot create {}: {e}", dir.display()),
        })?;
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    JournalError::InUse { path: path.clone() }
                }
                other => JournalError::Open {
                    path: path.clone(),
                    reason: other.to_string(),
                },
            })?;
        let write_error = |e: &dyn std::fmt::Display| JournalError::Write {
            path: path.clone(),
            reason: e.to_string(),
        };
        // Create every table, so readers never meet a missing one. Spill
        // marks from an earlier run go: this run replays every row anyway.
        let txn = db.begin_write().map_err(|e| write_error(&e))?;
        txn.delete_table(SPILLED).map_err(|e| write_error(&e))?;
        // Messages, dead letters and actions share one sequence.
        let last = {
            let messages = txn.open_table(MESSAGES).map_err(|e| write_error(&e))?;
            txn.open_table(STATE).map_err(|e| write_error(&e))?;
            txn.open_table(SPILLED).map_err(|e| write_error(&e))?;
            let dead_letters = txn.open_table(DEAD_LETTERS).map_err(|e| write_error(&e))?;
            let actions = txn
                .open_table(DEAD_LETTER_ACTIONS)
                .map_err(|e| write_error(&e))?;
            let mut last = 0;
            for table in [&messages, &dead_letters, &actions] {
                let key = table.last().map_err(|e| write_error(&e))?;
                last = last.max(key.map_or(0, |(k, _)| k.value()));
            }
            last
        };
        txn.commit().map_err(|e| write_error(&e))?;
        let db = std::sync::Arc::new(db);
        let (tx, rx) = mpsc::channel::<Batch>();
        let writer_db = db.clone();
        std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || write_loop(&writer_db, rx))
            .map_err(|e| write_error(&e))?;
        Ok(Journal {
            db,
            path,
            next_seq: AtomicU64::new(last + 1),
            replay_end: last + 1,
            writer: tx,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A sequence number for a new row.
    pub fn next_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::Relaxed)
    }

    fn send(&self, ops: Vec<Op>, done: Option<tokio::sync::oneshot::Sender<Result<(), String>>>) {
        // The writer thread lives as long as the journal.
        let _ = self.writer.send(Batch { ops, done });
    }

    /// Applies `ops` in one commit and waits until it is on disk.
    async fn commit(&self, ops: Vec<Op>) -> Result<(), JournalError> {
        let (done, committed) = tokio::sync::oneshot::channel();
        self.send(ops, Some(done));
        let reason = match committed.await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(reason)) => reason,
            Err(_) => "the journal writer stopped".to_owned(),
        };
        Err(JournalError::Write {
            path: self.path.clone(),
            reason,
        })
    }

    /// Writes new rows, and waits until they are on disk.
    pub async fn append(&self, rows: Vec<(u64, StoredMessage)>) -> Result<(), JournalError> {
        let ops = rows
            .into_iter()
            .map(|(seq, m)| Op::Put(seq, encode(&m)))
            .collect();
        self.commit(ops).await
    }

    /// Replaces row `seq` with `rows` in one commit (a move to a dead-letter
    /// topic), and waits until it is on disk. The rows whose sequence number
    /// is in `spilled` are marked as on disk only: their queue was full, and
    /// its feeder reads them back ([`Journal::spilled_page`]). With
    /// `dead_letter`, the record of the message given up on is written in
    /// the same commit (with no `rows`, that is all that becomes of it).
    pub async fn replace(
        &self,
        seq: u64,
        rows: Vec<(u64, StoredMessage)>,
        spilled: &[u64],
        dead_letter: Option<&StoredDeadLetter>,
    ) -> Result<(), JournalError> {
        let mut ops = Self::rows_ops(rows, spilled);
        ops.push(Op::Remove(seq));
        if let Some(record) = dead_letter {
            ops.push(Op::PutDeadLetter(record.id, to_json(record)));
        }
        self.commit(ops).await
    }

    fn rows_ops(rows: Vec<(u64, StoredMessage)>, spilled: &[u64]) -> Vec<Op> {
        let mut ops = Vec::with_capacity(rows.len() * 2 + 3);
        for (s, m) in rows {
            if spilled.contains(&s) {
                ops.push(Op::Spilled(m.queue.clone(), s, true));
            }
            ops.push(Op::Put(s, encode(&m)));
        }
        ops
    }

    /// Records a dead letter that has no row to remove, and waits until it
    /// is on disk (for tests: a running host records one in the commit
    /// that gives up on its message, [`Journal::replace`]).
    #[cfg(test)]
    async fn record_dead_letter(&self, record: &StoredDeadLetter) -> Result<(), JournalError> {
        self.commit(vec![Op::PutDeadLetter(record.id, to_json(record))])
            .await
    }

    /// Replays dead letter `id` as `row` (spilled: on disk only, for its
    /// queue's feeder), forgets it and logs `action`, in one commit.
    pub async fn replay_dead_letter(
        &self,
        id: u64,
        row: (u64, StoredMessage),
        spilled: bool,
        action: &Action,
    ) -> Result<(), JournalError> {
        let spilled = if spilled { vec![row.0] } else { Vec::new() };
        let mut ops = Self::rows_ops(vec![row], &spilled);
        ops.push(Op::RemoveDeadLetter(id));
        ops.push(Op::PutAction(self.next_seq(), to_json(action)));
        self.commit(ops).await
    }

    /// Forgets dead letter `id` and logs `action`, in one commit.
    pub async fn delete_dead_letter(&self, id: u64, action: &Action) -> Result<(), JournalError> {
        let ops = vec![
            Op::RemoveDeadLetter(id),
            Op::PutAction(self.next_seq(), to_json(action)),
        ];
        self.commit(ops).await
    }

    /// Dead letter `id`, if kept.
    pub fn dead_letter(&self, id: u64) -> Result<Option<StoredDeadLetter>, JournalError> {
        let txn = self.db.begin_read().map_err(|e| self.read_error(&e))?;
        let table = txn
            .open_table(DEAD_LETTERS)
            .map_err(|e| self.read_error(&e))?;
        let row = table.get(id).map_err(|e| self.read_error(&e))?;
        row.map(|bytes| serde_json::from_slice(bytes.value()).map_err(|e| self.read_error(&e)))
            .transpose()
    }

    /// Every dead letter kept, newest first (at most [`MAX_DEAD_LETTERS`]),
    /// and the action log, newest first. Unreadable rows are reported and
    /// skipped.
    pub fn dead_letters(&self) -> Result<(Vec<StoredDeadLetter>, Vec<Action>), JournalError> {
        let txn = self.db.begin_read().map_err(|e| self.read_error(&e))?;
        let read = |table: TableDefinition<u64, &[u8]>| {
            let table = txn.open_table(table).map_err(|e| self.read_error(&e))?;
            let rows = table.iter().map_err(|e| self.read_error(&e))?;
            let mut values = Vec::new();
            for row in rows.rev() {
                let (key, bytes) = row.map_err(|e| self.read_error(&e))?;
                values.push((key.value(), bytes.value().to_vec()));
            }
            Ok::<_, JournalError>(values)
        };
        Ok((
            self.parse_rows(read(DEAD_LETTERS)?),
            self.parse_rows(read(DEAD_LETTER_ACTIONS)?),
        ))
    }

    /// The rows that parse; the others are reported and skipped.
    fn parse_rows<T: serde::de::DeserializeOwned>(&self, rows: Vec<(u64, Vec<u8>)>) -> Vec<T> {
        rows.into_iter()
            .filter_map(|(key, bytes)| {
                serde_json::from_slice(&bytes)
                    .inspect_err(|e| tracing::error!(path = %self.path.display(), key, "a dead-letter record cannot be read: {e}"))
                    .ok()
            })
            .collect()
    }

    /// Takes the on-disk-only marks off rows `seqs` of `queue`, now that
    /// they are in its queue, and waits until that is on disk (so a next
    /// [`Journal::spilled_page`] does not return them again).
    pub async fn unspill(&self, queue: &QueueKey, seqs: &[u64]) -> Result<(), JournalError> {
        let ops = seqs
            .iter()
            .map(|s| Op::Spilled(queue.clone(), *s, false))
            .collect();
        self.commit(ops).await
    }

    /// Waits until every change sent so far is on disk (the removals and
    /// counts that are not waited for, too): at a clean shutdown, so a
    /// restart redelivers nothing that was done.
    pub async fn flush(&self) -> Result<(), JournalError> {
        self.commit(Vec::new()).await
    }

    /// Forgets row `seq`: its message is done. Not waited for.
    pub fn remove(&self, seq: u64) {
        self.send(vec![Op::Remove(seq)], None);
    }

    /// Rewrites row `seq` (with a new delivery count). Not waited for.
    pub fn update(&self, seq: u64, message: &StoredMessage) {
        self.send(vec![Op::Put(seq, encode(message))], None);
    }

    /// The first sequence number of this run: rows below it are an earlier
    /// run's, to be replayed.
    pub fn replay_end(&self) -> u64 {
        self.replay_end
    }

    fn read_error(&self, e: &dyn std::fmt::Display) -> JournalError {
        JournalError::Read {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    /// How many rows an earlier run left, per queue. Reads each row's queue
    /// only; rows that cannot be read are reported and left in place.
    pub fn replay_counts(&self) -> Result<Vec<(QueueKey, u64)>, JournalError> {
        let txn = self.db.begin_read().map_err(|e| self.read_error(&e))?;
        let table = txn.open_table(MESSAGES).map_err(|e| self.read_error(&e))?;
        let mut counts: Vec<(QueueKey, u64)> = Vec::new();
        let rows = table
            .range(..self.replay_end)
            .map_err(|e| self.read_error(&e))?;
        for row in rows {
            let (seq, bytes) = row.map_err(|e| self.read_error(&e))?;
            match serde_json::from_slice::<StoredQueue>(bytes.value()) {
                Ok(StoredQueue { queue }) => match counts.iter_mut().find(|(q, _)| *q == queue) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((queue, 1)),
                },
                Err(e) => tracing::error!(
                    path = %self.path.display(),
                    seq = seq.value(),
                    "a stored message cannot be read and is left in place: {e}"
                ),
            }
        }
        Ok(counts)
    }

    /// The next page of `queue`'s replay, from sequence number `from`: at
    /// most [`PAGE_ROWS`] rows and [`PAGE_BYTES`] bytes of them (at least
    /// one), oldest first, all below [`Journal::replay_end`]. Rows of other
    /// queues are stepped over, reading only their queue; rows that cannot
    /// be read are left in place (and reported by [`Journal::replay_counts`]).
    pub fn replay_page(&self, queue: &QueueKey, from: u64) -> Result<ReplayPage, JournalError> {
        let txn = self.db.begin_read().map_err(|e| self.read_error(&e))?;
        let table = txn.open_table(MESSAGES).map_err(|e| self.read_error(&e))?;
        let mut page = ReplayPage {
            rows: Vec::new(),
            next: None,
        };
        let mut bytes_taken = 0;
        let rows = table
            .range(from..self.replay_end)
            .map_err(|e| self.read_error(&e))?;
        for (scanned, row) in rows.enumerate() {
            let (seq, bytes) = row.map_err(|e| self.read_error(&e))?;
            let (seq, bytes) = (seq.value(), bytes.value());
            let full = page.rows.len() >= PAGE_ROWS
                || (!page.rows.is_empty() && bytes_taken + bytes.len() > PAGE_BYTES);
            if full || scanned >= PAGE_SCAN {
                page.next = Some(seq);
                break;
            }
            let mine = serde_json::from_slice::<StoredQueue>(bytes)
                .is_ok_and(|stored| stored.queue == *queue);
            if !mine {
                continue;
            }
            if let Ok(message) = serde_json::from_slice::<StoredMessage>(bytes) {
                bytes_taken += bytes.len();
                page.rows.push((seq, message));
            }
        }
        Ok(page)
    }

    /// Up to [`PAGE_ROWS`] of `queue`'s spilled rows (at most
    /// [`PAGE_BYTES`] of them, but at least one), oldest first. A marked row
    /// that is gone or unreadable comes back as `None`, so that its mark can
    /// be taken away.
    pub fn spilled_page(
        &self,
        queue: &QueueKey,
    ) -> Result<Vec<(u64, Option<StoredMessage>)>, JournalError> {
        let txn = self.db.begin_read().map_err(|e| self.read_error(&e))?;
        let spilled = txn.open_table(SPILLED).map_err(|e| self.read_error(&e))?;
        let messages = txn.open_table(MESSAGES).map_err(|e| self.read_error(&e))?;
        let (p, t, c) = (
            queue.pubsubname.as_str(),
            queue.topic.as_str(),
            queue.component.as_str(),
        );
        let marks = spilled
            .range((p, t, c, 0)..=(p, t, c, u64::MAX))
            .map_err(|e| self.read_error(&e))?;
        let mut page = Vec::new();
        let mut bytes_taken = 0;
        for mark in marks {
            if page.len() >= PAGE_ROWS || bytes_taken >= PAGE_BYTES {
                break;
            }
            let (key, _) = mark.map_err(|e| self.read_error(&e))?;
            let seq = key.value().3;
            let row = messages.get(seq).map_err(|e| self.read_error(&e))?;
            let message = row.and_then(|bytes| {
                bytes_taken += bytes.value().len();
                serde_json::from_slice::<StoredMessage>(bytes.value())
                    .inspect_err(|e| {
                        tracing::error!(path = %self.path.display(), seq, "a stored message cannot be read and is left in place: {e}")
                    })
                    .ok()
            });
            page.push((seq, message));
        }
        Ok(page)
    }

    /// Every stored message, oldest first (for tests: a running host reads
    /// its journal a page at a time).
    #[cfg(test)]
    fn load(&self) -> Vec<(u64, StoredMessage)> {
        let txn = self.db.begin_read().unwrap();
        let table = txn.open_table(MESSAGES).unwrap();
        table
            .iter()
            .unwrap()
            .map(|row| {
                let (seq, bytes) = row.unwrap();
                (seq.value(), serde_json::from_slice(bytes.value()).unwrap())
            })
            .collect()
    }

    pub fn get_state(&self, store: &str, key: &str) -> Result<Option<Vec<u8>>, JournalError> {
        let txn = self.db.begin_read().map_err(|e| self.read_error(&e))?;
        let table = txn.open_table(STATE).map_err(|e| self.read_error(&e))?;
        let value = table.get((store, key)).map_err(|e| self.read_error(&e))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    /// The keys of `store`, in order.
    pub fn state_keys(&self, store: &str) -> Result<Vec<String>, JournalError> {
        let txn = self.db.begin_read().map_err(|e| self.read_error(&e))?;
        let table = txn.open_table(STATE).map_err(|e| self.read_error(&e))?;
        // Keys are (store, key) tuples, ordered by store first, so one
        // store's keys are one contiguous range.
        let range = table
            .range((store, "")..)
            .map_err(|e| self.read_error(&e))?;
        let mut keys = Vec::new();
        for row in range {
            let (k, _) = row.map_err(|e| self.read_error(&e))?;
            let (s, key) = k.value();
            if s != store {
                break;
            }
            keys.push(key.to_owned());
        }
        Ok(keys)
    }

    /// Sets (or with `None`, deletes) a state value, and waits until it is on disk.
    pub async fn set_state(
        &self,
        store: &str,
        key: &str,
        value: Option<Vec<u8>>,
    ) -> Result<(), JournalError> {
        self.commit(vec![Op::SetState(store.to_owned(), key.to_owned(), value)])
            .await
    }
}

fn encode(message: &StoredMessage) -> Vec<u8> {
    to_json(message)
}

fn to_json(value: &impl Serialize) -> Vec<u8> {
    // What the journal stores is strings, numbers and lists: it always
    // serializes.
    serde_json::to_vec(value).unwrap_or_default()
}

/// The writer thread: takes what has arrived, commits it at once, tells the
/// waiters, and repeats; it ends when the journal is dropped.
fn write_loop(db: &Database, rx: mpsc::Receiver<Batch>) {
    while let Ok(first) = rx.recv() {
        let mut batches = vec![first];
        let mut ops = batches[0].ops.len();
        while ops < MAX_BATCH {
            match rx.try_recv() {
                Ok(batch) => {
                    ops += batch.ops.len();
                    batches.push(batch);
                }
                Err(_) => break,
            }
        }
        let result = apply(db, &batches).map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::error!("the embedded broker's journal could not commit: {e}");
        }
        for batch in batches {
            if let Some(done) = batch.done {
                let _ = done.send(result.clone());
            }
        }
    }
}

fn apply(db: &Database, batches: &[Batch]) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    {
        let mut messages = txn.open_table(MESSAGES)?;
        let mut state = txn.open_table(STATE)?;
        let mut spilled = txn.open_table(SPILLED)?;
        let mut dead_letters = txn.open_table(DEAD_LETTERS)?;
        let mut actions = txn.open_table(DEAD_LETTER_ACTIONS)?;
        for op in batches.iter().flat_map(|b| &b.ops) {
            match op {
                Op::Put(seq, bytes) => {
                    messages.insert(*seq, bytes.as_slice())?;
                }
                Op::Remove(seq) => {
                    messages.remove(*seq)?;
                }
                Op::SetState(store, key, Some(value)) => {
                    state.insert((store.as_str(), key.as_str()), value.as_slice())?;
                }
                Op::SetState(store, key, None) => {
                    state.remove((store.as_str(), key.as_str()))?;
                }
                Op::Spilled(q, seq, marked) => {
                    let key = (
                        q.pubsubname.as_str(),
                        q.topic.as_str(),
                        q.component.as_str(),
                        *seq,
                    );
                    if *marked {
                        spilled.insert(key, ())?;
                    } else {
                        spilled.remove(key)?;
                    }
                }
                Op::PutDeadLetter(id, bytes) => {
                    dead_letters.insert(*id, bytes.as_slice())?;
                }
                Op::RemoveDeadLetter(id) => {
                    dead_letters.remove(*id)?;
                }
                Op::PutAction(id, bytes) => {
                    actions.insert(*id, bytes.as_slice())?;
                }
            }
        }
        // The bounds: the oldest records go, in the commit that passed them.
        while dead_letters.len()? > MAX_DEAD_LETTERS as u64 {
            if let Some((id, _)) = dead_letters.pop_first()? {
                tracing::warn!(
                    id = id.value(),
                    "the dead-letter list holds {MAX_DEAD_LETTERS} already; the oldest record is evicted"
                );
            }
        }
        while actions.len()? > MAX_ACTIONS as u64 {
            actions.pop_first()?;
        }
    }
    txn.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(topic: &str) -> QueueKey {
        QueueKey {
            pubsubname: "pubsub".into(),
            topic: topic.into(),
            component: "sub".into(),
        }
    }

    fn message(topic: &str, id: u64, data_len: usize) -> StoredMessage {
        StoredMessage {
            queue: queue(topic),
            event: StoredEvent {
                id: id.to_string(),
                source: "tests".into(),
                type_: "com.dapr.event.sent".into(),
                specversion: "1.0".into(),
                topic: topic.into(),
                pubsubname: "pubsub".into(),
                datacontenttype: "text/plain".into(),
                subject: None,
                time: None,
                traceparent: None,
                tracestate: None,
                metadata: Vec::new(),
                data: "x".repeat(data_len),
            },
            attempts: 0,
            expires_unix_ms: None,
        }
    }

    /// Opens `dir` again once the last journal on it has let go (its writer
    /// thread ends when the journal is dropped).
    fn reopen(dir: &Path) -> Journal {
        for _ in 0..200 {
            match Journal::open(dir) {
                Err(JournalError::InUse { .. }) => std::thread::sleep(Duration::from_millis(10)),
                other => return other.unwrap(),
            }
        }
        panic!("{} stayed in use", dir.display());
    }

    /// Every page of `queue`'s replay, as the ids of their rows.
    fn replay(journal: &Journal, queue: &QueueKey) -> Vec<Vec<String>> {
        let mut pages = Vec::new();
        let mut from = 0;
        loop {
            let page = journal.replay_page(queue, from).unwrap();
            pages.push(page.rows.iter().map(|(_, m)| m.event.id.clone()).collect());
            match page.next {
                Some(next) => from = next,
                None => return pages,
            }
        }
    }

    #[tokio::test]
    async fn a_replay_reads_one_queue_in_bounded_pages_and_only_an_earlier_runs_rows() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        // 600 rows for `a`, 300 for `b`, interleaved.
        let mut rows = Vec::new();
        for i in 0..900 {
            let topic = if i % 3 == 2 { "b" } else { "a" };
            rows.push((journal.next_seq(), message(topic, i, 10)));
        }
        journal.append(rows).await.unwrap();
        assert!(
            journal.replay_page(&queue("a"), 0).unwrap().rows.is_empty(),
            "rows written by this run are in a queue already, and are not replayed"
        );
        drop(journal);

        let journal = reopen(dir.path());
        let pages = replay(&journal, &queue("a"));
        assert!(pages.iter().all(|p| p.len() <= PAGE_ROWS), "{pages:?}");
        let ids: Vec<String> = pages.concat();
        let expected: Vec<String> = (0..900)
            .filter(|i| i % 3 != 2)
            .map(|i| i.to_string())
            .collect();
        assert_eq!(ids, expected, "every row of `a`, oldest first, once");
        assert_eq!(
            journal.replay_counts().unwrap(),
            vec![(queue("a"), 600), (queue("b"), 300)]
        );
        // A row written now is not part of the replay.
        journal
            .append(vec![(journal.next_seq(), message("a", 1000, 10))])
            .await
            .unwrap();
        assert_eq!(replay(&journal, &queue("a")).concat().len(), 600);
    }

    #[tokio::test]
    async fn a_replay_page_holds_at_most_page_bytes_but_always_one_row() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let big = PAGE_BYTES / 3;
        let mut rows: Vec<_> = (0..7)
            .map(|i| (journal.next_seq(), message("a", i, big)))
            .collect();
        rows.push((journal.next_seq(), message("a", 7, 2 * PAGE_BYTES)));
        journal.append(rows).await.unwrap();
        drop(journal);
        let journal = reopen(dir.path());
        let sizes: Vec<usize> = replay(&journal, &queue("a")).iter().map(Vec::len).collect();
        assert_eq!(
            sizes,
            vec![2, 2, 2, 1, 1],
            "pages of at most {PAGE_BYTES} bytes"
        );
    }

    #[tokio::test]
    async fn spilled_rows_are_read_back_until_unmarked_and_the_move_is_one_commit() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let original = journal.next_seq();
        journal
            .append(vec![(original, message("src", 1, 10))])
            .await
            .unwrap();
        // The dead letter goes to `ready` (room) and `full` (on disk only).
        let (to_ready, to_full) = (journal.next_seq(), journal.next_seq());
        journal
            .replace(
                original,
                vec![
                    (to_ready, message("ready", 1, 10)),
                    (to_full, message("full", 1, 10)),
                ],
                &[to_full],
                None,
            )
            .await
            .unwrap();
        let seqs =
            |rows: Vec<(u64, StoredMessage)>| rows.into_iter().map(|(s, _)| s).collect::<Vec<_>>();
        assert_eq!(
            seqs(journal.load()),
            vec![to_ready, to_full],
            "the original is gone"
        );
        assert!(journal.spilled_page(&queue("ready")).unwrap().is_empty());
        let page = journal.spilled_page(&queue("full")).unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].0, to_full);
        assert_eq!(page[0].1.as_ref().map(|m| m.event.id.as_str()), Some("1"));

        journal.unspill(&queue("full"), &[to_full]).await.unwrap();
        assert!(journal.spilled_page(&queue("full")).unwrap().is_empty());

        // Marks do not outlive the run: the replay covers those rows.
        let again = journal.next_seq();
        journal
            .replace(
                to_ready,
                vec![(again, message("full", 2, 10))],
                &[again],
                None,
            )
            .await
            .unwrap();
        assert_eq!(journal.spilled_page(&queue("full")).unwrap().len(), 1);
        drop(journal);
        let journal = reopen(dir.path());
        assert!(journal.spilled_page(&queue("full")).unwrap().is_empty());
        assert_eq!(replay(&journal, &queue("full")).concat(), vec!["1", "2"]);
    }

    fn dead_letter(journal: &Journal, event: u64) -> StoredDeadLetter {
        StoredDeadLetter {
            id: journal.next_seq(),
            queue: queue("orders"),
            attempts: 1,
            reason: Reason::Drop,
            last_error: "the guest answered DROP".into(),
            at_unix_ms: 1,
            dead_letter_topic: None,
            event: message("orders", event, 4).event,
        }
    }

    fn action(id: u64, what: &str) -> Action {
        Action {
            id: id.to_string(),
            topic: "orders".into(),
            component: "sub".into(),
            action: what.into(),
            at_unix_ms: 2,
        }
    }

    #[tokio::test]
    async fn a_dead_letter_is_recorded_with_the_removal_and_replayed_or_deleted_in_one_commit() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let original = journal.next_seq();
        journal
            .append(vec![(original, message("orders", 1, 4))])
            .await
            .unwrap();
        let record = dead_letter(&journal, 1);
        journal
            .replace(original, Vec::new(), &[], Some(&record))
            .await
            .unwrap();
        assert!(journal.load().is_empty(), "the original is gone");
        let other = dead_letter(&journal, 2);
        journal.record_dead_letter(&other).await.unwrap();
        drop(journal);

        // Both survive a restart, newest first, and ids are not handed out again.
        let journal = reopen(dir.path());
        let (kept, _) = journal.dead_letters().unwrap();
        assert_eq!(
            kept.iter().map(|d| d.id).collect::<Vec<_>>(),
            vec![other.id, record.id]
        );
        assert_eq!(kept[1].event.id(), "1");
        assert!(journal.next_seq() > other.id);

        // A replay writes the new row (attempts at 0) and forgets the record.
        let seq = journal.next_seq();
        let mut row = message("orders", 1, 4);
        row.attempts = 0;
        journal
            .replay_dead_letter(record.id, (seq, row), false, &action(record.id, "replay"))
            .await
            .unwrap();
        journal
            .delete_dead_letter(other.id, &action(other.id, "delete"))
            .await
            .unwrap();
        assert!(journal.dead_letter(record.id).unwrap().is_none());
        let (kept, actions) = journal.dead_letters().unwrap();
        assert!(kept.is_empty());
        assert_eq!(
            actions
                .iter()
                .map(|a| a.action.as_str())
                .collect::<Vec<_>>(),
            vec!["delete", "replay"]
        );
        assert_eq!(seqs_of(&journal), vec![seq]);
    }

    fn seqs_of(journal: &Journal) -> Vec<u64> {
        journal.load().into_iter().map(|(s, _)| s).collect()
    }

    #[tokio::test]
    async fn the_dead_letter_list_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let records: Vec<_> = (0..(MAX_DEAD_LETTERS as u64 + 5))
            .map(|n| dead_letter(&journal, n))
            .collect();
        // Sent at once, they share commits, as concurrent ones would.
        for written in
            futures::future::join_all(records.iter().map(|r| journal.record_dead_letter(r))).await
        {
            written.unwrap();
        }
        let (kept, _) = journal.dead_letters().unwrap();
        assert_eq!(kept.len(), MAX_DEAD_LETTERS);
        assert_eq!(kept.last().unwrap().event.id(), "5", "the five oldest went");
        assert!(journal.dead_letter(records[0].id).unwrap().is_none());
    }
}
