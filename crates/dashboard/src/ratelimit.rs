//! Per-username limit on failed logins, in memory.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Beyond this many tracked usernames, stale entries are swept on the next failure, so
/// guessing many usernames cannot grow the map without bound.
const SWEEP_ABOVE: usize = 10_000;

pub(crate) struct LoginLimiter {
    max_failures: usize,
    window: Duration,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl LoginLimiter {
    pub(crate) fn new(max_failures: u32, window: Duration) -> Self {
        LoginLimiter {
            max_failures: usize::try_from(max_failures).unwrap_or(usize::MAX),
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn key(username: &str) -> String {
        username.trim().to_lowercase()
    }

    /// `Some(retry_after)` when the username has used up its failures in the window.
    pub(crate) fn blocked(&self, username: &str) -> Option<Duration> {
        self.blocked_at(username, Instant::now())
    }

    fn blocked_at(&self, username: &str, now: Instant) -> Option<Duration> {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let q = map.get_mut(&Self::key(username))?;
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            q.pop_front();
        }
        if q.len() >= self.max_failures {
            let oldest = q.front().copied().unwrap_or(now);
            Some(self.window.saturating_sub(now.duration_since(oldest)))
        } else {
            None
        }
    }

    pub(crate) fn record_failure(&self, username: &str) {
        self.record_failure_at(username, Instant::now());
    }

    fn record_failure_at(&self, username: &str, now: Instant) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > SWEEP_ABOVE {
            let window = self.window;
            map.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < window));
        }
        let q = map.entry(Self::key(username)).or_default();
        q.push_back(now);
        // Only the newest `max_failures` matter for the decision.
        while q.len() > self.max_failures.max(1) {
            q.pop_front();
        }
    }

    pub(crate) fn record_success(&self, username: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&Self::key(username));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_max_failures_until_the_window_passes() {
        let l = LoginLimiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(l.blocked_at("Jo", t0), None, "before failure {i}");
            l.record_failure_at("jo", t0 + Duration::from_secs(i * 10));
        }
        let t = t0 + Duration::from_secs(25);
        assert_eq!(l.blocked_at(" JO ", t), Some(Duration::from_secs(35)));
        assert_eq!(l.blocked_at("kim", t), None);
        // The oldest failure leaves the window at t0 + 60 s.
        assert_eq!(l.blocked_at("jo", t0 + Duration::from_secs(60)), None);
        l.record_failure_at("jo", t0 + Duration::from_secs(61));
        assert!(l.blocked_at("jo", t0 + Duration::from_secs(62)).is_some());
        l.record_success("jo");
        assert_eq!(l.blocked_at("jo", t0 + Duration::from_secs(62)), None);
    }
}
