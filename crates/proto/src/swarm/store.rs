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

/// What a piece is said to be, by a peer's HAVE (unverified) or by the piece itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub timestamp_us: u64,
    pub flags: u8,
    pub first_heard: Instant,
}

/// Pieces that peers announce, for hook-in and the picker. Bounded by count.
#[derive(Debug, Default)]
pub struct Known {
    metas: BTreeMap<u64, Meta>,
}

pub const MAX_KNOWN: usize = 16_384;

impl Known {
    /// Remembers a peer's claim. When full, new claims are refused rather than old ones
    /// dropped: a peer announcing made-up numbers must not push the real ones out.
    pub fn learn(&mut self, e: &HaveEntry, now: Instant) {
        if self.metas.len() >= MAX_KNOWN && !self.metas.contains_key(&e.seq) {
            return;
        }
        self.metas.entry(e.seq).or_insert(Meta {
            timestamp_us: e.timestamp_us,
            flags: e.flags,
            first_heard: now,
        });
    }

    /// The injector's own piece: it was first heard of now, whatever a peer claimed before.
    pub fn made(&mut self, seq: u64, timestamp_us: u64, flags: u8, now: Instant) {
        self.metas.insert(
            seq,
            Meta {
                timestamp_us,
                flags,
                first_heard: now,
            },
        );
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
            },
        );
    }

    pub fn get(&self, seq: u64) -> Option<&Meta> {
        self.metas.get(&seq)
    }

    pub fn newest(&self) -> Option<(u64, &Meta)> {
        self.metas.iter().next_back().map(|(s, m)| (*s, m))
    }

    /// The first known piece at or after `seq`.
    pub fn next_from(&self, seq: u64) -> Option<(u64, &Meta)> {
        self.metas.range(seq..).next().map(|(s, m)| (*s, m))
    }

    pub fn range_from(&self, seq: u64) -> impl Iterator<Item = (u64, &Meta)> {
        self.metas.range(seq..).map(|(s, m)| (*s, m))
    }

    pub fn iter_rev(&self) -> impl Iterator<Item = (u64, &Meta)> {
        self.metas.iter().rev().map(|(s, m)| (*s, m))
    }

    pub fn first_seq(&self) -> Option<u64> {
        self.metas.keys().next().copied()
    }

    pub fn forget_below(&mut self, seq: u64) {
        self.metas = self.metas.split_off(&seq);
    }
}
