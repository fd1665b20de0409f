//! Getting pieces: hook-in, what to request from whom, and giving up on slow requests.

use std::collections::{BTreeMap, HashMap};
use std::ops::Deref;
use std::time::Duration;

use super::peer::Sent;
use super::*;

/// Seeds fetch this much stream behind the newest piece, to serve receivers that hook in late.
const SEED_BACKFILL_US: u64 = 5_000_000;

/// The downloader's own state: outstanding requests, and whether picking could find more.
#[derive(Debug, Default)]
pub(super) struct Downloader {
    /// Which peer each outstanding request went to: the peers' [`Requested`] turned around,
    /// so that the picker finds a piece's request without asking every peer.
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

    /// Asks peer `id` (`p`) for `seq`. Requests start only here and end only in the methods
    /// below, so that `inflight` and each peer's `requested` always tell the same.
    pub fn request(&mut self, id: PeerId, p: &mut Peer, seq: u64, sent: Sent) {
        p.requested.0.insert(seq, sent);
        let asked_before = self.inflight.insert(seq, id);
        debug_assert!(asked_before.is_none(), "piece {seq} asked of two peers");
    }

    /// The request for `seq` to peer `id` (`p`) ended (answered, refused, given up,
    /// cancelled): when it was sent, or `None` if `id` was not asked for `seq`.
    pub fn request_ended(&mut self, id: PeerId, p: &mut Peer, seq: u64) -> Option<Sent> {
        let sent = p.requested.0.remove(&seq)?;
        self.ended(seq, id);
        Some(sent)
    }

    /// Every request to peer `id` (`p`) ended (it choked us).
    pub fn requests_ended(&mut self, id: PeerId, p: &mut Peer) {
        for seq in std::mem::take(&mut p.requested.0).into_keys() {
            self.ended(seq, id);
        }
    }

    /// The peer is gone, and its requests with it.
    pub fn forget_peer(&mut self, id: PeerId, p: &Peer) {
        for &seq in p.requested.keys() {
            self.ended(seq, id);
        }
        self.pick = true;
    }

    fn ended(&mut self, seq: u64, peer: PeerId) {
        if self.inflight.get(&seq) == Some(&peer) {
            self.inflight.remove(&seq);
        }
        self.pick = true;
    }
}

/// Our requests to one peer: when we sent each and when we give up on it. Read through
/// `Deref`; changed only by [`Downloader`], which keeps its `inflight` in step.
#[derive(Debug, Default)]
pub struct Requested(BTreeMap<u64, Sent>);

impl Deref for Requested {
    type Target = BTreeMap<u64, Sent>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

#[cfg(test)]
impl Requested {
    /// For tests of a peer alone, which has no downloader to keep in step.
    pub(super) fn insert_alone(&mut self, seq: u64, sent: Sent) {
        self.0.insert(seq, sent);
    }
}

impl Swarm {
    pub(super) fn hook_in(&mut self) {
        let now = self.now;
        // Hooked in already: nothing to choose (and the told edge looks at every peer).
        if self.role.playout().is_none_or(|p| p.is_hooked()) {
            return;
        }
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
            push: Some(&self.push),
        };
        let (wants, recheck) = picker::wanted_or_awaited(&view, from, urgent_within, room);
        if let Some(at) = recheck {
            self.timers.set_earliest(Timer::Retry, at);
        }
        for want in wants.into_iter().take(room) {
            if self.eos_seq.is_some_and(|e| want.seq > e) {
                continue;
            }
            let peers = self.peers.map();
            let Some(pid) = picker::choose_peer(want, now, peers, &open, &mut self.rng) else {
                continue;
            };
            let expires = now + self.request_timeout(self.peers.get(pid).unwrap(), want.seq, now);
            self.note_repair(want.seq);
            let p = self.peers.get_mut(pid).unwrap();
            let sent = Sent { at: now, expires };
            self.download.request(pid, p, want.seq, sent);
            send_live(p, LiveMessage::Request { seq: want.seq });
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
            self.download.request_ended(id, p, seq);
            if p.standing.timed_out(now) {
                self.stats.peers_benched += 1;
                tracing::debug!(peer = %p.addr, "peer leaves requests unanswered: not asked for a while");
            }
            // Back off: the peer is at least twice as slow as we waited (as TCP does).
            p.note_rtt(2 * now.saturating_duration_since(sent.at).as_micros() as u64);
            p.refuse(seq, now);
            send_live(p, LiveMessage::Cancel { seq });
            self.stats.request_timeouts += 1;
            if (self.role.playout()).is_some_and(|pl| pl.first_output_at.is_none()) {
                self.stats.request_timeouts_at_start += 1;
            }
            self.timers
                .set_earliest(Timer::Retry, now + peer::REFUSE_FOR);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swarm::fixtures::{
        active_peer, config, hooked, key, peer_claims, piece, playing, sent_live,
    };

    const MS: Duration = Duration::from_millis(1);

    fn seed(now: Instant, from: u64) -> Swarm {
        let mut s = Swarm::new(config(Role::Seed, 0), now);
        s.role = RoleState::Seed { from: Some(from) };
        s
    }

    fn requests(s: &mut Swarm, id: PeerId) -> Vec<u64> {
        (sent_live(s, id).into_iter())
            .filter_map(|m| match m {
                LiveMessage::Request { seq } => Some(seq),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_request_ends_only_with_the_peer_it_went_to_and_a_choke_ends_them_all() {
        let t0 = Instant::now();
        let mut d = Downloader::default();
        let mut one = Peer::new("10.0.0.1:1".parse().unwrap(), true, t0);
        let mut two = Peer::new("10.0.0.2:1".parse().unwrap(), true, t0);
        let sent = Sent {
            at: t0,
            expires: t0,
        };
        d.request(1, &mut one, 5, sent);
        d.request(1, &mut one, 6, sent);
        assert!(d.request_ended(2, &mut two, 5).is_none());
        assert!(d.is_inflight(5), "peer 2 was not asked for 5");
        assert!(!d.wants_pick());
        assert!(d.request_ended(1, &mut one, 5).is_some());
        assert!(!d.is_inflight(5) && d.wants_pick());
        d.requests_ended(1, &mut one);
        assert!(!d.is_inflight(6) && one.requested.is_empty());
    }

    #[test]
    fn each_peer_is_asked_for_at_most_its_request_window_and_never_twice_for_a_piece() {
        let t0 = Instant::now();
        let mut s = seed(t0, 1);
        let (a, b) = (active_peer(&mut s, 1), active_peer(&mut s, 2));
        peer_claims(&mut s, a, 1..=20);
        peer_claims(&mut s, b, 1..=20);
        s.request_pieces();
        let (mut from_a, from_b) = (requests(&mut s, a), requests(&mut s, b));
        assert_eq!(from_a.len(), peer::INITIAL_REQUEST_WINDOW);
        assert_eq!(from_b.len(), peer::INITIAL_REQUEST_WINDOW);
        from_a.extend(from_b);
        from_a.sort();
        assert_eq!(from_a, (1..=12).collect::<Vec<_>>(), "in order, each once");
        assert_eq!(s.download.inflight.len(), 12);
        assert!(!s.download.wants_pick());
    }

    #[test]
    fn requests_in_flight_stop_at_max_inflight_however_many_peers_have_room() {
        let t0 = Instant::now();
        let mut s = seed(t0, 1);
        for host in 1..=9 {
            let id = active_peer(&mut s, host); // 9 x 6 of room
            peer_claims(&mut s, id, 1..=100);
        }
        s.request_pieces();
        assert_eq!(s.download.inflight.len(), picker::MAX_INFLIGHT);
        assert!((1..=48).all(|seq| s.download.is_inflight(seq)));
    }

    #[test]
    fn a_request_that_times_out_is_released_cancelled_and_costs_its_peer_standing() {
        let t0 = Instant::now();
        let mut s = seed(t0, 1);
        let slow = active_peer(&mut s, 1);
        peer_claims(&mut s, slow, 1..=3);
        s.request_pieces();
        assert_eq!(requests(&mut s, slow), vec![1, 2, 3]);
        // No round trip measured: 4 x 100 ms.
        let timeout = Duration::from_millis(400);
        s.now = t0 + timeout - MS;
        s.expire_requests(slow);
        assert_eq!(s.peers.get(slow).unwrap().requested.len(), 3);

        s.now = t0 + timeout;
        s.expire_requests(slow);
        let cancels: Vec<LiveMessage> = (1..=3).map(|seq| LiveMessage::Cancel { seq }).collect();
        assert_eq!(sent_live(&mut s, slow), cancels);
        let p = s.peers.get(slow).unwrap();
        assert!(p.requested.is_empty());
        assert!((1..=3).all(|seq| !s.download.is_inflight(seq) && p.refuses(seq, s.now)));
        assert_eq!(
            p.standing.request_window, 1,
            "6 halved three times, at least one"
        );
        // It never delivered: benched after the second, and the third starts a new count.
        assert!(p.standing.is_benched(s.now));
        assert_eq!(p.standing.unanswered, 1);
        assert_eq!(p.srtt_us, Some(800_000), "at least twice as slow as waited");
        assert_eq!(
            s.stats.request_timeouts_at_start, 0,
            "a seed makes no start"
        );
        assert_eq!(s.stats.request_timeouts, 3);
        // The pieces go to another holder; the slow peer is not asked for them again.
        let other = active_peer(&mut s, 2);
        peer_claims(&mut s, other, 1..=3);
        s.request_pieces();
        assert_eq!(requests(&mut s, other), vec![1, 2, 3]);
        assert_eq!(requests(&mut s, slow), vec![]);
    }

    #[test]
    fn a_delivered_piece_clears_its_request_and_widens_the_peers_window() {
        let t0 = Instant::now();
        let mut s = seed(t0, 1);
        let id = active_peer(&mut s, 1);
        s.peers.get_mut(id).unwrap().standing.request_window = 2;
        peer_claims(&mut s, id, 1..=3);
        s.request_pieces();
        assert_eq!(requests(&mut s, id), vec![1, 2]);
        let mut bytes = bytes::BytesMut::new();
        let delivery = Message::Live(LiveMessage::Piece(piece(2, &key()).wire().clone()));
        wire::encode(&delivery, wire::OUR_LIVE_ID, &mut bytes);
        s.now = t0 + 30 * MS;
        s.on_data(id, bytes.freeze());
        let p = s.peers.get(id).unwrap();
        assert_eq!(p.requested.keys().copied().collect::<Vec<_>>(), vec![1]);
        assert_eq!(p.standing.request_window, 3);
        assert_eq!(p.srtt_us, Some(30_000));
        assert!(s.store.contains(2) && !s.download.is_inflight(2));
        assert!(s.download.wants_pick(), "room for another request");
    }

    #[test]
    fn before_the_first_output_a_request_waits_at_most_a_quarter_of_the_latency() {
        let t0 = Instant::now();
        let mut c = config(Role::Receiver, 0);
        c.latency = Duration::from_secs(2);
        let mut s = Swarm::new(c, t0);
        let id = active_peer(&mut s, 1);
        s.peers.get_mut(id).unwrap().srtt_us = Some(1_000_000);
        let p = s.peers.get(id).unwrap();
        assert_eq!(s.request_timeout(p, 10, t0), Duration::from_millis(500));
        // A seed has no start to make: four round trips, at most 2 s.
        let seed = seed(t0, 1);
        assert_eq!(seed.request_timeout(p, 10, t0), Duration::from_secs(2));
    }

    #[test]
    fn after_the_first_output_a_request_waits_at_most_half_the_time_until_the_piece_is_due() {
        let t0 = Instant::now();
        let latency = Duration::from_millis(400);
        let mut c = config(Role::Receiver, 0);
        c.latency = latency;
        let mut s = Swarm::new(c, t0);
        let (playout, store, at) = playing(latency, 30, 36, t0);
        s.role = RoleState::Receiver(playout);
        s.store = store;
        let id = active_peer(&mut s, 1);
        let p = s.peers.get(id).unwrap();
        // 37 is due 280 ms after 30 played.
        assert_eq!(s.request_timeout(p, 37, at), Duration::from_millis(140));
        // Never below 50 ms, even when the piece is due now.
        assert_eq!(s.request_timeout(p, 37, at + 280 * MS), 50 * MS);
    }

    #[test]
    fn timeouts_before_the_first_output_are_counted_apart() {
        let t0 = Instant::now();
        let latency = Duration::from_millis(400);
        let mut c = config(Role::Receiver, 0);
        c.latency = latency;
        let mut s = Swarm::new(c, t0);
        let (playout, at) = hooked(latency, 30, t0);
        s.role = RoleState::Receiver(playout);
        s.now = at;
        let slow = active_peer(&mut s, 1);
        peer_claims(&mut s, slow, 30..=31);
        s.request_pieces();
        assert_eq!(requests(&mut s, slow), vec![30, 31]);
        s.now = at + Duration::from_secs(1);
        s.expire_requests(slow);
        assert_eq!(
            (s.stats.request_timeouts, s.stats.request_timeouts_at_start),
            (2, 2)
        );
        // Once output has started, a timeout is not the start's.
        let (playout, store, at) = playing(latency, 30, 36, t0);
        s.role = RoleState::Receiver(playout);
        s.store = store;
        s.now = at;
        peer_claims(&mut s, slow, [37]);
        s.peers.get_mut(slow).unwrap().standing = Default::default();
        s.peers.get_mut(slow).unwrap().refused.clear();
        s.request_pieces();
        assert_eq!(requests(&mut s, slow), vec![37]);
        s.now = at + Duration::from_secs(1);
        s.expire_requests(slow);
        assert_eq!(
            (s.stats.request_timeouts, s.stats.request_timeouts_at_start),
            (3, 2)
        );
    }

    #[test]
    fn a_seed_fetches_from_the_first_piece_it_lacks_past_its_backfill_start() {
        let t0 = Instant::now();
        let mut s = seed(t0, 5);
        for seq in 5..=7 {
            s.store.insert(piece(seq, &key()));
        }
        assert_eq!(s.fetch_from(), Some(8));
        assert!(matches!(s.role, RoleState::Seed { from: Some(8) }));
    }

    #[test]
    fn below_what_it_holds_a_seed_fetches_only_pieces_recent_enough_to_backfill() {
        let t0 = Instant::now();
        let mut s = seed(t0, 10);
        for seq in 200..=202 {
            s.store.insert(piece(seq, &key()));
        }
        let edge = piece(202, &key());
        let h = edge.header();
        s.known.confirm(202, h.timestamp_us, h.flags, t0);
        // Piece 20 is 7.28 s older than the edge; piece 100 is 4.08 s older.
        let id = active_peer(&mut s, 1);
        peer_claims(&mut s, id, [20, 100]);
        assert_eq!(s.fetch_from(), Some(100));
    }

    #[test]
    fn a_receiver_fetches_from_its_cursor_and_the_injector_fetches_nothing() {
        let t0 = Instant::now();
        let mut s = Swarm::new(config(Role::Receiver, 0), t0);
        assert_eq!(s.fetch_from(), None, "not hooked in");
        let (playout, store, _) = playing(s.config.latency, 30, 80, t0);
        s.role = RoleState::Receiver(playout);
        s.store = store;
        assert_eq!(s.fetch_from(), Some(81));
        let mut injector = Swarm::new(config(Role::Injector, 1), t0);
        assert_eq!(injector.fetch_from(), None);
    }
}
