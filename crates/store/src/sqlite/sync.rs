//! Making commits durable off the writer thread.
//!
//! The writer commits with `synchronous=NORMAL` (SQLite writes the WAL frames but does
//! not fsync them) and hands the group's answers to this thread, which `fdatasync`s the
//! WAL file and only then answers. While it waits for the disk the writer already
//! applies the next group, so the fsync latency no longer serializes the groups. One
//! fsync covers every group written before it (fsync is per file, not per descriptor),
//! so a queue of groups shares one.
//!
//! Why this is as safe as `synchronous=FULL` for acknowledged writes: a group's frames,
//! commit frame included, are in the WAL file before its answers reach this thread, and
//! the fsync that follows makes them durable before any answer is sent. SQLite only
//! overwrites WAL frames after a checkpoint has copied them into the database file and
//! synced it (which `synchronous=NORMAL` still does). The difference: readers may see a
//! group in the short time between its commit and its fsync; a write that depends on
//! what a reader saw is acknowledged after a later fsync, which covers both.
//!
//! A failed fsync leaves the state of the file unknown (the kernel may have dropped the
//! dirty pages), so it fails the waiting requests and every later write until the
//! store is reopened. Checkpoints run on a thread of their own (`Checkpointer`), on a
//! separate connection and in PASSIVE mode: the writer does not stop to copy pages
//! into the database file, and answers keep flowing while a checkpoint copies and
//! fsyncs (on this thread, a checkpoint held every answer back: the requesters, and
//! then the writer, sat idle).

use super::{Prepared, Reply};
use crate::api::{Result, StoreError, WriteOutcome};
use rusqlite::Connection;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// How often the WAL is checkpointed into the database file while writes go on.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// The answers of one committed group, waiting for the fsync.
/// Each request's reply channel, result, and what is left of it to free (its index
/// rows), which the sync thread drops after answering.
pub(super) type Answers = Vec<(Reply, Result<Vec<WriteOutcome>>, Vec<Option<Prepared>>)>;

/// Set once an fsync failed: the store refuses writes from then on.
#[derive(Default)]
pub(super) struct Poison(AtomicBool);

impl Poison {
    pub(super) fn check(&self) -> Result<()> {
        if self.0.load(Ordering::Acquire) {
            return Err(StoreError::Storage(
                "an earlier fsync of the write-ahead log failed; reopen the store".into(),
            ));
        }
        Ok(())
    }

    fn set(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// The sync thread's state.
pub(super) struct Syncer {
    db_path: PathBuf,
    wal: Option<File>,
    poison: Arc<Poison>,
}

fn wal_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push("-wal");
    PathBuf::from(p)
}

impl Syncer {
    pub(super) fn new(db_path: &Path, poison: Arc<Poison>) -> Syncer {
        Syncer {
            db_path: db_path.to_path_buf(),
            wal: None,
            poison,
        }
    }

    /// Answer groups as their fsyncs complete, until the writer hangs up.
    pub(super) fn run(&mut self, rx: &mpsc::Receiver<Answers>) {
        let (written_tx, written_rx) = mpsc::channel::<()>();
        let mut checkpointer = Checkpointer::new(&self.db_path);
        let checkpoints = std::thread::Builder::new()
            .name("vigil-store-checkpoint".into())
            .spawn(move || checkpointer.run(&written_rx));
        while let Ok(first) = rx.recv() {
            let mut groups = vec![first];
            while let Ok(more) = rx.try_recv() {
                groups.push(more);
            }
            let synced = self.sync();
            if synced.is_err() {
                self.poison.set();
            }
            let mut leftovers = Vec::new();
            for (reply, result, rows) in groups.into_iter().flatten() {
                leftovers.push(rows);
                let answer = match (&synced, result) {
                    (Ok(()), r) => r,
                    (Err(e), Ok(_)) => Err(e.clone()),
                    (Err(_), Err(e)) => Err(e),
                };
                // The requester may have given up; nothing to do then.
                let _ = reply.send(answer);
            }
            // Freed after every answer is out, on this thread rather than the writer's.
            drop(leftovers);
            // The checkpoint thread is gone only if it panicked; SQLite's automatic
            // checkpoint then keeps the WAL bounded.
            let _ = written_tx.send(());
        }
        // Hang up: the checkpoint thread copies what is left, then ends.
        drop(written_tx);
        if let Ok(h) = checkpoints {
            let _ = h.join();
        }
    }

    fn sync(&mut self) -> Result<()> {
        let fail = |what: &str, e: std::io::Error| {
            StoreError::Storage(format!("{what} the write-ahead log: {e}"))
        };
        if self.wal.is_none() {
            let path = wal_path(&self.db_path);
            let file = File::options()
                .write(true)
                .open(&path)
                .map_err(|e| fail("cannot open", e))?;
            // The WAL file may be new: make its directory entry durable too.
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| fail("cannot sync the directory of", e))?;
            }
            self.wal = Some(file);
        }
        match &self.wal {
            Some(f) => f.sync_data().map_err(|e| fail("cannot fsync", e)),
            None => Ok(()),
        }
    }
}

/// The checkpoint thread's state: it copies the WAL into the database file every
/// [`CHECKPOINT_EVERY`] while writes go on, and once more when they stop.
struct Checkpointer {
    db_path: PathBuf,
    conn: Option<Connection>,
}

impl Checkpointer {
    fn new(db_path: &Path) -> Checkpointer {
        Checkpointer {
            db_path: db_path.to_path_buf(),
            conn: None,
        }
    }

    /// `written` gets a message per durable group; it hangs up when the store closes.
    fn run(&mut self, written: &mpsc::Receiver<()>) {
        // Whether groups were written since the last checkpoint, and when that was.
        let mut pending = false;
        let mut last = Instant::now();
        loop {
            let wait = if pending {
                CHECKPOINT_EVERY.saturating_sub(last.elapsed())
            } else {
                // Nothing to copy: sleep until the next write.
                Duration::from_secs(3600)
            };
            let (due, closed) = match written.recv_timeout(wait) {
                Ok(()) => {
                    pending = true;
                    (last.elapsed() >= CHECKPOINT_EVERY, false)
                }
                // Writes stopped for a while (or a period passed): copy what is left.
                Err(mpsc::RecvTimeoutError::Timeout) => (true, false),
                Err(mpsc::RecvTimeoutError::Disconnected) => (true, true),
            };
            if pending && due {
                self.checkpoint();
                last = Instant::now();
                pending = false;
            }
            if closed {
                return;
            }
        }
    }

    /// A PASSIVE checkpoint: copies what it can without waiting for readers or the
    /// writer. Failures are left to the next attempt (and to SQLite's own automatic
    /// checkpoint, which stays on as a backstop).
    fn checkpoint(&mut self) {
        if self.conn.is_none() {
            match Connection::open(&self.db_path) {
                Ok(c) => {
                    let _ = c.busy_timeout(Duration::from_millis(0));
                    let _ = c.execute_batch("PRAGMA synchronous=NORMAL");
                    self.conn = Some(c);
                }
                Err(_) => return,
            }
        }
        if let Some(c) = &self.conn {
            let _ = c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
        }
    }
}

/// Where the writer sends a committed group's answers.
pub(super) enum Durability {
    /// A file database: through the sync thread.
    Syncer(mpsc::Sender<Answers>),
    /// In memory: nothing to sync, answer at once.
    Immediate,
}

impl Durability {
    pub(super) fn answer(&self, answers: Answers) {
        let answers = match self {
            Durability::Syncer(tx) => match tx.send(answers) {
                Ok(()) => return,
                // The sync thread is gone (it panicked): the group is committed but
                // cannot be made durable.
                Err(mpsc::SendError(answers)) => answers
                    .into_iter()
                    .map(|(reply, _, rows)| {
                        let e = StoreError::Storage("the sync thread stopped".into());
                        (reply, Err(e), rows)
                    })
                    .collect(),
            },
            Durability::Immediate => answers,
        };
        for (reply, result, _) in answers {
            let _ = reply.send(result);
        }
    }
}
