//! A small blocking connection pool with per-connection prepared statements.

use crate::pg_error;
use postgres::{Client, Statement};
use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use vigil_store::{Result, StoreError};

/// An open connection and the statements prepared on it.
pub(crate) struct Conn {
    client: Client,
    statements: HashMap<String, Statement>,
}

struct State {
    idle: Vec<Conn>,
    /// Connections open or being opened, idle ones included.
    open: usize,
}

/// At most `max` connections, opened on demand and kept.
pub(crate) struct Pool {
    config: postgres::Config,
    state: Mutex<State>,
    freed: Condvar,
    max: usize,
    timeout: Duration,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // The state is two plain fields, consistent after any panic: recover.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Pool {
    pub(crate) fn new(config: postgres::Config, max: usize, timeout: Duration) -> Pool {
        Pool {
            config,
            state: Mutex::new(State {
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
            max: max.max(1),
            timeout,
        }
    }

    /// A connection: an idle one, a new one while fewer than `max` are open, else the
    /// first one freed within the timeout ([`StoreError::Busy`] after it).
    pub(crate) fn get(&self) -> Result<Pooled<'_>> {
        let deadline = Instant::now() + self.timeout;
        let mut state = lock(&self.state);
        loop {
            if let Some(conn) = state.idle.pop() {
                return Ok(Pooled {
                    pool: self,
                    conn: Some(conn),
                });
            }
            if state.open < self.max {
                state.open += 1;
                drop(state);
                return match self.config.connect(postgres::NoTls) {
                    Ok(client) => Ok(Pooled {
                        pool: self,
                        conn: Some(Conn {
                            client,
                            statements: HashMap::new(),
                        }),
                    }),
                    Err(e) => {
                        self.release_slot();
                        Err(StoreError::Storage(format!(
                            "cannot connect to PostgreSQL: {e}"
                        )))
                    }
                };
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StoreError::Busy(format!(
                    "no free database connection within {:?}",
                    self.timeout
                )));
            }
            state = self
                .freed
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn release_slot(&self) {
        lock(&self.state).open -= 1;
        self.freed.notify_one();
    }
}

/// A connection taken from the pool; returned to it when dropped (or closed, if it
/// broke).
pub(crate) struct Pooled<'p> {
    pool: &'p Pool,
    conn: Option<Conn>,
}

impl Pooled<'_> {
    fn conn(&mut self) -> &mut Conn {
        // Present from creation until drop.
        match self.conn.as_mut() {
            Some(c) => c,
            None => unreachable!("pooled connection used after release"),
        }
    }

    /// The client.
    pub(crate) fn client(&mut self) -> &mut Client {
        &mut self.conn().client
    }

    /// `sql` prepared on this connection (once; later calls reuse it).
    pub(crate) fn prepare(&mut self, sql: &str) -> Result<Statement> {
        let conn = self.conn();
        if let Some(s) = conn.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = conn.client.prepare(sql).map_err(pg_error)?;
        conn.statements.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    /// The client and the statement cache, for use inside a transaction.
    pub(crate) fn parts(&mut self) -> (&mut Client, &mut HashMap<String, Statement>) {
        let c = self.conn();
        (&mut c.client, &mut c.statements)
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if conn.client.is_closed() {
            drop(conn);
            self.pool.release_slot();
            return;
        }
        lock(&self.pool.state).idle.push(conn);
        self.pool.freed.notify_one();
    }
}
