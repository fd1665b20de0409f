//! Counters and the status snapshot a node reports (`GET /status`).

use std::time::Instant;

use serde::Serialize;

use crate::swarm::{Role, Swarm};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Joining,
    Buffering,
    Playing,
    Stalled,
    Ended,
}

#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub pieces_received: u64,
    pub pieces_rejected: u64,
    pub pieces_emitted: u64,
    pub pieces_sent: u64,
    pub bytes_down: u64,
    /// Of `bytes_down`, what came from the injector (a peer that said so in its handshake).
    pub bytes_down_injector: u64,
    pub bytes_up: u64,
    pub duplicates: u64,
    pub unrequested: u64,
    pub request_timeouts: u64,
    /// Of those, the ones before the first output: how hard the start was.
    pub request_timeouts_at_start: u64,
    /// Our requests the peer answered with REJECT.
    pub requests_refused: u64,
    /// HAVE entries refused as beyond anything the injector can have made.
    pub claims_refused: u64,
    /// Times a peer was not asked for a while after leaving requests unanswered.
    pub peers_benched: u64,
    pub peers_banned: u64,
    /// Addresses first heard of from peer exchange.
    pub pex_addrs: u64,
}

/// Push along substreams (see `swarm::push`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct PushStatus {
    /// Substreams the stream is split into (0: pull only).
    pub substreams: u8,
    /// Substreams we have a parent for, and child subscriptions we push.
    pub parents: usize,
    pub children: usize,
    #[serde(flatten)]
    pub counters: crate::swarm::push::PushCounters,
}

/// What the core knows about itself. The driver adds wall-clock figures (`lag_ms`) and
/// its own (`bytes_in`).
#[derive(Clone, Debug, Serialize)]
pub struct SwarmStatus {
    pub role: Role,
    pub state: State,
    pub infohash: String,
    pub peers: usize,
    pub newest_seq: Option<u64>,
    /// The newest piece as the connected peers tell it (see `PeerTable::told_edge`): a hint,
    /// not verified, for saying whether pieces are being announced at all.
    pub told_seq: Option<u64>,
    pub hook_seq: Option<u64>,
    pub output_seq: Option<u64>,
    /// Injector timestamp of the newest piece output (for `lag_ms`).
    #[serde(skip)]
    pub output_timestamp_us: Option<u64>,
    pub pieces_received: u64,
    pub pieces_missed: u64,
    pub pieces_late: u64,
    pub pieces_rejected: u64,
    pub pieces_emitted: u64,
    pub pieces_held: usize,
    pub bytes_down: u64,
    pub bytes_down_injector: u64,
    pub bytes_up: u64,
    pub duplicates: u64,
    pub request_timeouts: u64,
    pub request_timeouts_at_start: u64,
    pub requests_refused: u64,
    pub claims_refused: u64,
    pub peers_benched: u64,
    pub peers_banned: u64,
    /// Addresses in the address book, and how many came first from peer exchange.
    pub addrs_known: usize,
    pub pex_addrs: u64,
    pub push: PushStatus,
    /// From the start to the first byte out; to the first piece announcement heard; to the
    /// choice of the hook piece (what is left of `startup_ms` is the prebuffer). A rehook
    /// starts the last two again: they tell of the hook-in that led to the output.
    pub startup_ms: Option<u64>,
    pub first_told_ms: Option<u64>,
    pub hooked_ms: Option<u64>,
    /// Milliseconds of stream output since hook-in (by the injector's timestamps).
    pub output_span_ms: Option<u64>,
    pub continuity: f64,
    pub ended: bool,
}

pub(super) fn snapshot(s: &Swarm, _now: Instant) -> SwarmStatus {
    let c = &s.stats;
    // Verified pieces only: what peers claim moves nothing, not even the status.
    let newest = s.store.newest().map(|p| p.seq());
    let (state, ended) = state(s);
    let playout = s.role.playout();
    let seed_from = match &s.role {
        super::RoleState::Seed { from } => *from,
        _ => None,
    };
    SwarmStatus {
        role: s.config.role,
        state,
        infohash: s.config.info_hash.hex(),
        peers: s.peers.values().filter(|p| p.is_active()).count(),
        newest_seq: newest,
        told_seq: s.peers.told_edge(s.now),
        hook_seq: playout.and_then(|p| p.hook_seq()).or(seed_from),
        output_seq: playout.and_then(|p| p.last_output.map(|(seq, _)| seq)),
        output_timestamp_us: playout.and_then(|p| p.last_output.map(|(_, ts)| ts)),
        pieces_received: c.pieces_received,
        pieces_missed: playout.map_or(0, |p| p.missed),
        pieces_late: playout.map_or(0, |p| p.late),
        pieces_rejected: c.pieces_rejected,
        pieces_emitted: c.pieces_emitted,
        pieces_held: s.store.len(),
        bytes_down: c.bytes_down,
        bytes_down_injector: c.bytes_down_injector,
        bytes_up: c.bytes_up,
        duplicates: c.duplicates,
        request_timeouts: c.request_timeouts,
        request_timeouts_at_start: c.request_timeouts_at_start,
        requests_refused: c.requests_refused,
        claims_refused: c.claims_refused,
        peers_benched: c.peers_benched,
        peers_banned: c.peers_banned,
        addrs_known: s.addrs.len(),
        pex_addrs: c.pex_addrs,
        push: PushStatus {
            substreams: s.push.substreams(),
            parents: (0..s.push.substreams() as usize)
                .filter(|&i| s.push.parent(i).is_some())
                .count(),
            children: s.push.child_slots(),
            counters: s.push.counters,
        },
        startup_ms: playout
            .and_then(|p| p.first_output_at)
            .map(|t| t.saturating_duration_since(s.started).as_millis() as u64),
        first_told_ms: playout
            .and_then(|p| p.start_steps().0)
            .map(|t| t.saturating_duration_since(s.started).as_millis() as u64),
        hooked_ms: playout
            .and_then(|p| p.start_steps().1)
            .map(|t| t.saturating_duration_since(s.started).as_millis() as u64),
        output_span_ms: playout.and_then(|p| {
            let first = p.first_output_ts?;
            let (_, last) = p.last_output?;
            Some(last.saturating_sub(first) / 1000)
        }),
        continuity: playout.map_or(1.0, |p| p.continuity()),
        ended,
    }
}

/// The node's state, and whether its stream has ended; cheap enough for every loop turn.
pub(super) fn state(s: &Swarm) -> (State, bool) {
    let eos_held = s.eos_seq.is_some_and(|e| s.store.contains(e));
    match (s.role.playout(), s.config.role) {
        (Some(p), _) => {
            let state = if p.ended {
                State::Ended
            } else if p.hook_seq().is_none() {
                State::Joining
            } else if p.first_output_at.is_none() {
                State::Buffering
            } else if p.is_stalled() {
                State::Stalled
            } else {
                State::Playing
            };
            (state, p.ended)
        }
        (None, Role::Injector) if eos_held => (State::Ended, true),
        (None, Role::Injector) => (State::Playing, false),
        (None, _) if eos_held => (State::Ended, true),
        (None, _) if s.store.is_empty() => (State::Joining, false),
        (None, _) => (State::Playing, false),
    }
}
