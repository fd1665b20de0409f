//! Getting pieces: hook-in, what to request from whom, and giving up on slow requests.

use std::collections::HashMap;
use std::time::Duration;

use super::peer::Sent;
use super::*;

/// Seeds fetch this much stream behind the newest piece, to serve receivers that hook in late.
const SEED_BACKFILL_US: u64 = 5_000_000;

/// The downloader's own state: outstanding requests, and whether picking could find more.
#[derive(Debug, Default)]
pub(super) struct Downloader {
    /// Which peer each outstanding request went to.
    inflight: HashMap<u64, PeerId>,
    /// Something changed that may allow a new request (a piece announced that nobody was
    /// asked for, a request ended, an unchoke, hook-in, time): the picker runs only then.
    pick: bool,
}

impl Downloader {
    pub fn wants_pick(&self) -> bool {
        self.pick
    }

    pub fn need_pick(&mut self) {
        self.pick = true;
    }

    pub fn is_inflight(&self, seq: u64) -> bool {
        self.inflight.contains_key(&seq)
    }

    /// The request for `seq` to `peer` ended (answered, refused, given up, cancelled).
    pub fn ended(&mut self, seq: u64, peer: PeerId) {
        if self.inflight.get(&seq) == Some(&peer) {
            self.inflight.remove(&seq);
        }
        self.pick = true;
    }

    /// A piece is held now: nobody needs to be asked for it any more.
    pub fn done(&mut self, seq: u64) {
        self.inflight.remove(&seq);
        self.pick = true;
    }

    pub fn forget_peer(&mut self, id: PeerId, p: &Peer) {
        for &seq in p.requested.keys() {
            self.ended(seq, id);
        }
        self.pick = true;
    }
}

impl Swarm {
    pub(super) fn hook_in(&mut self) {
        let now = self.now;
        // The edge as the connected peers tell it, robust to a third of liars.
        let told_edge = self.peers.told_edge(now);
        if let Some(playout) = self.role.playout_mut()
            && let Some(edge) = told_edge
            && let Some(seq) = playout.try_hook(now, &self.known, edge)
        {
            tracing::info!(seq, "hooked in");
            self.download.need_pick();
        }
    }

    /// Seeds fetch everything from SEED_BACKFILL_US behind the newest announced piece on;
    /// older pieces announced later (the injector tells of its pieces after a delay) lower
    /// the start while they are still in that span.
    pub(super) fn seed_backfill(&mut self, entries: &[HaveEntry]) {
        let RoleState::Seed { from } = &mut self.role else {
            return;
        };
        // The verified edge once there is one; until then what this peer says.
        let newest = match self.known.edge() {
            Some(edge) => Some(edge.timestamp_us),
            None => entries.iter().map(|e| e.timestamp_us).max(),
        };
        let Some(newest) = newest else {
            return;
        };
        let floor_ts = newest.saturating_sub(SEED_BACKFILL_US);
        for e in entries {
            if e.timestamp_us >= floor_ts
                && !self.store.contains(e.seq)
                && from.is_none_or(|f| e.seq < f)
            {
                *from = Some(e.seq);
            }
        }
    }

    /// The first sequence number worth fetching, if any.
    fn fetch_from(&mut self) -> Option<u64> {
        match &mut self.role {
            RoleState::Injector { .. } => None,
            RoleState::Seed { from } => {
                // Skip the run of pieces already held, so the picker's bounded scan always
                // looks at what is still missing; below what we hold, skip what is unknown
                // or too old to backfill.
                let first = self.store.first_seq().unwrap_or(0);
                let newest_ts = self.known.edge().map_or(0, |e| e.timestamp_us);
                let mut f = (*from)?;
                if f < first {
                    // Below what we hold: the first known piece recent enough to backfill
                    // (found among the known ones: a claimed number may be far below).
                    let worth = |m: &store::Meta| m.timestamp_us + SEED_BACKFILL_US >= newest_ts;
                    f = (self.known.range_from(f))
                        .find(|(s, m)| *s >= first || (!self.store.contains(*s) && worth(m)))
                        .map_or(first, |(s, _)| s.min(first));
                }
                while self.store.contains(f) {
                    f += 1;
                }
                *from = Some(f);
                Some(f)
            }
            RoleState::Receiver(p) => p.cursor(),
        }
    }

    pub(super) fn request_pieces(&mut self) {
        self.download.pick = false;
        let now = self.now;
        let Some(from) = self.fetch_from() else {
            return;
        };
        if self
            .eos_seq
            .is_some_and(|e| self.store.contains(e) && from > e)
        {
            return;
        }
        let room = picker::MAX_INFLIGHT.saturating_sub(self.download.inflight.len());
        if room == 0 {
            return;
        }
        // Nobody to ask: no need to look for what to ask for.
        let mut open = picker::open_peers(self.peers.map(), now);
        if open.is_empty() {
            return;
        }
        let urgent_within = (self.config.latency / 2).min(Duration::from_secs(1));
        let view = picker::View {
            now,
            playout: self.role.playout(),
            store: &self.store,
            known: &self.known,
            holders: self.peers.holders(),
            inflight: &self.download.inflight,
        };
        let wants = picker::wanted(&view, from, urgent_within, room);
        for want in wants.into_iter().take(room) {
            if self.eos_seq.is_some_and(|e| want.seq > e) {
                continue;
            }
            let peers = self.peers.map();
            let Some(pid) = picker::choose_peer(want, now, peers, &open, &mut self.rng) else {
                continue;
            };
            let expires = now + self.request_timeout(self.peers.get(pid).unwrap(), want.seq, now);
            let p = self.peers.get_mut(pid).unwrap();
            p.requested.insert(want.seq, Sent { at: now, expires });
            send_live(p, LiveMessage::Request { seq: want.seq });
            self.download.inflight.insert(want.seq, pid);
            if !p.has_request_room(now) {
                open.retain(|&o| o != pid);
                if open.is_empty() {
                    break;
                }
            }
        }
    }

    /// How long to wait for `seq` from `p`: a few round trips, but no more than half the time
    /// left before the piece is due, so there is time to ask someone else.
    fn request_timeout(&self, p: &Peer, seq: u64, sent: Instant) -> Duration {
        let srtt = Duration::from_micros(p.srtt_us.unwrap_or(100_000));
        let mut timeout = srtt * 4;
        match self.role.playout().map(|pl| pl.due(seq, &self.store)) {
            Some(Some(due)) => timeout = timeout.min(due.saturating_duration_since(sent) / 2),
            // Before the first output nothing is due yet, but the start is near: a peer that
            // does not answer must not hold a piece longer than a part of the buffer.
            Some(None) => timeout = timeout.min(self.config.latency / 4),
            None => {}
        }
        timeout.clamp(Duration::from_millis(50), Duration::from_secs(2))
    }

    /// Requests to `id` not answered in time go to another peer; the slow one is not asked
    /// for them again soon.
    pub(super) fn expire_requests(&mut self, id: PeerId) {
        let now = self.now;
        let Some(p) = self.peers.get_mut(id) else {
            return;
        };
        let expired: Vec<(u64, Sent)> = p
            .requested
            .iter()
            .filter(|(_, s)| now >= s.expires)
            .map(|(&seq, &s)| (seq, s))
            .collect();
        for (seq, sent) in expired {
            p.requested.remove(&seq);
            if p.standing.timed_out(now) {
                self.stats.peers_benched += 1;
                tracing::debug!(peer = %p.addr, "peer leaves requests unanswered: not asked for a while");
            }
            // Back off: the peer is at least twice as slow as we waited (as TCP does).
            p.note_rtt(2 * now.saturating_duration_since(sent.at).as_micros() as u64);
            p.refuse(seq, now);
            send_live(p, LiveMessage::Cancel { seq });
            self.stats.request_timeouts += 1;
            self.download.ended(seq, id);
            self.timers
                .set_earliest(Timer::Retry, now + peer::REFUSE_FOR);
        }
    }
}
