//! Failed logins, limited per user name and per address.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Counts failed logins within a sliding window.
#[derive(Debug)]
pub struct LoginLimiter {
    by_user: Mutex<HashMap<String, VecDeque<Instant>>>,
    by_addr: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
    max_user: u32,
    max_addr: u32,
    window: Duration,
}

/// Why a login is refused before its password is even checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// Seconds until one more attempt is allowed.
    pub retry_after: u64,
}

fn prune(q: &mut VecDeque<Instant>, window: Duration, now: Instant) {
    while q.front().is_some_and(|t| now.duration_since(*t) >= window) {
        q.pop_front();
    }
}

impl LoginLimiter {
    /// A limiter.
    pub fn new(max_user: u32, max_addr: u32, window: Duration) -> Self {
        LoginLimiter {
            by_user: Mutex::new(HashMap::new()),
            by_addr: Mutex::new(HashMap::new()),
            max_user,
            max_addr,
            window,
        }
    }

    /// Whether an attempt for `user` from `addr` may go ahead.
    pub fn check(&self, user: &str, addr: IpAddr) -> Result<(), Limited> {
        let now = Instant::now();
        let mut worst: Option<Instant> = None;
        {
            let mut m = self.by_user.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(q) = m.get_mut(user) {
                prune(q, self.window, now);
                if q.len() >= self.max_user as usize {
                    worst = q.front().copied();
                }
            }
        }
        {
            let mut m = self.by_addr.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(q) = m.get_mut(&addr) {
                prune(q, self.window, now);
                if q.len() >= self.max_addr as usize {
                    worst = worst.max(q.front().copied());
                }
            }
        }
        match worst {
            None => Ok(()),
            Some(t) => Err(Limited {
                retry_after: (self.window.saturating_sub(now.duration_since(t))).as_secs().max(1),
            }),
        }
    }

    /// Records a failed attempt.
    pub fn failed(&self, user: &str, addr: IpAddr) {
        let now = Instant::now();
        let mut m = self.by_user.lock().unwrap_or_else(|e| e.into_inner());
        // Bound memory: forget the oldest names when someone sprays names.
        if m.len() > 10_000 {
            m.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < self.window));
        }
        m.entry(user.to_string()).or_default().push_back(now);
        drop(m);
        let mut m = self.by_addr.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() > 10_000 {
            m.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < self.window));
        }
        m.entry(addr).or_default().push_back(now);
    }

    /// Records a successful login: the user's failures are forgotten.
    pub fn succeeded(&self, user: &str) {
        self.by_user.lock().unwrap_or_else(|e| e.into_inner()).remove(user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_user_and_per_address() {
        let l = LoginLimiter::new(3, 5, Duration::from_secs(300));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            l.check("op", a).unwrap();
            l.failed("op", a);
        }
        assert!(l.check("op", a).is_err());
        assert!(l.check("op", b).is_err(), "per user, from any address");
        l.check("other", a).unwrap();
        l.failed("x1", a);
        l.failed("x2", a);
        assert!(l.check("fresh", a).is_err(), "per address, for any user");
        l.check("fresh", b).unwrap();
        l.succeeded("op");
        assert!(l.check("op", b).is_ok());
        assert!(l.check("op", a).unwrap_err().retry_after >= 1);
    }
}
