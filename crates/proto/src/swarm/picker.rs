//! Which pieces to request next, and from whom.
//!
//! Live order: pieces close to their playback deadline first and in order; further ahead the
//! rarest first; never a piece that is already past its deadline while something newer is held
//! (playout will skip it). The injector is asked only when no other holder can take the
//! request.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rand::Rng;

use crate::swarm::peer::{Holders, Peer, PeerId};
use crate::swarm::playout::Playout;
use crate::swarm::store::{Known, Store};

/// Requests outstanding in total at most.
pub const MAX_INFLIGHT: usize = 48;
/// How far ahead of the output cursor a receiver fetches, in pieces.
pub const MAX_AHEAD: usize = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Want {
    pub seq: u64,
    pub urgent: bool,
}

/// What the picker looks at: a read-only view of the core's state.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub now: Instant,
    pub playout: Option<&'a Playout>,
    pub store: &'a Store,
    pub known: &'a Known,
    pub holders: &'a Holders,
    pub inflight: &'a HashMap<u64, PeerId>,
}

/// Pieces worth requesting now, best first. `from` is the first sequence number of interest.
/// At most `limit` are needed; the scan stops early so that its cost stays small however
/// many pieces are announced (it runs after every event).
pub fn wanted(v: &View, from: u64, urgent_within: Duration, limit: usize) -> Vec<Want> {
    let View {
        now,
        playout,
        store,
        known,
        holders: _,
        inflight,
    } = *v;
    let mut urgent = Vec::new();
    let mut rest = Vec::new();
    let newest_held = store.newest().map(|p| p.seq());
    for (seq, _meta) in known.range_from(from).take(MAX_AHEAD) {
        // Enough urgent ones, or enough others to choose the rarest among.
        if urgent.len() >= limit || urgent.len() + rest.len() >= 4 * limit {
            break;
        }
        if store.contains(seq) || inflight.contains_key(&seq) {
            continue;
        }
        let holders = v.holders.count(seq);
        if holders == 0 {
            continue; // nobody to ask
        }
        let due = playout.and_then(|p| p.due(seq, store));
        if let (Some(due), Some(newest)) = (due, newest_held)
            && due <= now
            && newest > seq
        {
            continue; // past its deadline: playout skips it
        }
        let is_urgent = match due {
            None => playout.is_some(), // before the first output everything is urgent
            Some(due) => due <= now + urgent_within,
        };
        if is_urgent {
            urgent.push(Want { seq, urgent: true });
        } else {
            rest.push((holders, Want { seq, urgent: false }));
        }
    }
    rest.sort_by_key(|(holders, w)| (*holders, w.seq));
    urgent.extend(rest.into_iter().map(|(_, w)| w));
    urgent.truncate(limit);
    urgent
}

/// Peers that can take a request now: connected, not choking us, with room for another.
pub fn open_peers(peers: &BTreeMap<PeerId, Peer>, now: Instant) -> Vec<PeerId> {
    let open = |p: &Peer| p.is_active() && !p.peer_choking && p.has_request_room(now);
    peers
        .iter()
        .filter(|(_, p)| open(p))
        .map(|(&id, _)| id)
        .collect()
}

/// The peer to ask for `want`, among the `open` ones (see [`open_peers`]): one that holds it
/// and did not fail it before. The injector only when nobody else can.
pub fn choose_peer(
    want: Want,
    now: Instant,
    peers: &BTreeMap<PeerId, Peer>,
    open: &[PeerId],
    rng: &mut impl Rng,
) -> Option<PeerId> {
    let mut best: Option<(PeerId, (bool, u64, u32))> = None;
    for &id in open {
        let p = &peers[&id];
        if !p.has(want.seq) || p.refuses(want.seq, now) {
            continue;
        }
        // Lower is better: not the source, then the soonest expected answer (requests already
        // waiting times the peer's response time), then chance.
        let expected = (p.requested.len() as u64 + 1) * p.srtt_us.unwrap_or(50_000);
        let key = (p.is_source, expected, rng.random());
        if best.as_ref().is_none_or(|(_, k)| key < *k) {
            best = Some((id, key));
        }
    }
    best.map(|(id, _)| id)
}
