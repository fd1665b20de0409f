//! The peer table: per-connection state, and which connections an event touched.
//!
//! Every mutable access marks the peer touched; after the event the core flushes the
//! outboxes and re-files the deadlines of just those peers, so the work after an event is
//! proportional to what it changed, not to the number of connections.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::download::Requested;
use super::upload::RequestQueue;

/// A connection handle chosen by the core; the driver maps it to a socket.
pub type PeerId = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the peer's BitTorrent handshake.
    Handshake,
    /// Waiting for the peer's BEP 10 extended handshake.
    Extended,
    Active,
}

#[derive(Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    pub outbound: bool,
    pub phase: Phase,
    pub inbuf: BytesMut,
    pub outbox: Outbox,
    pub remote_id: Option<[u8; 20]>,
    /// The id this peer wants live messages sent with.
    pub live_id: u8,
    /// Where the peer accepts connections (its address for tracker lists and bans).
    pub listen_addr: Option<SocketAddr>,
    pub is_source: bool,
    pub is_seed: bool,
    pub trusted: bool,
    pub am_choking: bool,
    pub peer_choking: bool,
    pub peer_interested: bool,
    /// Pieces the peer says it holds (changed only through the table, which counts holders
    /// per piece), and the start of its window.
    haves: BTreeSet<u64>,
    pub window_start: u64,
    /// Pieces we told this peer we hold.
    pub told: BTreeSet<u64>,
    /// Pieces we sent this peer: it holds them, so asking again is abuse.
    pub given: BTreeSet<u64>,
    /// Requests for pieces in `given`; the peer is banned past [`MAX_REPEATED_REQUESTS`].
    pub repeated_requests: u32,
    /// Our requests to this peer: when we sent each and when we give up on it (changed only
    /// by the downloader, which mirrors them).
    pub requested: Requested,
    /// Pieces this peer failed to deliver in time (or rejected), and until when it is not
    /// asked for them again.
    pub refused: HashMap<u64, Instant>,
    /// The peer's requests to us, with their arrival time (changed only by the uploader,
    /// which mirrors whether there are any).
    pub queue: RequestQueue,
    /// Payload bytes received from / sent to this peer since the last rechoke.
    pub down_recent: u64,
    pub up_recent: u64,
    pub last_heard: Instant,
    pub last_sent: Instant,
    pub connected_at: Instant,
    /// Smoothed request-to-piece time, microseconds.
    pub srtt_us: Option<u64>,
    /// The peer's standing, from what it delivered against what it claimed.
    pub standing: Standing,
    /// Bytes transmitted to it that the driver has not reported sent (flow control).
    pub unsent: usize,
    /// Peer exchange with it.
    pub pex: super::pex::PeerPex,
}

/// How far a peer's word goes. Requests in flight to it are bounded by a window that grows
/// by one for each piece it delivers and halves for each request it refuses or lets time out
/// (as TCP's congestion window), so a peer that claims much and delivers little is asked
/// little. A peer that leaves [`MAX_UNANSWERED`] requests in a row unanswered is not asked
/// at all for a while, longer each time (it may still be served: a peer without upload is
/// honest, and needs the stream too). Claims beyond what the injector can have made end the
/// connection (see [`MAX_IMPLAUSIBLE_CLAIMS`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Standing {
    pub request_window: usize,
    /// Requests that timed out since the last piece it delivered or its last bench.
    pub unanswered: u32,
    /// Not asked for anything until then; how many times it was benched.
    pub benched_until: Option<Instant>,
    pub benches: u32,
    /// Claims of pieces beyond the horizon.
    pub implausible: u32,
    /// It has delivered a verified piece on this connection.
    pub proven: bool,
}

impl Default for Standing {
    fn default() -> Self {
        Standing {
            request_window: INITIAL_REQUEST_WINDOW,
            unanswered: 0,
            benched_until: None,
            benches: 0,
            implausible: 0,
            proven: false,
        }
    }
}

impl Standing {
    /// A request was answered with a verified piece.
    pub fn delivered(&mut self) {
        self.proven = true;
        self.unanswered = 0;
        self.request_window = (self.request_window + 1).min(MAX_REQUEST_WINDOW);
    }

    /// A request was refused: an honest, prompt answer, but no piece.
    pub fn refused(&mut self) {
        self.request_window = (self.request_window / 2).max(1);
    }

    /// A request went unanswered in time. Returns whether that benched the peer.
    pub fn timed_out(&mut self, now: Instant) -> bool {
        self.refused();
        self.unanswered += 1;
        let allowed = if self.proven {
            MAX_UNANSWERED
        } else {
            MAX_UNANSWERED_UNPROVEN
        };
        if self.unanswered < allowed {
            return false;
        }
        self.unanswered = 0;
        self.benches += 1;
        let bench = BENCH_FIRST * 2u32.pow(self.benches.min(8) - 1);
        self.benched_until = Some(now + bench.min(BENCH_MAX));
        true
    }

    pub fn is_benched(&self, now: Instant) -> bool {
        self.benched_until.is_some_and(|until| now < until)
    }

    /// A request of ours for a piece it claimed went unanswered, and it has delivered none: a
    /// staller, or an honest peer yet to show it is one. It gets no upload slot (see
    /// `choker`) and is served last, so that what it takes comes out of what nobody else
    /// needs; it is still asked now and then, and one delivered piece clears it.
    pub fn is_suspect(&self) -> bool {
        !self.proven && (self.unanswered > 0 || self.benches > 0)
    }

    /// `n` claims beyond the horizon. Returns whether that is too many to keep the peer.
    pub fn lied(&mut self, n: u32) -> bool {
        self.implausible = self.implausible.saturating_add(n);
        self.implausible > MAX_IMPLAUSIBLE_CLAIMS
    }
}

/// Bytes queued for one connection, in order. Small messages are encoded into one buffer; a
/// piece goes out as the shared bytes it is stored in, so sending it copies nothing.
#[derive(Debug, Default)]
pub struct Outbox {
    ready: Vec<Bytes>,
    tail: BytesMut,
}

impl Outbox {
    /// Where the next small message is encoded.
    pub fn buf(&mut self) -> &mut BytesMut {
        &mut self.tail
    }

    /// Queues shared bytes after everything encoded so far.
    pub fn push_shared(&mut self, bytes: Bytes) {
        if !self.tail.is_empty() {
            self.ready.push(self.tail.split().freeze());
        }
        self.ready.push(bytes);
    }

    pub fn is_empty(&self) -> bool {
        self.ready.is_empty() && self.tail.is_empty()
    }

    /// Bytes queued.
    pub fn len(&self) -> usize {
        self.ready.iter().map(Bytes::len).sum::<usize>() + self.tail.len()
    }

    /// Everything queued, in order, leaving the outbox empty.
    pub fn take(&mut self) -> Vec<Bytes> {
        let mut all = std::mem::take(&mut self.ready);
        if !self.tail.is_empty() {
            all.push(self.tail.split().freeze());
        }
        all
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sent {
    pub at: Instant,
    pub expires: Instant,
}

pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
pub const KEEPALIVE: Duration = Duration::from_secs(30);
/// A request we queued longer than this is refused, so the peer asks someone else in time.
pub const MAX_QUEUE_WAIT: Duration = Duration::from_millis(500);

/// How long a peer that failed a request is not asked for that piece again.
pub const REFUSE_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// Requests for pieces already given that a peer may make before it is banned. An honest
/// peer makes none (a request it gave up on is cancelled before the piece goes, or the piece
/// arrives and is kept); a few are forgiven all the same.
pub const MAX_REPEATED_REQUESTS: u32 = 8;

/// Most HAVE entries remembered per peer; older ones are dropped first. A 30 s window of a
/// 20 Mbit/s stream in 32 KiB pieces is about 2,300.
pub const MAX_PEER_HAVES: usize = 4096;

/// Requests in flight to a new peer, and to any peer at most (see [`Standing`]).
pub const INITIAL_REQUEST_WINDOW: usize = 6;
pub const MAX_REQUEST_WINDOW: usize = 6;
/// Requests in a row a peer may leave unanswered (timed out, not refused) before it is not
/// asked for a while: it claims pieces it does not deliver. The first such bench, and the
/// longest (each doubles the one before).
pub const MAX_UNANSWERED: u32 = 8;
/// The same for a peer that has not delivered a piece yet: it has no record to lose.
pub const MAX_UNANSWERED_UNPROVEN: u32 = 2;
pub const BENCH_FIRST: Duration = Duration::from_secs(5);
pub const BENCH_MAX: Duration = Duration::from_secs(120);
/// Claims of pieces beyond the horizon a peer may make before it is banned. An honest peer
/// makes none; a few are forgiven for a clock that jumped.
pub const MAX_IMPLAUSIBLE_CLAIMS: u32 = 16;

impl Peer {
    pub fn new(addr: SocketAddr, outbound: bool, now: Instant) -> Self {
        Peer {
            addr,
            outbound,
            phase: Phase::Handshake,
            inbuf: BytesMut::new(),
            outbox: Outbox::default(),
            remote_id: None,
            live_id: 0,
            listen_addr: outbound.then_some(addr),
            is_source: false,
            is_seed: false,
            trusted: false,
            am_choking: true,
            peer_choking: true,
            peer_interested: false,
            haves: BTreeSet::new(),
            window_start: 0,
            told: BTreeSet::new(),
            given: BTreeSet::new(),
            repeated_requests: 0,
            requested: Requested::default(),
            refused: HashMap::new(),
            queue: RequestQueue::default(),
            down_recent: 0,
            up_recent: 0,
            last_heard: now,
            last_sent: now,
            connected_at: now,
            srtt_us: None,
            standing: Standing::default(),
            unsent: 0,
            pex: Default::default(),
        }
    }

    /// Whether another request may go to this peer now.
    pub fn has_request_room(&self, now: Instant) -> bool {
        self.requested.len() < self.standing.request_window && !self.standing.is_benched(now)
    }

    /// The newest piece the peer claims.
    pub fn newest_claim(&self) -> Option<u64> {
        self.haves.last().copied()
    }

    pub fn is_active(&self) -> bool {
        self.phase == Phase::Active
    }

    /// Whether the peer told us it holds `seq`.
    pub fn has(&self, seq: u64) -> bool {
        self.haves.contains(&seq)
    }

    fn learn_have(&mut self, seq: u64, holders: &mut Holders) {
        if seq >= self.window_start && self.haves.insert(seq) {
            holders.add(seq);
            while self.haves.len() > MAX_PEER_HAVES {
                let oldest = self.haves.pop_first().unwrap();
                holders.sub(oldest);
            }
        }
    }

    fn set_window_start(&mut self, start: u64, holders: &mut Holders) {
        if start > self.window_start {
            self.window_start = start;
            self.forget_haves_below(start, holders);
        }
    }

    fn forget_haves_below(&mut self, seq: u64, holders: &mut Holders) {
        let kept = self.haves.split_off(&seq);
        for old in std::mem::replace(&mut self.haves, kept) {
            holders.sub(old);
        }
    }

    /// Forgets bookkeeping for pieces below our own window.
    fn prune_below(&mut self, seq: u64, holders: &mut Holders) {
        self.told = self.told.split_off(&seq);
        self.given = self.given.split_off(&seq);
        self.refused.retain(|&s, _| s >= seq);
        if seq > self.window_start {
            self.forget_haves_below(seq, holders);
        }
    }

    pub fn refuse(&mut self, seq: u64, now: Instant) {
        self.refused.insert(seq, now + REFUSE_FOR);
    }

    pub fn refuses(&self, seq: u64, now: Instant) -> bool {
        self.refused.get(&seq).is_some_and(|&until| now < until)
    }

    /// The next instant this connection needs attention: a handshake or idle timeout, a
    /// keep-alive, a request to give up on, or a queued request waiting too long.
    pub fn deadline(&self) -> Instant {
        if !self.is_active() {
            return self.connected_at + HANDSHAKE_TIMEOUT;
        }
        let mut t = (self.last_heard + IDLE_TIMEOUT).min(self.last_sent + KEEPALIVE);
        if let Some(first) = self.requested.values().map(|s| s.expires).min() {
            t = t.min(first);
        }
        if let Some((_, at)) = self.queue.front() {
            t = t.min(*at + MAX_QUEUE_WAIT);
        }
        if let Some(at) = self.pex.deadline() {
            t = t.min(at);
        }
        t
    }

    pub fn note_rtt(&mut self, sample_us: u64) {
        self.srtt_us = Some(match self.srtt_us {
            None => sample_us,
            Some(s) => (s * 7 + sample_us) / 8,
        });
    }
}

/// The connections of one node, ordered by id so that every decision is deterministic.
#[derive(Debug, Default)]
pub struct PeerTable {
    peers: BTreeMap<PeerId, Peer>,
    next_id: PeerId,
    /// Peers changed by the current event: their outbox and deadline need a look.
    touched: BTreeSet<PeerId>,
    /// Each peer's deadline, filed by time.
    deadlines: BTreeSet<(Instant, PeerId)>,
    filed: HashMap<PeerId, Instant>,
    holders: Holders,
    /// A peer has ever dialled us: we can be dialled.
    inbound_seen: bool,
}

/// How many connected peers told us they hold each piece: the picker's rarest-first count,
/// kept as HAVEs come and go instead of counted over every peer at every pick.
#[derive(Debug, Default)]
pub struct Holders {
    counts: HashMap<u64, u32>,
    /// Pieces whose last holder went: the core forgets their claims.
    orphaned: Vec<u64>,
}

impl Holders {
    pub fn count(&self, seq: u64) -> u32 {
        self.counts.get(&seq).copied().unwrap_or(0)
    }

    fn add(&mut self, seq: u64) {
        *self.counts.entry(seq).or_default() += 1;
    }

    fn sub(&mut self, seq: u64) {
        if let Some(n) = self.counts.get_mut(&seq) {
            *n -= 1;
            if *n == 0 {
                self.counts.remove(&seq);
                self.orphaned.push(seq);
            }
        }
    }
}

impl PeerTable {
    pub fn insert(&mut self, peer: Peer) -> PeerId {
        self.next_id += 1;
        let id = self.next_id;
        self.inbound_seen |= !peer.outbound;
        self.peers.insert(id, peer);
        self.touched.insert(id);
        id
    }

    pub fn inbound_seen(&self) -> bool {
        self.inbound_seen
    }

    pub fn remove(&mut self, id: PeerId) -> Option<Peer> {
        if let Some(at) = self.filed.remove(&id) {
            self.deadlines.remove(&(at, id));
        }
        self.touched.remove(&id);
        let p = self.peers.remove(&id)?;
        for &seq in &p.haves {
            self.holders.sub(seq);
        }
        Some(p)
    }

    /// A peer's HAVE: the start of its window, and pieces it holds.
    pub fn learn_haves(&mut self, id: PeerId, window_start: u64, seqs: impl Iterator<Item = u64>) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        self.touched.insert(id);
        p.set_window_start(window_start, &mut self.holders);
        for seq in seqs {
            p.learn_have(seq, &mut self.holders);
        }
    }

    /// Forgets what every peer said of pieces below `seq` (our window moved on).
    pub fn prune_below(&mut self, seq: u64) {
        self.touched.extend(self.peers.keys().copied());
        for p in self.peers.values_mut() {
            p.prune_below(seq, &mut self.holders);
        }
    }

    pub fn holders(&self) -> &Holders {
        &self.holders
    }

    /// Pieces no connected peer claims any more, since the last call.
    pub fn take_orphaned(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.holders.orphaned)
    }

    /// The live edge as the connected peers tell it: of the newest claims of the active peers
    /// in good standing, the highest that more than a third of them reach, so that up to a
    /// third of liars cannot move it up, and peers that lag (new ones) do not pull it down.
    pub fn told_edge(&self, now: Instant) -> Option<u64> {
        let mut newest: Vec<u64> = (self.peers.values())
            .filter(|p| p.is_active() && !p.standing.is_benched(now))
            .filter_map(|p| p.newest_claim())
            .collect();
        newest.sort_unstable();
        let liars = newest.len() / 3;
        newest.iter().rev().nth(liars).copied()
    }

    pub fn get(&self, id: PeerId) -> Option<&Peer> {
        self.peers.get(&id)
    }

    /// The peer, marked touched.
    pub fn get_mut(&mut self, id: PeerId) -> Option<&mut Peer> {
        let p = self.peers.get_mut(&id)?;
        self.touched.insert(id);
        Some(p)
    }

    pub fn contains(&self, id: PeerId) -> bool {
        self.peers.contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (PeerId, &Peer)> {
        self.peers.iter().map(|(id, p)| (*id, p))
    }

    pub fn values(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values()
    }

    /// Every peer, each marked touched: for the rare events that concern all of them.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (PeerId, &mut Peer)> {
        self.touched.extend(self.peers.keys().copied());
        self.peers.iter_mut().map(|(id, p)| (*id, p))
    }

    pub fn ids(&self) -> Vec<PeerId> {
        self.peers.keys().copied().collect()
    }

    /// Read-only view for the picker and choker.
    pub fn map(&self) -> &BTreeMap<PeerId, Peer> {
        &self.peers
    }

    /// Peers whose deadline has come, earliest first.
    pub fn due(&self, now: Instant) -> Vec<PeerId> {
        self.deadlines
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, id)| *id)
            .collect()
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// The peers touched by the current event, in id order.
    pub fn touched(&self) -> Vec<PeerId> {
        self.touched.iter().copied().collect()
    }

    /// The peers touched since the last call, in id order; their deadlines are re-filed.
    pub fn take_touched(&mut self) -> Vec<PeerId> {
        let touched = std::mem::take(&mut self.touched);
        for &id in &touched {
            let Some(p) = self.peers.get(&id) else {
                continue;
            };
            let at = p.deadline();
            if let Some(old) = self.filed.insert(id, at) {
                self.deadlines.remove(&(old, id));
            }
            self.deadlines.insert((at, id));
        }
        touched.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_follow_what_changed() {
        let t0 = Instant::now();
        let mut table = PeerTable::default();
        let a = table.insert(Peer::new("10.0.0.1:1".parse().unwrap(), true, t0));
        let b = table.insert(Peer::new("10.0.0.2:1".parse().unwrap(), false, t0));
        assert_eq!(table.take_touched(), vec![a, b]);
        assert_eq!(table.next_deadline(), Some(t0 + HANDSHAKE_TIMEOUT));
        assert!(table.due(t0).is_empty());
        assert_eq!(table.due(t0 + HANDSHAKE_TIMEOUT), vec![a, b]);

        let p = table.get_mut(a).unwrap();
        p.phase = Phase::Active;
        p.requested.insert_alone(
            5,
            Sent {
                at: t0,
                expires: t0 + Duration::from_millis(300),
            },
        );
        assert_eq!(table.take_touched(), vec![a]);
        assert_eq!(table.due(t0 + Duration::from_millis(300)), vec![a]);
        assert!(table.take_touched().is_empty(), "reads touch nothing");

        table.remove(a);
        assert_eq!(table.due(t0 + HANDSHAKE_TIMEOUT), vec![b]);
        let _ = table.iter_mut().count();
        assert_eq!(table.take_touched(), vec![b]);
    }

    #[test]
    fn a_peer_that_never_delivered_is_benched_after_fewer_unanswered_requests() {
        let t0 = Instant::now();
        let mut st = Standing::default();
        for _ in 0..MAX_UNANSWERED_UNPROVEN - 1 {
            assert!(!st.timed_out(t0));
        }
        assert!(st.timed_out(t0), "it has no record to lose");
        assert!(st.is_benched(t0));
        // Once it delivers, it is given the longer rope.
        let mut st = Standing::default();
        st.delivered();
        for _ in 0..MAX_UNANSWERED - 1 {
            assert!(!st.timed_out(t0));
        }
        assert!(st.timed_out(t0));
    }

    #[test]
    fn standing_grows_with_deliveries_halves_with_failures_and_benches_for_longer_each_time() {
        let t0 = Instant::now();
        let mut st = Standing::default();
        assert_eq!(st.request_window, INITIAL_REQUEST_WINDOW);
        st.refused();
        st.refused();
        assert_eq!(st.request_window, 1, "halved, never below one");
        st.delivered();
        assert_eq!(st.request_window, 2);
        for _ in 0..10 {
            st.delivered();
        }
        assert_eq!(st.request_window, MAX_REQUEST_WINDOW);
        // 7 timeouts, a delivery: the count starts over.
        for _ in 0..MAX_UNANSWERED - 1 {
            assert!(!st.timed_out(t0));
        }
        st.delivered();
        assert_eq!(st.unanswered, 0);
        for _ in 0..MAX_UNANSWERED - 1 {
            assert!(!st.timed_out(t0));
        }
        assert!(st.timed_out(t0), "the 8th in a row benches");
        assert!(st.is_benched(t0 + BENCH_FIRST - Duration::from_millis(1)));
        assert!(!st.is_benched(t0 + BENCH_FIRST));
        let t1 = t0 + BENCH_FIRST;
        for _ in 0..MAX_UNANSWERED {
            st.timed_out(t1);
        }
        assert_eq!(
            st.benched_until,
            Some(t1 + 2 * BENCH_FIRST),
            "twice as long"
        );
        for _ in 0..10 * MAX_UNANSWERED {
            st.timed_out(t1);
        }
        assert_eq!(st.benched_until, Some(t1 + BENCH_MAX), "at most BENCH_MAX");
        // Lies: 16 are forgiven, the 17th is not.
        assert!(!st.lied(16));
        assert!(st.lied(1));
    }

    #[test]
    fn the_told_edge_is_the_highest_claim_that_more_than_a_third_reach() {
        let t0 = Instant::now();
        let mut table = PeerTable::default();
        let newest = [100u64, 101, 102, 103, 1_000_000, 2_000_000];
        for (i, &n) in newest.iter().enumerate() {
            let mut p = Peer::new(SocketAddr::from(([10, 0, 0, i as u8], 1)), true, t0);
            p.phase = Phase::Active;
            let id = table.insert(p);
            table.learn_haves(id, 0, [n - 1, n].into_iter());
        }
        // Six peers, two liars far ahead: the third highest is honest.
        assert_eq!(table.told_edge(t0), Some(103));
        // A benched peer's claims do not count: five left, one liar, the second highest.
        let liar = table.ids()[5];
        table.get_mut(liar).unwrap().standing.benched_until = Some(t0 + BENCH_FIRST);
        assert_eq!(table.told_edge(t0), Some(103));
        table.remove(table.ids()[4]);
        assert_eq!(table.told_edge(t0), Some(102), "of four, one may lie");
        assert_eq!(PeerTable::default().told_edge(t0), None);
    }

    #[test]
    fn an_active_peer_wakes_for_keepalive_and_queued_requests() {
        let t0 = Instant::now();
        let mut p = Peer::new("10.0.0.1:1".parse().unwrap(), true, t0);
        p.phase = Phase::Active;
        assert_eq!(p.deadline(), t0 + KEEPALIVE);
        p.queue.push_alone(9, t0 + Duration::from_secs(1));
        assert_eq!(p.deadline(), t0 + Duration::from_secs(1) + MAX_QUEUE_WAIT);
    }

    #[test]
    fn holder_counts_match_a_recount_through_haves_window_moves_prunes_and_leaves() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let t0 = Instant::now();
        let mut table = PeerTable::default();
        let mut ids = Vec::new();
        for step in 0..4000u64 {
            let base = step / 8; // the stream moves on
            match rng.random_range(0..10) {
                0 => {
                    let addr = SocketAddr::from(([10, 0, 0, (step % 250) as u8], 1));
                    ids.push(table.insert(Peer::new(addr, true, t0)));
                }
                1 if !ids.is_empty() => {
                    let i = rng.random_range(0..ids.len());
                    table.remove(ids.swap_remove(i));
                }
                2 => table.prune_below(base.saturating_sub(20)),
                _ if !ids.is_empty() => {
                    let id = ids[rng.random_range(0..ids.len())];
                    let start = base.saturating_sub(rng.random_range(0..30));
                    let seqs: Vec<u64> = (0..rng.random_range(0..5))
                        .map(|_| base.saturating_sub(40) + rng.random_range(0..60))
                        .collect();
                    table.learn_haves(id, start, seqs.into_iter());
                }
                _ => {}
            }
            for seq in base.saturating_sub(50)..base + 30 {
                let recount = table.values().filter(|p| p.has(seq)).count() as u32;
                assert_eq!(
                    table.holders().count(seq),
                    recount,
                    "seq {seq} at step {step}"
                );
            }
        }
        assert!(table.holders().counts.values().all(|&n| n > 0));
    }
}
