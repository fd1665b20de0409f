//! The sans-IO swarm core.
//!
//! [`Swarm`] owns every protocol decision of one node (injector, seedbox or receiver) and no
//! I/O. It never reads a clock, spawns, sleeps or draws from a global RNG, so tests and the
//! simulator drive it with virtual time and a seed, and every run replays exactly.
//!
//! The contract, as in str0m and quinn-proto:
//! - a new TCP connection (ours after [`Output::Connect`], or an inbound one) is offered with
//!   [`Swarm::accept`], which takes it ([`PeerId`]) or refuses it ([`Refusal`]: close it);
//! - everything else is one [`Input`] given to [`Swarm::handle`]`(now, input)`. Time moves
//!   to `now` on entry, and the same post-step follows every input: due timers fire, pieces
//!   are requested and served, playout advances, connections are kept up, and what was
//!   queued for the touched peers is flushed;
//! - then drain [`Swarm::poll_output`] until `None`, and call `handle(t, Input::Timeout)` at
//!   the instant [`Swarm::poll_timeout`] names (from an explicit timer table).
//!
//! The state is split into sub-states that own their data: the address book ([`addrs`]),
//! the peer table ([`peer`]), the downloader (in-flight requests, [`picker`]), the uploader
//! (request queues, [`choker`], [`ratelimit`]) and what only one role has ([`RoleState`]).

pub mod addrs;
pub mod choker;
mod download;
mod fanout;
mod messages;
pub mod peer;
pub mod pex;
pub mod picker;
pub mod playout;
pub mod push;
pub mod ratelimit;
pub mod status;
pub mod store;
mod upload;

pub use crate::wire;
pub use crate::wire::Role;

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ed25519_dalek::VerifyingKey;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::piece::{PieceError, SignedPiece};
use crate::torrent::InfoHash;
use crate::wire::{DecodeError, ExtHandshake, HaveEntry, LiveMessage, Message};
use addrs::AddrBook;
use download::Downloader;
pub use peer::PeerId;
use peer::{Peer, PeerTable, Phase};
pub use playout::Delivery;
use playout::Playout;
use push::Push;
pub use status::{State, SwarmStatus};
use store::{Known, Store};
use upload::Uploader;

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
    /// Under the upload limit, a request that would not have left within this is refused at
    /// once (see [`upload::ADMIT_WAIT`]); `None`: queued while the peer's queue has room.
    pub admit_wait: Option<Duration>,
    pub upload_slots: usize,
    pub max_peers: usize,
    /// Seedboxes the injector always serves and feeds first.
    pub trusted: Vec<SocketAddr>,
    /// Verified pieces held at most, in bytes (the window is cut short beyond it).
    pub max_store_bytes: usize,
    pub rng_seed: u64,
    /// Substreams the stream is pushed along (piece `seq % substreams`); 0: pull only.
    pub substreams: u8,
    /// Flow control: a piece goes to a peer only while at most this many bytes handed to
    /// the driver for it have not left yet (reported by [`Input::Sent`]), so a slow
    /// connection is not fed faster than it drains: pushes and requests wait in the core,
    /// where they can be dropped or refused in time, not in a socket buffer. `None`: the
    /// driver does not report, and nothing is held back.
    pub send_backlog: Option<usize>,
    /// Keep each verified piece's arrival for [`Swarm::take_arrivals`] (diagnostics: the
    /// simulator's figures of how old pieces are when they arrive).
    pub record_arrivals: bool,
    /// Signature checks shared with other cores in this process (the simulator's nodes);
    /// `None`, each piece is checked here.
    pub verify_memo: Option<std::sync::Arc<crate::piece::VerifyMemo>>,
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
            admit_wait: Some(upload::ADMIT_WAIT),
            upload_slots: 40,
            max_peers: 50,
            trusted: Vec::new(),
            max_store_bytes: 24 << 20,
            rng_seed: 0,
            substreams: 0,
            send_backlog: None,
            record_arrivals: false,
            verify_memo: None,
        }
    }
}

/// A piece verified on arrival (see [`Config::record_arrivals`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arrival {
    pub seq: u64,
    pub timestamp_us: u64,
    /// Pushed by our parent for its substream, not requested.
    pub pushed: bool,
}

/// Who opened a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// We dialled it after [`Output::Connect`].
    Outbound,
    Inbound,
}

/// Why [`Swarm::accept`] turned a connection down; the driver closes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// As many peers as `max_peers` are connected: inbound connections cannot grow without
    /// bound.
    #[error("too many peers")]
    Full,
}

/// What happens to a node, other than a new connection (see [`Swarm::accept`]).
#[derive(Clone, Debug)]
pub enum Input {
    /// Peer addresses from a tracker, the DHT or the command line.
    PeerAddrs(Vec<SocketAddr>),
    /// A dial we were asked for ([`Output::Connect`]) failed.
    ConnectFailed(SocketAddr),
    /// Bytes read from a connection (shared: a piece in them is kept without a copy).
    Data(PeerId, Bytes),
    /// The connection is gone: closed by the peer, an I/O error, or after our `Disconnect`.
    Closed(PeerId),
    /// Bytes transmitted to the peer have left: written to the network, not only queued
    /// (see [`Config::send_backlog`]).
    Sent(PeerId, usize),
    /// Injector: a piece it just made and signed.
    LocalPiece(SignedPiece),
    /// Only time passed (the instant [`Swarm::poll_timeout`] named, or later).
    Timeout,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Transmit {
        peer: PeerId,
        data: Bytes,
    },
    Connect(SocketAddr),
    Disconnect {
        peer: PeerId,
        reason: DisconnectReason,
    },
    Deliver(Delivery),
}

/// Why the core closes a connection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DisconnectReason {
    #[error("bad handshake: {0}")]
    BadHandshake(DecodeError),
    #[error("protocol error: {0}")]
    Protocol(DecodeError),
    #[error("handshake for another torrent")]
    OtherTorrent,
    #[error("connected to ourselves")]
    Ourselves,
    #[error("banned peer")]
    Banned,
    #[error("peer lacks the extension protocol (BEP 10)")]
    NoExtensionProtocol,
    #[error("peer does not speak the live extension")]
    NoLiveExtension,
    #[error("duplicate connection")]
    Duplicate,
    #[error("message before the extended handshake")]
    EarlyMessage,
    #[error("handshake timed out")]
    HandshakeTimeout,
    #[error("peer silent for too long")]
    Silent,
    /// The peer sent a piece that cannot be one (it is banned).
    #[error("malformed piece: {0}")]
    MalformedPiece(PieceError),
    /// The peer sent a piece that fails verification (it is banned).
    #[error("bad piece {seq}: {error}")]
    BadPiece { seq: u64, error: PieceError },
    /// The peer kept asking for pieces it was given already, or announced, or that we never
    /// offered (it is banned): a peer that only takes, at the cost of everyone else's upload.
    #[error("asked for {repeats} pieces it holds or was never offered")]
    RepeatedRequests { repeats: u32 },
    /// The peer claimed pieces beyond anything the injector can have made (it is banned).
    #[error("claimed {claims} pieces that cannot exist yet")]
    ImplausibleClaims { claims: u32 },
    /// The peer told of piece `seq` as it is not: another timestamp, or a keyframe that is
    /// none (it is banned). Found when the piece is verified here, or at once if it was.
    #[error("told of piece {seq} as it is not")]
    FalseClaim { seq: u64 },
}

/// A good [`Config::send_backlog`] for drivers that report [`Input::Sent`]: half a default
/// piece, so a piece goes once the one before it is mostly on the wire.
pub const DEFAULT_SEND_BACKLOG: usize = 16 * 1024;

const RECHOKE: Duration = Duration::from_secs(10);
/// A dialable node opens at most `max_peers / OWN_DIALS_SHARE` connections itself (see
/// `Swarm::dial_room`). concert-200 over seeds 1-3, at continuity >= 0.995: 71.3 % with a
/// half, 78.7 % with a third, 81.3 % with a quarter, 72.2 % with a sixth.
const OWN_DIALS_SHARE: usize = 4;
const ANNOUNCE_TICK: Duration = Duration::from_millis(100);
/// See `Swarm::dial_room`.
const UNDIALABLE_AFTER: Duration = Duration::from_secs(5);
/// A connection that ends sooner than this counts as a failed attempt.
const SHORT_LIVED: Duration = Duration::from_secs(30);
/// Peer addresses remembered at most.
const MAX_ADDRS: usize = 1000;

/// The core's own timers; each peer's deadlines are filed in the peer table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    Rechoke,
    /// Injector: tell everyone of the pieces held long enough.
    Announce,
    /// A backed-off address may be dialled.
    Dial,
    /// Receivers: a piece comes due, or hook-in has listened long enough.
    Playout,
    /// The upload limit lets the next queued piece go.
    Upload,
    /// A peer that failed a request may be asked for that piece again, or a piece left to
    /// the push may be repaired.
    Retry,
    /// A substream without a parent: look for one.
    Push,
}

#[derive(Debug, Default)]
struct Timers([Option<Instant>; 7]);

impl Timers {
    fn set(&mut self, t: Timer, at: Option<Instant>) {
        self.0[t as usize] = at;
    }

    /// Sets the timer to `at` unless it is set sooner already.
    fn set_earliest(&mut self, t: Timer, at: Instant) {
        let slot = &mut self.0[t as usize];
        *slot = Some(slot.map_or(at, |old| old.min(at)));
    }

    fn is_due(&self, t: Timer, now: Instant) -> bool {
        self.0[t as usize].is_some_and(|at| at <= now)
    }

    fn next(&self) -> Option<Instant> {
        self.0.iter().flatten().min().copied()
    }
}

/// What only one role has.
enum RoleState {
    Injector {
        /// Pieces some peer has asked for (see `announceable`).
        asked: BTreeSet<u64>,
        fanout: fanout::Fanout,
    },
    Seed {
        /// First sequence number of interest.
        from: Option<u64>,
    },
    Receiver(Playout),
}

impl RoleState {
    fn playout(&self) -> Option<&Playout> {
        match self {
            RoleState::Receiver(p) => Some(p),
            _ => None,
        }
    }

    fn playout_mut(&mut self) -> Option<&mut Playout> {
        match self {
            RoleState::Receiver(p) => Some(p),
            _ => None,
        }
    }
}

/// One node's protocol state machine. See the module docs for the calling contract.
pub struct Swarm {
    config: Config,
    started: Instant,
    /// The latest instant given; time never goes back.
    now: Instant,
    rng: ChaCha8Rng,
    addrs: AddrBook,
    peers: PeerTable,
    store: Store,
    known: Known,
    download: Downloader,
    upload: Uploader,
    push: Push,
    role: RoleState,
    timers: Timers,
    eos_seq: Option<u64>,
    outputs: VecDeque<Output>,
    arrivals: Vec<Arrival>,
    stats: status::Counters,
}

impl Swarm {
    pub fn new(config: Config, now: Instant) -> Self {
        let role = match config.role {
            Role::Injector => RoleState::Injector {
                asked: BTreeSet::new(),
                fanout: fanout::Fanout::default(),
            },
            Role::Seed => RoleState::Seed { from: None },
            Role::Receiver => RoleState::Receiver(Playout::new(config.latency)),
        };
        let mut timers = Timers::default();
        timers.set(Timer::Rechoke, Some(now));
        if config.role == Role::Injector {
            timers.set(Timer::Announce, Some(now));
        }
        Swarm {
            rng: ChaCha8Rng::seed_from_u64(config.rng_seed),
            started: now,
            now,
            addrs: AddrBook::new(config.self_addrs.iter().copied(), MAX_ADDRS),
            peers: PeerTable::default(),
            store: Store::new(config.window.as_micros() as u64, config.max_store_bytes),
            known: Known::default(),
            download: Downloader::default(),
            upload: Uploader::new(&config, now),
            push: Push::new(config.substreams),
            role,
            timers,
            eos_seq: None,
            outputs: VecDeque::new(),
            arrivals: Vec::new(),
            stats: status::Counters::default(),
            config,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    // ----- inputs -------------------------------------------------------------------------

    /// A TCP connection is up. Taken, it gets an id and our handshakes are queued; refused,
    /// the driver closes it and the core keeps nothing of it.
    pub fn accept(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        direction: Direction,
    ) -> Result<PeerId, Refusal> {
        self.now = self.now.max(now);
        let outbound = direction == Direction::Outbound;
        if !outbound && self.peers.len() >= self.config.max_peers {
            return Err(Refusal::Full);
        }
        let mut peer = Peer::new(addr, outbound, self.now);
        peer.trusted = self.config.trusted.contains(&addr);
        let hs = wire::Handshake {
            extensions: true,
            info_hash: self.config.info_hash.0,
            peer_id: self.config.peer_id,
        };
        peer.outbox.buf().extend_from_slice(&hs.encode());
        let ext = ExtHandshake {
            live_id: Some(wire::OUR_LIVE_ID),
            listen_port: self.config.listen_port,
            role: Some(self.config.role),
            client: Some(concat!("nordlys ", env!("CARGO_PKG_VERSION")).into()),
            pex_id: Some(wire::OUR_PEX_ID),
        };
        wire::encode(&Message::ExtHandshake(ext), 0, peer.outbox.buf());
        if outbound {
            self.addrs.mark_connected(addr);
        }
        let id = self.peers.insert(peer);
        self.step();
        Ok(id)
    }

    pub fn handle(&mut self, now: Instant, input: Input) {
        self.now = self.now.max(now);
        match input {
            Input::PeerAddrs(addrs) => {
                for addr in addrs {
                    self.addrs.add(addr);
                }
            }
            Input::ConnectFailed(addr) => self.addrs.dial_failed(addr, self.now),
            Input::Data(id, data) => self.on_data(id, data),
            Input::Closed(id) => {
                if let Some(p) = self.peers.remove(id) {
                    self.forget_peer(id, &p);
                }
            }
            Input::Sent(id, n) => {
                if let Some(p) = self.peers.get_mut(id) {
                    p.unsent = p.unsent.saturating_sub(n);
                }
            }
            Input::LocalPiece(piece) => self.add_local_piece(piece),
            Input::Timeout => self.download.need_pick(),
        }
        self.step();
    }

    // ----- outputs ------------------------------------------------------------------------

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The next instant to call `handle(_, Input::Timeout)` at: the earliest of the timer
    /// table and the peers' deadlines. Never one already handled.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let t = match (self.timers.next(), self.peers.next_deadline()) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some(t.max(self.now + Duration::from_millis(1)))
    }

    /// Our parent's connection for each substream (see [`push`]).
    pub fn substream_parents(&self) -> Vec<Option<PeerId>> {
        (0..self.push.substreams() as usize)
            .map(|i| self.push.parent(i).map(|p| p.peer))
            .collect()
    }

    /// The pieces verified since the last call (with `Config::record_arrivals`).
    pub fn take_arrivals(&mut self) -> Vec<Arrival> {
        std::mem::take(&mut self.arrivals)
    }

    /// The node's state and whether its stream ended (see [`Swarm::status`] for the rest).
    pub fn state(&self) -> (State, bool) {
        status::state(self)
    }

    pub fn status(&self, now: Instant) -> SwarmStatus {
        status::snapshot(self, now)
    }

    // ----- the post-step, the same after every input --------------------------------------

    fn step(&mut self) {
        let now = self.now;
        if self.timers.is_due(Timer::Rechoke, now) {
            self.rechoke();
            self.timers.set(Timer::Rechoke, Some(now + RECHOKE));
        }
        for id in self.peers.due(now) {
            self.peer_deadline(id);
        }
        if self.timers.is_due(Timer::Announce, now) {
            self.announce_held();
            self.timers.set(Timer::Announce, Some(now + ANNOUNCE_TICK));
        }
        if self.timers.is_due(Timer::Retry, now) {
            self.timers.set(Timer::Retry, None);
            self.download.need_pick();
        }
        if self.timers.is_due(Timer::Push, now) {
            self.choose_parents();
        }
        self.hook_in();
        if self.cursor_lost() {
            tracing::warn!("the stream at our position is gone from every peer; hooking in again");
            if let Some(p) = self.role.playout_mut() {
                p.rehook();
            }
            self.hook_in();
        }
        if self.download.wants_pick() {
            self.request_pieces();
        }
        self.serve_requests();
        self.advance_playout();
        // Playout may have moved the cursor: what is wanted next can be asked for now.
        if self.download.wants_pick() {
            self.request_pieces();
        }
        if self.addrs.changed() || self.timers.is_due(Timer::Dial, now) {
            self.dial();
        }
        for seq in self.peers.take_orphaned() {
            self.known.forget_claim(seq);
        }
        self.flush();
    }

    /// A peer's deadline came: handshake or idle timeout, keep-alive, a request to give up
    /// on, queued requests that waited too long.
    fn peer_deadline(&mut self, id: PeerId) {
        let now = self.now;
        let Some(p) = self.peers.get_mut(id) else {
            return;
        };
        if !p.is_active() && now >= p.connected_at + peer::HANDSHAKE_TIMEOUT {
            return self.close(id, DisconnectReason::HandshakeTimeout);
        }
        if now >= p.last_heard + peer::IDLE_TIMEOUT {
            return self.close(id, DisconnectReason::Silent);
        }
        if p.is_active() && now >= p.last_sent + peer::KEEPALIVE {
            wire::encode(&Message::KeepAlive, 0, p.outbox.buf());
        }
        self.expire_requests(id);
        self.expire_queue(id);
        self.send_pex(id);
    }

    /// Tells a peer, at most once a minute, the peers we dialled (see [`pex`]).
    fn send_pex(&mut self, id: PeerId) {
        let now = self.now;
        let due = (self.peers.get(id)).and_then(|p| p.pex.deadline());
        if due.is_none_or(|t| now < t) {
            return;
        }
        let mut reachable: BTreeSet<SocketAddr> = (self.peers.values())
            .filter(|p| p.is_active() && p.outbound)
            .map(|p| p.addr)
            .collect();
        let p = self.peers.get_mut(id).unwrap();
        reachable.remove(&p.addr);
        if let Some((ext_id, pex)) = p.pex.due(now, &reachable) {
            wire::encode(&Message::Pex(pex), ext_id, p.outbox.buf());
        }
    }

    fn advance_playout(&mut self) {
        let Some(playout) = self.role.playout_mut() else {
            return;
        };
        let now = self.now;
        let before = playout.cursor();
        for d in playout.advance(now, &self.store) {
            self.outputs.push_back(Output::Deliver(d));
        }
        if playout.cursor() != before {
            self.download.need_pick();
        }
        let next = [
            playout.next_deadline(now, &self.store),
            playout.hook_at(now),
        ]
        .into_iter()
        .flatten()
        .min();
        self.timers.set(Timer::Playout, next);
    }

    /// Opens connections while there is room, to addresses not dialled or backed off.
    fn dial(&mut self) {
        let (room, undialable_at) = self.dial_room();
        if room == 0 {
            // Full: nothing to dial until a connection ends (which marks the book changed),
            // or until we conclude that nobody can dial us.
            self.addrs
                .take_dials(self.now, 0, &HashSet::new(), &mut self.rng);
            self.timers.set(Timer::Dial, undialable_at);
            return;
        }
        let listening: HashSet<SocketAddr> =
            self.peers.values().filter_map(|p| p.listen_addr).collect();
        for addr in self
            .addrs
            .take_dials(self.now, room, &listening, &mut self.rng)
        {
            self.outputs.push_back(Output::Connect(addr));
        }
        let next = [self.addrs.next_dial(self.now), undialable_at];
        self.timers
            .set(Timer::Dial, next.into_iter().flatten().min());
    }

    /// How many more connections to open, and when that may grow because nobody has dialled
    /// us. A node that can be dialled opens at most a quarter of `max_peers` itself
    /// ([`OWN_DIALS_SHARE`]) and keeps the rest for peers that can only dial out (behind
    /// NATs: 40 % of a home audience); otherwise the dialable nodes fill each other's slots
    /// and late undialable ones find no room. A node that no peer has dialled within
    /// `UNDIALABLE_AFTER` is taken to be undialable and dials up to `max_peers`.
    fn dial_room(&self) -> (usize, Option<Instant>) {
        let max = self.config.max_peers;
        let deadline = self.started + UNDIALABLE_AFTER;
        let undialable = !self.peers.inbound_seen() && self.now >= deadline;
        let outbound_max = if undialable {
            max
        } else {
            max.div_ceil(OWN_DIALS_SHARE)
        };
        let outbound = self.peers.values().filter(|p| p.outbound).count();
        let room = max
            .saturating_sub(self.peers.len())
            .min(outbound_max.saturating_sub(outbound));
        let grows_at = (!self.peers.inbound_seen() && self.now < deadline).then_some(deadline);
        (room, grows_at)
    }

    /// A stalled receiver whose next piece is gone for good: we do not hold it and every
    /// connected peer's window has moved past it (after a long outage, say).
    fn cursor_lost(&self) -> bool {
        let Some(p) = self.role.playout() else {
            return false;
        };
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
        let first = self.store.first_seq();
        match &self.role {
            RoleState::Receiver(p) => p.cursor().or(first).unwrap_or(0),
            // A seed fetches from its backfill start, which may be below what it holds.
            RoleState::Seed { from } => first.min(*from).or(first).unwrap_or(0),
            RoleState::Injector { .. } => first.unwrap_or(0),
        }
    }

    fn evict(&mut self) {
        let keep_from = self.role.playout().and_then(|p| p.cursor());
        let start = self.store.evict(keep_from);
        if let RoleState::Injector { asked, fanout } = &mut self.role {
            *asked = asked.split_off(&start);
            fanout.evict(start);
        }
        // A receiver still needs pieces from its cursor on, held or not; a seed from its
        // backfill start (see `window_floor`).
        let seed_from = match &self.role {
            RoleState::Seed { from } => *from,
            _ => None,
        };
        let floor = start
            .min(keep_from.unwrap_or(u64::MAX))
            .min(seed_from.unwrap_or(u64::MAX));
        if self.known.first_seq().is_some_and(|first| first < floor) {
            self.known.forget_below(floor);
            self.peers.prune_below(floor);
            self.push.prune_below(floor);
        }
    }

    fn ban(&mut self, id: PeerId, reason: DisconnectReason) {
        if let Some(p) = self.peers.get(id) {
            tracing::warn!(peer = %p.addr, %reason, "banning peer");
            self.addrs.ban(p.addr.ip(), p.remote_id, p.listen_addr);
            self.stats.peers_banned += 1;
        }
        // What it told of first is not to be believed.
        self.known.disown(id);
        self.close(id, reason);
    }

    fn close(&mut self, id: PeerId, reason: DisconnectReason) {
        if let Some(mut p) = self.peers.remove(id) {
            // What is queued goes first (a Reject, say), then the close.
            for data in p.outbox.take() {
                self.outputs.push_back(Output::Transmit { peer: id, data });
            }
            self.outputs
                .push_back(Output::Disconnect { peer: id, reason });
            self.forget_peer(id, &p);
        }
    }

    /// Whether a piece may go to `p` now (see [`Config::send_backlog`]).
    fn can_send_to(&self, p: &Peer) -> bool {
        can_send_to(self.config.send_backlog, p)
    }

    fn forget_peer(&mut self, id: PeerId, p: &Peer) {
        self.download.forget_peer(id, p);
        self.upload.forget_peer(id);
        if let RoleState::Injector { fanout, .. } = &mut self.role {
            fanout.forget_peer(id);
        }
        if !self.push.forget_peer(id).is_empty() {
            self.timers.set_earliest(Timer::Push, self.now);
        }
        let short_lived = self.now.saturating_duration_since(p.connected_at) < SHORT_LIVED;
        for addr in [Some(p.addr), p.listen_addr].into_iter().flatten() {
            self.addrs.connection_ended(addr, self.now, short_lived);
        }
    }

    /// Hands the touched peers' queued bytes to the driver and re-files their deadlines.
    fn flush(&mut self) {
        let now = self.now;
        for id in self.peers.touched() {
            let p = self.peers.get_mut(id).unwrap();
            if !p.outbox.is_empty() {
                p.last_sent = now;
                for data in p.outbox.take() {
                    p.unsent += data.len();
                    self.outputs.push_back(Output::Transmit { peer: id, data });
                }
            }
        }
        self.peers.take_touched();
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

/// Whether a piece may go to `p` now: what it was sent and what waits in its outbox is
/// within the backlog (see [`Config::send_backlog`]).
fn can_send_to(send_backlog: Option<usize>, p: &Peer) -> bool {
    send_backlog.is_none_or(|max| p.unsent + p.outbox.len() <= max)
}

fn send_live(p: &mut Peer, msg: LiveMessage) {
    wire::encode(&Message::Live(msg), p.live_id, p.outbox.buf());
}

/// A stored piece, sent as the bytes it is stored in.
fn send_piece(p: &mut Peer, piece: &SignedPiece) {
    wire::encode_piece_head(p.live_id, piece.wire().len(), p.outbox.buf());
    p.outbox.push_shared(piece.wire().clone());
}

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod tests;
