//! The sliding window: verified pieces we hold, and what peers say exists.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::piece::SignedPiece;
use crate::swarm::PeerId;
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
    /// Until the piece is verified: the peer whose claim this is, to be held to it. `None`
    /// once verified, or when its claimer was banned and nobody said otherwise.
    pub claimed_by: Option<PeerId>,
    /// Another peer's claim, the first to say otherwise if any did, else the first to agree:
    /// it stands in if the standing claim's maker is banned, so that one liar speaking first
    /// cannot erase the truth.
    pub second: Option<Claim>,
}

/// One peer's word on a piece.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    pub timestamp_us: u64,
    pub flags: u8,
    pub by: PeerId,
}

impl Meta {
    fn says(&self, timestamp_us: u64, flags: u8) -> bool {
        (self.timestamp_us, self.flags) == (timestamp_us, flags)
    }

    /// The claim stands no more: the second, if any, takes its place.
    fn withdraw(&mut self) {
        match self.second.take() {
            Some(c) => {
                (self.timestamp_us, self.flags) = (c.timestamp_us, c.flags);
                self.claimed_by = Some(c.by);
            }
            None => {
                // Only that the piece exists remains (others may hold it), not a keyframe.
                self.flags = 0;
                self.claimed_by = None;
            }
        }
    }
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
    /// Remembers `by`'s claim (the caller refused those beyond the horizon). The first claim
    /// of a piece stands until the piece itself is verified, which holds its claimer to it
    /// (see [`Known::confirm`]); another peer's is kept as the second (see [`Meta::second`]).
    pub fn learn(&mut self, e: &HaveEntry, by: PeerId, now: Instant) {
        let claim = Claim {
            timestamp_us: e.timestamp_us,
            flags: e.flags,
            by,
        };
        let Some(m) = self.metas.get_mut(&e.seq) else {
            self.metas.insert(
                e.seq,
                Meta {
                    timestamp_us: e.timestamp_us,
                    flags: e.flags,
                    first_heard: now,
                    verified: false,
                    claimed_by: Some(by),
                    second: None,
                },
            );
            return;
        };
        if m.verified || m.claimed_by == Some(by) {
            return;
        }
        if m.claimed_by.is_none() {
            // Its claimer was banned: this claim takes its place.
            (m.timestamp_us, m.flags, m.claimed_by) = (e.timestamp_us, e.flags, Some(by));
            return;
        }
        let dissents = !m.says(e.timestamp_us, e.flags);
        match m.second {
            None => m.second = Some(claim),
            Some(c) if dissents && m.says(c.timestamp_us, c.flags) => m.second = Some(claim),
            Some(_) => {}
        }
    }

    /// Whether `e` says of a verified piece what the piece does not: proof that the peer
    /// lies (an honest peer tells of the pieces it holds as they are).
    pub fn contradicts(&self, e: &HaveEntry) -> bool {
        (self.metas.get(&e.seq)).is_some_and(|m| m.verified && !m.says(e.timestamp_us, e.flags))
    }

    /// A banned peer's claims stand no more: where it spoke first, the second stands in, or
    /// only that the piece exists remains. Proportional to what is known; bans are rare.
    pub fn disown(&mut self, by: PeerId) {
        for m in self.metas.values_mut().filter(|m| !m.verified) {
            if m.claimed_by == Some(by) {
                m.withdraw();
            } else if m.second.is_some_and(|c| c.by == by) {
                m.second = None;
            }
        }
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
                claimed_by: None,
                second: None,
            },
        );
        self.move_edge(seq, timestamp_us, now);
    }

    /// A verified piece overrides whatever a peer claimed. Returns the peers whose claims
    /// it contradicts (the standing one and the second): they lied.
    pub fn confirm(
        &mut self,
        seq: u64,
        timestamp_us: u64,
        flags: u8,
        now: Instant,
    ) -> [Option<PeerId>; 2] {
        let before = self.metas.get(&seq).copied().filter(|m| !m.verified);
        let first_heard = before.map_or(now, |m| m.first_heard);
        self.metas.insert(
            seq,
            Meta {
                timestamp_us,
                flags,
                first_heard,
                verified: true,
                claimed_by: None,
                second: None,
            },
        );
        self.move_edge(seq, timestamp_us, now);
        let Some(m) = before else {
            return [None, None];
        };
        let standing = m.claimed_by.map(|by| Claim {
            timestamp_us: m.timestamp_us,
            flags: m.flags,
            by,
        });
        [standing, m.second].map(|c| {
            c.filter(|c| (c.timestamp_us, c.flags) != (timestamp_us, flags))
                .map(|c| c.by)
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const WINDOW_US: u64 = 30_000_000;

    fn claim(seq: u64, timestamp_us: u64) -> HaveEntry {
        HaveEntry {
            seq,
            timestamp_us,
            flags: 0,
        }
    }

    #[test]
    fn claims_never_move_the_edge_and_a_verified_piece_overrides_them() {
        let t0 = Instant::now();
        let mut k = Known::default();
        k.learn(&claim(7, 999), 1, t0);
        assert_eq!(k.edge(), None);
        assert_eq!(
            k.horizon(t0, WINDOW_US),
            None,
            "nothing verified: no horizon yet"
        );
        assert!(!k.get(7).unwrap().verified);
        let liars = k.confirm(7, 1_000, 1, t0 + Duration::from_millis(5));
        assert_eq!(liars, [Some(1), None], "peer 1 said 999 and no keyframe");
        let m = *k.get(7).unwrap();
        assert_eq!((m.timestamp_us, m.flags, m.verified), (1_000, 1, true));
        assert_eq!(m.first_heard, t0, "first heard when it was claimed");
        let edge = k.edge().unwrap();
        assert_eq!((edge.seq, edge.timestamp_us), (7, 1_000));
        // A later claim of a verified piece changes nothing; an older piece does not move
        // the edge back.
        k.learn(&claim(7, 5), 1, t0);
        assert_eq!(k.get(7).unwrap().timestamp_us, 1_000);
        assert!(k.contradicts(&claim(7, 5)), "it is proof of a lie");
        assert!(!k.contradicts(&HaveEntry {
            flags: 1,
            ..claim(7, 1_000)
        }));
        assert!(!k.contradicts(&claim(3, 5)), "not verified: a hint");
        assert_eq!(k.confirm(3, 500, 0, t0), [None, None], "nobody claimed it");
        k.learn(&claim(4, 600), 2, t0);
        k.learn(&claim(4, 601), 3, t0);
        k.learn(&claim(4, 602), 4, t0);
        let liars = k.confirm(4, 600, 0, t0);
        assert_eq!(
            liars,
            [None, Some(3)],
            "peer 2 told the truth, peer 3 did not"
        );
        assert_eq!(k.edge().unwrap().seq, 7);
    }

    #[test]
    fn the_horizon_is_twice_the_rate_seen_over_the_window_and_the_time_since() {
        let t0 = Instant::now();
        let mut k = Known::default();
        // 10 pieces a second, by the injector's clock, numbered from 1000.
        for i in 0..=10u64 {
            k.confirm(1000 + i, 5_000_000 + i * 100_000, 0, t0);
        }
        // Edge 1010 verified at t0; 30 s window: 2 x 10/s x 30 s = 600 pieces, plus 64.
        // The clock bound (the edge's 6 s + 30 s, in ms: 36,000) is above it: numbers this
        // small are not the injector's wall clock, and then the clock bound is loose.
        assert_eq!(k.horizon(t0, WINDOW_US), Some(36_000 + 64));
        let mut ms = Known::default();
        let epoch = 1_700_000_000_000; // wall clock in ms, as the real injector numbers
        for i in 0..=10u64 {
            ms.confirm(epoch + i, epoch * 1000 + i * 100_000, 0, t0);
        }
        let by_rate = epoch + 10 + 600 + 64;
        let by_clock = (epoch * 1000 + 1_000_000 + WINDOW_US) / 1000 + 64;
        assert_eq!(ms.horizon(t0, WINDOW_US), Some(by_rate.max(by_clock)));
        // Time passing widens it: 10 s more is 200 more pieces by the rate, 10,000 ms by the
        // clock.
        let later = ms.horizon(t0 + Duration::from_secs(10), WINDOW_US).unwrap();
        assert_eq!(later, by_rate.max(by_clock) + 10_000);
    }

    #[test]
    fn a_banned_peers_claims_give_way_to_another_peers_or_lose_their_keyframes() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_millis(10);
        let mut k = Known::default();
        let keyframe = |seq, ts| HaveEntry {
            flags: 1,
            ..claim(seq, ts)
        };
        // Peer 1 speaks first on 5 and 6; peer 2 says otherwise of 5, agrees on 6; peer 3
        // says otherwise of 7 and speaks first on 8.
        k.learn(&keyframe(5, 50), 1, t0);
        k.learn(&keyframe(6, 60), 1, t0);
        k.learn(&claim(5, 50), 2, later);
        k.learn(&keyframe(6, 60), 2, later);
        k.learn(&claim(7, 70), 2, t0);
        k.learn(&keyframe(7, 70), 3, t0);
        k.learn(&keyframe(8, 80), 3, t0);
        assert_eq!(
            k.get(5).unwrap().claimed_by,
            Some(1),
            "the first claim stands"
        );
        k.disown(1);
        let m = *k.get(5).unwrap();
        assert_eq!((m.timestamp_us, m.flags, m.claimed_by), (50, 0, Some(2)));
        assert_eq!(m.first_heard, t0, "first heard when it was first claimed");
        let m = *k.get(6).unwrap();
        assert_eq!((m.flags, m.claimed_by), (1, Some(2)), "peer 2 agreed");
        k.disown(3);
        assert_eq!(
            k.get(7).unwrap().second,
            None,
            "the second goes with its maker"
        );
        assert_eq!(k.get(7).unwrap().flags, 0, "peer 2's claim stands");
        assert_eq!(k.get(8).unwrap().claimed_by, None, "only that it exists");
        // The next claim of a piece nobody vouches for takes its place.
        k.learn(&keyframe(8, 81), 4, later);
        let m = *k.get(8).unwrap();
        assert_eq!((m.timestamp_us, m.flags, m.claimed_by), (81, 1, Some(4)));
        // A claim that says otherwise replaces a second that agreed.
        k.learn(&keyframe(9, 90), 5, t0);
        k.learn(&keyframe(9, 90), 6, t0);
        k.learn(&claim(9, 90), 7, t0);
        k.learn(&claim(9, 91), 8, t0);
        assert_eq!(k.get(9).unwrap().second.map(|c| c.by), Some(7));
    }

    #[test]
    fn a_claim_nobody_makes_any_more_is_forgotten_unless_verified() {
        let t0 = Instant::now();
        let mut k = Known::default();
        k.learn(&claim(5, 1), 1, t0);
        k.learn(&claim(6, 2), 1, t0);
        k.confirm(6, 2, 0, t0);
        k.forget_claim(5);
        k.forget_claim(6);
        assert_eq!(k.get(5), None);
        assert!(k.get(6).is_some_and(|m| m.verified));
        assert_eq!(k.len(), 1);
    }

    #[test]
    fn the_store_tells_the_time_per_piece_from_what_it_holds() {
        use crate::swarm::fixtures::{PIECE_US, key, piece};
        let piece = |seq| piece(seq, &key());
        let mut s = Store::new(WINDOW_US, 1 << 20);
        s.insert(piece(10));
        assert_eq!(s.piece_interval_us(), None, "one piece tells no rate");
        s.insert(piece(20));
        s.insert(piece(12));
        assert_eq!(s.piece_interval_us(), Some(PIECE_US));
        assert_eq!(s.newest_before(20).map(|p| p.seq()), Some(12));
        assert_eq!(s.newest_before(10).map(|p| p.seq()), None);
    }
}
