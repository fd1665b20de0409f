//! Cost per event of the sans-IO swarm core (`nordlys_proto::swarm::Swarm`) with 10, 50 and 200
//! connected peers, in virtual time (no sockets, no sleeps).
//!
//! One receiver core, N inbound peers that completed the BitTorrent and BEP 10 handshakes,
//! unchoked us and are interested. The stream is 16 KiB pieces, one per 40 ms (25 pieces/s),
//! a keyframe piece every second. Each piece is one "round" of events, spread evenly over its
//! 40 ms of virtual time:
//! - every peer, in rotation (the first one changes each round), sends one HAVE for it: in a
//!   real swarm each peer tells each neighbour of each piece it gets, so HAVEs are by far the
//!   most frequent read, N per piece;
//! - the core requests the piece from the first peer that announced it; that peer answers
//!   when half the round has passed (about 20 ms later), with the signed piece in one read;
//!   the core verifies it (Ed25519) and tells the peers that have not yet announced it;
//! - timers fire as the node driver (`src/net/node.rs`) fires them: whenever the core's
//!   `poll_timeout` is reached, and at least every 250 ms (the driver's status wake-up).
//!
//! Groups:
//! - `core_events/peer_messages/{N}`: the time of the HAVE reads only (each `Input::Data`, the
//!   drain of its outputs and the `poll_timeout` the driver calls after it); elements = HAVE
//!   reads. This is where work the core redoes over all peers on every event shows.
//! - `core_events/pieces/{N}`: whole rounds (N HAVEs, the piece read with its verify, the
//!   timers); elements = pieces, so per-event figures are these divided by about N + 1.
//!
//! Each event is timed on its own, so what the harness does around it (signing the next piece,
//! decoding the core's output to find its requests) is not counted. The core lives across
//! criterion's iterations; sequence numbers and time only grow, and every request is answered,
//! so it stays in its steady state (checked and printed after each benchmark, with the mean
//! time in the core of each kind of event over that benchmark's run).
//!
//! Run: `cargo bench -p nordlys-proto --bench core_events` (under a minute).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::SigningKey;
use nordlys_proto::piece::{FLAG_RANDOM_ACCESS, PieceHeader, SignedPiece};
use nordlys_proto::swarm::wire::{self, ExtHandshake, HaveEntry, LiveMessage, Message};
use nordlys_proto::swarm::{
    Config, Direction, DisconnectReason, Input, Output, PeerId, Role, State, Swarm, SwarmStatus,
};
use nordlys_proto::torrent::{DEFAULT_PIECE_LENGTH, InfoHash};

// ----- adapter: every call into the core is here, so that porting the benchmark to another
// ----- core API means changing only these lines.

fn new_core(config: Config, now: Instant) -> Swarm {
    Swarm::new(config, now)
}

fn connect(swarm: &mut Swarm, now: Instant, addr: SocketAddr) -> PeerId {
    swarm
        .accept(now, addr, Direction::Inbound)
        .expect("max_peers is above the peers connected")
}

fn data(swarm: &mut Swarm, now: Instant, id: PeerId, bytes: &[u8]) {
    swarm.handle(now, Input::Data(id, bytes::Bytes::copy_from_slice(bytes)))
}

fn tick(swarm: &mut Swarm, now: Instant) {
    swarm.handle(now, Input::Timeout)
}

/// The contract: after each call, take every output.
fn drain(swarm: &mut Swarm) -> Vec<Output> {
    let mut out = Vec::new();
    while let Some(o) = swarm.poll_output() {
        out.push(o);
    }
    out
}

/// When the driver must call `tick` next (it asks after every event).
fn deadline(swarm: &Swarm) -> Option<Instant> {
    swarm.poll_timeout()
}

fn status(swarm: &Swarm, now: Instant) -> SwarmStatus {
    swarm.status(now)
}

/// What the harness needs from one output: bytes sent to a peer, a delivery, a disconnect.
enum Seen<'a> {
    Sent(PeerId, &'a [u8]),
    Delivered,
    Disconnected(PeerId, &'a DisconnectReason),
    Other,
}

fn seen(o: &Output) -> Seen<'_> {
    match o {
        Output::Transmit { peer, data } => Seen::Sent(*peer, data),
        Output::Deliver(_) => Seen::Delivered,
        Output::Disconnect { peer, reason } => Seen::Disconnected(*peer, reason),
        Output::Connect(_) => Seen::Other,
    }
}

// ----- the stream and the peers ----------------------------------------------------------

const PEER_COUNTS: [usize; 3] = [10, 50, 200];
const PIECE_INTERVAL: Duration = Duration::from_millis(40);
const PAYLOAD: usize = 188 * 87; // 16356 bytes: whole TS packets, about 16 KiB
const KEYFRAME_EVERY: u64 = 25; // one random-access piece per second of stream
const FIRST_SEQ: u64 = 1000;
const WALL_START_US: u64 = 1_700_000_000_000_000;
/// The peers' window: 30 s of stream (the torrent default), in pieces.
const WINDOW_PIECES: u64 = 750;
/// The node driver wakes (and calls `handle(now, Input::Timeout)`) at least this often.
const STATUS_EVERY: Duration = Duration::from_millis(250);
/// Stream run before measuring: hook-in, catch-up, and a full 30 s window held, so that the
/// store evicts one piece per piece received, as it does from then on.
const SETUP_STREAM: Duration = Duration::from_secs(32);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Have,
    Piece,
    Tick,
}

#[derive(Default, Debug)]
struct Counts {
    haves: u64,
    pieces: u64,
    ticks: u64,
    rounds: u64,
    delivered: u64,
    requests: u64,
    /// Time in the core by kind of event, for the breakdown printed after each benchmark.
    have_time: Duration,
    piece_time: Duration,
    tick_time: Duration,
}

struct Bench {
    swarm: Swarm,
    key: SigningKey,
    info_hash: InfoHash,
    peers: Vec<PeerId>,
    t0: Instant,
    /// The piece of the current round, and the next event within it (0..=N).
    seq: u64,
    slot: usize,
    /// Piece messages (in wire form) of the recent pieces, by sequence number.
    piece_frames: BTreeMap<u64, Bytes>,
    have_frame: Bytes,
    /// Requests the core sent and the peer has not answered yet: (peer, seq).
    pending: Vec<(PeerId, u64)>,
    wake: Instant,
    next_status: Instant,
    last_now: Instant,
    counts: Counts,
}

fn peer_addr(i: usize) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250) as u8 + 1)),
        6881,
    )
}

fn encoded(msg: &Message) -> Bytes {
    let mut buf = BytesMut::new();
    wire::encode(msg, wire::OUR_LIVE_ID, &mut buf);
    buf.freeze()
}

impl Bench {
    fn new(n: usize) -> Self {
        let key = SigningKey::from_bytes(&[0x5a; 32]);
        let info_hash = InfoHash([7; 20]);
        let t0 = Instant::now();
        // A receiver rather than a seed: it is the role most nodes have, and the only one that
        // runs every part of the per-event path (hook-in, picker with deadlines, playout,
        // deliveries). Answering every request within ~20 ms keeps its output cursor at the
        // newest piece, so it does not stall, rehook or skip: a steady state.
        let mut config = Config::new(Role::Receiver, info_hash, key.verifying_key());
        config.max_peers = 256;
        config.listen_port = Some(6881);
        let swarm = new_core(config, t0);
        let mut b = Bench {
            swarm,
            key,
            info_hash,
            peers: Vec::new(),
            t0,
            seq: FIRST_SEQ,
            slot: 0,
            piece_frames: BTreeMap::new(),
            have_frame: Bytes::new(),
            pending: Vec::new(),
            wake: t0,
            next_status: t0 + STATUS_EVERY,
            last_now: t0,
            counts: Counts::default(),
        };
        // What a real inbound peer sends: handshake, extended handshake, unchoke, interested.
        for i in 0..n {
            let id = connect(&mut b.swarm, t0, peer_addr(i));
            let outs = drain(&mut b.swarm);
            b.scan(&outs);
            let mut peer_id = *b"-XX0100-000000000000";
            peer_id[8..].copy_from_slice(format!("{i:012}").as_bytes());
            let hs = wire::Handshake {
                extensions: true,
                info_hash: info_hash.0,
                peer_id,
            };
            let ext = Message::ExtHandshake(ExtHandshake {
                live_id: Some(wire::OUR_LIVE_ID),
                listen_port: Some(6881),
                role: Some(Role::Receiver),
                client: Some("nordlys 0.1.0".into()),
                pex_id: None,
            });
            let mut ext_bytes = BytesMut::new();
            wire::encode(&ext, 0, &mut ext_bytes);
            let frames: [&[u8]; 4] = [
                &hs.encode(),
                &ext_bytes,
                &encoded(&Message::Unchoke),
                &encoded(&Message::Interested),
            ];
            for f in frames {
                data(&mut b.swarm, t0, id, f);
                let outs = drain(&mut b.swarm);
                b.scan(&outs);
            }
            b.peers.push(id);
        }
        b.wake = deadline(&b.swarm)
            .unwrap_or(t0 + STATUS_EVERY)
            .min(b.next_status);
        while b.round_start() < t0 + SETUP_STREAM {
            b.step();
        }
        let st = status(&b.swarm, b.last_now);
        assert_eq!(
            st.state,
            State::Playing,
            "core not playing after setup: {st:?}"
        );
        assert_eq!(st.peers, n);
        b.counts = Counts::default();
        b
    }

    fn n(&self) -> usize {
        self.peers.len()
    }

    fn round_start(&self) -> Instant {
        self.t0 + PIECE_INTERVAL * (self.seq - FIRST_SEQ) as u32
    }

    /// Time of the current slot: the round's 40 ms spread evenly over its N + 1 reads.
    fn slot_time(&self) -> Instant {
        self.round_start() + PIECE_INTERVAL * self.slot as u32 / (self.n() as u32 + 1)
    }

    /// The slot at which the peer asked for the piece answers: half a round after the request.
    fn reply_slot(&self) -> usize {
        self.n().div_ceil(2)
    }

    /// Signs the round's piece and encodes its HAVE (not timed).
    fn begin_round(&mut self) {
        let seq = self.seq;
        let n = seq - FIRST_SEQ;
        let timestamp_us = WALL_START_US + n * PIECE_INTERVAL.as_micros() as u64;
        let flags = if n.is_multiple_of(KEYFRAME_EVERY) {
            FLAG_RANDOM_ACCESS
        } else {
            0
        };
        let mut payload = vec![0x47u8; PAYLOAD];
        payload[1..9].copy_from_slice(&seq.to_be_bytes());
        let header = PieceHeader {
            seq,
            epoch: FIRST_SEQ,
            timestamp_us,
            flags,
            payload_len: 0,
        };
        let piece = SignedPiece::sign(&self.key, &self.info_hash, header, &payload);
        let frame = encoded(&Message::Live(LiveMessage::Piece(piece.wire().clone())));
        self.piece_frames.insert(seq, frame);
        while self.piece_frames.len() as u64 > WINDOW_PIECES {
            self.piece_frames.pop_first();
        }
        self.have_frame = encoded(&Message::Live(LiveMessage::Have {
            window_start: seq.saturating_sub(WINDOW_PIECES).max(FIRST_SEQ),
            entries: vec![HaveEntry {
                seq,
                timestamp_us,
                flags,
            }],
        }));
    }

    /// Runs one event: a timer if one is due before the next read, else the next read.
    /// Returns its kind and the time spent in the core (call, drain, `poll_timeout`).
    fn step(&mut self) -> (Kind, Duration) {
        let n = self.n();
        if self.slot == 0 && !self.piece_frames.contains_key(&self.seq) {
            self.begin_round();
        }
        let at = self.slot_time();
        if self.wake <= at {
            let now = self.wake.max(self.last_now);
            if now >= self.next_status {
                self.next_status = now + STATUS_EVERY;
            }
            let started = Instant::now();
            tick(&mut self.swarm, now);
            let outs = drain(&mut self.swarm);
            let wake = deadline(&self.swarm);
            let spent = started.elapsed();
            self.after(now, wake, &outs);
            self.counts.ticks += 1;
            self.counts.tick_time += spent;
            return (Kind::Tick, spent);
        }
        if self.slot == self.reply_slot()
            && let Some((peer, seq)) = self.pending.pop()
        {
            let Some(frame) = self.piece_frames.get(&seq).cloned() else {
                return self.step(); // too old to serve: let the request expire
            };
            let started = Instant::now();
            data(&mut self.swarm, at, peer, &frame);
            let outs = drain(&mut self.swarm);
            let wake = deadline(&self.swarm);
            let spent = started.elapsed();
            self.after(at, wake, &outs);
            self.counts.pieces += 1;
            self.counts.piece_time += spent;
            return (Kind::Piece, spent);
        }
        let kind = if self.slot == self.reply_slot() {
            None // the reply slot, nothing (more) to answer
        } else {
            // HAVE from the i-th peer of this round's rotation.
            let i = if self.slot < self.reply_slot() {
                self.slot
            } else {
                self.slot - 1
            };
            Some(self.peers[(i + (self.seq as usize)) % n])
        };
        self.slot += 1;
        if self.slot > n {
            self.slot = 0;
            self.seq += 1;
            self.counts.rounds += 1;
        }
        let Some(peer) = kind else {
            return self.step();
        };
        let frame = self.have_frame.clone();
        let started = Instant::now();
        data(&mut self.swarm, at, peer, &frame);
        let outs = drain(&mut self.swarm);
        let wake = deadline(&self.swarm);
        let spent = started.elapsed();
        self.after(at, wake, &outs);
        self.counts.haves += 1;
        self.counts.have_time += spent;
        (Kind::Have, spent)
    }

    fn after(&mut self, now: Instant, wake: Option<Instant>, outs: &[Output]) {
        self.last_now = self.last_now.max(now);
        self.wake = wake.unwrap_or(now + STATUS_EVERY).min(self.next_status);
        self.scan(outs);
    }

    /// Finds the core's requests (and cancels) in what it sent; checks nobody was dropped.
    fn scan(&mut self, outs: &[Output]) {
        let max_len = wire::max_message_len(DEFAULT_PIECE_LENGTH);
        for o in outs {
            match seen(o) {
                Seen::Sent(peer, mut bytes) => {
                    if bytes.len() >= wire::HANDSHAKE_LEN
                        && bytes[0] == 19
                        && &bytes[1..20] == wire::PROTOCOL
                    {
                        bytes = &bytes[wire::HANDSHAKE_LEN..];
                    }
                    while !bytes.is_empty() {
                        let (msg, used) = wire::decode(bytes, max_len).expect("core sent garbage");
                        bytes = &bytes[used..];
                        match msg {
                            Message::Live(LiveMessage::Request { seq }) => {
                                self.counts.requests += 1;
                                self.pending.push((peer, seq));
                            }
                            Message::Live(LiveMessage::Cancel { seq }) => {
                                self.pending.retain(|&p| p != (peer, seq));
                            }
                            _ => {}
                        }
                    }
                }
                Seen::Delivered => self.counts.delivered += 1,
                Seen::Disconnected(peer, reason) => panic!("core dropped peer {peer}: {reason}"),
                Seen::Other => {}
            }
        }
    }

    /// Runs events until `count` of the given kind were run; returns the time they took in
    /// the core (`Kind::Piece`: whole rounds, every event in them).
    fn run(&mut self, kind: Kind, count: u64) -> Duration {
        let mut total = Duration::ZERO;
        match kind {
            Kind::Piece => {
                let end = self.seq + count;
                while self.seq < end {
                    total += self.step().1;
                }
            }
            _ => {
                let mut done = 0;
                while done < count {
                    let (k, spent) = self.step();
                    if k == kind {
                        total += spent;
                        done += 1;
                    }
                }
            }
        }
        total
    }

    fn report(&self, group: &str) {
        let st = status(&self.swarm, self.last_now);
        let c = &self.counts;
        let rounds = c.rounds.max(1) as f64;
        let mean = |t: Duration, n: u64| t.as_secs_f64() * 1e6 / n.max(1) as f64;
        eprintln!(
            "  {group}/{}: {} rounds; per round {:.2} HAVE reads, {:.3} piece reads, {:.3} timers, \
             {:.3} requests, {:.3} deliveries | state {:?}, missed {}, late {}, timeouts {}, \
             duplicates {}, continuity {:.4}, peers {}\n    mean time in the core: \
             HAVE read {:.2} µs, piece read {:.2} µs, timer {:.2} µs",
            self.n(),
            c.rounds,
            c.haves as f64 / rounds,
            c.pieces as f64 / rounds,
            c.ticks as f64 / rounds,
            c.requests as f64 / rounds,
            c.delivered as f64 / rounds,
            st.state,
            st.pieces_missed,
            st.pieces_late,
            st.request_timeouts,
            st.duplicates,
            st.continuity,
            st.peers,
            mean(c.have_time, c.haves),
            mean(c.piece_time, c.pieces),
            mean(c.tick_time, c.ticks),
        );
    }
}

fn core_events(c: &mut Criterion) {
    for (name, kind) in [("peer_messages", Kind::Have), ("pieces", Kind::Piece)] {
        let mut g = c.benchmark_group(format!("core_events/{name}"));
        g.warm_up_time(Duration::from_secs(1));
        g.measurement_time(Duration::from_secs(3));
        g.sample_size(20);
        g.throughput(Throughput::Elements(1));
        for n in PEER_COUNTS {
            let mut bench = Bench::new(n);
            g.bench_function(BenchmarkId::from_parameter(n), |b| {
                b.iter_custom(|iters| bench.run(kind, iters))
            });
            bench.report(name);
        }
        g.finish();
    }
}

criterion_group!(benches, core_events);
criterion_main!(benches);
