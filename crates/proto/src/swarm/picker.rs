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
use crate::swarm::push::Push;
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
    /// Substream parents: a piece one of them should push is left to it for a while.
    pub push: Option<&'a Push>,
}

/// Pieces worth requesting now, best first. `from` is the first sequence number of interest.
/// At most `limit` are needed; the scan stops early so that its cost stays small however
/// many pieces are announced (it runs after every event).
pub fn wanted(v: &View, from: u64, urgent_within: Duration, limit: usize) -> Vec<Want> {
    wanted_or_awaited(v, from, urgent_within, limit).0
}

/// [`wanted`], and the first instant a piece now left to the push may be repaired.
pub fn wanted_or_awaited(
    v: &View,
    from: u64,
    urgent_within: Duration,
    limit: usize,
) -> (Vec<Want>, Option<Instant>) {
    let View {
        now,
        playout,
        store,
        known,
        holders: _,
        inflight,
        push,
    } = *v;
    let mut recheck: Option<Instant> = None;
    let mut urgent = Vec::new();
    let mut rest = Vec::new();
    let newest_held = store.newest().map(|p| p.seq());
    for (seq, meta) in known.range_from(from).take(MAX_AHEAD) {
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
        // Left to its parent's push until it becomes urgent (or for a grace, when nothing
        // is due yet).
        let urgent_at = due.map(|due| due - urgent_within);
        if let Some(until) = push.and_then(|p| p.awaits(seq, meta.first_heard, urgent_at, now)) {
            recheck = Some(recheck.map_or(until, |r| r.min(until)));
            continue;
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
    (urgent, recheck)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swarm::fixtures::{active, have, hooked, key, piece, playing, store_of};
    use crate::swarm::peer::{PeerTable, Phase, Sent};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    const LATENCY: Duration = Duration::from_millis(400);
    const URGENT_WITHIN: Duration = Duration::from_millis(200);

    /// What the picker looks at, besides the playout and the store.
    struct Inputs {
        known: Known,
        peers: PeerTable,
        inflight: HashMap<u64, PeerId>,
    }

    impl Inputs {
        /// One active peer per entry of `claims`, claiming those pieces of the test stream.
        fn new(now: Instant, claims: &[&[u64]]) -> Self {
            let mut known = Known::default();
            let mut peers = PeerTable::default();
            for (host, seqs) in (1..).zip(claims) {
                let id = peers.insert(active(host, now));
                peers.learn_haves(id, 0, seqs.iter().copied());
                for &seq in *seqs {
                    known.learn(&have(seq), id, now);
                }
            }
            Inputs {
                known,
                peers,
                inflight: HashMap::new(),
            }
        }

        fn view<'a>(
            &'a self,
            now: Instant,
            playout: Option<&'a Playout>,
            store: &'a Store,
        ) -> View<'a> {
            View {
                now,
                playout,
                store,
                known: &self.known,
                holders: self.peers.holders(),
                inflight: &self.inflight,
                push: None,
            }
        }
    }

    fn seqs(wants: &[Want]) -> Vec<u64> {
        wants.iter().map(|w| w.seq).collect()
    }

    #[test]
    fn urgent_pieces_come_first_in_order_then_the_others_rarest_first() {
        let t0 = Instant::now();
        let (playout, store, at) = playing(LATENCY, 30, 36, t0);
        let all: Vec<u64> = (37..=50).collect();
        let some: Vec<u64> = (37..=44).collect();
        let sw = Inputs::new(at, &[&all, &some]);
        // 200 ms on, with 200 ms urgent: what plays within 400 ms of the hook, 37..=40.
        let now = at + Duration::from_millis(200);
        let wants = wanted(&sw.view(now, Some(&playout), &store), 37, URGENT_WITHIN, 20);
        let urgent: Vec<u64> = wants.iter().filter(|w| w.urgent).map(|w| w.seq).collect();
        assert_eq!(urgent, vec![37, 38, 39, 40]);
        // Then one holder before two, in order among equals.
        let expected: Vec<u64> = (37..=40).chain(45..=50).chain(41..=44).collect();
        assert_eq!(seqs(&wants), expected);
    }

    #[test]
    fn a_piece_past_its_deadline_is_not_wanted_while_a_newer_one_is_held() {
        let t0 = Instant::now();
        let (playout, mut store, at) = playing(LATENCY, 30, 36, t0);
        store.insert(piece(40, &key()));
        let missing: Vec<u64> = (37..=45).collect();
        let sw = Inputs::new(at, &[&missing]);
        // 37..=39 are due when 40 is.
        let due = at + Duration::from_millis(400);
        let before = wanted(
            &sw.view(due - Duration::from_millis(1), Some(&playout), &store),
            37,
            URGENT_WITHIN,
            20,
        );
        assert_eq!(seqs(&before)[..3], [37, 38, 39]);
        let after = wanted(&sw.view(due, Some(&playout), &store), 37, URGENT_WITHIN, 20);
        assert_eq!(seqs(&after), vec![41, 42, 43, 44, 45]);
    }

    #[test]
    fn pieces_held_in_flight_or_claimed_by_no_peer_are_not_wanted() {
        let t0 = Instant::now();
        let mut sw = Inputs::new(t0, &[&[1, 2, 3, 4, 5]]);
        sw.known.learn(&have(6), 9, t0); // claimed by a peer since gone
        sw.inflight.insert(3, 1);
        let store = store_of([2]);
        let wants = wanted(&sw.view(t0, None, &store), 0, URGENT_WITHIN, 20);
        assert_eq!(seqs(&wants), vec![1, 4, 5]);
        assert!(wants.iter().all(|w| !w.urgent), "a seed has no deadlines");
    }

    #[test]
    fn before_the_first_output_every_wanted_piece_is_urgent_and_in_order() {
        let t0 = Instant::now();
        let (playout, at) = hooked(LATENCY, 30, t0);
        let sw = Inputs::new(at, &[&[30, 31, 32], &[31, 32], &[32]]);
        let wants = wanted(
            &sw.view(at, Some(&playout), &store_of([])),
            30,
            URGENT_WITHIN,
            20,
        );
        let urgent = |seq| Want { seq, urgent: true };
        assert_eq!(wants, vec![urgent(30), urgent(31), urgent(32)]);
    }

    #[test]
    fn at_most_limit_pieces_are_wanted_the_rarest_among_the_first_four_times_limit_scanned() {
        let t0 = Instant::now();
        let common: Vec<u64> = (1..=8).collect();
        let all: Vec<u64> = (1..=20).collect();
        let sw = Inputs::new(t0, &[&common, &all]);
        let store = store_of([]);
        let view = sw.view(t0, None, &store);
        // Limit 2: the scan stops at 8 candidates, all held twice; the rarer 9 is not seen.
        assert_eq!(seqs(&wanted(&view, 1, URGENT_WITHIN, 2)), vec![1, 2]);
        // Limit 3: 12 scanned, 9..=12 held once.
        assert_eq!(seqs(&wanted(&view, 1, URGENT_WITHIN, 3)), vec![9, 10, 11]);
    }

    #[test]
    fn the_scan_looks_no_further_than_max_ahead_known_pieces() {
        let t0 = Instant::now();
        let ahead = MAX_AHEAD as u64;
        let claims: Vec<u64> = (0..ahead + 10).collect();
        let mut sw = Inputs::new(t0, &[&claims]);
        // The first MAX_AHEAD are asked for already: nothing to want among them.
        sw.inflight.extend((0..ahead).map(|seq| (seq, 1)));
        let store = store_of([]);
        let view = sw.view(t0, None, &store);
        assert_eq!(wanted(&view, 0, URGENT_WITHIN, 20), vec![]);
        assert_eq!(seqs(&wanted(&view, 1, URGENT_WITHIN, 20)), vec![ahead]);
    }

    #[test]
    fn open_peers_are_active_unchoking_not_benched_and_have_request_room() {
        let t0 = Instant::now();
        let mut peers = PeerTable::default();
        let open = peers.insert(active(1, t0));
        let mut handshaking = active(2, t0);
        handshaking.phase = Phase::Extended;
        peers.insert(handshaking);
        let mut choking = active(3, t0);
        choking.peer_choking = true;
        peers.insert(choking);
        let mut full = active(4, t0);
        full.standing.request_window = 1;
        let sent = Sent {
            at: t0,
            expires: t0 + Duration::from_secs(1),
        };
        full.requested.insert_alone(7, sent);
        peers.insert(full);
        let mut benched = active(5, t0);
        let bench_end = t0 + Duration::from_secs(5);
        benched.standing.benched_until = Some(bench_end);
        let benched = peers.insert(benched);
        assert_eq!(open_peers(peers.map(), t0), vec![open]);
        assert_eq!(open_peers(peers.map(), bench_end), vec![open, benched]);
    }

    #[test]
    fn choose_peer_asks_a_holder_that_did_not_refuse_the_piece_and_the_injector_last() {
        let t0 = Instant::now();
        let want = Want {
            seq: 9,
            urgent: true,
        };
        let mut peers = PeerTable::default();
        let mut source = active(1, t0);
        source.is_source = true;
        source.srtt_us = Some(1_000); // fastest, but the swarm should carry the copies
        let source = peers.insert(source);
        let lacks = peers.insert(active(2, t0));
        let mut refused = active(3, t0);
        refused.refuse(9, t0);
        let refused = peers.insert(refused);
        let mut slow = active(4, t0);
        slow.srtt_us = Some(900_000);
        let slow = peers.insert(slow);
        for id in [source, refused, slow] {
            peers.learn_haves(id, 0, [9].into_iter());
        }
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut choose = |open: &[PeerId], now| choose_peer(want, now, peers.map(), open, &mut rng);
        assert_eq!(choose(&[source, lacks, refused, slow], t0), Some(slow));
        assert_eq!(choose(&[source, lacks, refused], t0), Some(source));
        assert_eq!(choose(&[lacks, refused], t0), None);
        let refusal_over = t0 + crate::swarm::peer::REFUSE_FOR;
        assert_eq!(choose(&[lacks, refused], refusal_over), Some(refused));
    }

    #[test]
    fn choose_peer_prefers_the_soonest_expected_answer_its_queue_times_its_response_time() {
        let t0 = Instant::now();
        let want = Want {
            seq: 9,
            urgent: false,
        };
        let sent = Sent {
            at: t0,
            expires: t0 + Duration::from_secs(1),
        };
        let mut peers = PeerTable::default();
        let mut quick_but_busy = active(1, t0);
        quick_but_busy.srtt_us = Some(4_000);
        quick_but_busy.requested.insert_alone(1, sent);
        quick_but_busy.requested.insert_alone(2, sent); // 3 x 4 ms
        let quick_but_busy = peers.insert(quick_but_busy);
        let mut idle = active(2, t0);
        idle.srtt_us = Some(10_000); // 1 x 10 ms
        let idle = peers.insert(idle);
        for id in [quick_but_busy, idle] {
            peers.learn_haves(id, 0, [9].into_iter());
        }
        let open = [quick_but_busy, idle];
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert_eq!(
            choose_peer(want, t0, peers.map(), &open, &mut rng),
            Some(idle)
        );
        let p = peers.get_mut(idle).unwrap();
        p.requested.insert_alone(1, sent);
        p.requested.insert_alone(2, sent); // 3 x 10 ms
        assert_eq!(
            choose_peer(want, t0, peers.map(), &open, &mut rng),
            Some(quick_but_busy)
        );
    }
}
