//! The sliding window: verified pieces we hold, and what peers say exists.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::piece::SignedPiece;
use crate::wire::HaveEntry;

/// Verified pieces, oldest first. Bounded by time (the torrent's window) and by bytes.
#[derive(Debug)]
pub struct Store {
    pieces: BTreeMap<u64, SignedPiece>,
    bytes: usize,
    max_bytes: usize,
    window_us: u64,
}

impl Store {
    pub fn new(window_us: u64, max_bytes: usize) -> Self {
        Store {
            pieces: BTreeMap::new(),
            bytes: 0,
            max_bytes,
            window_us,
        }
    }

    pub fn insert(&mut self, piece: SignedPiece) -> bool {
        let seq = piece.seq();
        if self.pieces.contains_key(&seq) {
            return false;
        }
        self.bytes += piece.wire().len();
        self.pieces.insert(seq, piece);
        true
    }

    pub fn get(&self, seq: u64) -> Option<&SignedPiece> {
        self.pieces.get(&seq)
    }

    pub fn contains(&self, seq: u64) -> bool {
        self.pieces.contains_key(&seq)
    }

    pub fn newest(&self) -> Option<&SignedPiece> {
        self.pieces.values().next_back()
    }

    pub fn first_seq(&self) -> Option<u64> {
        self.pieces.keys().next().copied()
    }

    /// The newest held piece before `seq`.
    pub fn newest_before(&self, seq: u64) -> Option<&SignedPiece> {
        self.pieces.range(..seq).next_back().map(|(_, p)| p)
    }

    /// The stream's time per piece, from the oldest and newest held (verified) pieces.
    pub fn piece_interval_us(&self) -> Option<u64> {
        let (&first, oldest) = self.pieces.first_key_value()?;
        let (&last, newest) = self.pieces.last_key_value()?;
        let span = newest
            .header()
            .timestamp_us
            .checked_sub(oldest.header().timestamp_us)?;
        (last > first).then(|| span / (last - first))
    }

    /// The oldest held piece at or after `seq`.
    pub fn next_from(&self, seq: u64) -> Option<&SignedPiece> {
        self.pieces.range(seq..).next().map(|(_, p)| p)
    }

    pub fn len(&self) -> usize {
        self.pieces.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &SignedPiece> {
        self.pieces.values()
    }

    /// Drops pieces older than the window behind the newest piece, and the oldest pieces while
    /// over the byte budget. `keep_from`: never drop pieces at or after this sequence number
    /// because of time (a receiver still has to output them). Returns the new window start.
    pub fn evict(&mut self, keep_from: Option<u64>) -> u64 {
        let newest_ts = self.newest().map(|p| p.header().timestamp_us).unwrap_or(0);
        let floor_ts = newest_ts.saturating_sub(self.window_us);
        while let Some((&seq, first)) = self.pieces.iter().next() {
            let too_old =
                first.header().timestamp_us < floor_ts && keep_from.is_none_or(|k| seq < k);
            let too_big = self.bytes > self.max_bytes && self.pieces.len() > 1;
            if !(too_old || too_big) {
                break;
            }
            self.bytes -= first.wire().len();
            self.pieces.remove(&seq);
        }
        self.first_seq().unwrap_or(0)
    }
}

/// What a piece is: told by the piece itself (verified) or by a peer's HAVE (a claim, a hint).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub timestamp_us: u64,
    pub flags: u8,
    pub first_heard: Instant,
    pub verified: bool,
}

/// The freshest verified piece: the live edge as far as we know it for sure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edge {
    pub seq: u64,
    pub timestamp_us: u64,
    /// When it was verified here.
    pub at: Instant,
}

/// Pieces we hold or peers announce, for hook-in and the picker. A claim is only a hint: it
/// never moves the live edge ([`Known::edge`] comes from verified pieces alone), it is refused
/// beyond what the injector can have made since the edge ([`Known::horizon`]), and it is
/// forgotten when no connected peer makes it any more (`forget_claim`), so what peers say is
/// bounded by the peer table's per-peer bound, never by what they send.
#[derive(Debug, Default)]
pub struct Known {
    metas: BTreeMap<u64, Meta>,
    edge: Option<Edge>,
}

/// Slack on the horizon, in pieces and in milliseconds of the injector's clock.
const HORIZON_SLACK: u64 = 64;
/// Pieces per second assumed at most while fewer than two verified pieces tell the rate.
const DEFAULT_MAX_RATE: f64 = 200.0;

impl Known {
    /// Remembers a peer's claim (the caller refused those beyond the horizon). The first
    /// claim of a piece stands until the piece itself is verified.
    pub fn learn(&mut self, e: &HaveEntry, now: Instant) {
        self.metas.entry(e.seq).or_insert(Meta {
            timestamp_us: e.timestamp_us,
            flags: e.flags,
            first_heard: now,
            verified: false,
        });
    }

    /// The highest sequence number the injector can have made by now: past the edge, what
    /// it makes at (twice) the rate seen, over the time since the edge was verified plus the
    /// window (how stale the edge may have been when it came); or, after a restart of the
    /// injector (whose sequence numbers start at its wall clock in milliseconds), its clock.
    /// `None` before anything is verified.
    pub fn horizon(&self, now: Instant, window_us: u64) -> Option<u64> {
        let edge = self.edge?;
        let ahead_us = window_us + now.saturating_duration_since(edge.at).as_micros() as u64;
        let rate = self.rate().unwrap_or(DEFAULT_MAX_RATE);
        let by_rate = edge.seq + (2.0 * rate * ahead_us as f64 / 1e6).ceil() as u64;
        let by_clock = (edge.timestamp_us + ahead_us) / 1000;
        Some(by_rate.max(by_clock) + HORIZON_SLACK)
    }

    /// Pieces per second, from the oldest and the newest verified piece remembered.
    fn rate(&self) -> Option<f64> {
        let edge = self.edge?;
        let (&seq, oldest) = self.metas.iter().find(|(_, m)| m.verified)?;
        let span_us = edge.timestamp_us.checked_sub(oldest.timestamp_us)?;
        (span_us >= 200_000 && edge.seq > seq)
            .then(|| (edge.seq - seq) as f64 * 1e6 / span_us as f64)
    }

    /// The injector's own piece: it was first heard of now, whatever a peer claimed before.
    pub fn made(&mut self, seq: u64, timestamp_us: u64, flags: u8, now: Instant) {
        self.metas.insert(
            seq,
            Meta {
                timestamp_us,
                flags,
                first_heard: now,
                verified: true,
            },
        );
        self.move_edge(seq, timestamp_us, now);
    }

    /// A verified piece overrides whatever a peer claimed.
    pub fn confirm(&mut self, seq: u64, timestamp_us: u64, flags: u8, now: Instant) {
        let first_heard = self.metas.get(&seq).map(|m| m.first_heard).unwrap_or(now);
        self.metas.insert(
            seq,
            Meta {
                timestamp_us,
                flags,
                first_heard,
                verified: true,
            },
        );
        self.move_edge(seq, timestamp_us, now);
    }

    fn move_edge(&mut self, seq: u64, timestamp_us: u64, now: Instant) {
        if self.edge.is_none_or(|e| seq > e.seq) {
            self.edge = Some(Edge {
                seq,
                timestamp_us,
                at: now,
            });
        }
    }

    /// No connected peer claims `seq` any more: unless verified, nothing vouches for it.
    pub fn forget_claim(&mut self, seq: u64) {
        if self.metas.get(&seq).is_some_and(|m| !m.verified) {
            self.metas.remove(&seq);
        }
    }

    /// The freshest verified piece.
    pub fn edge(&self) -> Option<Edge> {
        self.edge
    }

    pub fn get(&self, seq: u64) -> Option<&Meta> {
        self.metas.get(&seq)
    }

    pub fn len(&self) -> usize {
        self.metas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.metas.is_empty()
    }

    pub fn range_from(&self, seq: u64) -> impl Iterator<Item = (u64, &Meta)> {
        self.metas.range(seq..).map(|(s, m)| (*s, m))
    }

    /// Known pieces at or before `seq`, newest first.
    pub fn rev_upto(&self, seq: u64) -> impl Iterator<Item = (u64, &Meta)> {
        self.metas.range(..=seq).rev().map(|(s, m)| (*s, m))
    }

    pub fn first_seq(&self) -> Option<u64> {
        self.metas.keys().next().copied()
    }

    pub fn forget_below(&mut self, seq: u64) {
        self.metas = self.metas.split_off(&seq);
    }
}
