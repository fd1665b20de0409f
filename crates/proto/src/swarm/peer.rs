//! Per-connection state kept by the swarm core.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use bytes::BytesMut;

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
    pub outbox: BytesMut,
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
    /// Pieces the peer says it holds, and the start of its window.
    pub haves: BTreeSet<u64>,
    pub window_start: u64,
    /// Pieces we told this peer we hold.
    pub told: BTreeSet<u64>,
    /// Our requests to this peer and when we sent them.
    pub requested: BTreeMap<u64, Instant>,
    /// Pieces this peer failed to deliver in time (or rejected), and until when it is not
    /// asked for them again.
    pub refused: HashMap<u64, Instant>,
    /// The peer's requests to us, with their arrival time.
    pub queue: VecDeque<(u64, Instant)>,
    /// Payload bytes received from / sent to this peer since the last rechoke.
    pub down_recent: u64,
    pub up_recent: u64,
    pub last_heard: Instant,
    pub last_sent: Instant,
    pub connected_at: Instant,
    /// Smoothed request-to-piece time, microseconds.
    pub srtt_us: Option<u64>,
}

/// How long a peer that failed a request is not asked for that piece again.
pub const REFUSE_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// Most HAVE entries remembered per peer; older ones are dropped first.
pub const MAX_PEER_HAVES: usize = 16_384;

impl Peer {
    pub fn new(addr: SocketAddr, outbound: bool, now: Instant) -> Self {
        Peer {
            addr,
            outbound,
            phase: Phase::Handshake,
            inbuf: BytesMut::new(),
            outbox: BytesMut::new(),
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
            requested: BTreeMap::new(),
            refused: HashMap::new(),
            queue: VecDeque::new(),
            down_recent: 0,
            up_recent: 0,
            last_heard: now,
            last_sent: now,
            connected_at: now,
            srtt_us: None,
        }
    }

    pub fn is_active(&self) -> bool {
        self.phase == Phase::Active
    }

    pub fn learn_have(&mut self, seq: u64) {
        if seq >= self.window_start {
            self.haves.insert(seq);
            while self.haves.len() > MAX_PEER_HAVES {
                self.haves.pop_first();
            }
        }
    }

    pub fn set_window_start(&mut self, start: u64) {
        if start > self.window_start {
            self.window_start = start;
            self.haves = self.haves.split_off(&start);
        }
    }

    /// Forgets bookkeeping for pieces below our own window.
    pub fn prune_below(&mut self, seq: u64) {
        self.told = self.told.split_off(&seq);
        self.refused.retain(|&s, _| s >= seq);
        if seq > self.window_start {
            self.haves = self.haves.split_off(&seq);
        }
    }

    pub fn refuse(&mut self, seq: u64, now: Instant) {
        self.refused.insert(seq, now + REFUSE_FOR);
    }

    pub fn refuses(&self, seq: u64, now: Instant) -> bool {
        self.refused.get(&seq).is_some_and(|&until| now < until)
    }

    pub fn note_rtt(&mut self, sample_us: u64) {
        self.srtt_us = Some(match self.srtt_us {
            None => sample_us,
            Some(s) => (s * 7 + sample_us) / 8,
        });
    }
}
