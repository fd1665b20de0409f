//! A deterministic discrete-event simulator for swarms of [`Swarm`] cores.
//!
//! No sockets, no threads, no clock: links are modelled with a latency and each node's upload
//! capacity; time jumps from event to event. The same seed gives the same run, so a failing
//! scenario can be replayed exactly. Tests and the `sim` benchmark use it.
//!
//! The injector node is fed like the real one: a synthetic MPEG-TS stream ([`SyntheticTs`])
//! goes through the same [`Injector`] (packetizer, sequence numbers, signing, end of stream)
//! as the tokio driver's.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ed25519_dalek::SigningKey;

use crate::inject::Injector;
use crate::inject::packetizer::DEFAULT_FLUSH_AFTER;
use crate::inject::ts::build::{packet, pat_section, pmt_section, psi_packet};
use crate::inject::ts::{PACKET_SIZE, PCR_HZ, PCR_WRAP};
use crate::swarm::{
    Config, Delivery, Direction, Input, Output, PeerId, Role, Swarm, SwarmStatus, wire,
};
use crate::torrent::InfoHash;

pub type NodeId = usize;

#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub role: Role,
    pub latency: Duration,
    pub upload_limit: Option<u64>,
    /// The node's link capacity in bytes per second (all wire bytes), if limited.
    pub link_rate: Option<u64>,
    pub join_at: Duration,
    /// A hostile node: every piece it sends has one payload byte flipped.
    pub corrupts_pieces: bool,
}

impl NodeSpec {
    pub fn new(role: Role) -> Self {
        NodeSpec {
            role,
            latency: Duration::from_millis(2000),
            upload_limit: None,
            link_rate: None,
            join_at: Duration::ZERO,
            corrupts_pieces: false,
        }
    }
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
    output: Vec<u8>,
    deliveries: Vec<Delivery>,
    first_transmit_done: HashMap<PeerId, bool>,
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
}

/// Virtual wall clock: microseconds since the Unix epoch at simulation start.
const WALL_START_US: u64 = 1_700_000_000_000_000;
/// The injector's epoch: the sequence number of its first piece.
pub const FIRST_SEQ: u64 = 1000;

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
            stream,
            ts,
            injector,
            injected: Vec::new(),
            dropped: Vec::new(),
            one_way,
            seed,
            events_run: 0,
        };
        for (i, spec) in nodes.into_iter().enumerate() {
            let addr = SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250) as u8 + 1)),
                6881,
            );
            let join = start + spec.join_at;
            sim.nodes.push(Node {
                spec,
                swarm: None,
                addr,
                conns: HashMap::new(),
                link_free_at: start,
                timer_gen: 0,
                output: Vec::new(),
                deliveries: Vec::new(),
                first_transmit_done: HashMap::new(),
            });
            sim.schedule(join, Event::Join(i));
        }
        for n in 0..sim.stream.pieces + 1 {
            let at = start + sim.stream.piece_interval * n as u32;
            sim.schedule(at, Event::Inject(n));
        }
        sim
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
                let mut id = *b"-NL0100-000000000000";
                id[8..16].copy_from_slice(&(i as u64).to_be_bytes());
                config.peer_id = id;
                config.self_addrs = vec![self.nodes[i].addr];
                let mut swarm = Swarm::new(config, now);
                // The tracker: everyone who joined before.
                let addrs: Vec<SocketAddr> = self
                    .nodes
                    .iter()
                    .enumerate()
                    .filter(|(j, n)| *j != i && n.swarm.is_some())
                    .map(|(_, n)| n.addr)
                    .collect();
                swarm.handle(now, Input::PeerAddrs(addrs));
                self.nodes[i].swarm = Some(swarm);
                self.drain(i);
            }
            Event::Timer(i, generation) => {
                if self.nodes[i].timer_gen == generation
                    && let Some(s) = self.nodes[i].swarm.as_mut()
                {
                    s.handle(now, Input::Timeout);
                    self.drain(i);
                }
            }
            Event::Connect { from, to } => {
                let target = self
                    .nodes
                    .iter()
                    .position(|n| n.addr == to && n.swarm.is_some());
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
                        let at = now + self.one_way;
                        self.schedule(at, Event::Closed { to: from, conn: a });
                        self.nodes[from].conns.insert(a, (j, 0));
                    }
                }
                self.drain(from);
                self.drain(j);
            }
            Event::Data { to, conn, data } => {
                if self.nodes[to].conns.contains_key(&conn) {
                    self.nodes[to]
                        .swarm
                        .as_mut()
                        .unwrap()
                        .handle(now, Input::Data(conn, &data));
                    self.drain(to);
                }
            }
            Event::Closed { to, conn } => {
                if self.nodes[to].conns.remove(&conn).is_some() {
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
        loop {
            let Some(out) = self.nodes[i].swarm.as_mut().and_then(|s| s.poll_output()) else {
                break;
            };
            match out {
                Output::Transmit { peer, data } => {
                    let Some(&(j, remote)) = self.nodes[i].conns.get(&peer) else {
                        continue;
                    };
                    let data = if self.nodes[i].spec.corrupts_pieces {
                        let first = !self.nodes[i]
                            .first_transmit_done
                            .insert(peer, true)
                            .unwrap_or(false);
                        corrupt_pieces(data, first)
                    } else {
                        data
                    };
                    // Serialise on the sender's link, then add the propagation delay.
                    let node = &mut self.nodes[i];
                    let start = node.link_free_at.max(now);
                    let tx = node
                        .spec
                        .link_rate
                        .map(|r| Duration::from_secs_f64(data.len() as f64 / r as f64))
                        .unwrap_or_default();
                    node.link_free_at = start + tx;
                    let at = start + tx + self.one_way;
                    self.schedule(
                        at,
                        Event::Data {
                            to: j,
                            conn: remote,
                            data,
                        },
                    );
                }
                Output::Connect(addr) => {
                    let at = now + self.one_way * 2;
                    self.schedule(at, Event::Connect { from: i, to: addr });
                }
                Output::Disconnect { peer, .. } => {
                    if let Some((j, remote)) = self.nodes[i].conns.remove(&peer) {
                        let at = now + self.one_way;
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
                    if let Delivery::Data { payload, .. } = &d {
                        self.nodes[i].output.extend_from_slice(payload);
                    }
                    self.nodes[i].deliveries.push(d);
                }
            }
        }
        if let Some(at) = self.nodes[i].swarm.as_ref().and_then(|s| s.poll_timeout()) {
            self.nodes[i].timer_gen += 1;
            let generation = self.nodes[i].timer_gen;
            self.schedule(at.max(now), Event::Timer(i, generation));
        }
    }

    pub fn status(&self, i: NodeId) -> Option<SwarmStatus> {
        self.nodes[i].swarm.as_ref().map(|s| s.status(self.now))
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

/// The simulator's MPEG-TS source: one program, H.264 video on [`SyntheticTs::VIDEO_PID`]
/// (also the PCR PID) and AAC audio on [`SyntheticTs::AUDIO_PID`], made chunk by chunk, one
/// chunk per piece interval, each chunk `piece_payload / 188` whole packets:
///
/// ```text
/// keyframe chunk: PAT | PMT | video PES start (RAI, PCR; AUD SPS PPS IDR) | video ... | audio PES
/// other chunks:              video PES start (PCR; AUD, non-IDR slice)    | video ... | audio PES
/// ```
///
/// Every `keyframe_every`-th chunk (from the first) is a keyframe chunk; the packetizer finds
/// its keyframe both by the adaptation field's random_access_indicator and by the IDR NAL
/// unit, and cuts exactly one piece per chunk (a chunk fills a piece), so piece `n` is chunk
/// `n` and is random-access when `n` is a multiple of `keyframe_every`. Continuity counters
/// run per PID, the PCR and PTS follow the chunk's time, and every video packet carries the
/// chunk number and its index in the chunk, so no two chunks are alike.
#[derive(Debug, Clone)]
pub struct SyntheticTs {
    packets: usize,
    keyframe_every: u64,
    interval: Duration,
    chunk: u64,
    /// Continuity counters of PAT, PMT, video, audio.
    cc: [u8; 4],
}

impl SyntheticTs {
    pub const PMT_PID: u16 = 0x1000;
    pub const VIDEO_PID: u16 = 0x100;
    pub const AUDIO_PID: u16 = 0x101;

    /// Chunks of `piece_payload` bytes rounded down to whole packets (at least 3: PAT, PMT
    /// and the keyframe's first packet), one every `interval`.
    pub fn new(piece_payload: usize, keyframe_every: u64, interval: Duration) -> Self {
        let packets = piece_payload / PACKET_SIZE;
        assert!(
            packets >= 3,
            "a piece of {piece_payload} bytes cannot hold PAT, PMT and a keyframe packet"
        );
        SyntheticTs {
            packets,
            keyframe_every,
            interval,
            chunk: 0,
            cc: [0; 4],
        }
    }

    /// Bytes of every chunk.
    pub fn chunk_len(&self) -> usize {
        self.packets * PACKET_SIZE
    }

    /// Chunks made so far.
    pub fn chunks_made(&self) -> u64 {
        self.chunk
    }

    /// The TS of the next piece interval.
    pub fn next_chunk(&mut self) -> Vec<u8> {
        let n = self.chunk;
        self.chunk += 1;
        let keyframe = n.is_multiple_of(self.keyframe_every);
        let t = self.interval.as_nanos() * u128::from(n);
        // 27 MHz PCR; PTS (90 kHz) 100 ms ahead of it, the decoder's buffer.
        let pcr = (t * u128::from(PCR_HZ) / 1_000_000_000) as u64 % PCR_WRAP;
        let pts = (pcr / 300 + 9_000) & ((1 << 33) - 1);
        let mut out = Vec::with_capacity(self.chunk_len());
        let mut room = self.packets;

        if keyframe {
            let pat = psi_packet(0, &pat_section(Self::PMT_PID));
            let pmt = psi_packet(
                Self::PMT_PID,
                &pmt_section(
                    Self::VIDEO_PID,
                    &[(0x1b, Self::VIDEO_PID), (0x0f, Self::AUDIO_PID)],
                ),
            );
            out.extend_from_slice(&self.counted(0, pat));
            out.extend_from_slice(&self.counted(1, pmt));
            room -= 2;
        }

        // The access unit's first packet: PES header, then the NAL units that tell an IDR
        // picture (SPS, PPS, IDR slice) from another one (non-IDR slice).
        let mut pes = vec![0, 0, 1, 0xe0, 0, 0, 0x80, 0x80, 5];
        pes.extend_from_slice(&pts_bytes(pts));
        pes.extend_from_slice(&[0, 0, 0, 1, 0x09, if keyframe { 0x10 } else { 0x30 }]);
        if keyframe {
            pes.extend_from_slice(&[0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80]);
            pes.extend_from_slice(&[0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80]);
            pes.extend_from_slice(&[0, 0, 1, 0x65, 0x88, 0x84]);
        } else {
            pes.extend_from_slice(&[0, 0, 1, 0x41, 0x9a, 0x02]);
        }
        pes.extend_from_slice(&tag(n, 0));
        let flags = if keyframe { 0x40 } else { 0 };
        let start = packet(Self::VIDEO_PID, true, Some((flags, Some(pcr))), &pes);
        out.extend_from_slice(&self.counted(2, start));
        room -= 1;

        // The rest of the picture, and one audio frame to end the chunk.
        let audio = room > 0;
        let video = room.saturating_sub(1);
        for i in 1..=video {
            let mut body = [0x5a; 184];
            body[..10].copy_from_slice(&tag(n, i as u16));
            let pkt = packet(Self::VIDEO_PID, false, None, &body);
            out.extend_from_slice(&self.counted(2, pkt));
        }
        if audio {
            let mut pes = vec![0, 0, 1, 0xc0, 0, 0, 0x80, 0x80, 5];
            pes.extend_from_slice(&pts_bytes(pts));
            // An ADTS header (AAC-LC, 48 kHz, stereo) and a frame tagged like the video.
            let frame = 7 + 10 + 16;
            pes.extend_from_slice(&[
                0xff,
                0xf1,
                0x4c,
                0x80,
                (frame >> 3) as u8,
                ((frame & 7) << 5) as u8 | 0x1f,
                0xfc,
            ]);
            pes.extend_from_slice(&tag(n, u16::MAX));
            pes.extend_from_slice(&[0x21; 16]);
            let len = pes.len() - 6;
            pes[4..6].copy_from_slice(&(len as u16).to_be_bytes());
            let pkt = packet(Self::AUDIO_PID, true, None, &pes);
            out.extend_from_slice(&self.counted(3, pkt));
        }
        debug_assert_eq!(out.len(), self.chunk_len());
        out
    }

    /// Sets the packet's continuity counter from the PID's counter `which`.
    fn counted(&mut self, which: usize, mut pkt: [u8; PACKET_SIZE]) -> [u8; PACKET_SIZE] {
        pkt[3] = pkt[3] & 0xf0 | self.cc[which];
        self.cc[which] = (self.cc[which] + 1) & 0x0f;
        pkt
    }
}

/// Chunk number and packet index, to tell every packet of the stream apart.
fn tag(chunk: u64, index: u16) -> [u8; 10] {
    let mut t = [0u8; 10];
    t[..8].copy_from_slice(&chunk.to_be_bytes());
    t[8..].copy_from_slice(&index.to_be_bytes());
    t
}

/// A PES PTS field ('0010' prefix, marker bits).
fn pts_bytes(pts: u64) -> [u8; 5] {
    [
        0x21 | ((pts >> 29) & 0x0e) as u8,
        (pts >> 22) as u8,
        ((pts >> 14) & 0xfe) as u8 | 1,
        (pts >> 7) as u8,
        ((pts << 1) & 0xfe) as u8 | 1,
    ]
}

/// Flips a payload byte of every piece message in a run of outgoing wire bytes.
fn corrupt_pieces(data: Bytes, starts_with_handshake: bool) -> Bytes {
    let mut buf = BytesMut::from(&data[..]);
    let mut pos = if starts_with_handshake {
        wire::HANDSHAKE_LEN
    } else {
        0
    };
    while pos + 7 <= buf.len() {
        let len = u32::from_be_bytes(buf[pos..pos + 4].try_into().unwrap()) as usize;
        // length, id 20, extension id, kind 2 = piece
        if buf[pos + 4] == 20 && buf[pos + 5] != 0 && buf[pos + 6] == 2 {
            let payload_at = pos + 7 + crate::piece::HEADER_LEN;
            if payload_at < pos + 4 + len {
                buf[payload_at] ^= 0xff;
            }
        }
        pos += 4 + len;
    }
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inject::ts::{Packet, PacketKind, ProgramTracker, VideoCodec};

    #[test]
    fn synthetic_ts_is_valid_and_tags_keyframes_both_ways() {
        let mut ts = SyntheticTs::new(188 * 12 + 50, 3, Duration::from_millis(40));
        assert_eq!(ts.chunk_len(), 188 * 12);
        let mut tracker = ProgramTracker::new();
        let mut cc: HashMap<u16, u8> = HashMap::new();
        let mut last_pcr = None;
        for n in 0..10u64 {
            let chunk = ts.next_chunk();
            assert_eq!(chunk.len(), 188 * 12);
            let mut keyframes = 0;
            for (i, c) in chunk.chunks(188).enumerate() {
                let p = Packet::parse(c).unwrap();
                let h = p.header();
                if let Some(prev) = cc.insert(h.pid, h.continuity_counter) {
                    assert_eq!(
                        h.continuity_counter,
                        (prev + 1) & 0x0f,
                        "CC of {:#x}",
                        h.pid
                    );
                }
                if let Some(pcr) = p.adaptation().and_then(|a| a.pcr) {
                    assert!(last_pcr.is_none_or(|l| pcr > l));
                    assert_eq!(pcr, n * 40 * 27_000);
                    last_pcr = Some(pcr);
                }
                let kind = tracker.observe(&p);
                if let PacketKind::Video {
                    random_access: true,
                } = kind
                {
                    keyframes += 1;
                    // The NAL scan agrees with the random_access_indicator.
                    let mut bare = c.to_vec();
                    bare[5] &= !0x40;
                    let bare = Packet::parse(&bare).unwrap();
                    assert!(crate::inject::ts::is_random_access(&bare, VideoCodec::H264));
                    assert_eq!(i, 2, "after PAT and PMT");
                }
                assert_eq!(h.pid == 0, n % 3 == 0 && i == 0);
            }
            assert_eq!(keyframes, usize::from(n % 3 == 0), "chunk {n}");
        }
        assert_eq!(
            tracker.video(),
            Some((SyntheticTs::VIDEO_PID, VideoCodec::H264))
        );
        assert_eq!(tracker.pcr_pid(), Some(SyntheticTs::VIDEO_PID));
    }

    fn one_receiver(stream: StreamSpec) -> Sim {
        let nodes = vec![
            NodeSpec::new(Role::Injector),
            NodeSpec {
                latency: Duration::from_millis(500),
                join_at: Duration::from_millis(300),
                ..NodeSpec::new(Role::Receiver)
            },
        ];
        let mut sim = Sim::new(4, Duration::from_millis(1), stream, nodes);
        sim.run_for(Duration::from_secs(10));
        sim
    }

    #[test]
    fn the_injector_node_is_fed_through_the_injector() {
        let stream = StreamSpec {
            piece_payload: 188 * 10,
            piece_interval: Duration::from_millis(100),
            keyframe_every: 4,
            pieces: 30,
            drop_seqs: vec![FIRST_SEQ + 21],
        };
        let sim = one_receiver(stream);
        // One piece per interval, numbered from the epoch; the dropped one was made too.
        let seqs: Vec<u64> = sim.injected.iter().map(|(s, _)| *s).collect();
        let want: Vec<u64> = (FIRST_SEQ..FIRST_SEQ + 30)
            .filter(|&s| s != FIRST_SEQ + 21)
            .collect();
        assert_eq!(seqs, want);
        assert_eq!(sim.dropped.len(), 1);
        assert_eq!(sim.dropped[0].0, FIRST_SEQ + 21);
        assert_eq!(sim.injector().pieces_made(), 31);
        assert!(sim.injector().is_finished());
        assert_eq!(sim.injector().bytes_in(), 30 * 188 * 10);

        let st = sim.status(1).unwrap();
        assert_eq!(st.state, crate::swarm::State::Ended, "{st:?}");
        let hook = st.hook_seq.unwrap();
        assert_eq!((hook - FIRST_SEQ) % 4, 0, "hooked at a keyframe piece");
        let mut keyframes = 0;
        for d in sim.deliveries(1) {
            if let Delivery::Data {
                seq,
                payload,
                random_access,
                ..
            } = d
            {
                assert_eq!(Some(payload), sim.injected_payload(*seq));
                assert_eq!(
                    *random_access,
                    (seq - FIRST_SEQ).is_multiple_of(4),
                    "piece {seq}"
                );
                keyframes += usize::from(*random_access);
            }
        }
        assert!(keyframes >= 5);
        assert_eq!(sim.output(1), &sim.expected_from(hook)[..]);
        assert!(matches!(sim.deliveries(1).last(), Some(Delivery::End)));
    }
}
