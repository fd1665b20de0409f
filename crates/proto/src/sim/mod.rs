//! A deterministic discrete-event simulator for swarms of [`Swarm`] cores.
//!
//! No sockets, no threads, no clock: time jumps from event to event. A link's delay is the
//! sum of its two ends' access delays; a node's uplink serialises what it sends; under loss a
//! connection runs at TCP's rate and a message with a lost segment arrives a round trip late
//! (see `arrival`). Nodes join, leave, may not be dialable, and learn of each other from a
//! sampling tracker ([`TrackerSpec`]). The same seed gives the same run, so a failing
//! scenario can be replayed exactly. Tests, [`scenario`] and `nordlys simulate` use it.
//!
//! The injector node is fed like the real one: a synthetic MPEG-TS stream ([`SyntheticTs`])
//! goes through the same [`Injector`] (packetizer, sequence numbers, signing, end of stream)
//! as the tokio driver's.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ed25519_dalek::SigningKey;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::inject::Injector;
use crate::inject::packetizer::DEFAULT_FLUSH_AFTER;
use crate::piece::VerifyMemo;
use crate::swarm::{
    Config, Delivery, Direction, Input, Output, PeerId, Role, Swarm, SwarmStatus, wire,
};
use crate::torrent::InfoHash;
use crate::wire::{LiveMessage, Message};

mod hostile;
pub mod scenario;
mod synthetic;

pub use hostile::Hostile;
use hostile::{Forging, GREEDY_ASKS, liar_haves, walk_frames};
pub use synthetic::SyntheticTs;

pub type NodeId = usize;

#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub role: Role,
    pub latency: Duration,
    pub upload_limit: Option<u64>,
    /// The node's link capacity in bytes per second (all wire bytes), if limited.
    pub link_rate: Option<u64>,
    pub join_at: Duration,
    /// A hostile node, and of which kind.
    pub hostile: Option<Hostile>,
    /// The node's own share of every link's one-way delay (its access network); a link's
    /// delay is the sum of its two ends'. `None`: half the simulation's `one_way`.
    pub one_way: Option<Duration>,
    /// Whether others can connect to it (false: behind a NAT or firewall; it only dials out).
    pub dialable: bool,
    /// Leaves the swarm then (its connections close), if ever.
    pub leave_at: Option<Duration>,
    /// TCP segment loss on its access link, 0 to 1.
    pub loss: f64,
    /// Its TCP congestion control, which sets how fast it sends under loss.
    pub congestion: Congestion,
    /// Always serve and feed the seedboxes first (the injector's `--trusted`).
    pub trusts_seeds: bool,
}

impl NodeSpec {
    pub fn new(role: Role) -> Self {
        NodeSpec {
            role,
            latency: Duration::from_millis(2000),
            upload_limit: None,
            link_rate: None,
            join_at: Duration::ZERO,
            hostile: None,
            one_way: None,
            dialable: true,
            leave_at: None,
            loss: 0.0,
            congestion: Congestion::Cubic,
            trusts_seeds: false,
        }
    }
}

/// A sender's TCP congestion control, as far as the loss model goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Congestion {
    /// Loss-based (CUBIC, Reno, Linux's default): under random loss a connection carries
    /// TCP's rate (Mathis et al. 1997), a window of 1.22 / √p segments per round trip.
    #[default]
    Cubic,
    /// Model-based (BBR, which real nodes ask for): random loss does not slow the sender
    /// (below about 15 %, the path's rate times 1 - p: Cardwell et al., Linux commit
    /// 0f8782ea1497, 2016); lost segments are still sent again, on the uplink, and cost
    /// the message a round trip.
    Bbr,
}

/// The stream the simulated injector produces (see [`SyntheticTs`]).
#[derive(Clone, Debug)]
pub struct StreamSpec {
    /// MPEG-TS bytes per piece (rounded down to whole 188-byte packets, at least 3), and the
    /// torrent's piece length.
    pub piece_payload: usize,
    /// This much TS, `piece_payload` bytes, goes into the injector every interval.
    pub piece_interval: Duration,
    /// Every n-th piece starts at a keyframe (the first one does).
    pub keyframe_every: u64,
    /// Data pieces; the end-of-stream piece follows them, one interval after the last.
    pub pieces: u64,
    /// Sequence numbers of pieces lost between the injector and its swarm core: made and
    /// signed, but never seen by the swarm (for tests).
    pub drop_seqs: Vec<u64>,
}

struct Node {
    spec: NodeSpec,
    swarm: Option<Swarm>,
    addr: SocketAddr,
    conns: HashMap<PeerId, (NodeId, PeerId)>,
    /// When the node's uplink is free again (serialisation of what it sends).
    link_free_at: Instant,
    timer_gen: u64,
    /// The instant of the timer event now scheduled, so an unchanged deadline is not
    /// scheduled again after every event.
    timer_at: Option<Instant>,
    output: Vec<u8>,
    deliveries: Vec<Delivery>,
    /// A forger's place in each connection's byte stream.
    forging: HashMap<PeerId, Forging>,
    /// Per connection: when its TCP send window lets the next bytes go, and when its last
    /// bytes arrive (TCP delivers in order).
    conn_free_at: HashMap<PeerId, Instant>,
    conn_last_arrival: HashMap<PeerId, Instant>,
    /// Output delay behind the injector's clock, one count per data piece, in DELAY_BUCKET
    /// steps (the last bucket holds everything beyond).
    delays: Vec<u32>,
    /// How old pieces were when they arrived (wall clock minus their timestamp), pushed and
    /// requested, in DELAY_BUCKET steps as `delays`.
    arrival_ages: [Vec<u32>; 2],
    /// How long what the node sent waited to leave (behind its uplink and its connection's
    /// TCP rate), per message, as `delays`.
    send_waits: Vec<u32>,
    /// Pieces the player skipped, by time since the node joined, in MISS_BUCKET steps (the
    /// last bucket holds everything beyond): a startup problem shows in the first buckets.
    missed_since_join: [u32; MISS_BUCKETS],
    /// The status the node had when it left.
    left_with: Option<SwarmStatus>,
}

/// Resolution and range of the per-node histogram of misses by time since joining.
pub const MISS_BUCKET: Duration = Duration::from_secs(5);
pub const MISS_BUCKETS: usize = 4;

/// Resolution and range of the per-node delay histogram.
pub const DELAY_BUCKET: Duration = Duration::from_millis(20);
const DELAY_BUCKETS: usize = 1000;
/// TCP's maximum segment size, for the loss model.
const MSS: f64 = 1460.0;
/// How long a dial to an address that drops it (not dialable) takes to fail.
const UNREACHABLE_AFTER: Duration = Duration::from_secs(5);

/// A tracker that answers each announce with a random sample of the peers that are up.
#[derive(Clone, Copy, Debug)]
pub struct TrackerSpec {
    /// Peers per answer at most (real trackers send 50 by default).
    pub sample: usize,
    /// Time from a node's start to its first answer.
    pub delay: Duration,
    /// How often a node announces again.
    pub every: Duration,
}

#[derive(Debug)]
enum Event {
    Join(NodeId),
    Timer(NodeId, u64),
    Connect {
        from: NodeId,
        to: SocketAddr,
    },
    Data {
        to: NodeId,
        conn: PeerId,
        data: Bytes,
    },
    Closed {
        to: NodeId,
        conn: PeerId,
    },
    /// A dial to an address that never answers gives up.
    ConnectFailed {
        from: NodeId,
        to: SocketAddr,
    },
    /// Bytes node `node` transmitted on connection `conn` have left it.
    Sent {
        node: NodeId,
        conn: PeerId,
        len: usize,
    },
    Announce(NodeId),
    Leave(NodeId),
    /// The `n`-th piece interval: `piece_payload` bytes of TS into the injector; at
    /// `n == pieces`, the end of input.
    Inject(u64),
}

pub struct Sim {
    pub now: Instant,
    start: Instant,
    seq_counter: u64,
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    events: HashMap<u64, Event>,
    nodes: Vec<Node>,
    key: SigningKey,
    info_hash: InfoHash,
    /// Every node checks a relayed piece's signature; the memo makes that once per piece.
    verify_memo: Arc<VerifyMemo>,
    stream: StreamSpec,
    ts: SyntheticTs,
    injector: Injector,
    /// Payload of every data piece the injector handed to its swarm, by sequence number.
    pub injected: Vec<(u64, Bytes)>,
    /// Payload of every data piece the injector made that its swarm never saw (`drop_seqs`,
    /// or made while the injector node was not up), by sequence number.
    pub dropped: Vec<(u64, Bytes)>,
    one_way: Duration,
    seed: u64,
    pub events_run: u64,
    by_addr: HashMap<SocketAddr, NodeId>,
    /// Nodes that are up, for the tracker (with each one's place in the list).
    up: Vec<NodeId>,
    up_at: HashMap<NodeId, usize>,
    tracker: Option<TrackerSpec>,
    /// Draws of the network model (loss) and the tracker: seeded, so runs replay.
    rng: ChaCha8Rng,
    /// Keep every node's output bytes and deliveries (tests); off for large runs.
    record_output: bool,
    /// Every node's `Config::substreams`.
    substreams: u8,
}

/// Virtual wall clock: microseconds since the Unix epoch at simulation start.
const WALL_START_US: u64 = 1_700_000_000_000_000;
/// The injector's epoch: the sequence number of its first piece.
/// As the real injector's, its wall clock in milliseconds (see `Injector::new`).
pub const FIRST_SEQ: u64 = WALL_START_US / 1000;

impl Sim {
    pub fn new(seed: u64, one_way: Duration, stream: StreamSpec, nodes: Vec<NodeSpec>) -> Self {
        let start = Instant::now();
        let key = SigningKey::from_bytes(&[seed as u8 ^ 0x5a; 32]);
        let info_hash = InfoHash([seed as u8; 20]);
        let ts = SyntheticTs::new(
            stream.piece_payload,
            stream.keyframe_every,
            stream.piece_interval,
        );
        let injector = Injector::new(
            key.clone(),
            info_hash,
            stream.piece_payload,
            DEFAULT_FLUSH_AFTER,
            FIRST_SEQ,
        );
        let mut sim = Sim {
            now: start,
            start,
            seq_counter: 0,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            nodes: Vec::new(),
            key,
            info_hash,
            verify_memo: Arc::default(),
            stream,
            ts,
            injector,
            injected: Vec::new(),
            dropped: Vec::new(),
            one_way,
            seed,
            events_run: 0,
            by_addr: HashMap::new(),
            up: Vec::new(),
            up_at: HashMap::new(),
            tracker: None,
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x51a1),
            record_output: true,
            substreams: 0,
        };
        for (i, spec) in nodes.into_iter().enumerate() {
            let addr = SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250) as u8 + 1)),
                6881,
            );
            let join = start + spec.join_at;
            if let Some(leave) = spec.leave_at {
                sim.schedule(start + leave.max(spec.join_at), Event::Leave(i));
            }
            sim.by_addr.insert(addr, i);
            sim.nodes.push(Node {
                spec,
                swarm: None,
                addr,
                conns: HashMap::new(),
                link_free_at: start,
                timer_gen: 0,
                timer_at: None,
                output: Vec::new(),
                deliveries: Vec::new(),
                forging: HashMap::new(),
                conn_free_at: HashMap::new(),
                conn_last_arrival: HashMap::new(),
                delays: Vec::new(),
                arrival_ages: Default::default(),
                send_waits: Vec::new(),
                missed_since_join: [0; MISS_BUCKETS],
                left_with: None,
            });
            sim.schedule(join, Event::Join(i));
        }
        for n in 0..sim.stream.pieces + 1 {
            let at = start + sim.stream.piece_interval * n as u32;
            sim.schedule(at, Event::Inject(n));
        }
        sim
    }

    /// Peers learn of each other from a tracker that samples the peers that are up, instead
    /// of every node being told of everyone who joined before it.
    pub fn with_tracker(mut self, tracker: TrackerSpec) -> Self {
        self.tracker = Some(tracker);
        self
    }

    /// Push the stream along this many substreams (default 0: pull only).
    pub fn with_substreams(mut self, substreams: u8) -> Self {
        self.substreams = substreams;
        self
    }

    /// Whether to keep every node's output bytes and deliveries (default on).
    pub fn record_output(mut self, on: bool) -> Self {
        self.record_output = on;
        self
    }

    /// One link's one-way delay: the sum of its ends' access delays.
    fn link_delay(&self, i: NodeId, j: NodeId) -> Duration {
        let half = |n: &Node| n.spec.one_way.unwrap_or(self.one_way / 2);
        half(&self.nodes[i]) + half(&self.nodes[j])
    }

    fn schedule(&mut self, at: Instant, ev: Event) {
        self.seq_counter += 1;
        self.queue.push(Reverse((at, self.seq_counter)));
        self.events.insert(self.seq_counter, ev);
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Runs until no event is left or `limit` of virtual time has passed.
    pub fn run_for(&mut self, limit: Duration) {
        let end = self.start + limit;
        while let Some(Reverse((at, id))) = self.queue.peek().copied() {
            if at > end {
                break;
            }
            self.queue.pop();
            self.now = at;
            let ev = self.events.remove(&id).unwrap();
            self.events_run += 1;
            self.handle(ev);
        }
    }

    fn handle(&mut self, ev: Event) {
        let now = self.now;
        match ev {
            Event::Join(i) => {
                let spec = &self.nodes[i].spec;
                let mut config = Config::new(spec.role, self.info_hash, self.key.verifying_key());
                config.latency = spec.latency;
                config.upload_limit = spec.upload_limit;
                config.max_payload = self.stream.piece_payload as u32;
                config.listen_port = Some(6881);
                config.rng_seed = self.seed.wrapping_mul(1000).wrapping_add(i as u64);
                config.verify_memo = Some(self.verify_memo.clone());
                config.substreams = self.substreams;
                config.record_arrivals = true;
                config.send_backlog = Some(crate::swarm::DEFAULT_SEND_BACKLOG);
                let mut id = *b"-NL0100-000000000000";
                id[8..16].copy_from_slice(&(i as u64).to_be_bytes());
                config.peer_id = id;
                config.self_addrs = vec![self.nodes[i].addr];
                if self.nodes[i].spec.trusts_seeds {
                    config.trusted = (self.nodes.iter())
                        .filter(|n| n.spec.role == Role::Seed)
                        .map(|n| n.addr)
                        .collect();
                }
                let mut swarm = Swarm::new(config, now);
                match self.tracker {
                    Some(t) => self.schedule(now + t.delay, Event::Announce(i)),
                    None => {
                        // Everyone who joined before.
                        let addrs: Vec<SocketAddr> =
                            self.up.iter().map(|&j| self.nodes[j].addr).collect();
                        swarm.handle(now, Input::PeerAddrs(addrs));
                    }
                }
                self.up_at.insert(i, self.up.len());
                self.up.push(i);
                self.nodes[i].swarm = Some(swarm);
                self.drain(i);
            }
            Event::Announce(i) => {
                let (Some(t), true) = (self.tracker, self.nodes[i].swarm.is_some()) else {
                    return;
                };
                let mut addrs = Vec::with_capacity(t.sample);
                if self.up.len() <= t.sample + 1 {
                    addrs.extend(
                        self.up
                            .iter()
                            .filter(|&&j| j != i)
                            .map(|&j| self.nodes[j].addr),
                    );
                } else {
                    while addrs.len() < t.sample {
                        let j = self.up[self.rng.random_range(0..self.up.len())];
                        let a = self.nodes[j].addr;
                        if j != i && !addrs.contains(&a) {
                            addrs.push(a);
                        }
                    }
                }
                self.nodes[i]
                    .swarm
                    .as_mut()
                    .unwrap()
                    .handle(now, Input::PeerAddrs(addrs));
                self.drain(i);
                self.schedule(now + t.every, Event::Announce(i));
            }
            Event::Leave(i) => {
                let Some(swarm) = self.nodes[i].swarm.take() else {
                    return;
                };
                self.nodes[i].left_with = Some(swarm.status(now));
                if let Some(pos) = self.up_at.remove(&i) {
                    self.up.swap_remove(pos);
                    if let Some(&moved) = self.up.get(pos) {
                        self.up_at.insert(moved, pos);
                    }
                }
                // In the order of our ids, not the map's (which differs from run to run):
                // closes due at the same instant are handled in the order scheduled.
                let mut conns: Vec<(PeerId, (NodeId, PeerId))> =
                    self.nodes[i].conns.drain().collect();
                conns.sort_unstable_by_key(|&(id, _)| id);
                let conns = conns.into_iter().map(|(_, c)| c);
                for (j, remote) in conns {
                    let at = now + self.link_delay(i, j);
                    self.schedule(
                        at,
                        Event::Closed {
                            to: j,
                            conn: remote,
                        },
                    );
                }
            }
            Event::ConnectFailed { from, to } => {
                if let Some(s) = self.nodes[from].swarm.as_mut() {
                    s.handle(now, Input::ConnectFailed(to));
                    self.drain(from);
                }
            }
            Event::Timer(i, generation) => {
                let node = &mut self.nodes[i];
                if node.timer_gen == generation
                    && let Some(s) = node.swarm.as_mut()
                {
                    node.timer_at = None;
                    s.handle(now, Input::Timeout);
                    self.drain(i);
                }
            }
            Event::Connect { from, to } => {
                if self.nodes[from].swarm.is_none() {
                    return;
                }
                let target = self
                    .by_addr
                    .get(&to)
                    .copied()
                    .filter(|&j| self.nodes[j].swarm.is_some());
                if let Some(j) = target
                    && !self.nodes[j].spec.dialable
                {
                    // Dropped by a NAT or firewall: the dial times out.
                    let at = now + UNREACHABLE_AFTER.saturating_sub(self.link_delay(from, j) * 2);
                    self.schedule(at, Event::ConnectFailed { from, to });
                    return;
                }
                let Some(j) = target else {
                    if let Some(s) = self.nodes[from].swarm.as_mut() {
                        s.handle(now, Input::ConnectFailed(to));
                    }
                    self.drain(from);
                    return;
                };
                let from_addr = SocketAddr::new(self.nodes[from].addr.ip(), 40000 + j as u16);
                let a = self.nodes[from]
                    .swarm
                    .as_mut()
                    .unwrap()
                    .accept(now, to, Direction::Outbound)
                    .expect("outbound connections are taken");
                match self.nodes[j].swarm.as_mut().unwrap().accept(
                    now,
                    from_addr,
                    Direction::Inbound,
                ) {
                    Ok(b) => {
                        self.nodes[from].conns.insert(a, (j, b));
                        self.nodes[j].conns.insert(b, (from, a));
                    }
                    // Refused: the dialler sees the connection close.
                    Err(_) => {
                        let at = now + self.link_delay(from, j);
                        self.schedule(at, Event::Closed { to: from, conn: a });
                        self.nodes[from].conns.insert(a, (j, 0));
                    }
                }
                self.drain(from);
                self.drain(j);
            }
            Event::Data { to, conn, data } => {
                if self.nodes[to].swarm.is_some() && self.nodes[to].conns.contains_key(&conn) {
                    self.nodes[to]
                        .swarm
                        .as_mut()
                        .unwrap()
                        .handle(now, Input::Data(conn, data));
                    self.drain(to);
                }
            }
            Event::Sent { node, conn, len } => {
                if self.nodes[node].conns.contains_key(&conn)
                    && let Some(s) = self.nodes[node].swarm.as_mut()
                {
                    s.handle(now, Input::Sent(conn, len));
                    self.drain(node);
                }
            }
            Event::Closed { to, conn } => {
                if self.nodes[to].swarm.is_some() && self.nodes[to].conns.remove(&conn).is_some() {
                    self.nodes[to].conn_free_at.remove(&conn);
                    self.nodes[to].conn_last_arrival.remove(&conn);
                    self.nodes[to]
                        .swarm
                        .as_mut()
                        .unwrap()
                        .handle(now, Input::Closed(conn));
                    self.drain(to);
                }
            }
            Event::Inject(n) => {
                // The injector runs whether or not its node is up; what it makes while the
                // node is down is lost, like `drop_seqs`.
                let wall_us = self.wall_us();
                let pieces = if n < self.stream.pieces {
                    let chunk = self.ts.next_chunk();
                    let pieces = self.injector.push(now, wall_us, &chunk);
                    // Each chunk fills exactly one piece: the time bound never has to fire.
                    debug_assert_eq!(self.injector.poll_timeout(), None);
                    pieces
                } else {
                    self.injector.finish(wall_us)
                };
                let inj = self
                    .nodes
                    .iter()
                    .position(|node| node.spec.role == Role::Injector && node.swarm.is_some());
                for piece in pieces {
                    let lost = self.stream.drop_seqs.contains(&piece.seq());
                    if !piece.header().end_of_stream() {
                        let made = (piece.seq(), piece.payload());
                        if lost || inj.is_none() {
                            self.dropped.push(made);
                        } else {
                            self.injected.push(made);
                        }
                    }
                    let Some(inj) = inj.filter(|_| !lost) else {
                        continue;
                    };
                    self.nodes[inj]
                        .swarm
                        .as_mut()
                        .unwrap()
                        .handle(now, Input::LocalPiece(piece));
                    self.drain(inj);
                }
            }
        }
    }

    fn drain(&mut self, i: NodeId) {
        let now = self.now;
        let wall_us = self.wall_us();
        let node = &mut self.nodes[i];
        for a in node
            .swarm
            .as_mut()
            .map(|s| s.take_arrivals())
            .unwrap_or_default()
        {
            let age = Duration::from_micros(wall_us.saturating_sub(a.timestamp_us));
            add_to_histogram(&mut node.arrival_ages[a.pushed as usize], age);
        }
        loop {
            let Some(out) = self.nodes[i].swarm.as_mut().and_then(|s| s.poll_output()) else {
                break;
            };
            match out {
                Output::Transmit { peer, data } => {
                    let Some(&(j, remote)) = self.nodes[i].conns.get(&peer) else {
                        continue;
                    };
                    let len = data.len();
                    let Some(hostile) = self.nodes[i].spec.hostile else {
                        let left = self.send(i, peer, j, remote, data);
                        self.schedule(
                            left,
                            Event::Sent {
                                node: i,
                                conn: peer,
                                len,
                            },
                        );
                        continue;
                    };
                    // What a hostile node's core sent counts as gone at once: its bytes on
                    // the wire are others.
                    self.schedule(
                        now,
                        Event::Sent {
                            node: i,
                            conn: peer,
                            len,
                        },
                    );
                    let state = self.nodes[i].forging.entry(peer).or_default();
                    let data = walk_frames(data, state, hostile.pieces());
                    let at_boundary = !state.piece_next;
                    if !data.is_empty() {
                        self.send(i, peer, j, remote, data);
                    }
                    match hostile {
                        Hostile::Greedy if at_boundary => self.greedy_requests(i, peer, j, remote),
                        Hostile::Liar if at_boundary => self.lies(i, peer, j, remote),
                        _ => {}
                    }
                }
                Output::Connect(addr) => {
                    let rtt = match self.by_addr.get(&addr) {
                        Some(&j) => self.link_delay(i, j) * 2,
                        None => self.one_way * 2,
                    };
                    let at = now + rtt;
                    self.schedule(at, Event::Connect { from: i, to: addr });
                }
                Output::Disconnect { peer, .. } => {
                    if let Some((j, remote)) = self.nodes[i].conns.remove(&peer) {
                        self.nodes[i].conn_free_at.remove(&peer);
                        self.nodes[i].conn_last_arrival.remove(&peer);
                        let at = now + self.link_delay(i, j);
                        self.schedule(
                            at,
                            Event::Closed {
                                to: j,
                                conn: remote,
                            },
                        );
                    }
                }
                Output::Deliver(d) => {
                    let node = &mut self.nodes[i];
                    if let Delivery::Gap { count, .. } = &d {
                        let since = now
                            .duration_since(self.start)
                            .saturating_sub(node.spec.join_at);
                        let bucket = (since.as_secs() / MISS_BUCKET.as_secs()) as usize;
                        node.missed_since_join[bucket.min(MISS_BUCKETS - 1)] += *count as u32;
                    }
                    if let Delivery::Data { timestamp_us, .. } = &d {
                        let delay = Duration::from_micros(wall_us.saturating_sub(*timestamp_us));
                        add_to_histogram(&mut node.delays, delay);
                    }
                    if self.record_output {
                        if let Delivery::Data { payload, .. } = &d {
                            node.output.extend_from_slice(payload);
                        }
                        node.deliveries.push(d);
                    }
                }
            }
        }
        if let Some(at) = self.nodes[i].swarm.as_ref().and_then(|s| s.poll_timeout()) {
            let at = at.max(now);
            if self.nodes[i].timer_at != Some(at) {
                self.nodes[i].timer_gen += 1;
                self.nodes[i].timer_at = Some(at);
                let generation = self.nodes[i].timer_gen;
                self.schedule(at, Event::Timer(i, generation));
            }
        }
    }

    /// What a greedy node adds after its own bytes: a REQUEST for each of the last
    /// [`GREEDY_ASKS`] pieces made.
    fn greedy_requests(&mut self, i: NodeId, peer: PeerId, j: NodeId, remote: PeerId) {
        let mut asks = BytesMut::new();
        for &(seq, _) in self.injected.iter().rev().take(GREEDY_ASKS) {
            let ask = LiveMessage::Request { seq };
            wire::encode(&Message::Live(ask), wire::OUR_LIVE_ID, &mut asks);
        }
        self.send(i, peer, j, remote, asks.freeze());
    }

    /// What a liar adds after its own bytes: claims of the pieces after the newest, made or
    /// not, as keyframes stamped now; and once per connection a maximum-size HAVE of pieces
    /// a million numbers ahead.
    fn lies(&mut self, i: NodeId, peer: PeerId, j: NodeId, remote: PeerId) {
        let Some(&(newest, _)) = self.injected.last() else {
            return;
        };
        let now_us = self.wall_us();
        let state = self.nodes[i].forging.entry(peer).or_default();
        let lies = liar_haves(state, newest, now_us);
        if !lies.is_empty() {
            self.send(i, peer, j, remote, lies);
        }
    }

    /// Puts bytes node `i` sends on connection `peer` on the wire to node `j`'s `remote`.
    /// Returns when the last of the bytes left node `i`.
    fn send(&mut self, i: NodeId, peer: PeerId, j: NodeId, remote: PeerId, data: Bytes) -> Instant {
        let (left, at) = self.arrival(i, peer, j, data.len());
        self.schedule(
            at,
            Event::Data {
                to: j,
                conn: remote,
                data,
            },
        );
        left
    }

    /// When `len` bytes node `i` sends on connection `peer` (to node `j`) arrive: after its
    /// uplink and the connection's TCP rate let them go, the link's delay, and, if a segment
    /// is lost, one more round trip (fast retransmit). Under loss a connection's rate is
    /// TCP's (Mathis et al. 1997: a window of 1.22 / √p segments per round trip). TCP sends
    /// a window at once and then one per round trip, so bytes may leave up to one round trip
    /// ahead of the rate's schedule: a connection that kept up carries a piece that fits in
    /// its window without waiting for the rate. A BBR sender is not held to that rate (see
    /// [`Congestion`]). In order per connection, as TCP is.
    /// Also returns when the bytes left node `i` (for [`Input::Sent`]).
    fn arrival(&mut self, i: NodeId, peer: PeerId, j: NodeId, len: usize) -> (Instant, Instant) {
        let now = self.now;
        let link = self.link_delay(i, j);
        let loss = 1.0 - (1.0 - self.nodes[i].spec.loss) * (1.0 - self.nodes[j].spec.loss);
        let rtt = (link * 2).max(Duration::from_millis(1));
        let lost = loss > 0.0 && {
            let segments = (len as f64 / MSS).ceil() as i32;
            self.rng.random::<f64>() >= (1.0 - loss).powi(segments)
        };
        let node = &mut self.nodes[i];
        let tx = |rate: f64| Duration::from_secs_f64(len as f64 / rate);
        let uplink = (node.spec.link_rate)
            .map(|r| tx(r as f64))
            .unwrap_or_default();
        let (uplink, window) = match node.spec.congestion {
            _ if loss == 0.0 => (uplink, Duration::ZERO),
            Congestion::Cubic => (uplink, tx(MSS / rtt.as_secs_f64() * 1.22 / loss.sqrt())),
            Congestion::Bbr => (uplink.div_f64(1.0 - loss), Duration::ZERO),
        };
        // The uplink is busy only while the bytes are on the wire; a connection held back by
        // its TCP window waits in its own socket buffer, not in front of the others.
        let on_wire = node.link_free_at.max(now) + uplink;
        node.link_free_at = on_wire;
        let free = node.conn_free_at.get(&peer).copied().unwrap_or(now);
        let paced = free.max(now) + window;
        node.conn_free_at.insert(peer, paced);
        let sent = if window.is_zero() {
            paced
        } else {
            paced.checked_sub(rtt).map_or(now, |t| t.max(now))
        };
        let left = on_wire.max(sent);
        add_to_histogram(&mut node.send_waits, left - now);
        let mut at = left + link;
        if lost {
            at += rtt;
        }
        let last = node.conn_last_arrival.entry(peer).or_insert(at);
        at = at.max(*last);
        *last = at;
        (left, at)
    }

    /// How old the pieces node `i` verified were when they arrived, requested
    /// (`pushed == false`) or pushed: a histogram as [`Sim::delays`].
    pub fn arrival_ages(&self, i: NodeId, pushed: bool) -> &[u32] {
        &self.nodes[i].arrival_ages[pushed as usize]
    }

    /// Node `i`'s depth in each substream's tree now: hops from the injector along the
    /// parents (`None`: no parent, or a path that does not reach the injector).
    pub fn depths(&self, i: NodeId) -> Vec<Option<u32>> {
        let parent = |n: NodeId, k: usize| -> Option<NodeId> {
            let s = self.nodes[n].swarm.as_ref()?;
            let conn = (*s.substream_parents().get(k)?)?;
            self.nodes[n].conns.get(&conn).map(|&(j, _)| j)
        };
        let Some(s) = self.nodes[i].swarm.as_ref() else {
            return Vec::new();
        };
        (0..s.substream_parents().len())
            .map(|k| {
                let (mut n, mut hops) = (i, 0);
                while self.nodes[n].spec.role != Role::Injector {
                    n = parent(n, k)?;
                    hops += 1;
                    if hops > 64 {
                        return None; // a loop
                    }
                }
                Some(hops)
            })
            .collect()
    }

    /// How long node `i`'s messages waited to leave it: a histogram as [`Sim::delays`].
    /// Pieces node `i`'s player skipped, by time since it joined (see `MISS_BUCKET`).
    pub fn missed_since_join(&self, i: NodeId) -> [u32; MISS_BUCKETS] {
        self.nodes[i].missed_since_join
    }

    pub fn send_waits(&self, i: NodeId) -> &[u32] {
        &self.nodes[i].send_waits
    }

    /// Node `i`'s output delays behind the injector's clock: a count of data pieces per
    /// DELAY_BUCKET (bucket `k` holds delays from `k` to `k + 1` buckets).
    pub fn delays(&self, i: NodeId) -> &[u32] {
        &self.nodes[i].delays
    }

    pub fn is_up(&self, i: NodeId) -> bool {
        self.nodes[i].swarm.is_some()
    }

    pub fn spec(&self, i: NodeId) -> &NodeSpec {
        &self.nodes[i].spec
    }

    pub fn stream(&self) -> &StreamSpec {
        &self.stream
    }

    /// The node's status now, or as it was when it left.
    pub fn status(&self, i: NodeId) -> Option<SwarmStatus> {
        match &self.nodes[i].swarm {
            Some(s) => Some(s.status(self.now)),
            None => self.nodes[i].left_with.clone(),
        }
    }

    pub fn output(&self, i: NodeId) -> &[u8] {
        &self.nodes[i].output
    }

    pub fn deliveries(&self, i: NodeId) -> &[Delivery] {
        &self.nodes[i].deliveries
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn role(&self, i: NodeId) -> Role {
        self.nodes[i].spec.role
    }

    /// The injected payloads from `seq` on, concatenated: what a receiver hooked at `seq` must
    /// output if it lost nothing.
    pub fn expected_from(&self, seq: u64) -> Vec<u8> {
        self.injected
            .iter()
            .filter(|(s, _)| *s >= seq)
            .flat_map(|(_, p)| p.iter().copied())
            .collect()
    }

    /// The payload of data piece `seq` as the injector handed it to its swarm.
    pub fn injected_payload(&self, seq: u64) -> Option<&Bytes> {
        let i = self.injected.binary_search_by_key(&seq, |(s, _)| *s).ok()?;
        Some(&self.injected[i].1)
    }

    /// The simulated injector (its counters: bytes in, pieces made).
    pub fn injector(&self) -> &Injector {
        &self.injector
    }

    /// Microseconds of virtual wall clock now (what `lag_ms` is measured against).
    pub fn wall_us(&self) -> u64 {
        WALL_START_US + (self.now - self.start).as_micros() as u64
    }
}

/// Counts `delay` in a DELAY_BUCKET histogram (the last bucket holds everything beyond).
fn add_to_histogram(counts: &mut Vec<u32>, delay: Duration) {
    let bucket = ((delay.as_micros() / DELAY_BUCKET.as_micros()) as usize).min(DELAY_BUCKETS - 1);
    if counts.len() <= bucket {
        counts.resize(bucket + 1, 0);
    }
    counts[bucket] += 1;
}

#[cfg(test)]
mod tests;
