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
//!   commit: the new rows and the removal together), expired, or given up
//!   on. A crash before that means a redelivery, never a loss.
//! - **Redelivery counts survive a restart**: each RETRY updates the row, so
//!   a restarted host does not start the count again.
//! - **A saved state value is on disk before `save` returns.**
//!
//! Writes go through one writer thread, which commits everything that has
//! arrived since its last commit in a single transaction (group commit), so
//! concurrent publishes share an fsync instead of queueing for one each.
//! Removals and delivery counts are not waited for: losing one to a crash
//! only means a redelivery.

use crate::contract::Event;
use base64::Engine as _;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Messages waiting for a subscription, by sequence number.
const MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("messages");
/// The embedded state store: `(store, key)` to value.
const STATE: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("state");

/// The most operations one commit takes.
const MAX_BATCH: usize = 4096;

/// Which subscription a stored message waits for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct QueueKey {
    pub pubsubname: String,
    pub topic: String,
    pub component: String,
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
    writer: mpsc::Sender<Batch>,
}

impl Journal {
    /// Opens (or creates) `dir/embedded.redb`.
    pub fn open(dir: &Path) -> Result<Journal, JournalError> {
        let path = dir.join("embedded.redb");
        std::fs::create_dir_all(dir).map_err(|e| JournalError::Open {
            path: path.clone(),
            reason: format!("cannot create {}: {e}", dir.display()),
        })?;
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => JournalError::InUse { path: path.clone() },
            other => JournalError::Open {
                path: path.clone(),
                reason: other.to_string(),
            },
        })?;
        let write_error = |e: &dyn std::fmt::Display| JournalError::Write {
            path: path.clone(),
            reason: e.to_string(),
        };
        // Create both tables, so readers never meet a missing one.
        let txn = db.begin_write().map_err(|e| write_error(&e))?;
        let last = {
            let messages = txn.open_table(MESSAGES).map_err(|e| write_error(&e))?;
            txn.open_table(STATE).map_err(|e| write_error(&e))?;
            messages
                .last()
                .map_err(|e| write_error(&e))?
                .map_or(0, |(k, _)| k.value())
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
    /// topic), and waits until it is on disk.
    pub async fn replace(
        &self,
        seq: u64,
        rows: Vec<(u64, StoredMessage)>,
    ) -> Result<(), JournalError> {
        let mut ops: Vec<Op> = rows
            .into_iter()
            .map(|(s, m)| Op::Put(s, encode(&m)))
            .collect();
        ops.push(Op::Remove(seq));
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

    /// Every stored message, oldest first. Rows that cannot be read are
    /// reported and left in place.
    pub fn load(&self) -> Result<Vec<(u64, StoredMessage)>, JournalError> {
        let read_error = |e: &dyn std::fmt::Display| JournalError::Read {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        let txn = self.db.begin_read().map_err(|e| read_error(&e))?;
        let table = txn.open_table(MESSAGES).map_err(|e| read_error(&e))?;
        let mut rows = Vec::new();
        for row in table.iter().map_err(|e| read_error(&e))? {
            let (seq, bytes) = row.map_err(|e| read_error(&e))?;
            match serde_json::from_slice::<StoredMessage>(bytes.value()) {
                Ok(message) => rows.push((seq.value(), message)),
                Err(e) => tracing::error!(
                    path = %self.path.display(),
                    seq = seq.value(),
                    "a stored message cannot be read and is left in place: {e}"
                ),
            }
        }
        Ok(rows)
    }

    pub fn get_state(&self, store: &str, key: &str) -> Result<Option<Vec<u8>>, JournalError> {
        let read_error = |e: &dyn std::fmt::Display| JournalError::Read {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        let txn = self.db.begin_read().map_err(|e| read_error(&e))?;
        let table = txn.open_table(STATE).map_err(|e| read_error(&e))?;
        let value = table.get((store, key)).map_err(|e| read_error(&e))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    /// The keys of `store`, in order.
    pub fn state_keys(&self, store: &str) -> Result<Vec<String>, JournalError> {
        let read_error = |e: &dyn std::fmt::Display| JournalError::Read {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        let txn = self.db.begin_read().map_err(|e| read_error(&e))?;
        let table = txn.open_table(STATE).map_err(|e| read_error(&e))?;
        // Keys are (store, key) tuples, ordered by store first, so one
        // store's keys are one contiguous range.
        let range = table.range((store, "")..).map_err(|e| read_error(&e))?;
        let mut keys = Vec::new();
        for row in range {
            let (k, _) = row.map_err(|e| read_error(&e))?;
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
    // A StoredMessage is strings, numbers and lists: it always serializes.
    serde_json::to_vec(message).unwrap_or_default()
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
            }
        }
    }
    txn.commit()?;
    Ok(())
}
