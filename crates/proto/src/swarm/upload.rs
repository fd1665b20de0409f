//! Giving pieces: serving requests under the upload limit, choking, and what the injector
//! announces to whom.

use super::ratelimit::TokenBucket;
use super::*;

const OPTIMISTIC_EVERY: u32 = 3; // rechokes
const MAX_QUEUE_PER_PEER: usize = 32;
/// A request that would not have left within this (at the upload limit, see
/// `Swarm::waits_too_long`) is refused at once: the requester learns in one round trip that
/// it should ask someone else, instead of waiting for its timeout. In a flash crowd, before this, three
/// of four requests a newcomer sent before its first output timed out (concert-200, seed 1).
pub const ADMIT_WAIT: Duration = Duration::from_millis(250);
/// The injector tells everyone about a piece this long after it was made; before that only
/// the peer it fed first knows, so the swarm, not the injector, carries the copies.
const SOURCE_HOLD: Duration = Duration::from_millis(1000);
/// How long the injector waits for the peer it fed first to ask for a new piece.
pub(super) const FANOUT_GRACE: Duration = Duration::from_millis(150);
/// The injector refuses an untrusted peer a piece that this many of its peers announce.
const INJECTOR_REPAIRS_BELOW: u32 = 3;
/// A node whose upload limit cannot send a piece within this long serves nobody and
/// announces nothing: a piece that slow is of little use to a live peer, while HAVEs to fifty
/// peers (about 30 bytes each per piece) would fill a thin uplink and hold back the node's own
/// requests.
pub const SLOWEST_USEFUL_PIECE: Duration = Duration::from_secs(1);

/// The uploader's own state: who has requests queued, the upload limit, the choker's turn.
#[derive(Debug)]
pub(super) struct Uploader {
    bucket: Option<TokenBucket>,
    /// The upload limit lets a piece go within [`SLOWEST_USEFUL_PIECE`].
    pub(super) serves: bool,
    /// Peers with requests queued, so serving looks at just those.
    queued: BTreeSet<PeerId>,
    /// Round-robin position among the untrusted peers with queued requests (see
    /// `next_to_serve`).
    serve_turn: usize,
    rechokes: u32,
    optimistic: Option<PeerId>,
}

impl Uploader {
    pub fn new(config: &Config, now: Instant) -> Self {
        let piece = (config.max_payload as usize + crate::piece::OVERHEAD) as u64;
        let bucket =
            (config.upload_limit).map(|rate| TokenBucket::new(rate, piece.max(rate / 10), now));
        // The limit counts payload bytes.
        let serves = (config.upload_limit).is_none_or(|rate| {
            rate as f64 * SLOWEST_USEFUL_PIECE.as_secs_f64() >= config.max_payload as f64
        });
        Uploader {
            bucket,
            serves,
            queued: BTreeSet::new(),
            serve_turn: 0,
            rechokes: 0,
            optimistic: None,
        }
    }

    /// Takes `len` payload bytes from the upload limit, or says when they may go.
    pub fn take(&mut self, len: u64, now: Instant) -> Result<(), Instant> {
        let Some(bucket) = &mut self.bucket else {
            return Ok(());
        };
        if bucket.try_take(len, now) {
            Ok(())
        } else {
            Err(bucket.ready_at(len, now))
        }
    }

    /// How long the upload limit takes to send `pieces` pieces of `len` bytes; `None`
    /// without a limit.
    fn time_to_send(&self, pieces: usize, len: u64) -> Option<Duration> {
        let rate = self.bucket.as_ref()?.rate();
        Some(Duration::from_micros(
            pieces as u64 * len * 1_000_000 / rate,
        ))
    }

    pub fn forget_peer(&mut self, id: PeerId) {
        self.queued.remove(&id);
        if self.optimistic == Some(id) {
            self.optimistic = None;
        }
    }
}

impl Swarm {
    /// A peer asks for a piece: queue it, or refuse at once.
    pub(super) fn on_request(&mut self, id: PeerId, seq: u64) {
        let have = self.store.contains(seq);
        if have && let RoleState::Injector { asked, .. } = &mut self.role {
            asked.insert(seq);
        }
        // The injector repairs only what the swarm has not spread: a piece that enough of
        // its peers announce is to be had from them (so a peer that everyone else chokes
        // cannot make the origin its private server).
        let spread = matches!(self.role, RoleState::Injector { .. })
            && self.peers.holders().count(seq) >= INJECTOR_REPAIRS_BELOW;
        let now = self.now;
        if self.push.is_queued(id, seq) {
            return; // a push on its way: it will come
        }
        let overloaded = self.waits_too_long(id);
        let p = self.peers.get_mut(id).unwrap();
        if self.push.was_pushed(id, seq) {
            // A repair that crossed our push: the piece arrives before this Reject.
            send_live(p, LiveMessage::Reject { seq });
        } else if p.given.contains(&seq) || p.has(seq) || !self.upload.serves {
            // It has this piece from us, or says it holds it, or we announce nothing: an
            // honest peer asks only for what we announced and it lacks. Each such request
            // costs the uplink a Reject, and a node that does not serve has a thin one.
            p.repeated_requests += 1;
            if p.repeated_requests > peer::MAX_REPEATED_REQUESTS {
                let repeats = p.repeated_requests;
                return self.ban(id, DisconnectReason::RepeatedRequests { repeats });
            }
            send_live(p, LiveMessage::Reject { seq });
        } else if p.queue.iter().any(|(s, _)| *s == seq) {
            // Already queued: it will come. A Reject now would contradict the piece that
            // follows it.
        } else if p.am_choking
            || !have
            || p.queue.len() >= MAX_QUEUE_PER_PEER
            || (spread && !p.trusted)
            || overloaded
        {
            send_live(p, LiveMessage::Reject { seq });
        } else {
            p.queue.push_back((seq, now));
            self.upload.queued.insert(id);
        }
    }

    /// The peer announced pieces: requests of it still queued for those are dropped (it
    /// has them from someone else; an honest peer also cancels them).
    pub(super) fn drop_announced_requests(&mut self, id: PeerId) {
        let Some(p) = self.peers.get(id) else {
            return;
        };
        let held: Vec<u64> = (p.queue.iter().map(|&(seq, _)| seq))
            .filter(|&seq| p.has(seq))
            .collect();
        for seq in held {
            self.on_cancel(id, seq);
        }
    }

    /// Whether a new request of `id`'s would not have left within [`Config::admit_wait`]
    /// (one alone is always queued, as are a trusted peer's). Served in turn, it waits for
    /// each peer's requests up to as many as its own, whatever their tier: a busy uploader
    /// sends its requesters elsewhere whoever they are, which spreads the load, and a peer
    /// that keeps its queue full counts no more than one that asks as much as the asker.
    fn waits_too_long(&self, id: PeerId) -> bool {
        let Some(asker) = self.peers.get(id).filter(|p| !p.trusted) else {
            return false;
        };
        // The new request is the asker's `place`-th: each other peer is served at most that
        // many times before it.
        let place = asker.queue.len() + 1;
        let others: usize = (self.upload.queued.iter())
            .filter(|&&q| q != id)
            .filter_map(|q| self.peers.get(*q))
            .map(|q| q.queue.len().min(place))
            .sum();
        let ahead = others + asker.queue.len();
        let len = self.config.max_payload as u64;
        ahead > 0
            && (self.config.admit_wait)
                .zip(self.upload.time_to_send(ahead + 1, len))
                .is_some_and(|(admit, wait)| wait > admit)
    }

    pub(super) fn on_cancel(&mut self, id: PeerId, seq: u64) {
        let p = self.peers.get_mut(id).unwrap();
        p.queue.retain(|(s, _)| *s != seq);
        if p.queue.is_empty() {
            self.upload.queued.remove(&id);
        }
    }

    /// Refuse what waited too long: the requester is better off asking elsewhere.
    pub(super) fn expire_queue(&mut self, id: PeerId) {
        let now = self.now;
        let Some(p) = self.peers.get_mut(id) else {
            return;
        };
        while let Some(&(seq, at)) = p.queue.front() {
            if now < at + peer::MAX_QUEUE_WAIT {
                break;
            }
            p.queue.pop_front();
            send_live(p, LiveMessage::Reject { seq });
        }
        if p.queue.is_empty() {
            self.upload.queued.remove(&id);
        }
    }

    /// Sends queued pieces as the upload limit allows: trusted seedboxes first (what they get,
    /// they pass on to many), then the peers that have delivered pieces to us, then the rest,
    /// suspects last, in turn within each tier. Serving those that give first keeps a peer
    /// that only takes (or claims and never delivers) from crowding out the peers that carry
    /// the swarm; it gets what upload is left, as an honest peer without upload does. Of a
    /// peer's requests the one for the oldest piece goes first: it is due soonest there.
    /// Not across peers: a peer that asks for old pieces would then come before the live
    /// edge every time (see README, "Figures").
    pub(super) fn serve_requests(&mut self) {
        self.timers.set(Timer::Upload, None);
        let now = self.now;
        // Pushes first: the live edge, within what the children's subscriptions were
        // admitted for (see `push_capacity`).
        if !self.send_pushes() {
            return;
        }
        loop {
            let Some(id) = self.next_to_serve() else {
                return;
            };
            let p = self.peers.get_mut(id).unwrap();
            let (place, seq) = oldest_asked(p).unwrap();
            let Some(piece) = self.store.get(seq) else {
                // Gone from the window since it was asked for.
                p.queue.remove(place);
                if p.queue.is_empty() {
                    self.upload.queued.remove(&id);
                }
                send_live(p, LiveMessage::Reject { seq });
                continue;
            };
            let len = piece.header().payload_len as u64;
            if let Err(at) = self.upload.take(len, now) {
                return self.timers.set(Timer::Upload, Some(at));
            }
            p.queue.remove(place);
            if p.queue.is_empty() {
                self.upload.queued.remove(&id);
            }
            p.up_recent += len;
            p.given.insert(seq);
            send_piece(p, piece);
            self.stats.bytes_up += len;
            self.stats.pieces_sent += 1;
            if !p.trusted {
                self.upload.serve_turn = self.upload.serve_turn.wrapping_add(1);
            }
        }
    }

    /// The peer whose queued request goes next (see [`Swarm::serve_requests`]).
    fn next_to_serve(&mut self) -> Option<PeerId> {
        let mut tiers: [Vec<PeerId>; 4] = Default::default();
        let queued: Vec<PeerId> = self.upload.queued.iter().copied().collect();
        for id in queued {
            match self.peers.get(id) {
                // Its connection still drains what it was sent: its turn waits.
                Some(p) if !p.queue.is_empty() && !self.can_send_to(p) => {}
                Some(p) if !p.queue.is_empty() => tiers[serve_tier(p)].push(id),
                _ => {
                    self.upload.queued.remove(&id);
                }
            }
        }
        let turn = self.upload.serve_turn;
        (tiers.iter())
            .find(|t| !t.is_empty())
            .map(|t| t[turn % t.len()])
    }

    pub(super) fn rechoke(&mut self) {
        let up = &mut self.upload;
        up.rechokes += 1;
        if up.rechokes % OPTIMISTIC_EVERY == 1 || up.optimistic.is_none() {
            let candidates: Vec<PeerId> = self
                .peers
                .iter()
                .filter(|(_, p)| {
                    p.is_active() && p.peer_interested && p.am_choking && !p.standing.is_suspect()
                })
                .map(|(id, _)| id)
                .collect();
            if !candidates.is_empty() {
                use rand::Rng;
                up.optimistic = Some(candidates[self.rng.random_range(0..candidates.len())]);
            }
        }
        let chosen =
            choker::choose_unchoked(self.peers.map(), self.config.upload_slots, up.optimistic);
        for (id, p) in self.peers.iter_mut() {
            let unchoke = chosen.contains(&id);
            if unchoke == p.am_choking && p.is_active() {
                p.am_choking = !unchoke;
                let msg = if unchoke {
                    Message::Unchoke
                } else {
                    Message::Choke
                };
                wire::encode(&msg, 0, p.outbox.buf());
                if !unchoke {
                    p.queue.clear(); // BEP 3: choking discards the peer's requests
                    up.queued.remove(&id);
                }
            }
            p.down_recent = 0;
            p.up_recent = 0;
        }
    }

    /// A newly interested peer is unchoked at once while slots are free; otherwise it waits
    /// for the next rechoke.
    pub(super) fn rechoke_if_slot_free(&mut self, id: PeerId) {
        let unchoked = self.peers.values().filter(|p| !p.am_choking).count();
        let p = self.peers.get_mut(id).unwrap();
        if p.is_active()
            && p.am_choking
            && (p.trusted
                || (p.peer_interested
                    && !p.standing.is_suspect()
                    && unchoked < self.config.upload_slots))
        {
            p.am_choking = false;
            wire::encode(&Message::Unchoke, 0, p.outbox.buf());
        }
    }

    /// Whether we may tell peers we hold this piece. The injector waits SOURCE_HOLD after
    /// making a piece, so that the swarm, not the injector, carries the copies.
    /// If the peer it fed first has not even asked for the piece after FANOUT_GRACE (it left,
    /// or it keeps what it is given to itself), everyone hears of it then.
    pub(super) fn announceable(&self, piece: &SignedPiece) -> bool {
        let RoleState::Injector { asked, .. } = &self.role else {
            return true;
        };
        let hold = if asked.contains(&piece.seq()) {
            SOURCE_HOLD
        } else {
            FANOUT_GRACE
        };
        self.known
            .get(piece.seq())
            .is_some_and(|m| self.now >= m.first_heard + hold)
    }

    /// Injector: tell every peer about pieces it has held for SOURCE_HOLD, so nobody misses a
    /// piece the swarm failed to spread.
    pub(super) fn announce_held(&mut self) {
        let ready: Vec<HaveEntry> = self
            .store
            .iter()
            .filter(|p| self.announceable(p))
            .map(have_entry)
            .collect();
        if ready.is_empty() {
            return;
        }
        if let RoleState::Injector { fanout, .. } = &mut self.role {
            for e in &ready {
                fanout.told_all(e.seq, self.peers.holders().count(e.seq));
            }
        }
        for id in self.peers.ids() {
            let p = self.peers.get(id).unwrap();
            if !p.is_active() {
                continue;
            }
            let entries: Vec<HaveEntry> = ready
                .iter()
                .filter(|e| !p.told.contains(&e.seq) && !p.has(e.seq))
                .copied()
                .collect();
            if !entries.is_empty() {
                self.send_have(id, entries);
            }
        }
    }

    /// Injector: the peer to feed new piece `seq` first. Trusted seedboxes, else seedboxes,
    /// else anyone unchoked, in turn; an untrusted peer whose copies keep not spreading
    /// only when there is nobody else.
    pub(super) fn fanout_target(&mut self, seq: u64) -> Option<PeerId> {
        let RoleState::Injector { fanout, .. } = &mut self.role else {
            return None;
        };
        let unchoked = |p: &Peer| p.is_active() && !p.am_choking;
        let mut active: Vec<(PeerId, &Peer)> = (self.peers.iter())
            .filter(|(id, p)| unchoked(p) && (p.trusted || fanout.spreads(*id)))
            .collect();
        if active.is_empty() {
            active = self.peers.iter().filter(|(_, p)| unchoked(p)).collect();
        }
        let class: Vec<PeerId> = if active.iter().any(|(_, p)| p.trusted) {
            active
                .iter()
                .filter(|(_, p)| p.trusted)
                .map(|(id, _)| *id)
                .collect()
        } else if active.iter().any(|(_, p)| p.is_seed) {
            active
                .iter()
                .filter(|(_, p)| p.is_seed)
                .map(|(id, _)| *id)
                .collect()
        } else {
            active.iter().map(|(id, _)| *id).collect()
        };
        if class.is_empty() {
            return None;
        }
        Some(fanout.feed(seq, &class))
    }

    pub(super) fn send_have(&mut self, id: PeerId, mut entries: Vec<HaveEntry>) {
        if !self.upload.serves {
            return;
        }
        let window_start = self.store.first_seq().unwrap_or(0);
        let Some(p) = self.peers.get_mut(id) else {
            return;
        };
        entries.retain(|e| p.told.insert(e.seq));
        for chunk in entries.chunks(wire::MAX_HAVE_ENTRIES) {
            send_live(
                p,
                LiveMessage::Have {
                    window_start,
                    entries: chunk.to_vec(),
                },
            );
        }
    }
}

/// The order in which peers' requests are served: 0 trusted, 1 it delivered to us on this
/// connection, 2 the rest, 3 suspects (see [`Swarm::serve_requests`]).
fn serve_tier(p: &Peer) -> usize {
    if p.trusted {
        0
    } else if p.standing.proven {
        1
    } else if !p.standing.is_suspect() {
        2
    } else {
        3
    }
}

/// The peer's queued request for the oldest piece: its place in the queue, and the piece.
fn oldest_asked(p: &Peer) -> Option<(usize, u64)> {
    (p.queue.iter().enumerate())
        .min_by_key(|(_, (seq, _))| *seq)
        .map(|(i, (seq, _))| (i, *seq))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swarm::fixtures::{
        PAYLOAD, active_peer, config, have, key, peer_claims, piece, sent_live,
    };

    /// A seed holding pieces `0..=40` of the test stream.
    fn seed_with_pieces(mut c: Config, now: Instant) -> Swarm {
        c.role = Role::Seed;
        let mut s = Swarm::new(c, now);
        for seq in 0..=40 {
            s.store.insert(piece(seq, &key()));
        }
        s
    }

    fn pieces_sent(s: &mut Swarm, id: PeerId) -> Vec<u64> {
        pieces_sent_in(&sent_live(s, id))
    }

    fn queued(s: &Swarm, id: PeerId) -> Vec<u64> {
        s.peers
            .get(id)
            .unwrap()
            .queue
            .iter()
            .map(|(seq, _)| *seq)
            .collect()
    }

    #[test]
    fn a_request_for_a_piece_already_given_on_the_connection_is_refused_and_counted() {
        let t0 = Instant::now();
        let mut s = seed_with_pieces(config(Role::Seed, 0), t0);
        let (a, b) = (active_peer(&mut s, 1), active_peer(&mut s, 2));
        s.on_request(a, 5);
        s.serve_requests();
        assert_eq!(pieces_sent(&mut s, a), vec![5]);
        s.on_request(a, 5);
        assert_eq!(sent_live(&mut s, a), vec![LiveMessage::Reject { seq: 5 }]);
        assert_eq!(queued(&s, a), Vec::<u64>::new());
        assert_eq!(s.peers.get(a).unwrap().repeated_requests, 1);
        // Given is per connection: another peer gets the piece.
        s.on_request(b, 5);
        s.serve_requests();
        assert_eq!(pieces_sent(&mut s, b), vec![5]);
        // Past the repeats forgiven, the asker is banned.
        for _ in 1..=peer::MAX_REPEATED_REQUESTS {
            s.on_request(a, 5);
        }
        assert!(!s.peers.contains(a));
        let banned = Output::Disconnect {
            peer: a,
            reason: DisconnectReason::RepeatedRequests {
                repeats: peer::MAX_REPEATED_REQUESTS + 1,
            },
        };
        assert!(s.outputs.contains(&banned));
    }

    #[test]
    fn a_request_for_a_piece_the_peer_announced_is_refused_and_counted_and_queued_ones_dropped() {
        let t0 = Instant::now();
        let mut s = seed_with_pieces(config(Role::Seed, 0), t0);
        let id = active_peer(&mut s, 1);
        for seq in [3, 4] {
            s.on_request(id, seq);
        }
        // It got 3 from someone else and says so (as a HAVE does): 3 is not sent.
        peer_claims(&mut s, id, [3]);
        s.drop_announced_requests(id);
        assert_eq!(queued(&s, id), vec![4]);
        // Asking for what it announced is asking twice.
        s.on_request(id, 3);
        assert_eq!(sent_live(&mut s, id), vec![LiveMessage::Reject { seq: 3 }]);
        assert_eq!(s.peers.get(id).unwrap().repeated_requests, 1);
        s.serve_requests();
        assert_eq!(pieces_sent(&mut s, id), vec![4]);
    }

    #[test]
    fn a_peer_has_at_most_max_queue_per_peer_requests_queued_and_each_piece_once() {
        let t0 = Instant::now();
        let mut s = seed_with_pieces(config(Role::Seed, 0), t0);
        let id = active_peer(&mut s, 1);
        s.on_request(id, 0);
        s.on_request(id, 0); // asked twice while queued: queued once
        let full = MAX_QUEUE_PER_PEER as u64;
        for seq in 1..full {
            s.on_request(id, seq);
        }
        s.on_request(id, full);
        assert_eq!(queued(&s, id), (0..full).collect::<Vec<_>>());
        assert_eq!(
            sent_live(&mut s, id),
            vec![LiveMessage::Reject { seq: full }]
        );
        assert_eq!(s.peers.get(id).unwrap().repeated_requests, 0);
    }

    #[test]
    fn a_repeated_request_for_a_piece_queued_in_a_full_queue_is_ignored_like_any_repeat() {
        let t0 = Instant::now();
        let mut s = seed_with_pieces(config(Role::Seed, 0), t0);
        let id = active_peer(&mut s, 1);
        let full = MAX_QUEUE_PER_PEER as u64;
        for seq in 1..=full {
            s.on_request(id, seq);
        }
        s.on_request(id, full);
        assert_eq!(
            sent_live(&mut s, id),
            vec![],
            "no Reject for a piece about to be sent"
        );
        s.serve_requests();
        assert_eq!(pieces_sent(&mut s, id), (1..=full).collect::<Vec<_>>());
    }

    #[test]
    fn requests_from_a_choked_peer_or_for_a_piece_not_held_are_refused() {
        let t0 = Instant::now();
        let mut s = seed_with_pieces(config(Role::Seed, 0), t0);
        let id = active_peer(&mut s, 1);
        s.on_request(id, 41);
        s.peers.get_mut(id).unwrap().am_choking = true;
        s.on_request(id, 3);
        let rejects = vec![
            LiveMessage::Reject { seq: 41 },
            LiveMessage::Reject { seq: 3 },
        ];
        assert_eq!(sent_live(&mut s, id), rejects);
        assert!(queued(&s, id).is_empty() && s.upload.queued.is_empty());
    }

    #[test]
    fn a_request_queued_for_max_queue_wait_is_refused_and_a_cancelled_one_dropped() {
        let t0 = Instant::now();
        let mut c = config(Role::Seed, 0);
        // A piece a second, and the bucket drained: nothing goes within the wait.
        c.upload_limit = Some(PAYLOAD as u64);
        c.admit_wait = None;
        let mut s = seed_with_pieces(c, t0);
        s.upload
            .bucket
            .as_mut()
            .unwrap()
            .try_take(PAYLOAD as u64, t0);
        let id = active_peer(&mut s, 1);
        for seq in [1, 2, 3] {
            s.on_request(id, seq);
        }
        s.on_cancel(id, 2);
        assert_eq!(queued(&s, id), vec![1, 3]);
        s.now = t0 + peer::MAX_QUEUE_WAIT - Duration::from_millis(1);
        s.expire_queue(id);
        assert_eq!(queued(&s, id), vec![1, 3]);
        s.now = t0 + peer::MAX_QUEUE_WAIT;
        s.expire_queue(id);
        assert!(queued(&s, id).is_empty() && s.upload.queued.is_empty());
        let rejects = vec![
            LiveMessage::Reject { seq: 1 },
            LiveMessage::Reject { seq: 3 },
        ];
        assert_eq!(sent_live(&mut s, id), rejects);
    }

    #[test]
    fn a_node_that_cannot_send_a_piece_a_second_announces_nothing_and_refuses_at_once() {
        let t0 = Instant::now();
        let mut c = config(Role::Seed, 0);
        c.upload_limit = Some(PAYLOAD as u64 - 1);
        let mut s = seed_with_pieces(c, t0);
        let id = active_peer(&mut s, 1);
        s.send_have(id, vec![have(5)]);
        s.on_request(id, 5);
        assert_eq!(sent_live(&mut s, id), vec![LiveMessage::Reject { seq: 5 }]);
        assert!(queued(&s, id).is_empty());
        // Nothing was offered, so an honest peer asks for nothing: a peer that keeps asking
        // is banned like one that asks again for what it has.
        for seq in 1..=peer::MAX_REPEATED_REQUESTS as u64 {
            s.on_request(id, seq);
        }
        assert!(!s.peers.contains(id));
        // At a piece a second it serves, and tells.
        let mut c = config(Role::Seed, 0);
        c.upload_limit = Some(PAYLOAD as u64);
        let mut s = seed_with_pieces(c, t0);
        let id = active_peer(&mut s, 1);
        s.send_have(id, vec![have(5)]);
        s.on_request(id, 5);
        assert!(matches!(
            sent_live(&mut s, id)[..],
            [LiveMessage::Have { .. }]
        ));
        assert_eq!(queued(&s, id), vec![5]);
    }

    #[test]
    fn under_the_upload_limit_trusted_peers_are_served_first_then_the_others_in_turn() {
        let (a, b, trusted) = (0, 1, 2);
        let order = serve_one_a_second(&[&[1, 2], &[1, 2], &[5, 6]], |s, ids| {
            s.peers.get_mut(ids[trusted]).unwrap().trusted = true;
        });
        let expected = [(trusted, 5), (trusted, 6), (a, 1), (b, 1), (a, 2), (b, 2)];
        assert_eq!(order, expected);
    }

    #[test]
    fn a_peers_request_for_its_oldest_piece_goes_first_and_the_peers_in_turn() {
        let (a, b) = (0, 1);
        // a asks for 7 before 2: its 2 goes first. Across peers the turn decides, not the
        // piece (a's 7 before b's 5).
        let order = serve_one_a_second(&[&[7, 2], &[5, 2]], |_, _| {});
        let expected = [(a, 2), (b, 2), (a, 7), (b, 5)];
        assert_eq!(order, expected);
    }

    #[test]
    fn peers_that_delivered_to_us_are_served_before_those_that_never_did() {
        let (taker, giver, other_giver) = (0, 1, 2);
        let order = serve_one_a_second(&[&[1, 2], &[3, 4], &[3]], |s, ids| {
            for i in [giver, other_giver] {
                s.peers.get_mut(ids[i]).unwrap().standing.delivered();
            }
        });
        // The givers in turn, then what is left to the peer that only takes, though it
        // asked for older pieces.
        let expected = [
            (giver, 3),
            (other_giver, 3),
            (giver, 4),
            (taker, 1),
            (taker, 2),
        ];
        assert_eq!(order, expected);
    }

    #[test]
    fn a_request_that_would_wait_past_admit_wait_is_refused_at_once_unless_trusted() {
        let t0 = Instant::now();
        let mut c = config(Role::Seed, 0);
        // Ten pieces a second, the bucket drained: each piece queued is 100 ms of waiting.
        c.upload_limit = Some(10 * PAYLOAD as u64);
        let mut s = seed_with_pieces(c, t0);
        s.upload.take(PAYLOAD as u64, t0).unwrap();
        let (a, b, giver, trusted) = (
            active_peer(&mut s, 1),
            active_peer(&mut s, 2),
            active_peer(&mut s, 3),
            active_peer(&mut s, 4),
        );
        s.peers.get_mut(giver).unwrap().standing.delivered();
        s.peers.get_mut(trusted).unwrap().trusted = true;
        s.on_request(a, 1);
        s.on_request(a, 2); // sent within 200 ms
        assert!(sent_live(&mut s, a).is_empty());
        s.on_request(a, 3);
        assert_eq!(sent_live(&mut s, a), vec![LiveMessage::Reject { seq: 3 }]);
        // In turn, b's first waits for one of a's only: queued.
        s.on_request(b, 4);
        assert!(sent_live(&mut s, b).is_empty());
        // Served before the others, but the uploader is busy all the same: ask elsewhere.
        s.on_request(giver, 5);
        assert_eq!(
            sent_live(&mut s, giver),
            vec![LiveMessage::Reject { seq: 5 }]
        );
        for seq in 6..=9 {
            s.on_request(trusted, seq);
        }
        assert!(sent_live(&mut s, trusted).is_empty());
        assert_eq!(queued(&s, a), vec![1, 2]);
        assert_eq!(queued(&s, b), vec![4]);
        assert_eq!(queued(&s, trusted), (6..=9).collect::<Vec<_>>());
        assert_eq!(s.peers.get(a).unwrap().repeated_requests, 0);
        // Without a limit, or without admission, everything is queued.
        let mut c = config(Role::Seed, 0);
        c.upload_limit = Some(PAYLOAD as u64);
        c.admit_wait = None;
        let mut s = seed_with_pieces(c, t0);
        let a = active_peer(&mut s, 1);
        for seq in 1..=5 {
            s.on_request(a, seq);
        }
        assert_eq!(queued(&s, a), (1..=5).collect::<Vec<_>>());
    }

    #[test]
    fn a_peer_that_left_our_request_unanswered_and_never_delivered_is_served_last() {
        let (staller, taker) = (0, 1);
        let order = serve_one_a_second(&[&[1, 2], &[3, 4]], |s, ids| {
            let now = s.now;
            s.peers
                .get_mut(ids[staller])
                .unwrap()
                .standing
                .timed_out(now);
        });
        let expected = [(taker, 3), (taker, 4), (staller, 1), (staller, 2)];
        assert_eq!(order, expected);
    }

    #[test]
    fn a_suspect_is_neither_unchoked_at_once_nor_chosen_as_the_optimistic_unchoke() {
        let t0 = Instant::now();
        let mut s = seed_with_pieces(config(Role::Seed, 0), t0);
        let (honest, staller) = (active_peer(&mut s, 1), active_peer(&mut s, 2));
        s.peers.get_mut(staller).unwrap().standing.timed_out(t0);
        for id in [honest, staller] {
            let p = s.peers.get_mut(id).unwrap();
            p.peer_interested = true;
            p.am_choking = true;
            s.rechoke_if_slot_free(id);
        }
        let choking = |s: &Swarm, id| s.peers.get(id).unwrap().am_choking;
        assert!(!choking(&s, honest) && choking(&s, staller));
        for _ in 0..OPTIMISTIC_EVERY * 3 {
            s.rechoke();
            assert_ne!(s.upload.optimistic, Some(staller));
            assert!(choking(&s, staller));
        }
        // Once it delivers it is a peer like any other.
        s.peers.get_mut(staller).unwrap().standing.delivered();
        s.rechoke();
        assert!(!choking(&s, staller));
    }

    #[test]
    fn the_injector_refuses_untrusted_peers_a_piece_its_peers_announce_and_serves_the_rest() {
        let t0 = Instant::now();
        let mut s = Swarm::new(config(Role::Injector, 0), t0);
        for seq in 0..=2 {
            s.store.insert(piece(seq, &key()));
        }
        let asker = active_peer(&mut s, 1);
        let trusted = active_peer(&mut s, 2);
        s.peers.get_mut(trusted).unwrap().trusted = true;
        let holders: Vec<PeerId> = (3..3 + INJECTOR_REPAIRS_BELOW as u8)
            .map(|host| active_peer(&mut s, host))
            .collect();
        for id in [asker, trusted] {
            s.peers.get_mut(id).unwrap().am_choking = false;
        }
        // Piece 1 is announced by all the holders but one, piece 2 by all of them.
        for (i, &id) in holders.iter().enumerate() {
            let seqs: Vec<u64> = if i == 0 { vec![2] } else { vec![1, 2] };
            peer_claims(&mut s, id, seqs);
        }
        for seq in [1, 2] {
            s.on_request(asker, seq);
            s.on_request(trusted, seq);
        }
        s.serve_requests();
        assert_eq!(pieces_sent(&mut s, trusted), vec![1, 2]);
        let to_asker = sent_live(&mut s, asker);
        assert!(
            to_asker.contains(&LiveMessage::Reject { seq: 2 }),
            "{to_asker:?}"
        );
        assert_eq!(pieces_sent_in(&to_asker), vec![1]);
        // Refusing is not a penalty: an honest peer may ask the origin for what it lacks.
        assert_eq!(s.peers.get(asker).unwrap().repeated_requests, 0);
    }

    fn pieces_sent_in(msgs: &[LiveMessage]) -> Vec<u64> {
        (msgs.iter())
            .filter_map(|m| match m {
                LiveMessage::Piece(wire) => {
                    Some(SignedPiece::check_structure(wire, 1 << 20).unwrap().seq)
                }
                _ => None,
            })
            .collect()
    }

    /// A seed with an upload limit of one piece a second, and one peer per entry of `asks`,
    /// which asks for those pieces, all after `setup`: which peer (its index in `asks`) got
    /// which piece, in order.
    fn serve_one_a_second(
        asks: &[&[u64]],
        setup: impl FnOnce(&mut Swarm, &[PeerId]),
    ) -> Vec<(usize, u64)> {
        let t0 = Instant::now();
        let mut c = config(Role::Seed, 0);
        // A burst of one piece: each second lets exactly one more go.
        c.upload_limit = Some(PAYLOAD as u64);
        c.admit_wait = None; // the order, not the admission
        let mut s = seed_with_pieces(c, t0);
        let ids: Vec<PeerId> = (1..=asks.len() as u8)
            .map(|host| active_peer(&mut s, host))
            .collect();
        setup(&mut s, &ids);
        for (&id, seqs) in ids.iter().zip(asks) {
            for &seq in *seqs {
                s.on_request(id, seq);
            }
        }
        let mut order = Vec::new();
        let pieces: usize = asks.iter().map(|seqs| seqs.len()).sum();
        for second in 0..pieces as u64 {
            s.now = t0 + Duration::from_secs(second);
            s.serve_requests();
            // While requests wait, the limit says when the next may go.
            let next_turn = s.timers.0[Timer::Upload as usize];
            let waiting = !s.upload.queued.is_empty();
            assert_eq!(next_turn.is_some_and(|at| at > s.now), waiting, "{second}");
            for (i, &id) in ids.iter().enumerate() {
                order.extend(pieces_sent(&mut s, id).into_iter().map(|seq| (i, seq)));
            }
        }
        order
    }

    #[test]
    fn a_piece_waits_until_the_connection_drained_the_one_before_it() {
        let t0 = Instant::now();
        let mut c = config(Role::Seed, 0);
        c.send_backlog = Some(0);
        let mut s = seed_with_pieces(c, t0);
        let (slow, other) = (active_peer(&mut s, 1), active_peer(&mut s, 2));
        for seq in [1, 2] {
            s.on_request(slow, seq);
        }
        s.on_request(other, 3);
        s.serve_requests();
        s.flush(); // handed to the driver, which reports the bytes as they leave
        // One piece each: the slow connection's second waits, the other peer is not held up.
        assert_eq!(queued(&s, slow), vec![2]);
        assert!(queued(&s, other).is_empty());
        let unsent = s.peers.get(slow).unwrap().unsent;
        assert!(unsent > PAYLOAD, "{unsent}");
        s.timers.set(Timer::Rechoke, None); // nobody choked meanwhile
        s.handle(t0, Input::Sent(slow, unsent - 1));
        assert_eq!(queued(&s, slow), vec![2], "one byte still to go");
        s.handle(t0, Input::Sent(slow, 1));
        assert!(queued(&s, slow).is_empty());
        assert_eq!(pieces_sent(&mut s, slow), Vec::<u64>::new(), "flushed");
        assert!(s.peers.get(slow).unwrap().unsent > PAYLOAD, "piece 2 went");
    }
}
