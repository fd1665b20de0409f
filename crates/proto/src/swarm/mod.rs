//! The sans-IO swarm core.
//!
//! [`Swarm`] owns every protocol decision of one node (injector, seedbox or receiver) and no
//! I/O. The driver feeds it `(now, event)`: a connection opened or closed, bytes received, a
//! timer, a new local piece. It answers with [`Output`]s (bytes to send, connections to open or
//! close, verified stream to hand on) and [`Swarm::poll_timeout`]. It never reads a clock,
//! spawns, sleeps or draws from a global RNG, so tests and the simulator drive it with virtual
//! time and a seed, and every run replays exactly.
//!
//! Contract (as in quinn-proto and str0m): after any `handle_*` call, drain `poll_output` until
//! it returns `None`, then sleep until `poll_timeout` and call `handle_timeout`.

pub mod choker;
mod download;
mod messages;
pub mod peer;
pub mod picker;
pub mod playout;
pub mod ratelimit;
pub mod status;
pub mod store;
mod upload;
pub use crate::wire;
pub use crate::wire::Role;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ed25519_dalek::VerifyingKey;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::piece::SignedPiece;
use crate::torrent::InfoHash;
pub use peer::PeerId;
use peer::{Peer, Phase};
pub use playout::Delivery;
use playout::Playout;
use ratelimit::TokenBucket;
pub use status::{State, SwarmStatus};
use store::{Known, Store};
use wire::{ExtHandshake, HaveEntry, LiveMessage, Message};

#[derive(Clone, Debug)]
pub struct Config {
    pub role: Role,
    pub info_hash: InfoHash,
    pub public_key: VerifyingKey,
    /// The torrent's piece length: the largest payload a piece may carry.
    pub max_payload: u32,
    /// How much stream peers keep behind the newest piece.
    pub window: Duration,
    /// Receivers: how far behind the newest piece to hook in (the playout buffer).
    pub latency: Duration,
    pub peer_id: [u8; 20],
    /// Port we accept connections on, told to peers in the extended handshake.
    pub listen_port: Option<u16>,
    /// Our own addresses: never connect to them.
    pub self_addrs: Vec<SocketAddr>,
    /// Piece payload bytes per second we upload at most.
    pub upload_limit: Option<u64>,
    pub upload_slots: usize,
    pub max_peers: usize,
    /// Seedboxes the injector always serves and feeds first.
    pub trusted: Vec<SocketAddr>,
    /// Verified pieces held at most, in bytes (the window is cut short beyond it).
    pub max_store_bytes: usize,
    pub rng_seed: u64,
}

impl Config {
    pub fn new(role: Role, info_hash: InfoHash, public_key: VerifyingKey) -> Self {
        Config {
            role,
            info_hash,
            public_key,
            max_payload: crate::torrent::DEFAULT_PIECE_LENGTH,
            window: Duration::from_secs(crate::torrent::DEFAULT_WINDOW_SECS as u64),
            latency: Duration::from_millis(2000),
            peer_id: *b"-NL0100-000000000000",
            listen_port: None,
            self_addrs: Vec::new(),
            upload_limit: None,
            upload_slots: 40,
            max_peers: 50,
            trusted: Vec::new(),
            max_store_bytes: 24 << 20,
            rng_seed: 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Transmit { peer: PeerId, data: Bytes },
    Connect(SocketAddr),
    Disconnect { peer: PeerId, reason: String },
    Deliver(Delivery),
}

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
const KEEPALIVE: Duration = Duration::from_secs(30);
const RECHOKE: Duration = Duration::from_secs(10);
const OPTIMISTIC_EVERY: u32 = 3; // rechokes
/// A request we queued longer than this is refused, so the peer asks someone else in time.
const MAX_QUEUE_WAIT: Duration = Duration::from_millis(500);
const MAX_QUEUE_PER_PEER: usize = 32;
/// The injector tells everyone about a piece this long after it was made; before that only
/// the peer it fed first knows, so the swarm, not the injector, carries the copies.
const SOURCE_HOLD: Duration = Duration::from_millis(1000);
/// How long the injector waits for the peer it fed first to ask for a new piece.
const FANOUT_GRACE: Duration = Duration::from_millis(150);
const ANNOUNCE_TICK: Duration = Duration::from_millis(100);
const CONNECT_RETRY_MIN: Duration = Duration::from_secs(1);
const CONNECT_RETRY_MAX: Duration = Duration::from_secs(30);
/// A connection that ends sooner than this counts as a failed attempt.
const SHORT_LIVED: Duration = Duration::from_secs(30);
/// Peer addresses remembered at most; a dial that failed this often is forgotten.
const MAX_ADDRS: usize = 1000;
const MAX_DIAL_FAILURES: u32 = 8;
/// Seeds fetch this much stream behind the newest piece, to serve receivers that hook in late.
const SEED_BACKFILL_US: u64 = 5_000_000;

#[derive(Debug, Default)]
struct AddrState {
    next_try: Option<Instant>,
    failures: u32,
    connected: bool,
}

/// One node's protocol state machine. See the module docs for the calling contract.
pub struct Swarm {
    config: Config,
    started: Instant,
    rng: ChaCha8Rng,
    /// Ordered, so that iteration (and with it every decision) is deterministic.
    peers: BTreeMap<PeerId, Peer>,
    next_peer_id: PeerId,
    addrs: HashMap<SocketAddr, AddrState>,
    /// Banned peers by (address, peer id): an id alone is the peer's own claim, and banning it
    /// everywhere would let an impostor get an honest peer banned.
    banned_ids: HashSet<(std::net::IpAddr, [u8; 20])>,
    banned_addrs: HashSet<SocketAddr>,
    self_addrs: HashSet<SocketAddr>,
    store: Store,
    known: Known,
    playout: Option<Playout>,
    /// Seeds: first sequence number of interest.
    seed_from: Option<u64>,
    /// Which peer each outstanding request went to.
    inflight: HashMap<u64, PeerId>,
    bucket: Option<TokenBucket>,
    /// Round-robin position among peers with queued requests.
    serve_turn: usize,
    fanout_turn: usize,
    next_rechoke: Instant,
    rechokes: u32,
    optimistic: Option<PeerId>,
    next_announce: Instant,
    outputs: VecDeque<Output>,
    eos_seq: Option<u64>,
    stats: status::Counters,
    /// Injector: pieces some peer has asked for (see `announceable`).
    asked: std::collections::BTreeSet<u64>,
    /// The latest `now` seen, so `poll_timeout` never returns a time already handled.
    last_now: Instant,
}

impl Swarm {
    pub fn new(config: Config, now: Instant) -> Self {
        let bucket = config.upload_limit.map(|rate| {
            let piece = (config.max_payload as usize + crate::piece::OVERHEAD) as u64;
            TokenBucket::new(rate, piece.max(rate / 10), now)
        });
        let playout = (config.role == Role::Receiver).then(|| Playout::new(config.latency));
        Swarm {
            rng: ChaCha8Rng::seed_from_u64(config.rng_seed),
            started: now,
            peers: BTreeMap::new(),
            next_peer_id: 1,
            addrs: HashMap::new(),
            banned_ids: HashSet::new(),
            banned_addrs: HashSet::new(),
            self_addrs: config.self_addrs.iter().copied().collect(),
            store: Store::new(config.window.as_micros() as u64, config.max_store_bytes),
            known: Known::default(),
            playout,
            seed_from: None,
            inflight: HashMap::new(),
            bucket,
            serve_turn: 0,
            fanout_turn: 0,
            next_rechoke: now,
            rechokes: 0,
            optimistic: None,
            next_announce: now,
            outputs: VecDeque::new(),
            eos_seq: None,
            stats: status::Counters::default(),
            asked: Default::default(),
            last_now: now,
            config,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    // ----- inputs -------------------------------------------------------------------------

    /// Addresses from a tracker, the DHT or the command line.
    pub fn add_peer_addrs(&mut self, now: Instant, addrs: impl IntoIterator<Item = SocketAddr>) {
        for addr in addrs {
            if !self.self_addrs.contains(&addr)
                && !self.banned_addrs.contains(&addr)
                && (self.addrs.len() < MAX_ADDRS || self.addrs.contains_key(&addr))
            {
                self.addrs.entry(addr).or_default();
            }
        }
        self.maintain_connections(now);
    }

    /// A TCP connection is up: one we opened after `Output::Connect`, or an inbound one.
    pub fn peer_connected(&mut self, now: Instant, addr: SocketAddr, outbound: bool) -> PeerId {
        let id = self.next_peer_id;
        self.next_peer_id += 1;
        if !outbound && self.peers.len() >= self.config.max_peers {
            // Full: refuse at once, so inbound connections cannot grow without bound.
            self.outputs.push_back(Output::Disconnect {
                peer: id,
                reason: "too many peers".into(),
            });
            return id;
        }
        let mut peer = Peer::new(addr, outbound, now);
        peer.trusted = self.config.trusted.contains(&addr);
        let hs = wire::Handshake {
            extensions: true,
            info_hash: self.config.info_hash.0,
            peer_id: self.config.peer_id,
        };
        peer.outbox.extend_from_slice(&hs.encode());
        let ext = ExtHandshake {
            live_id: Some(wire::OUR_LIVE_ID),
            listen_port: self.config.listen_port,
            role: Some(self.config.role),
            client: Some(concat!("nordlys ", env!("CARGO_PKG_VERSION")).into()),
        };
        wire::encode(&Message::ExtHandshake(ext), 0, &mut peer.outbox);
        if outbound && let Some(state) = self.addrs.get_mut(&addr) {
            state.connected = true;
        }
        self.peers.insert(id, peer);
        self.flush();
        id
    }

    /// An outbound connection attempt failed.
    pub fn connect_failed(&mut self, now: Instant, addr: SocketAddr) {
        if self
            .addrs
            .get(&addr)
            .is_some_and(|s| s.failures + 1 >= MAX_DIAL_FAILURES)
        {
            self.addrs.remove(&addr); // a tracker may name it again
            return;
        }
        if let Some(state) = self.addrs.get_mut(&addr) {
            state.connected = false;
            state.failures += 1;
            let backoff = CONNECT_RETRY_MIN * 2u32.saturating_pow(state.failures.min(5));
            state.next_try = Some(now + backoff.min(CONNECT_RETRY_MAX));
        }
    }

    /// The connection is gone (closed by the peer, an I/O error, or after our `Disconnect`).
    pub fn peer_closed(&mut self, now: Instant, peer: PeerId) {
        if let Some(p) = self.peers.remove(&peer) {
            self.forget_peer_state(peer, &p);
        }
        self.run(now);
    }

    pub fn peer_data(&mut self, now: Instant, id: PeerId, data: &[u8]) {
        let max_len = wire::max_message_len(self.config.max_payload);
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        peer.last_heard = now;
        peer.inbuf.extend_from_slice(data);
        while let Some(peer) = self.peers.get_mut(&id) {
            if peer.phase == Phase::Handshake {
                match wire::Handshake::decode(&peer.inbuf) {
                    Ok(hs) => {
                        let _ = peer.inbuf.split_to(wire::HANDSHAKE_LEN);
                        self.on_handshake(id, hs);
                        continue;
                    }
                    Err(wire::DecodeError::NeedMore) => break,
                    Err(e) => {
                        self.close(id, format!("bad handshake: {e}"));
                        break;
                    }
                }
            }
            match wire::frame_len(&peer.inbuf, max_len) {
                Ok(used) => {
                    let frame = peer.inbuf.split_to(used).freeze();
                    match wire::decode_frame(&frame) {
                        Ok(msg) => self.on_message(now, id, msg),
                        Err(e) => {
                            self.close(id, format!("protocol error: {e}"));
                            break;
                        }
                    }
                }
                Err(wire::DecodeError::NeedMore) => break,
                Err(e) => {
                    self.close(id, format!("protocol error: {e}"));
                    break;
                }
            }
        }
        self.run(now);
    }

    /// Injector: a piece we just cut and signed.
    pub fn add_local_piece(&mut self, now: Instant, piece: SignedPiece) {
        let h = *piece.header();
        self.stats.pieces_emitted += 1;
        self.known.made(h.seq, h.timestamp_us, h.flags, now);
        if h.end_of_stream() {
            self.eos_seq = Some(h.seq);
        }
        self.store.insert(piece);
        self.evict();
        // Feed one peer at once, preferring trusted seedboxes, then seedboxes; the rest hear
        // about the piece after SOURCE_HOLD, from the swarm or from us.
        if let Some(target) = self.fanout_target() {
            let entry = HaveEntry {
                seq: h.seq,
                timestamp_us: h.timestamp_us,
                flags: h.flags,
            };
            self.send_have(target, vec![entry]);
        }
        self.run(now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        // Handshake and idle timeouts, keep-alives.
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in ids {
            let p = &self.peers[&id];
            if !p.is_active() && now >= p.connected_at + HANDSHAKE_TIMEOUT {
                self.close(id, "handshake timed out".into());
            } else if now >= p.last_heard + IDLE_TIMEOUT {
                self.close(id, "peer silent for too long".into());
            } else if now >= p.last_sent + KEEPALIVE {
                let p = self.peers.get_mut(&id).unwrap();
                wire::encode(&Message::KeepAlive, 0, &mut p.outbox);
            }
        }
        self.run(now);
    }

    // ----- outputs ------------------------------------------------------------------------

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The next instant `handle_timeout` must be called at.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.next_rechoke;
        let mut consider = |x: Instant| t = t.min(x);
        for p in self.peers.values() {
            if !p.is_active() {
                consider(p.connected_at + HANDSHAKE_TIMEOUT);
            } else {
                consider(p.last_heard + IDLE_TIMEOUT);
                consider(p.last_sent + KEEPALIVE);
            }
            for (&seq, &sent) in &p.requested {
                consider(sent + self.request_timeout(p, seq, sent));
            }
            if let Some((_, at)) = p.queue.front() {
                consider(*at + MAX_QUEUE_WAIT);
            }
        }
        // Waiting on the upload limit: wake when the piece at the head of a queue fits.
        if let Some(b) = &self.bucket
            && let Some(len) = self
                .peers
                .values()
                .find_map(|p| p.queue.front().and_then(|(seq, _)| self.store.get(*seq)))
                .map(|piece| piece.header().payload_len as u64)
        {
            consider(b.ready_at(len, b.last()));
        }
        if self.config.role == Role::Injector {
            consider(self.next_announce);
        }
        if self.peers.len() < self.config.max_peers {
            for state in self.addrs.values() {
                if let Some(at) = state.next_try
                    && !state.connected
                    && at > self.last_now
                {
                    consider(at);
                }
            }
        }
        if let Some(p) = &self.playout {
            if let Some(d) = p.next_deadline(self.last_now, &self.store, &self.known) {
                consider(d);
            }
            if let Some(at) = p.hook_at(self.last_now) {
                consider(at);
            }
        }
        // A timer that is already due was handled by the last call; never spin on it.
        Some(t.max(self.last_now + Duration::from_millis(1)))
    }

    /// The node's state and whether its stream ended (see [`Swarm::status`] for the rest).
    pub fn state(&self) -> (State, bool) {
        status::state(self)
    }

    pub fn status(&self, now: Instant) -> SwarmStatus {
        status::snapshot(self, now)
    }

    // ----- event handling -----------------------------------------------------------------

    fn run(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
        if now >= self.next_rechoke {
            self.rechoke(now);
        }
        self.expire_requests(now);
        self.hook_in(now);
        self.request_pieces(now);
        self.serve_requests(now);
        if self.config.role == Role::Injector && now >= self.next_announce {
            self.announce_held(now);
        }
        if self.cursor_lost() {
            tracing::warn!("the stream at our position is gone from every peer; hooking in again");
            self.playout.as_mut().unwrap().rehook();
            self.hook_in(now);
        }
        if let Some(playout) = &mut self.playout {
            for d in playout.advance(now, &self.store, &self.known) {
                self.outputs.push_back(Output::Deliver(d));
            }
        }
        self.maintain_connections(now);
        self.flush_at(now);
    }

    fn maintain_connections(&mut self, now: Instant) {
        let connected = self.peers.len();
        let mut room = self.config.max_peers.saturating_sub(connected);
        if room == 0 {
            return;
        }
        let listen_addrs: HashSet<SocketAddr> =
            self.peers.values().filter_map(|p| p.listen_addr).collect();
        let mut candidates: Vec<SocketAddr> = self
            .addrs
            .iter()
            .filter(|(a, s)| {
                !s.connected && s.next_try.is_none_or(|t| now >= t) && !listen_addrs.contains(a)
            })
            .map(|(a, _)| *a)
            .collect();
        candidates.sort();
        for addr in candidates {
            if room == 0 {
                break;
            }
            let state = self.addrs.get_mut(&addr).unwrap();
            state.connected = true;
            state.next_try = Some(now + CONNECT_RETRY_MIN);
            self.outputs.push_back(Output::Connect(addr));
            room -= 1;
        }
    }

    /// A stalled receiver whose next piece is gone for good: we do not hold it and every
    /// connected peer's window has moved past it (after a long outage, say).
    fn cursor_lost(&self) -> bool {
        let Some(p) = &self.playout else { return false };
        let Some(cursor) = p.cursor() else {
            return false;
        };
        if !p.is_stalled() || self.store.contains(cursor) {
            return false;
        }
        let mut active = self.peers.values().filter(|p| p.is_active()).peekable();
        active.peek().is_some() && active.all(|p| p.window_start > cursor)
    }

    /// The oldest sequence number still of interest to this node.
    fn window_floor(&self) -> u64 {
        match (&self.playout, self.store.first_seq()) {
            (Some(p), first) => p.cursor().or(first).unwrap_or(0),
            (None, first) => first.unwrap_or(0),
        }
    }

    fn evict(&mut self) {
        let keep_from = self.playout.as_ref().and_then(|p| p.cursor());
        let start = self.store.evict(keep_from);
        self.asked = self.asked.split_off(&start);
        // A receiver still needs pieces from its cursor on, held or not.
        let floor = start.min(keep_from.unwrap_or(u64::MAX));
        self.known.forget_below(floor);
        for p in self.peers.values_mut() {
            p.prune_below(floor);
        }
    }

    fn ban(&mut self, id: PeerId, reason: String) {
        if let Some(p) = self.peers.get(&id) {
            tracing::warn!(peer = %p.addr, %reason, "banning peer");
            if let Some(remote) = p.remote_id {
                self.banned_ids.insert((p.addr.ip(), remote));
            }
            if let Some(listen) = p.listen_addr {
                self.banned_addrs.insert(listen);
                self.addrs.remove(&listen);
            }
            self.stats.peers_banned += 1;
        }
        self.close(id, reason);
    }

    fn close(&mut self, id: PeerId, reason: String) {
        if let Some(p) = self.peers.remove(&id) {
            // Send what is queued first (e.g. a polite goodbye is just the close itself).
            if !p.outbox.is_empty() {
                self.outputs.push_back(Output::Transmit {
                    peer: id,
                    data: p.outbox.clone().freeze(),
                });
            }
            self.outputs
                .push_back(Output::Disconnect { peer: id, reason });
            self.forget_peer_state(id, &p);
        }
    }

    fn forget_peer_state(&mut self, id: PeerId, p: &Peer) {
        for seq in p.requested.keys() {
            if self.inflight.get(seq) == Some(&id) {
                self.inflight.remove(seq);
            }
        }
        // A connection that closed soon (a full or banning peer) counts as a failed dial, so
        // it is retried with growing backoff instead of at once, forever.
        let short_lived = self.last_now.saturating_duration_since(p.connected_at) < SHORT_LIVED;
        for addr in [Some(p.addr), p.listen_addr].into_iter().flatten() {
            if let Some(state) = self.addrs.get_mut(&addr) {
                state.connected = false;
                if short_lived {
                    state.failures += 1;
                } else {
                    state.failures = 0;
                }
                let backoff = CONNECT_RETRY_MIN * 2u32.saturating_pow(state.failures.min(5));
                state.next_try = Some(self.last_now + backoff.min(CONNECT_RETRY_MAX));
            }
        }
        if self.optimistic == Some(id) {
            self.optimistic = None;
        }
    }

    fn flush(&mut self) {
        self.flush_inner(None);
    }

    fn flush_at(&mut self, now: Instant) {
        self.flush_inner(Some(now));
    }

    fn flush_inner(&mut self, now: Option<Instant>) {
        let mut ids: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.outbox.is_empty())
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        for id in ids {
            let p = self.peers.get_mut(&id).unwrap();
            let data = p.outbox.split().freeze();
            if let Some(now) = now {
                p.last_sent = now;
            }
            self.outputs.push_back(Output::Transmit { peer: id, data });
        }
    }
}

fn have_entry(p: &SignedPiece) -> HaveEntry {
    let h = p.header();
    HaveEntry {
        seq: h.seq,
        timestamp_us: h.timestamp_us,
        flags: h.flags,
    }
}

fn send_live(p: &mut Peer, msg: LiveMessage) {
    wire::encode(&Message::Live(msg), p.live_id, &mut p.outbox);
}
