//! Token bucket for the upload limit (piece payload bytes per second).

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: u64,
    burst: u64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// `burst` must be at least the largest single send, or that send would never fit.
    pub fn new(rate_bytes_per_sec: u64, burst: u64, now: Instant) -> Self {
        TokenBucket {
            rate: rate_bytes_per_sec.max(1),
            burst,
            tokens: burst as f64,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate as f64).min(self.burst as f64);
        self.last = now;
    }

    /// Bytes a second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// When the bucket was last refilled.
    pub fn last(&self) -> Instant {
        self.last
    }

    /// Takes `n` tokens if they are there.
    pub fn try_take(&mut self, n: u64, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= n as f64 {
            self.tokens -= n as f64;
            true
        } else {
            false
        }
    }

    /// When `n` tokens will be there (now if they already are).
    pub fn ready_at(&self, n: u64, now: Instant) -> Instant {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        let have = (self.tokens + elapsed * self.rate as f64).min(self.burst as f64);
        if have >= n as f64 {
            now
        } else {
            // Round up so that waking at the returned instant always finds the tokens there.
            let secs = (n as f64 - have) / self.rate as f64;
            now + Duration::from_micros((secs * 1e6).ceil() as u64 + 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_long_run_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 500, t0);
        assert!(b.try_take(500, t0));
        assert!(!b.try_take(1, t0));
        let at = b.ready_at(250, t0);
        assert!(at > t0 + Duration::from_millis(249) && at < t0 + Duration::from_millis(252));
        assert!(b.try_take(250, at));
        // Over 10 s no more than rate * 10 + burst goes out.
        let mut sent = 750u64;
        let mut now = at;
        while now < t0 + Duration::from_secs(10) {
            now = b.ready_at(100, now);
            assert!(b.try_take(100, now));
            sent += 100;
        }
        assert!(sent <= 1000 * 10 + 500 + 100, "{sent}");
    }
}
