//! Vigil's durable event log: the buffer between device ingest and everything downstream.
//!
//! A device reading is appended here before the gateway acknowledges it (HTTP 2xx, MQTT
//! PUBACK); [`EventLog::append`] returns only once the records are on stable storage, so
//! an acknowledged reading survives `kill -9` or power loss the next instant.
//!
//! The model is a Kafka partition per topic: records get consecutive offsets from 0,
//! consumers read from an offset and persist their position per consumer group with
//! [`EventLog::commit`]. Appends carry an optional idempotency key (e.g.
//! `"<device>/<message id>"`): a key seen within the configured window is not appended
//! again, and the earlier record's offset is returned as [`Appended::Duplicate`], so a
//! device retrying after a lost acknowledgement does not create a second reading.
//!
//! [`FileLog`] is the embedded backend (see [`file`] for the on-disk format). Other
//! backends (Kafka, NATS JetStream) implement the same [`EventLog`] trait and run the same
//! suite, [`eventlog_conformance_tests!`].

use std::time::Duration;

pub mod conformance;
pub mod file;
mod frame;

pub use file::{FileLog, FileLogOptions};

/// A record to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendRecord {
    /// Idempotency key, e.g. `"<device>/<message id>"`; `None` appends unconditionally.
    pub key: Option<String>,
    /// The event's own time (e.g. when the device measured), milliseconds since the epoch.
    pub timestamp_ms: i64,
    /// Opaque payload.
    pub payload: Vec<u8>,
}

/// The outcome of appending one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Appended at this offset.
    New(u64),
    /// Not appended: a record with the same key is already in the log at this offset.
    Duplicate(u64),
}

impl Appended {
    /// The offset of the record, new or earlier.
    pub fn offset(self) -> u64 {
        match self {
            Appended::New(o) | Appended::Duplicate(o) => o,
        }
    }
}

/// A record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Position in the topic, from 0, consecutive.
    pub offset: u64,
    /// The idempotency key it was appended with.
    pub key: Option<String>,
    /// The event's own time, as appended.
    pub timestamp_ms: i64,
    /// The payload, as appended.
    pub payload: Vec<u8>,
}

/// Errors of event-log operations.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A topic or consumer-group name that is empty, too long, or has characters other
    /// than ASCII letters, digits, `-`, `_`, `.` (or starts with `.`).
    #[error("invalid {kind} name {name:?}: {reason}")]
    InvalidName {
        /// `"topic"` or `"group"`.
        kind: &'static str,
        /// The rejected name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A record (key + payload) larger than the configured maximum.
    #[error("record of {size} bytes exceeds the maximum of {max} bytes")]
    RecordTooLarge {
        /// Key plus payload bytes.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A commit past the end of the topic.
    #[error("offset {offset} is beyond the end of the topic ({end})")]
    OffsetBeyondEnd {
        /// The requested offset.
        offset: u64,
        /// The topic's end offset.
        end: u64,
    },
    /// A read below the earliest retained offset (older segments were deleted by retention).
    #[error(
        "offset {requested} was deleted by retention; the earliest retained offset is {earliest}"
    )]
    OffsetTruncated {
        /// The requested offset.
        requested: u64,
        /// The earliest offset still in the log.
        earliest: u64,
    },
    /// Damaged data that recovery must not silently discard (anything but a torn tail).
    #[error("corrupt event log at {path}: {reason}")]
    Corrupt {
        /// The damaged file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Another process (or another `FileLog` in this one) has the directory open.
    #[error("event log directory {0} is already open")]
    Locked(String),
    /// An I/O error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The topic is unusable after an earlier failure (e.g. a failed fsync, after which
    /// the kernel may have dropped dirty pages: continuing could acknowledge lost data).
    #[error("event log topic failed earlier and must be reopened: {0}")]
    Failed(String),
}

/// A durable, ordered, multi-topic log. Object-safe and blocking: async callers use
/// `spawn_blocking`.
pub trait EventLog: Send + Sync {
    /// Append records in order; on return they are durable. Records whose key was seen
    /// within the idempotency window (including earlier in the same call) are not
    /// appended again: [`Appended::Duplicate`] gives the earlier record's offset.
    fn append(&self, topic: &str, records: Vec<AppendRecord>) -> Result<Vec<Appended>, LogError>;

    /// Up to `max_records` records from `from_offset` on, in offset order; empty at or past
    /// the end.
    fn read(
        &self,
        topic: &str,
        from_offset: u64,
        max_records: usize,
    ) -> Result<Vec<Record>, LogError>;

    /// Block until `end_offset > offset` (true) or the timeout passes (false).
    fn wait_for(&self, topic: &str, offset: u64, timeout: Duration) -> Result<bool, LogError>;

    /// The next offset to be assigned; every record below it is durable and readable.
    fn end_offset(&self, topic: &str) -> Result<u64, LogError>;

    /// Persist `group`'s position: the next offset it will read.
    fn commit(&self, topic: &str, group: &str, next_offset: u64) -> Result<(), LogError>;

    /// `group`'s committed position; 0 if it never committed.
    fn committed(&self, topic: &str, group: &str) -> Result<u64, LogError>;
}

/// Check a topic or group name: it becomes a file name, so only a safe alphabet.
pub fn validate_name(kind: &'static str, name: &str) -> Result<(), LogError> {
    let bad = |reason| {
        Err(LogError::InvalidName {
            kind,
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > 200 {
        return bad("longer than 200 bytes");
    }
    if name.starts_with('.') {
        return bad("starts with '.'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return bad("only ASCII letters, digits, '-', '_' and '.' are allowed");
    }
    Ok(())
}
