//! Push along substreams: the live edge travels unrequested, pull only repairs.
//!
//! The stream is split into `of` substreams (piece `seq % of`). Per substream a node
//! subscribes to one parent, which pushes it every piece of that substream as soon as the
//! parent has verified it (the PIECE goes out unasked; no HAVE, no REQUEST, so a hop costs
//! one piece's transfer instead of 1.5 round trips more). A piece of a subscribed substream is
//! requested only once its parent had a fair chance to push it ([`Push::awaits`]); each such
//! repair counts against the parent, and a parent that misses [`MAX_MISSES`] in a row, or
//! refuses or drops the subscription, is replaced. Systems that reached large live audiences
//! work this way (BitTorrent Live's clubs, GridMedia's pull-push, CoolStreaming's
//! substreams): see `notes/live-p2p-at-scale.md` beside the project.
//!
//! This sub-state owns both sides: our parent per substream (child side) and the children we
//! push to, with their push queues (parent side).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::peer::{Peer, PeerId};
use super::{LiveMessage, Role, RoleState, Swarm, Timer, can_send_to, send_live, send_piece};
use crate::wire::Substream;

/// Repairs in a row a parent may leave to pull before it is replaced.
pub const MAX_MISSES: u32 = 8;
/// A peer that refused or dropped a subscription, or was replaced, is not asked for that
/// substream again for this long.
pub const SHUN_FOR: Duration = Duration::from_secs(10);
/// Children a node with no upload limit pushes to, counted in substreams.
pub const MAX_CHILD_SLOTS: usize = 64;
/// Share of the upload limit that pushes may take; the rest serves repairs.
pub const PUSH_SHARE: f64 = 0.9;
/// The injector pushes each substream to this many children only: everyone else gets it
/// from the swarm, so the origin uploads about one copy.
pub const ORIGIN_CHILDREN: usize = 1;
/// A push not sent within this long is dropped (the child repairs it by pull).
pub const PUSH_WAIT: Duration = Duration::from_millis(500);
/// Pushes dropped in a row to one child before the parent gives up that subscription.
pub const MAX_DROPS: u32 = 3;
/// How long a piece of a subscribed substream is left to the push, at least and at most.
const GRACE_MIN: Duration = Duration::from_millis(150);
const GRACE_MAX: Duration = Duration::from_millis(1000);
/// The shun key for every substream of a peer.
const ALL: u8 = u8::MAX;
/// How often a node without a parent for some substream looks for one.
pub const CHOOSE_EVERY: Duration = Duration::from_millis(250);

/// Our parent for one substream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parent {
    pub peer: PeerId,
    /// Pieces after this one (the newest we knew of when we subscribed) are the parent's to
    /// push; older ones are fetched by pull.
    pub after_seq: u64,
    /// Smoothed time from first hearing of a piece of the substream (from anyone) to its
    /// push arriving, microseconds; 0 when the push is the first we hear of it.
    pub lag_us: u64,
    /// Pieces of the substream repaired by pull since the parent's last push.
    pub misses: u32,
    /// The newest piece it pushed: one before it that has not come was skipped.
    pub newest_pushed: u64,
}

/// One child's push queue and what it was pushed.
#[derive(Debug, Default)]
struct Child {
    /// Substreams it subscribed to, as a bit set over indexes.
    subscribed: u64,
    queue: VecDeque<(u64, Instant)>,
    /// Pieces pushed to it: a repair request that crossed the push is not abuse.
    sent: BTreeSet<u64>,
    drops: u32,
}

/// Counters for the status and the simulator's report.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PushCounters {
    pub pushes_received: u64,
    pub pushes_sent: u64,
    /// Pushes given up on: not sent within [`PUSH_WAIT`].
    pub pushes_dropped: u64,
    /// Time the pushes sent waited in their queue, summed (microseconds): over
    /// `pushes_sent`, how long a parent holds the live edge back.
    pub push_wait_us: u64,
    /// Requests for pieces of a subscribed substream the parent did not push in time.
    pub repairs: u64,
    /// Subscriptions we made (the first for each substream included).
    pub parent_changes: u64,
    /// Of those, ended by the parent (refused, or dropped as more than it can push), and
    /// ended by us after [`MAX_MISSES`].
    pub parent_refusals: u64,
    pub parents_replaced: u64,
}

#[derive(Debug)]
pub struct Push {
    of: u8,
    parents: Vec<Option<Parent>>,
    children: BTreeMap<PeerId, Child>,
    /// Children per substream, for the injector's [`ORIGIN_CHILDREN`] bound.
    per_substream: Vec<u32>,
    /// (peer, substream index) not asked until then.
    shunned: HashMap<(PeerId, u8), Instant>,
    /// Smoothed time from our first hearing of a piece to this peer telling us of it: how
    /// close to the source it is, as seen from here. Microseconds.
    tell_lag: HashMap<PeerId, u64>,
    /// Round-robin position among children with pushes queued.
    turn: usize,
    pub counters: PushCounters,
}

impl Push {
    /// `of` substreams; 0 turns pushing off (pull only).
    pub fn new(of: u8) -> Self {
        Push {
            of,
            parents: vec![None; of as usize],
            children: BTreeMap::new(),
            per_substream: vec![0; of as usize],
            shunned: HashMap::new(),
            tell_lag: HashMap::new(),
            turn: 0,
            counters: PushCounters::default(),
        }
    }

    pub fn is_on(&self) -> bool {
        self.of > 0
    }

    pub fn substreams(&self) -> u8 {
        self.of
    }

    pub fn index(&self, seq: u64) -> Option<usize> {
        self.is_on().then(|| (seq % self.of as u64) as usize)
    }

    // ----- child side ---------------------------------------------------------------------

    pub fn parent(&self, index: usize) -> Option<&Parent> {
        self.parents.get(index)?.as_ref()
    }

    /// Whether `peer` is our parent for the substream of `seq` (its push is welcome).
    pub fn is_parent_of(&self, peer: PeerId, seq: u64) -> bool {
        (self.index(seq)).is_some_and(|i| self.parents[i].is_some_and(|p| p.peer == peer))
    }

    /// Substreams with no parent.
    pub fn orphans(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.parents.len()).filter(|&i| self.parents[i].is_none())
    }

    /// How many of our substreams `peer` is parent of.
    pub fn parent_load(&self, peer: PeerId) -> usize {
        self.parents
            .iter()
            .flatten()
            .filter(|p| p.peer == peer)
            .count()
    }

    pub fn is_shunned(&self, peer: PeerId, index: usize, now: Instant) -> bool {
        let until = |key| self.shunned.get(&key).is_some_and(|&until| now < until);
        until((peer, index as u8)) || until((peer, ALL))
    }

    /// The parent of `index` ended the subscription: most likely it has no room for more
    /// children, so it is not asked for any substream for a while.
    pub fn refused_by(&mut self, index: usize, now: Instant) {
        if let Some(p) = self.lose_parent(index, now) {
            self.counters.parent_refusals += 1;
            self.shunned.insert((p, ALL), now + SHUN_FOR);
        }
    }

    /// We subscribed to `peer` for substream `index`, knowing of pieces up to `after_seq`.
    pub fn subscribed(&mut self, index: usize, peer: PeerId, after_seq: u64) {
        self.parents[index] = Some(Parent {
            peer,
            after_seq,
            lag_us: self.tell_lag.get(&peer).copied().unwrap_or(0),
            misses: 0,
            newest_pushed: after_seq,
        });
        self.counters.parent_changes += 1;
    }

    /// The parent of `index` is gone (it refused, dropped us, or we dropped it); it is not
    /// asked for this substream again for a while. Returns who it was.
    pub fn lose_parent(&mut self, index: usize, now: Instant) -> Option<PeerId> {
        let p = self.parents.get_mut(index)?.take()?;
        self.shunned.insert((p.peer, index as u8), now + SHUN_FOR);
        Some(p.peer)
    }

    /// A verified piece pushed by our parent, `waited` after we first heard of it.
    pub fn pushed(&mut self, seq: u64, waited: Duration) {
        self.counters.pushes_received += 1;
        let Some(i) = self.index(seq) else { return };
        if let Some(p) = &mut self.parents[i] {
            p.misses = 0;
            p.newest_pushed = p.newest_pushed.max(seq);
            p.lag_us = (p.lag_us * 7 + waited.as_micros() as u64) / 8;
        }
    }

    /// How long after first hearing of it a piece of a subscribed substream is left to the
    /// push before pull repairs it, if it is the parent's to push at all.
    pub fn grace(&self, seq: u64) -> Option<Duration> {
        let p = self.parents[self.index(seq)?]?;
        (seq > p.after_seq).then(|| {
            (Duration::from_micros(2 * p.lag_us) + Duration::from_millis(100))
                .clamp(GRACE_MIN, GRACE_MAX)
        })
    }

    /// Until when the picker leaves `seq` to the push (`None`: pull may fetch it now): until
    /// `urgent_at` if it is due (pull must still make it in time), else the grace after
    /// first hearing of it; never once the parent pushed a later piece of the substream
    /// (it skipped this one).
    pub fn awaits(
        &self,
        seq: u64,
        first_heard: Instant,
        urgent_at: Option<Instant>,
        now: Instant,
    ) -> Option<Instant> {
        let grace = self.grace(seq)?;
        let parent = self.parents[self.index(seq)?]?;
        if parent.newest_pushed > seq {
            return None;
        }
        let until = urgent_at.unwrap_or(first_heard + grace);
        (now < until).then_some(until)
    }

    /// The picker requests `seq`: if its parent should have pushed it, that is a miss.
    /// Returns the parent to replace after [`MAX_MISSES`] in a row.
    pub fn repairing(&mut self, seq: u64) -> Option<usize> {
        self.grace(seq)?;
        self.counters.repairs += 1;
        let i = self.index(seq)?;
        let p = self.parents[i].as_mut()?;
        p.misses += 1;
        (p.misses >= MAX_MISSES).then_some(i)
    }

    /// A peer told us of a piece `lag` after we first heard of it.
    pub fn told(&mut self, peer: PeerId, lag: Duration) {
        let sample = lag.as_micros() as u64;
        let l = self.tell_lag.entry(peer).or_insert(sample);
        *l = (*l * 3 + sample) / 4;
    }

    pub fn tell_lag(&self, peer: PeerId) -> Option<u64> {
        self.tell_lag.get(&peer).copied()
    }

    // ----- parent side --------------------------------------------------------------------

    /// Whether `peer` subscribed to substream `index` from us.
    pub fn is_child(&self, peer: PeerId, index: usize) -> bool {
        (self.children.get(&peer)).is_some_and(|c| c.subscribed & (1 << index) != 0)
    }

    /// Substream subscriptions held by our children.
    pub fn child_slots(&self) -> usize {
        self.per_substream.iter().map(|&n| n as usize).sum()
    }

    pub fn children_of(&self, index: usize) -> usize {
        self.per_substream.get(index).map_or(0, |&n| n as usize)
    }

    /// The children of substream `index`.
    pub fn children(&self, index: usize) -> impl Iterator<Item = PeerId> + '_ {
        (self.children.iter())
            .filter(move |(_, c)| c.subscribed & (1 << index) != 0)
            .map(|(&id, _)| id)
    }

    pub fn add_child(&mut self, peer: PeerId, index: usize) {
        let c = self.children.entry(peer).or_default();
        if c.subscribed & (1 << index) == 0 {
            c.subscribed |= 1 << index;
            self.per_substream[index] += 1;
        }
    }

    pub fn remove_child(&mut self, peer: PeerId, index: usize) {
        let of = self.of as u64;
        let Some(c) = self.children.get_mut(&peer) else {
            return;
        };
        if c.subscribed & (1 << index) != 0 {
            c.subscribed &= !(1 << index);
            self.per_substream[index] -= 1;
            c.queue.retain(|&(seq, _)| seq % of != index as u64);
        }
        if c.subscribed == 0 {
            self.children.remove(&peer);
        }
    }

    /// Queues `seq` for `child`.
    pub fn queue(&mut self, child: PeerId, seq: u64, now: Instant) {
        if let Some(c) = self.children.get_mut(&child) {
            c.queue.push_back((seq, now));
        }
    }

    pub fn was_pushed(&self, child: PeerId, seq: u64) -> bool {
        (self.children.get(&child)).is_some_and(|c| c.sent.contains(&seq))
    }

    pub fn is_queued(&self, child: PeerId, seq: u64) -> bool {
        (self.children.get(&child)).is_some_and(|c| c.queue.iter().any(|&(s, _)| s == seq))
    }

    /// The next push to send: children in turn. Pushes that waited past [`PUSH_WAIT`] are
    /// dropped; a child that had [`MAX_DROPS`] dropped in a row is returned in `overloaded`
    /// with the substream to give up.
    pub fn next(
        &mut self,
        now: Instant,
        can_send: impl Fn(PeerId) -> bool,
        overloaded: &mut Vec<(PeerId, usize)>,
    ) -> Option<(PeerId, u64)> {
        let waiting: Vec<PeerId> = (self.children.iter())
            .filter(|(id, c)| !c.queue.is_empty() && can_send(**id))
            .map(|(&id, _)| id)
            .collect();
        if waiting.is_empty() {
            return None;
        }
        let n = waiting.len();
        for k in 0..n {
            let id = waiting[(self.turn + k) % n];
            let c = self.children.get_mut(&id).unwrap();
            while let Some(&(seq, at)) = c.queue.front() {
                if now < at + PUSH_WAIT {
                    break;
                }
                c.queue.pop_front();
                c.drops += 1;
                self.counters.pushes_dropped += 1;
                if c.drops >= MAX_DROPS {
                    c.drops = 0;
                    overloaded.push((id, (seq % self.of as u64) as usize));
                }
            }
            if let Some(&(seq, _)) = c.queue.front() {
                self.turn = self.turn.wrapping_add(1);
                return Some((id, seq));
            }
        }
        None
    }

    /// `seq` went to `child`.
    pub fn sent(&mut self, child: PeerId, seq: u64, now: Instant) {
        if let Some(c) = self.children.get_mut(&child) {
            if let Some(&(_, at)) = c.queue.iter().find(|&&(s, _)| s == seq) {
                self.counters.push_wait_us += (now - at).as_micros() as u64;
            }
            c.queue.retain(|&(s, _)| s != seq);
            c.sent.insert(seq);
            c.drops = 0;
        }
        self.counters.pushes_sent += 1;
    }

    /// `seq` cannot go to `child` any more (gone from the window): dropped quietly.
    pub fn unqueue(&mut self, child: PeerId, seq: u64) {
        if let Some(c) = self.children.get_mut(&child) {
            c.queue.retain(|&(s, _)| s != seq);
        }
    }

    /// Forgets what was pushed below `seq` (our window moved on).
    pub fn prune_below(&mut self, seq: u64) {
        for c in self.children.values_mut() {
            c.sent = c.sent.split_off(&seq);
        }
    }

    /// The connection is gone. Returns the substreams it was our parent of.
    pub fn forget_peer(&mut self, peer: PeerId) -> Vec<usize> {
        if let Some(c) = self.children.remove(&peer) {
            for i in 0..self.per_substream.len() {
                if c.subscribed & (1 << i) != 0 {
                    self.per_substream[i] -= 1;
                }
            }
        }
        self.tell_lag.remove(&peer);
        self.shunned.retain(|&(p, _), _| p != peer);
        let mut lost = Vec::new();
        for (i, slot) in self.parents.iter_mut().enumerate() {
            if slot.is_some_and(|p| p.peer == peer) {
                *slot = None;
                lost.push(i);
            }
        }
        lost
    }

    /// Forgets shuns that ended.
    pub fn expire_shuns(&mut self, now: Instant) {
        self.shunned.retain(|_, &mut until| now < until);
    }

    pub fn substream(&self, index: usize) -> Substream {
        Substream {
            index: index as u8,
            of: self.of,
        }
    }
}

// ----- the core's side: subscriptions on the wire, pushing, choosing parents ----------------

impl Swarm {
    /// A peer asks us to push it a substream: taken while we have room for it, else refused
    /// with an UNSUBSCRIBE.
    pub(super) fn on_subscribe(&mut self, id: PeerId, sub: Substream) {
        let i = sub.index as usize;
        if sub.of == self.push.substreams() && self.push.is_child(id, i) {
            return;
        }
        let taken = sub.of == self.push.substreams()
            && self.upload.serves
            // Never a child of our own child: the substream would go round in a loop.
            && self.push.parent(i).is_none_or(|p| p.peer != id)
            && self.admit_child(id, i);
        if taken {
            self.push.add_child(id, i);
        } else if let Some(p) = self.peers.get_mut(id) {
            send_live(p, LiveMessage::Unsubscribe(sub));
        }
    }

    /// Whether there is room for one more child of substream `i`. The injector takes
    /// [`ORIGIN_CHILDREN`] per substream, trusted seedboxes and seedboxes before the rest (a
    /// receiver makes room for them); any other node as many as its upload can push.
    fn admit_child(&mut self, id: PeerId, i: usize) -> bool {
        let preferred = |p: &Peer| p.trusted || p.is_seed;
        let Some(newcomer) = self.peers.get(id) else {
            return false;
        };
        if self.config.role != Role::Injector {
            return self.push.child_slots() < self.push_capacity();
        }
        if self.push.children_of(i) < ORIGIN_CHILDREN {
            return true;
        }
        if !preferred(newcomer) {
            return false;
        }
        let displaced =
            (self.push.children(i)).find(|&c| self.peers.get(c).is_none_or(|p| !preferred(p)));
        let Some(displaced) = displaced else {
            return false;
        };
        self.push.remove_child(displaced, i);
        let sub = self.push.substream(i);
        if let Some(p) = self.peers.get_mut(displaced) {
            send_live(p, LiveMessage::Unsubscribe(sub));
        }
        true
    }

    /// Children we can push to, in substreams: [`PUSH_SHARE`] of the upload limit over one
    /// substream's rate (measured from the pieces held), or [`MAX_CHILD_SLOTS`] unlimited.
    fn push_capacity(&self) -> usize {
        let Some(limit) = self.config.upload_limit else {
            return MAX_CHILD_SLOTS;
        };
        let (Some(interval_us), false) = (self.store.piece_interval_us(), self.store.is_empty())
        else {
            return 0;
        };
        let piece = self.store.bytes() as f64 / self.store.len() as f64;
        let substream_rate =
            piece * 1e6 / interval_us.max(1) as f64 / self.push.substreams() as f64;
        ((limit as f64 * PUSH_SHARE / substream_rate) as usize).min(MAX_CHILD_SLOTS)
    }

    /// From a child: it wants no more of the substream. From our parent: it pushes it no
    /// more (or never took the subscription); another is chosen.
    pub(super) fn on_unsubscribe(&mut self, id: PeerId, sub: Substream) {
        if sub.of != self.push.substreams() {
            return;
        }
        let i = sub.index as usize;
        if self.push.parent(i).is_some_and(|p| p.peer == id) {
            self.push.refused_by(i, self.now);
            self.timers.set_earliest(Timer::Push, self.now);
        }
        self.push.remove_child(id, i);
    }

    /// A piece we just verified or made: queued for the children of its substream that lack
    /// it. They are not told of it by HAVE: the piece itself tells them.
    pub(super) fn push_to_children(&mut self, seq: u64) {
        let Some(i) = self.push.index(seq) else {
            return;
        };
        let now = self.now;
        let children: Vec<PeerId> = self.push.children(i).collect();
        for child in children {
            let Some(p) = self.peers.get_mut(child) else {
                continue;
            };
            if p.has(seq) || p.given.contains(&seq) || p.queue.iter().any(|&(s, _)| s == seq) {
                continue;
            }
            p.told.insert(seq);
            self.push.queue(child, seq, now);
        }
    }

    /// Sends queued pushes as the upload limit allows. Returns false when the limit stopped
    /// it (the Upload timer is set).
    pub(super) fn send_pushes(&mut self) -> bool {
        let now = self.now;
        let mut overloaded = Vec::new();
        let mut open = true;
        loop {
            let (peers, backlog) = (&self.peers, self.config.send_backlog);
            let can_send = |id| peers.get(id).is_some_and(|p| can_send_to(backlog, p));
            let Some((child, seq)) = self.push.next(now, can_send, &mut overloaded) else {
                break;
            };
            let (Some(piece), true) = (self.store.get(seq), self.peers.contains(child)) else {
                self.push.unqueue(child, seq);
                continue;
            };
            let len = piece.header().payload_len as u64;
            if let Err(at) = self.upload.take(len, now) {
                self.timers.set(Timer::Upload, Some(at));
                open = false;
                break;
            }
            let p = self.peers.get_mut(child).unwrap();
            send_piece(p, piece);
            p.up_recent += len;
            self.push.sent(child, seq, now);
            self.stats.bytes_up += len;
            self.stats.pieces_sent += 1;
        }
        // A child whose pushes keep waiting too long is more than our upload carries.
        for (child, i) in overloaded {
            self.push.remove_child(child, i);
            let sub = self.push.substream(i);
            if let Some(p) = self.peers.get_mut(child) {
                send_live(p, LiveMessage::Unsubscribe(sub));
            }
        }
        open
    }

    /// Subscribes each substream without a parent to the best peer for it: seeds and
    /// receivers only (the injector makes every piece). Best: for a receiver not the
    /// injector (it feeds the first tier only) unless nobody else can; then the peer that is
    /// parent of the fewest of our substreams already (independent parents); then the one
    /// that tells us of new pieces soonest (closest to the source); then chance.
    pub(super) fn choose_parents(&mut self) {
        self.timers.set(Timer::Push, None);
        let now = self.now;
        if !self.push.is_on() || matches!(self.role, RoleState::Injector { .. }) {
            return;
        }
        self.push.expire_shuns(now);
        let orphans: Vec<usize> = self.push.orphans().collect();
        if orphans.is_empty() {
            return;
        }
        let seed = self.config.role == Role::Seed;
        let newest_known = self
            .known
            .rev_upto(u64::MAX)
            .next()
            .map_or(0, |(seq, _)| seq);
        for i in orphans {
            let mut best: Option<(PeerId, (bool, usize, u64, u32))> = None;
            for (id, p) in self.peers.iter() {
                let Some(lag) = self.push.tell_lag(id) else {
                    continue; // it never told us of a piece: it serves nothing, or not yet
                };
                if !p.is_active()
                    || p.standing.is_benched(now)
                    || self.push.is_child(id, i)
                    || self.push.is_shunned(id, i, now)
                {
                    continue;
                }
                let key = (
                    p.is_source != seed,
                    self.push.parent_load(id),
                    lag / 20_000,
                    rand::Rng::random(&mut self.rng),
                );
                if best.as_ref().is_none_or(|(_, k)| key < *k) {
                    best = Some((id, key));
                }
            }
            let Some((id, _)) = best else {
                continue;
            };
            let sub = self.push.substream(i);
            send_live(self.peers.get_mut(id).unwrap(), LiveMessage::Subscribe(sub));
            self.push.subscribed(i, id, newest_known);
        }
        if self.push.orphans().next().is_some() {
            self.timers.set(Timer::Push, Some(now + CHOOSE_EVERY));
        }
    }

    /// The picker asks for `seq`: a repair, if the push should have brought it; a parent
    /// that leaves too many to pull is replaced.
    pub(super) fn note_repair(&mut self, seq: u64) {
        let Some(i) = self.push.repairing(seq) else {
            return;
        };
        let sub = self.push.substream(i);
        self.push.counters.parents_replaced += 1;
        if let Some(parent) = self.push.lose_parent(i, self.now)
            && let Some(p) = self.peers.get_mut(parent)
        {
            send_live(p, LiveMessage::Unsubscribe(sub));
        }
        self.timers.set_earliest(Timer::Push, self.now);
    }
}

#[cfg(test)]
mod tests;
