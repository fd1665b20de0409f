//! Who may download from us: a bounded number of upload slots.
//!
//! Trusted peers (the injector's seedboxes) are always served. The other slots go to the
//! interested peers that uploaded most to us lately (tit-for-tat), and one rotates
//! (optimistic unchoke) so that newcomers get a start. Suspects get none.

use std::collections::{BTreeMap, HashSet};

use crate::swarm::peer::{Peer, PeerId};

pub fn choose_unchoked(
    peers: &BTreeMap<PeerId, Peer>,
    slots: usize,
    optimistic: Option<PeerId>,
) -> HashSet<PeerId> {
    let mut chosen: HashSet<PeerId> = peers
        .iter()
        .filter(|(_, p)| p.is_active() && p.trusted)
        .map(|(&id, _)| id)
        .collect();
    // A peer that claimed pieces and then left our request for one unanswered, and has never
    // delivered, gets no slot: it takes from the peers that answer. It is still asked (see
    // `Standing`), and once it delivers it is a candidate like any other.
    let mut candidates: Vec<(&PeerId, &Peer)> = peers
        .iter()
        .filter(|(id, p)| {
            p.is_active() && p.peer_interested && !chosen.contains(id) && !p.standing.is_suspect()
        })
        .collect();
    // Best uploaders to us first; ties by connection age so the order is stable.
    candidates.sort_by_key(|(id, p)| (std::cmp::Reverse(p.down_recent), p.connected_at, **id));
    let regular = slots.saturating_sub(1).max(1);
    for (id, _) in candidates.iter().take(regular) {
        chosen.insert(**id);
    }
    if let Some(opt) = optimistic
        && candidates.iter().any(|(id, _)| **id == opt)
    {
        chosen.insert(opt);
    } else if let Some((id, _)) = candidates.get(regular) {
        chosen.insert(**id);
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn peer(interested: bool, down: u64, trusted: bool) -> Peer {
        let mut p = Peer::new("127.0.0.1:1".parse().unwrap(), true, Instant::now());
        p.phase = crate::swarm::peer::Phase::Active;
        p.peer_interested = interested;
        p.down_recent = down;
        p.trusted = trusted;
        p
    }

    #[test]
    fn slots_go_to_best_uploaders_plus_one_optimistic() {
        let mut peers = BTreeMap::new();
        for i in 0..6u64 {
            peers.insert(i, peer(true, i * 100, false));
        }
        peers.insert(10, peer(false, 1_000_000, false));
        peers.insert(11, peer(false, 0, true));
        let chosen = choose_unchoked(&peers, 3, Some(0));
        // trusted always; best two interested uploaders (5, 4); optimistic 0; never uninterested 10
        assert_eq!(chosen, [11, 5, 4, 0].into_iter().collect());
    }

    #[test]
    fn a_peer_that_claimed_and_never_delivered_gets_no_slot_even_when_slots_are_free() {
        let mut peers = BTreeMap::new();
        for i in 0..3u64 {
            peers.insert(i, peer(true, 0, false));
        }
        peers
            .get_mut(&1)
            .unwrap()
            .standing
            .timed_out(Instant::now());
        // Ten slots for three peers, and none for the suspect.
        assert_eq!(
            choose_unchoked(&peers, 10, None),
            [0, 2].into_iter().collect()
        );
        // It delivered after all: a peer like any other.
        peers.get_mut(&1).unwrap().standing.delivered();
        assert_eq!(choose_unchoked(&peers, 10, None).len(), 3);
    }
}
