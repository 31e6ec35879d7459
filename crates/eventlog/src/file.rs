//! [`FileLog`]: the embedded, file-based [`EventLog`].
//!
//! Layout under the log directory:
//! ```text
//! LOCK                                  held (flock) while a FileLog has the directory open
//! <topic>/<base offset, 20 digits>.log  segments, append-only frames (see below)
//! <topic>/groups/<group>.offset         committed offset: u64 LE + CRC-32, replaced atomically
//! ```
//! A segment is a sequence of `len | crc32 | body` frames; its file name is the offset of
//! its first record. Only the last segment of a topic is written to; it rolls over to a new
//! file once it reaches [`FileLogOptions::segment_bytes`], after being fsynced in full.
//!
//! Durability: appenders write their frames under the topic lock, then one of them (the
//! leader) fsyncs for everyone written so far while the others wait — group commit, so
//! 16 concurrent appenders cost about one fsync per round rather than 16. An append returns
//! only once an fsync covering its records has succeeded. Readers see only durable records
//! (`end_offset` is the durable high-water mark), so nothing a consumer processed can
//! disappear in a crash.
//!
//! Recovery on open scans every segment, checking lengths, CRCs and offset continuity. A
//! damaged frame in the last segment is a torn tail — a write interrupted by a crash,
//! never acknowledged — and the segment is truncated there. Damage anywhere else is
//! reported as [`LogError::Corrupt`], since those bytes were acknowledged.
//!
//! Retention: a closed segment is deleted once every consumer group of its topic has
//! committed past its last record *and* its newest record was appended longer ago than
//! [`FileLogOptions::retention`]. A topic no group has committed on keeps everything.
//! Retention runs after commits and rollovers, or explicitly with
//! [`FileLog::enforce_retention`].

use crate::frame::{self, FrameBody, HEADER_LEN};
use crate::{validate_name, AppendRecord, Appended, EventLog, LogError, Record};
use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Tuning of a [`FileLog`].
#[derive(Debug, Clone)]
pub struct FileLogOptions {
    /// Roll over to a new segment once the active one reaches this size (default 64 MiB).
    pub segment_bytes: u64,
    /// Minimum age of a segment's newest record before retention may delete it (default
    /// 7 days); deletion also needs every consumer group past it.
    pub retention: Duration,
    /// How long idempotency keys are remembered, by append time (default 24 h).
    pub dedup_window: Duration,
    /// Largest key + payload accepted (default 8 MiB).
    pub max_record_bytes: usize,
}

impl Default for FileLogOptions {
    fn default() -> Self {
        FileLogOptions {
            segment_bytes: 64 << 20,
            retention: Duration::from_secs(7 * 24 * 3600),
            dedup_window: Duration::from_secs(24 * 3600),
            max_record_bytes: 8 << 20,
        }
    }
}

/// The embedded event log: one directory, one subdirectory per topic. Cheap to clone
/// (clones share the same open log).
#[derive(Clone)]
pub struct FileLog {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    options: FileLogOptions,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    // Held for the flock on LOCK; released when the last clone is dropped.
    _lock: File,
}

/// Index granularity: one (offset, position) entry per this many bytes of a segment.
const INDEX_INTERVAL: u64 = 4096;

struct Segment {
    base: u64,
    /// Offset after the last record.
    end: u64,
    path: PathBuf,
    file: Arc<File>,
    bytes: u64,
    /// Sparse (offset, byte position) entries, ascending; the first is (base, 0).
    index: Vec<(u64, u64)>,
    last_index_pos: u64,
    max_append_ms: i64,
}

impl Segment {
    fn note_record(&mut self, offset: u64, pos: u64, append_ms: i64) {
        if self.index.is_empty() || pos >= self.last_index_pos + INDEX_INTERVAL {
            self.index.push((offset, pos));
            self.last_index_pos = pos;
        }
        self.max_append_ms = self.max_append_ms.max(append_ms);
        self.end = offset + 1;
    }

    /// Byte position to start scanning from to find `offset`.
    fn seek_hint(&self, offset: u64) -> u64 {
        match self.index.partition_point(|&(o, _)| o <= offset) {
            0 => 0,
            i => self.index[i - 1].1,
        }
    }
}

struct State {
    /// Ascending by base; the last is the active (written) segment. Never empty.
    segments: Vec<Segment>,
    next: u64,
    durable: u64,
    syncing: bool,
    failed: Option<String>,
    keys: HashMap<String, u64>,
    key_order: VecDeque<(i64, String, u64)>,
}

struct Topic {
    dir: PathBuf,
    state: Mutex<State>,
    advanced: Condvar,
    groups: Mutex<HashMap<String, u64>>,
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> LogError {
    let context = context.into();
    move |source| LogError::Io { context, source }
}

fn poisoned() -> LogError {
    LogError::Failed("a thread panicked while holding the topic lock".into())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(format!("fsync directory {}", dir.display())))
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

impl FileLog {
    /// Open (creating if needed) the log in `dir`, recovering every existing topic: torn
    /// tails are truncated, idempotency keys within the window are rebuilt.
    pub fn open(dir: &Path, options: FileLogOptions) -> Result<FileLog, LogError> {
        fs::create_dir_all(dir).map_err(io_err(format!("create {}", dir.display())))?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(format!("open {}", lock_path.display())))?;
        if lock.try_lock().is_err() {
            return Err(LogError::Locked(dir.display().to_string()));
        }
        let mut topics = HashMap::new();
        let entries = fs::read_dir(dir).map_err(io_err(format!("list {}", dir.display())))?;
        for entry in entries {
            let entry = entry.map_err(io_err(format!("list {}", dir.display())))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if is_dir && validate_name("topic", &name).is_ok() {
                let topic = Topic::open(&entry.path(), &options)?;
                topics.insert(name, Arc::new(topic));
            }
        }
        Ok(FileLog {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                options,
                topics: RwLock::new(topics),
                _lock: lock,
            }),
        })
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>, LogError> {
        validate_name("topic", name)?;
        if let Some(t) = self.inner.topics.read().map_err(|_| poisoned())?.get(name) {
            return Ok(t.clone());
        }
        let mut topics = self.inner.topics.write().map_err(|_| poisoned())?;
        if let Some(t) = topics.get(name) {
            return Ok(t.clone());
        }
        let dir = self.inner.dir.join(name);
        fs::create_dir_all(&dir).map_err(io_err(format!("create {}", dir.display())))?;
        sync_dir(&self.inner.dir)?;
        let topic = Arc::new(Topic::open(&dir, &self.inner.options)?);
        topics.insert(name.to_string(), topic.clone());
        Ok(topic)
    }

    /// The earliest offset still retained in `topic` (0 until retention deletes anything).
    pub fn earliest_offset(&self, topic: &str) -> Result<u64, LogError> {
        let t = self.topic(topic)?;
        let st = t.lock()?;
        Ok(st.segments.first().map_or(0, |s| s.base))
    }

    /// Delete the segments of `topic` that every consumer group has committed past and
    /// whose newest record is older than the retention age. Returns how many were deleted.
    pub fn enforce_retention(&self, topic: &str) -> Result<usize, LogError> {
        let t = self.topic(topic)?;
        t.enforce_retention(self.inner.options.retention)
    }

    /// Number of segment files of `topic` (for monitoring and tests).
    pub fn segment_count(&self, topic: &str) -> Result<usize, LogError> {
        let t = self.topic(topic)?;
        let st = t.lock()?;
        Ok(st.segments.len())
    }
}

impl Topic {
    fn open(dir: &Path, options: &FileLogOptions) -> Result<Topic, LogError> {
        let groups_dir = dir.join("groups");
        fs::create_dir_all(&groups_dir)
            .map_err(io_err(format!("create {}", groups_dir.display())))?;
        let mut bases = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err(format!("list {}", dir.display())))? {
            let entry = entry.map_err(io_err(format!("list {}", dir.display())))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".log") {
                if let Ok(base) = stem.parse::<u64>() {
                    bases.push(base);
                }
            }
        }
        bases.sort_unstable();
        let key_cutoff = now_ms().saturating_sub(duration_ms(options.dedup_window));
        let mut keys = HashMap::new();
        let mut key_order = VecDeque::new();
        let mut segments: Vec<Segment> = Vec::new();
        let count = bases.len();
        for (i, base) in bases.into_iter().enumerate() {
            let path = segment_path(dir, base);
            if let Some(prev) = segments.last() {
                if prev.end != base {
                    return Err(LogError::Corrupt {
                        path: path.display().to_string(),
                        reason: format!(
                            "segment starts at offset {base} but the previous one ends at {}",
                            prev.end
                        ),
                    });
                }
            }
            let last = i + 1 == count;
            let seg = recover_segment(&path, base, last, |body| {
                if let Some(k) = &body.key {
                    if body.append_ms >= key_cutoff {
                        keys.insert(k.clone(), body.offset);
                        key_order.push_back((body.append_ms, k.clone(), body.offset));
                    }
                }
            })?;
            segments.push(seg);
        }
        if segments.is_empty() {
            segments.push(create_segment(dir, 0)?);
        }
        let next = segments.last().map_or(0, |s| s.end);
        let groups = load_groups(&groups_dir)?;
        Ok(Topic {
            dir: dir.to_path_buf(),
            state: Mutex::new(State {
                segments,
                next,
                durable: next,
                syncing: false,
                failed: None,
                keys,
                key_order,
            }),
            advanced: Condvar::new(),
            groups: Mutex::new(groups),
        })
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, LogError> {
        self.state.lock().map_err(|_| poisoned())
    }

    fn append(
        &self,
        records: Vec<AppendRecord>,
        options: &FileLogOptions,
    ) -> Result<(Vec<Appended>, bool), LogError> {
        for r in &records {
            let size = r.key.as_ref().map_or(0, String::len) + r.payload.len();
            if size > options.max_record_bytes {
                return Err(LogError::RecordTooLarge {
                    size,
                    max: options.max_record_bytes,
                });
            }
        }
        let append_ms = now_ms();
        let mut st = self.lock()?;
        if let Some(msg) = &st.failed {
            return Err(LogError::Failed(msg.clone()));
        }
        expire_keys(&mut st, append_ms - duration_ms(options.dedup_window));
        let active_full = st
            .segments
            .last()
            .is_some_and(|s| s.bytes >= options.segment_bytes && s.end > s.base);
        if active_full {
            self.roll(&mut st)?;
        }
        let rolled = active_full;

        // Assign offsets and encode the whole batch into one buffer: one write() call.
        let mut out = Vec::with_capacity(records.len());
        let mut buf = Vec::with_capacity(
            records
                .iter()
                .map(|r| frame::frame_len(r.key.as_deref(), r.payload.len()))
                .sum(),
        );
        let mut new_keys = Vec::new();
        let mut wait_until = 0u64;
        let mut placed = Vec::new();
        let mut next = st.next;
        for r in &records {
            if let Some(k) = &r.key {
                if let Some(&earlier) = st.keys.get(k) {
                    out.push(Appended::Duplicate(earlier));
                    // The earlier record may still be waiting for its fsync.
                    wait_until = wait_until.max(earlier + 1);
                    continue;
                }
                st.keys.insert(k.clone(), next);
                new_keys.push((k.clone(), next));
            }
            let pos = buf.len() as u64;
            frame::encode(
                &mut buf,
                next,
                append_ms,
                r.timestamp_ms,
                r.key.as_deref(),
                &r.payload,
            );
            placed.push((next, pos));
            out.push(Appended::New(next));
            next += 1;
        }
        if !buf.is_empty() {
            let Some(seg) = st.segments.last_mut() else {
                return Err(LogError::Failed("topic has no segment".into()));
            };
            let start = seg.bytes;
            if let Err(e) = (&*seg.file).write_all(&buf) {
                // Undo a partial write so the next append does not follow garbage.
                let undo = seg.file.set_len(start);
                for (k, _) in &new_keys {
                    st.keys.remove(k);
                }
                if let Err(u) = undo {
                    st.failed = Some(format!("write failed ({e}) and could not be undone ({u})"));
                }
                return Err(LogError::Io {
                    context: format!("append to {}", self.dir.display()),
                    source: e,
                });
            }
            for &(offset, pos) in &placed {
                seg.note_record(offset, start + pos, append_ms);
            }
            seg.bytes = start + buf.len() as u64;
            st.next = next;
            wait_until = wait_until.max(next);
            for (k, offset) in new_keys {
                st.key_order.push_back((append_ms, k, offset));
            }
        }
        self.wait_durable(st, wait_until)?;
        Ok((out, rolled))
    }

    /// Group commit: return once everything below `target` is fsynced, fsyncing as the
    /// leader if no one else is, or waiting for the current leader's round.
    fn wait_durable<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        target: u64,
    ) -> Result<(), LogError> {
        loop {
            if let Some(msg) = &st.failed {
                return Err(LogError::Failed(msg.clone()));
            }
            if st.durable >= target {
                return Ok(());
            }
            if st.syncing {
                st = self.advanced.wait(st).map_err(|_| poisoned())?;
                continue;
            }
            st.syncing = true;
            let round_end = st.next;
            let Some(file) = st.segments.last().map(|s| s.file.clone()) else {
                return Err(LogError::Failed("topic has no segment".into()));
            };
            drop(st);
            let result = file.sync_data();
            st = self.lock()?;
            st.syncing = false;
            match result {
                Ok(()) => st.durable = st.durable.max(round_end),
                Err(e) => {
                    // After a failed fsync the page cache may have dropped the data:
                    // refuse further appends rather than risk acknowledging lost records.
                    st.failed = Some(format!("fsync failed: {e}"));
                }
            }
            self.advanced.notify_all();
        }
    }

    /// Close the active segment (fsynced in full) and start a new one at `next`.
    fn roll(&self, st: &mut State) -> Result<(), LogError> {
        if let Some(seg) = st.segments.last() {
            if let Err(e) = seg.file.sync_data() {
                st.failed = Some(format!("fsync failed: {e}"));
                return Err(LogError::Io {
                    context: format!("fsync {}", seg.path.display()),
                    source: e,
                });
            }
        }
        st.durable = st.next;
        self.advanced.notify_all();
        let seg = create_segment(&self.dir, st.next)?;
        st.segments.push(seg);
        Ok(())
    }

    fn read(&self, from: u64, max: usize) -> Result<Vec<Record>, LogError> {
        let mut out = Vec::new();
        let mut offset = from;
        while out.len() < max {
            // Snapshot one segment under the lock, read it without.
            let (file, path, pos, limit_bytes, hw) = {
                let st = self.lock()?;
                let hw = st.durable;
                if offset >= hw {
                    break;
                }
                let earliest = st.segments.first().map_or(0, |s| s.base);
                if offset < earliest {
                    return Err(LogError::OffsetTruncated {
                        requested: offset,
                        earliest,
                    });
                }
                let i = st.segments.partition_point(|s| s.base <= offset);
                let Some(seg) = i.checked_sub(1).and_then(|i| st.segments.get(i)) else {
                    break;
                };
                (
                    seg.file.clone(),
                    seg.path.clone(),
                    seg.seek_hint(offset),
                    seg.bytes,
                    hw.min(seg.end),
                )
            };
            let before = out.len();
            read_frames(&file, &path, pos, limit_bytes, |body| {
                if body.offset >= hw || out.len() >= max {
                    return false;
                }
                if body.offset >= offset {
                    offset = body.offset + 1;
                    out.push(Record {
                        offset: body.offset,
                        key: body.key,
                        timestamp_ms: body.timestamp_ms,
                        payload: body.payload,
                    });
                }
                true
            })?;
            if out.len() == before && offset < hw {
                // Nothing more in this segment although the high-water mark is beyond it:
                // only possible if the segment index disagrees with the file.
                return Err(LogError::Corrupt {
                    path: path.display().to_string(),
                    reason: format!("offset {offset} not found"),
                });
            }
        }
        Ok(out)
    }

    fn commit(&self, group: &str, next_offset: u64) -> Result<(), LogError> {
        validate_name("group", group)?;
        let end = self.lock()?.durable;
        if next_offset > end {
            return Err(LogError::OffsetBeyondEnd {
                offset: next_offset,
                end,
            });
        }
        let mut groups = self.groups.lock().map_err(|_| poisoned())?;
        let dir = self.dir.join("groups");
        let path = dir.join(format!("{group}.offset"));
        let tmp = dir.join(format!("{group}.offset.tmp"));
        let mut bytes = next_offset.to_le_bytes().to_vec();
        let crc = frame::crc32(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        };
        write().map_err(io_err(format!("write {}", path.display())))?;
        sync_dir(&dir)?;
        groups.insert(group.to_string(), next_offset);
        Ok(())
    }

    fn committed(&self, group: &str) -> Result<u64, LogError> {
        validate_name("group", group)?;
        let groups = self.groups.lock().map_err(|_| poisoned())?;
        Ok(groups.get(group).copied().unwrap_or(0))
    }

    fn enforce_retention(&self, retention: Duration) -> Result<usize, LogError> {
        let min_committed = {
            let groups = self.groups.lock().map_err(|_| poisoned())?;
            match groups.values().min() {
                Some(&m) => m,
                None => return Ok(0),
            }
        };
        let cutoff = now_ms().saturating_sub(duration_ms(retention));
        let doomed: Vec<PathBuf> = {
            let mut st = self.lock()?;
            let active = st.segments.len().saturating_sub(1);
            let n = st.segments[..active]
                .iter()
                .take_while(|s| s.end <= min_committed && s.max_append_ms <= cutoff)
                .count();
            st.segments.drain(..n).map(|s| s.path).collect()
        };
        // Oldest first, so a crash midway never leaves a gap between segments.
        for p in &doomed {
            fs::remove_file(p).map_err(io_err(format!("delete {}", p.display())))?;
        }
        if !doomed.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(doomed.len())
    }
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn expire_keys(st: &mut State, cutoff: i64) {
    while st.key_order.front().is_some_and(|(t, _, _)| *t < cutoff) {
        if let Some((_, k, offset)) = st.key_order.pop_front() {
            if st.keys.get(&k) == Some(&offset) {
                st.keys.remove(&k);
            }
        }
    }
}

fn create_segment(dir: &Path, base: u64) -> Result<Segment, LogError> {
    let path = segment_path(dir, base);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .append(true)
        .open(&path)
        .map_err(io_err(format!("create {}", path.display())))?;
    // The new file's directory entry must be durable before records in it are acknowledged.
    sync_dir(dir)?;
    Ok(Segment {
        base,
        end: base,
        path,
        file: Arc::new(file),
        bytes: 0,
        index: Vec::new(),
        last_index_pos: 0,
        max_append_ms: i64::MIN,
    })
}

/// Scan a segment, calling `each` per valid record; truncate a torn tail if `last`.
fn recover_segment(
    path: &Path,
    base: u64,
    last: bool,
    mut each: impl FnMut(&FrameBody),
) -> Result<Segment, LogError> {
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .open(path)
        .map_err(io_err(format!("open {}", path.display())))?;
    let len = file
        .metadata()
        .map_err(io_err(format!("stat {}", path.display())))?
        .len();
    let mut seg = Segment {
        base,
        end: base,
        path: path.to_path_buf(),
        file: Arc::new(file),
        bytes: 0,
        index: Vec::new(),
        last_index_pos: 0,
        max_append_ms: i64::MIN,
    };
    let read_handle = seg.file.clone();
    let mut reader = BufReader::with_capacity(1 << 20, &*read_handle);
    let mut pos = 0u64;
    let mut damage: Option<String> = None;
    let mut header = [0u8; HEADER_LEN];
    let mut body = Vec::new();
    while pos < len {
        if len - pos < HEADER_LEN as u64 {
            damage = Some(format!("incomplete frame header at byte {pos}"));
            break;
        }
        reader
            .read_exact(&mut header)
            .map_err(io_err(format!("read {}", path.display())))?;
        let (blen, crc) = frame::decode_header(&header);
        let frame_end = pos + HEADER_LEN as u64 + u64::from(blen);
        if frame_end > len {
            damage = Some(format!("incomplete frame at byte {pos}"));
            break;
        }
        body.resize(blen as usize, 0);
        reader
            .read_exact(&mut body)
            .map_err(io_err(format!("read {}", path.display())))?;
        let Some(rec) = frame::decode_body(&body, crc) else {
            damage = Some(format!("checksum mismatch at byte {pos}"));
            break;
        };
        if rec.offset != seg.end {
            damage = Some(format!(
                "record at byte {pos} has offset {} where {} was expected",
                rec.offset, seg.end
            ));
            break;
        }
        each(&rec);
        seg.note_record(rec.offset, pos, rec.append_ms);
        pos = frame_end;
    }
    drop(reader);
    if let Some(reason) = damage {
        if !last {
            return Err(LogError::Corrupt {
                path: path.display().to_string(),
                reason,
            });
        }
        // A torn tail: the crash interrupted an unacknowledged write. Cut it off durably.
        seg.file
            .set_len(pos)
            .and_then(|()| seg.file.sync_all())
            .map_err(io_err(format!("truncate torn tail of {}", path.display())))?;
    }
    seg.bytes = pos;
    Ok(seg)
}

/// Read frames from `pos` up to `limit`, calling `each` until it returns false.
fn read_frames(
    file: &File,
    path: &Path,
    mut pos: u64,
    limit: u64,
    mut each: impl FnMut(FrameBody) -> bool,
) -> Result<(), LogError> {
    let mut header = [0u8; HEADER_LEN];
    let mut body = Vec::new();
    while pos + HEADER_LEN as u64 <= limit {
        file.read_exact_at(&mut header, pos)
            .map_err(io_err(format!("read {}", path.display())))?;
        let (blen, crc) = frame::decode_header(&header);
        body.resize(blen as usize, 0);
        file.read_exact_at(&mut body, pos + HEADER_LEN as u64)
            .map_err(io_err(format!("read {}", path.display())))?;
        let Some(rec) = frame::decode_body(&body, crc) else {
            return Err(LogError::Corrupt {
                path: path.display().to_string(),
                reason: format!("checksum mismatch at byte {pos}"),
            });
        };
        pos += HEADER_LEN as u64 + u64::from(blen);
        if !each(rec) {
            break;
        }
    }
    Ok(())
}

fn load_groups(dir: &Path) -> Result<HashMap<String, u64>, LogError> {
    let mut groups = HashMap::new();
    for entry in fs::read_dir(dir).map_err(io_err(format!("list {}", dir.display())))? {
        let entry = entry.map_err(io_err(format!("list {}", dir.display())))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(group) = name.strip_suffix(".offset") else {
            // Leftover temp files of an interrupted commit: the rename never happened.
            continue;
        };
        let path = entry.path();
        let bytes = fs::read(&path).map_err(io_err(format!("read {}", path.display())))?;
        let corrupt = || LogError::Corrupt {
            path: path.display().to_string(),
            reason: "committed-offset file is damaged".into(),
        };
        if bytes.len() != 12 {
            return Err(corrupt());
        }
        let mut off = [0u8; 8];
        off.copy_from_slice(&bytes[..8]);
        let crc = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if frame::crc32(&off) != crc {
            return Err(corrupt());
        }
        groups.insert(group.to_string(), u64::from_le_bytes(off));
    }
    Ok(groups)
}

impl EventLog for FileLog {
    fn append(&self, topic: &str, records: Vec<AppendRecord>) -> Result<Vec<Appended>, LogError> {
        let t = self.topic(topic)?;
        let (out, rolled) = t.append(records, &self.inner.options)?;
        if rolled {
            // The records are durable; a retention failure must not turn the append into
            // an error (the caller would retry and the keys would report duplicates).
            let _ = t.enforce_retention(self.inner.options.retention);
        }
        Ok(out)
    }

    fn read(
        &self,
        topic: &str,
        from_offset: u64,
        max_records: usize,
    ) -> Result<Vec<Record>, LogError> {
        self.topic(topic)?.read(from_offset, max_records)
    }

    fn wait_for(&self, topic: &str, offset: u64, timeout: Duration) -> Result<bool, LogError> {
        let t = self.topic(topic)?;
        let deadline = Instant::now() + timeout;
        let mut st = t.lock()?;
        loop {
            if st.durable > offset {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            st = t
                .advanced
                .wait_timeout(st, deadline - now)
                .map_err(|_| poisoned())?
                .0;
        }
    }

    fn end_offset(&self, topic: &str) -> Result<u64, LogError> {
        Ok(self.topic(topic)?.lock()?.durable)
    }

    fn commit(&self, topic: &str, group: &str, next_offset: u64) -> Result<(), LogError> {
        let t = self.topic(topic)?;
        t.commit(group, next_offset)?;
        t.enforce_retention(self.inner.options.retention)?;
        Ok(())
    }

    fn committed(&self, topic: &str, group: &str) -> Result<u64, LogError> {
        self.topic(topic)?.committed(group)
    }
}
