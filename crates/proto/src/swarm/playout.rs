//! Hook-in and in-order output for receivers.
//!
//! Verified pieces leave in sequence order as soon as they are there. Alongside runs a virtual
//! player clock: the hook piece plays when it is output, and piece `s` is due
//! `timestamp(s) - timestamp(hook)` later. A missing piece is waited for until it is due;
//! then, if anything after it is held, it is skipped and counted, never waited for forever.
//! A piece output after it was due moves the clock (the player rebuffered).

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::piece::SignedPiece;
use crate::swarm::store::{Known, Store};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Verified payload of piece `seq`: whole TS packets, in order.
    Data {
        seq: u64,
        timestamp_us: u64,
        random_access: bool,
        payload: Bytes,
    },
    /// `count` pieces before `next_seq` were skipped: the output has a hole here.
    Gap { next_seq: u64, count: u64 },
    /// The injector ended the stream; nothing follows.
    End,
}

#[derive(Debug)]
pub struct Playout {
    latency_us: u64,
    /// Next sequence number to output; `None` until hook-in.
    cursor: Option<u64>,
    hook_seq: Option<u64>,
    /// (local instant, injector timestamp) of the player clock.
    anchor: Option<(Instant, u64)>,
    pub on_time: u64,
    pub late: u64,
    pub missed: u64,
    pub last_output: Option<(u64, u64)>,
    /// Injector timestamp of the first piece output.
    pub first_output_ts: Option<u64>,
    pub first_output_at: Option<Instant>,
    pub ended: bool,
    stalled: bool,
    /// When the first piece announcement arrived; hook-in waits HOOK_GATHER after it so that
    /// every peer connected at start has told us its window.
    first_info_at: Option<Instant>,
    /// When the hook piece was chosen.
    hooked_at: Option<Instant>,
    /// The next output follows a rehook: mark the hole.
    pending_gap: bool,
}

/// How long hook-in listens before it chooses a start. The first peer to answer may be the
/// injector (which holds back its newest second) or a peer that lags.
pub const HOOK_GATHER: Duration = Duration::from_millis(150);
/// Stream held before the first output: half the latency, at most this much.
pub const PREBUFFER_MAX: Duration = Duration::from_millis(500);
/// The first output waits at most this long for the prebuffer after hook-in (which may come
/// long after the first announcement, when the stream is younger than the latency). Starting
/// without it costs more than the wait: in a flash crowd a newcomer's requests queue behind
/// the peers that give, and most of concert-200's misses (57 % at 700 ms) came in the first
/// 5 s after joining.
pub const PREBUFFER_WAIT_MAX: Duration = Duration::from_millis(1500);
/// A hook piece not obtained in this time is given up on: hook in again.
pub const REHOOK_AFTER: Duration = Duration::from_secs(2);

impl Playout {
    pub fn new(latency: Duration) -> Self {
        Playout {
            latency_us: latency.as_micros() as u64,
            cursor: None,
            hook_seq: None,
            anchor: None,
            on_time: 0,
            late: 0,
            missed: 0,
            last_output: None,
            first_output_ts: None,
            first_output_at: None,
            ended: false,
            stalled: false,
            first_info_at: None,
            hooked_at: None,
            pending_gap: false,
        }
    }

    pub fn cursor(&self) -> Option<u64> {
        self.cursor
    }

    /// A hook piece is chosen (it may not be held yet).
    pub fn is_hooked(&self) -> bool {
        self.cursor.is_some()
    }

    pub fn hook_seq(&self) -> Option<u64> {
        self.hook_seq
    }

    /// When the first piece announcement came, and when the current hook piece was chosen
    /// (the start's first two steps, before the prebuffer).
    pub fn start_steps(&self) -> (Option<Instant>, Option<Instant>) {
        (self.first_info_at, self.hooked_at)
    }

    pub fn is_stalled(&self) -> bool {
        self.stalled
    }

    /// Hook-in: the newest keyframe piece that still leaves `latency` of stream after it, up
    /// to `edge` (the live edge as peers tell it: see `PeerTable::told_edge`).
    /// Returns the chosen piece, or `None` while nothing known qualifies yet.
    pub fn try_hook(&mut self, now: Instant, known: &Known, edge: u64) -> Option<u64> {
        if self.cursor.is_some() {
            return None;
        }
        let (_, newest) = known.rev_upto(edge).next()?;
        let first = *self.first_info_at.get_or_insert(now);
        if now < first + HOOK_GATHER {
            return None;
        }
        let newest_ts = newest.timestamp_us;
        // After a rehook the output never goes back: what was played is not played again
        // (an injector restart leaves the old run's pieces known for a while).
        let played = self.last_output.map(|(seq, _)| seq);
        let seq = known
            .rev_upto(edge)
            .take_while(|&(s, _)| played.is_none_or(|p| s > p))
            .filter(|(_, m)| m.flags & crate::piece::FLAG_RANDOM_ACCESS != 0)
            .find(|(_, m)| newest_ts.saturating_sub(m.timestamp_us) >= self.latency_us)
            .map(|(s, _)| s)?;
        self.cursor = Some(seq);
        self.hook_seq = Some(seq);
        self.hooked_at = Some(now);
        Some(seq)
    }

    /// When piece `seq` is due on the player clock, if that can be told. Only verified
    /// pieces tell it (a peer's timestamps are hints): a missing piece is due no later than
    /// the next piece held; one past everything held, a piece time per number after the
    /// newest before it.
    pub fn due(&self, seq: u64, store: &Store) -> Option<Instant> {
        let (anchor_at, anchor_ts) = self.anchor?;
        let ts = match (store.next_from(seq), store.newest_before(seq)) {
            (Some(next), _) => next.header().timestamp_us,
            (None, Some(before)) => {
                let ahead = (seq - before.seq()) * store.piece_interval_us().unwrap_or(0);
                before.header().timestamp_us + ahead
            }
            (None, None) => self.last_output?.1,
        };
        Some(anchor_at + Duration::from_micros(ts.saturating_sub(anchor_ts)))
    }

    /// Before the first output: whether the stream just after the hook piece is in hand, so
    /// that the pieces due right after the start are not a race. Gives up waiting after
    /// PREBUFFER_WAIT_MAX, so a piece nobody has cannot hold the start back.
    fn prebuffered(&self, now: Instant, cursor: u64, store: &Store) -> bool {
        let Some(hook) = store.get(cursor) else {
            return false;
        };
        if self
            .hooked_at
            .is_some_and(|t| now >= t + PREBUFFER_WAIT_MAX)
        {
            return true;
        }
        let span = (self.latency_us / 2).min(PREBUFFER_MAX.as_micros() as u64);
        let until = hook.header().timestamp_us + span;
        // Every piece from the hook on, up to one past the span (or the end), is held.
        (cursor..)
            .map(|seq| store.get(seq))
            .try_for_each(|piece| match piece {
                None => Err(false),
                Some(p) if p.header().timestamp_us > until || p.header().end_of_stream() => {
                    Err(true)
                }
                Some(_) => Ok(()),
            })
            == Err(true)
    }

    /// Outputs everything that can go now, in order.
    pub fn advance(&mut self, now: Instant, store: &Store) -> Vec<Delivery> {
        let mut out = Vec::new();
        let Some(mut cursor) = self.cursor else {
            return out;
        };
        if self.first_output_at.is_none()
            && store
                .get(cursor)
                .is_some_and(|p| !p.header().random_access())
        {
            // A peer said the hook piece starts at a keyframe, and it does not: start again
            // (the piece itself now tells what it is).
            self.rehook();
            return out;
        }
        if self.first_output_at.is_none() && !self.prebuffered(now, cursor, store) {
            if !store.contains(cursor) && self.hooked_at.is_some_and(|t| now >= t + REHOOK_AFTER) {
                self.rehook();
            }
            return out;
        }
        if self.pending_gap && store.contains(cursor) {
            self.pending_gap = false;
            out.push(Delivery::Gap {
                next_seq: cursor,
                count: 0,
            });
        }
        let mut skipped = 0u64;
        self.stalled = false;
        while !self.ended {
            if let Some(piece) = store.get(cursor) {
                if skipped > 0 {
                    out.push(Delivery::Gap {
                        next_seq: cursor,
                        count: skipped,
                    });
                    skipped = 0;
                }
                self.output(now, piece, &mut out);
                cursor += 1;
                continue;
            }
            let Some(next) = store.next_from(cursor) else {
                self.stalled = self.due(cursor, store).is_some_and(|d| now >= d);
                break;
            };
            let next_header = *next.header();
            if next_header.epoch > cursor {
                // A new injector run: the numbers before its epoch were never used.
                cursor = next_header.epoch;
                self.anchor = None;
                continue;
            }
            match self.due(cursor, store) {
                Some(due) if now >= due => {
                    self.missed += 1;
                    skipped += 1;
                    cursor += 1;
                }
                _ => break,
            }
        }
        if skipped > 0 {
            out.push(Delivery::Gap {
                next_seq: cursor,
                count: skipped,
            });
        }
        self.cursor = Some(cursor);
        out
    }

    fn output(&mut self, now: Instant, piece: &SignedPiece, out: &mut Vec<Delivery>) {
        let h = *piece.header();
        match self.anchor {
            None => {
                self.anchor = Some((now, h.timestamp_us));
                self.on_time += 1;
            }
            Some((at, ts)) => {
                let due = at + Duration::from_micros(h.timestamp_us.saturating_sub(ts));
                if now <= due {
                    self.on_time += 1;
                } else {
                    // The player ran dry and waited: its clock starts again from here.
                    self.late += 1;
                    self.anchor = Some((now, h.timestamp_us));
                }
            }
        }
        self.first_output_at.get_or_insert(now);
        self.first_output_ts.get_or_insert(h.timestamp_us);
        if h.end_of_stream() {
            self.ended = true;
            out.push(Delivery::End);
            return;
        }
        self.last_output = Some((h.seq, h.timestamp_us));
        out.push(Delivery::Data {
            seq: h.seq,
            timestamp_us: h.timestamp_us,
            random_access: h.random_access(),
            payload: piece.payload(),
        });
    }

    /// Pieces output on time / pieces due since hook-in (1.0 before anything was due).
    pub fn continuity(&self) -> f64 {
        let due = self.on_time + self.late + self.missed;
        if due == 0 {
            1.0
        } else {
            self.on_time as f64 / due as f64
        }
    }

    /// When hook-in will have listened long enough, or the start should stop waiting for the
    /// prebuffer or give up on the hook piece. Only future instants: a due one was handled.
    pub fn hook_at(&self, now: Instant) -> Option<Instant> {
        let at = match (self.cursor, self.first_info_at, self.first_output_at) {
            (None, Some(first), _) => first + HOOK_GATHER,
            (Some(_), Some(_), None) => {
                let give_up = self.hooked_at.map(|h| h + REHOOK_AFTER);
                let stop_waiting = self.hooked_at.map(|h| h + PREBUFFER_WAIT_MAX);
                [stop_waiting, give_up]
                    .into_iter()
                    .flatten()
                    .filter(|&t| t > now)
                    .min()?
            }
            _ => return None,
        };
        (at > now).then_some(at)
    }

    /// Start over: choose a new hook-in piece. Used when the stream at the cursor can no
    /// longer be had (nobody holds the hook piece, or every peer moved past the cursor).
    /// The output then has a hole, which the next output marks with a `Gap`.
    pub fn rehook(&mut self) {
        if self.first_output_at.is_some() {
            self.pending_gap = true;
        }
        self.cursor = None;
        self.anchor = None;
        self.first_info_at = None;
        self.hooked_at = None;
        self.stalled = false;
    }

    /// Past deadlines are not returned: a stalled playout waits for data, not for a timer.
    pub fn next_deadline(&self, now: Instant, store: &Store) -> Option<Instant> {
        let cursor = self.cursor?;
        if self.ended || store.contains(cursor) {
            return None;
        }
        self.due(cursor, store).filter(|&d| d > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::piece::FLAG_RANDOM_ACCESS;
    use crate::swarm::fixtures::{PIECE_US, have, hooked, key, piece, playing, store_of};
    use crate::wire::HaveEntry;

    /// Ten pieces of the test stream; the prebuffer is half of it, five pieces.
    const LATENCY: Duration = Duration::from_millis(400);
    const MS: Duration = Duration::from_millis(1);

    fn known_of(seqs: impl IntoIterator<Item = u64>, now: Instant) -> Known {
        let mut known = Known::default();
        for seq in seqs {
            known.learn(&have(seq), 1, now);
        }
        known
    }

    fn seqs_of(out: &[Delivery]) -> Vec<u64> {
        (out.iter())
            .filter_map(|d| match d {
                Delivery::Data { seq, .. } => Some(*seq),
                _ => None,
            })
            .collect()
    }

    /// The player clock's time for piece `seq` of a stream that played `hook` at `at`.
    fn plays_at(at: Instant, hook: u64, seq: u64) -> Instant {
        at + Duration::from_micros((seq - hook) * PIECE_US)
    }

    #[test]
    fn hook_in_gathers_then_takes_the_newest_keyframe_a_latency_behind_the_told_edge() {
        let t0 = Instant::now();
        let mut p = Playout::new(LATENCY);
        // Claims run to 60, but peers tell the edge at 45: what is past it does not count.
        let known = known_of(0..=60, t0);
        assert_eq!(p.try_hook(t0, &known, 45), None);
        assert_eq!(p.hook_at(t0), Some(t0 + HOOK_GATHER));
        assert_eq!(p.try_hook(t0 + HOOK_GATHER - MS, &known, 45), None);
        // 45 - 10 pieces = 35; the newest keyframe at or before it is 30.
        assert_eq!(p.try_hook(t0 + HOOK_GATHER, &known, 45), Some(30));
        assert_eq!((p.cursor(), p.hook_seq()), (Some(30), Some(30)));
        assert_eq!(
            p.try_hook(t0 + HOOK_GATHER, &known, 60),
            None,
            "hooked in once"
        );
        assert_eq!(
            p.due(30, &store_of([30])),
            None,
            "nothing is due before output"
        );
    }

    #[test]
    fn hook_in_waits_until_a_keyframe_is_a_whole_latency_behind_the_edge() {
        let t0 = Instant::now();
        let mut p = Playout::new(LATENCY);
        let mut known = known_of(5..=19, t0);
        let later = t0 + HOOK_GATHER;
        assert_eq!(p.try_hook(t0, &known, 19), None);
        assert_eq!(
            p.try_hook(later, &known, 19),
            None,
            "keyframe 10 is 9 pieces back"
        );
        known.learn(&have(20), 1, later);
        assert_eq!(
            p.try_hook(later, &known, 20),
            Some(10),
            "exactly the latency back"
        );
    }

    #[test]
    fn the_first_output_waits_until_half_the_latency_after_the_hook_piece_is_held() {
        let (mut p, at) = hooked(LATENCY, 30, Instant::now());
        // The prebuffer is 200 ms, pieces 30..=35: held only once a piece past it is.
        let mut store = store_of(30..=35);
        assert_eq!(p.advance(at, &store), vec![]);
        store.insert(piece(36, &key()));
        assert_eq!(
            seqs_of(&p.advance(at, &store)),
            (30..=36).collect::<Vec<_>>()
        );
        assert_eq!(p.first_output_at, Some(at));
        assert_eq!((p.on_time, p.late, p.missed), (7, 0, 0));
    }

    #[test]
    fn a_prebuffer_that_does_not_fill_holds_the_start_back_at_most_prebuffer_wait_max() {
        let (mut p, at) = hooked(LATENCY, 30, Instant::now());
        let store = store_of([30, 31]); // 32 never comes
        assert_eq!(p.hook_at(at), Some(at + PREBUFFER_WAIT_MAX));
        assert_eq!(p.advance(at + PREBUFFER_WAIT_MAX - MS, &store), vec![]);
        let out = p.advance(at + PREBUFFER_WAIT_MAX, &store);
        assert_eq!(seqs_of(&out), vec![30, 31]);
        assert_eq!(
            p.cursor(),
            Some(32),
            "32 is not due yet: waited for, not skipped"
        );
    }

    #[test]
    fn a_hook_piece_that_turns_out_no_keyframe_starts_hook_in_over() {
        let t0 = Instant::now();
        let mut p = Playout::new(LATENCY);
        // A peer said 25 is a keyframe; the real keyframes are 10 and 20.
        let mut known = known_of(0..=38, t0);
        known.forget_claim(25);
        let lie = HaveEntry {
            flags: FLAG_RANDOM_ACCESS,
            ..have(25)
        };
        known.learn(&lie, 2, t0);
        p.try_hook(t0, &known, 38);
        let at = t0 + HOOK_GATHER;
        assert_eq!(p.try_hook(at, &known, 38), Some(25));
        let store = store_of(25..=40);
        assert_eq!(
            p.advance(at, &store),
            vec![],
            "nothing output from a non-keyframe"
        );
        assert_eq!(p.cursor(), None, "hooking in again");
        // The piece now tells what it is (the core confirms every verified piece).
        let h = *store.get(25).unwrap().header();
        let liars = known.confirm(25, h.timestamp_us, h.flags, at);
        assert_eq!(liars, [Some(2), None], "who lied");
        assert_eq!(p.try_hook(at, &known, 38), None, "gathers again");
        assert_eq!(p.try_hook(at + HOOK_GATHER, &known, 38), Some(20));
    }

    #[test]
    fn a_hook_piece_not_obtained_within_rehook_after_is_given_up() {
        let (mut p, at) = hooked(LATENCY, 30, Instant::now());
        let empty = store_of([]);
        assert_eq!(p.advance(at + PREBUFFER_WAIT_MAX, &empty), vec![]);
        assert_eq!(p.hook_at(at + PREBUFFER_WAIT_MAX), Some(at + REHOOK_AFTER));
        p.advance(at + REHOOK_AFTER - MS, &empty);
        assert_eq!(p.cursor(), Some(30));
        p.advance(at + REHOOK_AFTER, &empty);
        assert_eq!(p.cursor(), None);
    }

    #[test]
    fn a_rehook_after_output_marks_the_hole_with_an_empty_gap() {
        let t0 = Instant::now();
        let (mut p, mut store, _) = playing(LATENCY, 30, 36, t0);
        p.rehook();
        let known = known_of(50..=60, t0);
        let later = t0 + Duration::from_secs(10);
        p.try_hook(later, &known, 60);
        assert_eq!(p.try_hook(later + HOOK_GATHER, &known, 60), Some(50));
        for seq in 50..=56 {
            store.insert(piece(seq, &key()));
        }
        let out = p.advance(later + HOOK_GATHER, &store);
        let gap = Delivery::Gap {
            next_seq: 50,
            count: 0,
        };
        assert_eq!(out.first(), Some(&gap));
        assert_eq!(seqs_of(&out), (50..=56).collect::<Vec<_>>());
    }

    #[test]
    fn a_rehook_never_starts_at_or_before_what_was_output() {
        let t0 = Instant::now();
        let (mut p, _, _) = playing(LATENCY, 30, 36, t0);
        p.rehook();
        let later = t0 + Duration::from_secs(10);
        // 30 is the keyframe a latency behind 40, but 30..=36 were played already.
        let known = known_of(20..=40, later);
        p.try_hook(later, &known, 40);
        assert_eq!(p.try_hook(later + HOOK_GATHER, &known, 40), None);
        // Once the stream is a latency past what was played, hook-in goes on from there.
        let known = known_of(20..=50, later);
        assert_eq!(p.try_hook(later + HOOK_GATHER, &known, 50), Some(40));
    }

    #[test]
    fn a_missing_piece_is_due_with_the_next_held_piece_or_a_piece_time_after_the_newest() {
        let (p, mut store, at) = playing(LATENCY, 30, 36, Instant::now());
        store.insert(piece(40, &key()));
        // 37..=39 are missing: each is due no later than 40 is.
        for seq in 37..=40 {
            assert_eq!(p.due(seq, &store), Some(plays_at(at, 30, 40)), "{seq}");
        }
        // Past everything held: 40 ms per number after 40, the interval the store tells.
        assert_eq!(p.due(43, &store), Some(plays_at(at, 30, 43)));
        assert_eq!(p.next_deadline(at, &store), Some(plays_at(at, 30, 40)));
    }

    #[test]
    fn a_piece_missing_at_its_deadline_is_skipped_and_counted_when_a_later_one_is_held() {
        let (mut p, mut store, at) = playing(LATENCY, 30, 36, Instant::now());
        store.insert(piece(38, &key()));
        let deadline = plays_at(at, 30, 38);
        assert_eq!(p.next_deadline(at, &store), Some(deadline));
        assert_eq!(
            p.advance(deadline - MS, &store),
            vec![],
            "waited for until due"
        );
        assert_eq!((p.cursor(), p.missed), (Some(37), 0));
        let out = p.advance(deadline, &store);
        let gap = Delivery::Gap {
            next_seq: 38,
            count: 1,
        };
        assert_eq!(out.first(), Some(&gap));
        assert_eq!(seqs_of(&out), vec![38]);
        assert_eq!((p.on_time, p.late, p.missed), (8, 0, 1));
        assert_eq!(p.continuity(), 8.0 / 9.0);
    }

    #[test]
    fn a_missing_piece_with_nothing_held_after_it_stalls_the_output_and_is_never_skipped() {
        let (mut p, mut store, at) = playing(LATENCY, 30, 36, Instant::now());
        let long_after = at + Duration::from_secs(5);
        assert_eq!(p.advance(long_after, &store), vec![]);
        assert!(p.is_stalled());
        assert_eq!((p.cursor(), p.missed), (Some(37), 0));
        assert_eq!(
            p.next_deadline(long_after, &store),
            None,
            "waits for data, not a timer"
        );
        // It comes late: counted so, and the player clock starts again from it.
        store.insert(piece(37, &key()));
        assert_eq!(seqs_of(&p.advance(long_after, &store)), vec![37]);
        assert!(!p.is_stalled());
        assert_eq!((p.on_time, p.late), (7, 1));
        assert_eq!(p.due(38, &store), Some(plays_at(long_after, 37, 38)));
    }
}
