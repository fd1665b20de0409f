//! Getting pieces: hook-in, what to request from whom, and giving up on slow requests.

use std::time::{Duration, Instant};

use super::*;

impl Swarm {
    pub(super) fn hook_in(&mut self, now: Instant) {
        if let Some(playout) = self.playout.as_mut()
            && let Some(seq) = playout.try_hook(now, &self.known)
        {
            tracing::info!(seq, "hooked in");
        }
    }

    /// Seeds fetch everything from SEED_BACKFILL_US behind the newest announced piece on;
    /// older pieces announced later (the injector tells of its pieces after a delay) lower
    /// the start while they are still in that span.
    pub(super) fn seed_backfill(&mut self, entries: &[HaveEntry]) {
        let Some((_, newest)) = self.known.newest() else {
            return;
        };
        let floor_ts = newest.timestamp_us.saturating_sub(SEED_BACKFILL_US);
        for e in entries {
            if e.timestamp_us >= floor_ts
                && !self.store.contains(e.seq)
                && self.seed_from.is_none_or(|from| e.seq < from)
            {
                self.seed_from = Some(e.seq);
            }
        }
    }

    pub(super) fn request_pieces(&mut self, now: Instant) {
        let from = match self.config.role {
            Role::Injector => return,
            Role::Seed => {
                let Some(mut from) = self.seed_from else {
                    return;
                };
                // Skip the run of pieces already held, so the picker's bounded scan always
                // looks at what is still missing.
                from = from.max(self.store.first_seq().unwrap_or(0));
                while self.store.contains(from) {
                    from += 1;
                }
                self.seed_from = Some(from);
                from
            }
            Role::Receiver => match self.playout.as_ref().and_then(|p| p.cursor()) {
                Some(c) => c,
                None => return,
            },
        };
        if self
            .eos_seq
            .is_some_and(|e| self.store.contains(e) && from > e)
        {
            return;
        }
        let room = picker::MAX_INFLIGHT.saturating_sub(self.inflight.len());
        if room == 0 {
            return;
        }
        let urgent_within = (self.config.latency / 2).min(Duration::from_secs(1));
        let view = picker::View {
            now,
            playout: self.playout.as_ref(),
            store: &self.store,
            known: &self.known,
            peers: &self.peers,
            inflight: &self.inflight,
        };
        let wants = picker::wanted(&view, from, urgent_within, room);
        for want in wants.into_iter().take(room) {
            if self.eos_seq.is_some_and(|e| want.seq > e) {
                continue;
            }
            let Some(pid) = picker::choose_peer(want, now, &self.peers, &mut self.rng) else {
                continue;
            };
            let p = self.peers.get_mut(&pid).unwrap();
            p.requested.insert(want.seq, now);
            send_live(p, LiveMessage::Request { seq: want.seq });
            self.inflight.insert(want.seq, pid);
        }
    }

    /// How long to wait for `seq` from `p`: a few round trips, but no more than half the time
    /// left before the piece is due, so there is time to ask someone else.
    pub(super) fn request_timeout(&self, p: &Peer, seq: u64, sent: Instant) -> Duration {
        let srtt = Duration::from_micros(p.srtt_us.unwrap_or(100_000));
        let mut timeout = srtt * 4;
        if let Some(due) = self
            .playout
            .as_ref()
            .and_then(|pl| pl.due(seq, &self.known))
        {
            timeout = timeout.min(due.saturating_duration_since(sent) / 2);
        }
        timeout.clamp(Duration::from_millis(50), Duration::from_secs(2))
    }

    /// Requests not answered in time go to another peer; the slow one is not asked again.
    pub(super) fn expire_requests(&mut self, now: Instant) {
        let mut expired = Vec::new();
        for (&pid, p) in &self.peers {
            for (&seq, &sent) in &p.requested {
                if now >= sent + self.request_timeout(p, seq, sent) {
                    expired.push((pid, seq));
                }
            }
        }
        for (pid, seq) in expired {
            let p = self.peers.get_mut(&pid).unwrap();
            if let Some(sent) = p.requested.remove(&seq) {
                // Back off: the peer is at least twice as slow as we waited (as TCP does).
                p.note_rtt(2 * now.saturating_duration_since(sent).as_micros() as u64);
            }
            p.refuse(seq, now);
            send_live(p, LiveMessage::Cancel { seq });
            self.stats.request_timeouts += 1;
            if self.inflight.get(&seq) == Some(&pid) {
                self.inflight.remove(&seq);
            }
        }
    }
}
