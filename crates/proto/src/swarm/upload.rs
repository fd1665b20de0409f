//! Giving pieces: serving requests under the upload limit, choking, and what the injector
//! announces to whom.

use std::ops::Deref;

use super::ratelimit::TokenBucket;
use super::*;

const OPTIMISTIC_EVERY: u32 = 3; // rechokes
const MAX_QUEUE_PER_PEER: usize = 32;
/// A request that would not have left within this (at the upload limit, see
/// `Swarm::waits_too_long`) is refused at once: the requester learns in one round trip that
/// it should ask someone else, instead of waiting for its timeout. In a flash crowd, before
/// this, three of four requests a newcomer sent before its first output timed out
/// (concert-200, seed 1).
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
    /// Peers with requests queued, so serving looks at just those: which peers'
    /// [`RequestQueue`] is not empty, kept so by the methods below.
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

    /// The peer is gone, and its queue with it.
    pub fn forget_peer(&mut self, id: PeerId) {
        self.queued.remove(&id);
        if self.optimistic == Some(id) {
            self.optimistic = None;
        }
    }

    /// Queues peer `id`'s (`p`'s) request for `seq`, come at `at`. A peer's queue changes
    /// only here and in the methods below, so that `queued` always holds just the peers
    /// whose queue is not empty.
    fn enqueue(&mut self, id: PeerId, p: &mut Peer, seq: u64, at: Instant) {
        p.queue.0.push_back((seq, at));
        self.queued.insert(id);
    }

    /// Drops the request at `place` in peer `id`'s (`p`'s) queue (served or refused).
    fn dequeue_at(&mut self, id: PeerId, p: &mut Peer, place: usize) {
        p.queue.0.remove(place);
        self.forget_if_empty(id, p);
    }

    /// Drops peer `id`'s (`p`'s) request for `seq`, if queued (cancelled).
    fn dequeue(&mut self, id: PeerId, p: &mut Peer, seq: u64) {
        p.queue.0.retain(|(s, _)| *s != seq);
        self.forget_if_empty(id, p);
    }

    /// Drops all of peer `id`'s (`p`'s) requests (we choke it).
    fn clear_queue(&mut self, id: PeerId, p: &mut Peer) {
        p.queue.0.clear();
        self.queued.remove(&id);
    }

    fn forget_if_empty(&mut self, id: PeerId, p: &Peer) {
        if p.queue.is_empty() {
            self.queued.remove(&id);
        }
    }
}

/// A peer's requests to us, with their arrival time, in arrival order. Read through `Deref`;
/// changed only by [`Uploader`], which keeps its `queued` in step.
#[derive(Debug, Default)]
pub struct RequestQueue(VecDeque<(u64, Instant)>);

impl Deref for RequestQueue {
    type Target = VecDeque<(u64, Instant)>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

#[cfg(test)]
impl RequestQueue {
    /// For tests of a peer alone, which has no uploader to keep in step.
    pub(super) fn push_alone(&mut self, seq: u64, at: Instant) {
        self.0.push_back((seq, at));
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
            self.upload.enqueue(id, p, seq, now);
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
        self.upload.dequeue(id, p, seq);
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
            self.upload.dequeue_at(id, p, 0);
            send_live(p, LiveMessage::Reject { seq });
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
                self.upload.dequeue_at(id, p, place);
                send_live(p, LiveMessage::Reject { seq });
                continue;
            };
            let len = piece.header().payload_len as u64;
            if let Err(at) = self.upload.take(len, now) {
                return self.timers.set(Timer::Upload, Some(at));
            }
            self.upload.dequeue_at(id, p, place);
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
    fn next_to_serve(&self) -> Option<PeerId> {
        let mut tiers: [Vec<PeerId>; 4] = Default::default();
        // Each is connected and has requests queued (the uploader keeps `queued` so).
        for &id in &self.upload.queued {
            let Some(p) = self.peers.get(id) else {
                continue;
            };
            // Its connection still drains what it was sent: its turn waits.
            if self.can_send_to(p) {
                tiers[serve_tier(p)].push(id);
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
                    up.clear_queue(id, p); // BEP 3: choking discards the peer's requests
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
mod tests;
