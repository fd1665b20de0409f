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
/// long after the first announcement, when the stream is younger than the latency).
pub const PREBUFFER_WAIT_MAX: Duration = Duration::from_millis(700);
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

    pub fn hook_seq(&self) -> Option<u64> {
        self.hook_seq
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
        let seq = known
            .rev_upto(edge)
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
