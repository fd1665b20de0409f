//! The last minutes of delay and buffer, for the status page's charts.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// One sample a second...
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// ...for ten minutes. The ring never holds more, whatever the node does.
pub const HISTORY_LEN: usize = 600;

/// What the charts draw at one instant; `None` where the status had no value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub at: Instant,
    pub delay_ms: Option<u64>,
    pub buffer_pieces: Option<u64>,
}

impl Sample {
    pub fn of(at: Instant, status: &serde_json::Value) -> Sample {
        Sample {
            at,
            delay_ms: status["lag_ms"].as_u64(),
            buffer_pieces: buffer_pieces(status),
        }
    }
}

/// Verified pieces held ahead of the output: what playback can still use before it stalls.
/// Sequence numbers count pieces one by one, so the difference is a count.
pub fn buffer_pieces(status: &serde_json::Value) -> Option<u64> {
    let newest = status["newest_seq"].as_u64()?;
    let output = status["output_seq"].as_u64()?;
    Some(newest.saturating_sub(output))
}

/// A ring of the newest [`HISTORY_LEN`] samples, oldest first.
#[derive(Debug, Default)]
pub struct History {
    samples: VecDeque<Sample>,
}

impl History {
    pub fn push(&mut self, sample: Sample) {
        if self.samples.len() >= HISTORY_LEN {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    pub fn samples(&self) -> impl ExactSizeIterator<Item = &Sample> {
        self.samples.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_samples_and_never_more_than_its_bound() {
        let t0 = Instant::now();
        let mut h = History::default();
        for i in 0..(HISTORY_LEN as u64 * 3 + 7) {
            h.push(Sample {
                at: t0 + Duration::from_secs(i),
                delay_ms: Some(i),
                buffer_pieces: None,
            });
            assert!(h.samples().len() <= HISTORY_LEN);
        }
        assert_eq!(h.samples().len(), HISTORY_LEN);
        let delays: Vec<u64> = h.samples().filter_map(|s| s.delay_ms).collect();
        let last = HISTORY_LEN as u64 * 3 + 6;
        assert_eq!(delays.first(), Some(&(last + 1 - HISTORY_LEN as u64)));
        assert_eq!(delays.last(), Some(&last));
        assert!(delays.windows(2).all(|w| w[1] == w[0] + 1), "oldest first");
    }

    #[test]
    fn a_sample_takes_delay_and_buffer_from_the_status() {
        let t0 = Instant::now();
        let st = serde_json::json!({"lag_ms": 1500, "newest_seq": 1030, "output_seq": 1000});
        let s = Sample::of(t0, &st);
        assert_eq!((s.delay_ms, s.buffer_pieces), (Some(1500), Some(30)));
        // Not known yet (joining), or hostile types: no value, no panic.
        let st = serde_json::json!({"lag_ms": null, "newest_seq": "x", "output_seq": 5});
        let s = Sample::of(t0, &st);
        assert_eq!((s.delay_ms, s.buffer_pieces), (None, None));
        assert_eq!(Sample::of(t0, &serde_json::json!([])).delay_ms, None);
    }
}
