//! The injector's first copies: it feeds each new piece to one peer first (see
//! `Swarm::fanout_target`) and tells everyone else later; this sub-state remembers whom, and
//! stops feeding first an untrusted peer whose copies do not spread.

use std::collections::{BTreeMap, HashMap};

use super::peer::PeerId;

/// Peers that must have announced a piece to the injector by the time it tells everyone
/// of it, for the copy it fed first to count as spread. One: with two seedboxes and
/// receivers that reach the injector only through them, the other seedbox may be the only
/// one to tell (2 took honest seedboxes for hoarders in tests/swarm_sim.rs).
const SPREAD_BY_HOLD: u32 = 1;
/// Pieces in a row an untrusted peer may be fed first without the copy spreading before
/// the injector stops feeding it first (it keeps, forges or cannot pass on what it gets).
const MAX_UNSPREAD: u32 = 4;

/// Injector: whom each new piece goes to first, and whether those copies spread.
#[derive(Debug, Default)]
pub(super) struct Fanout {
    turn: usize,
    /// The peer each recent piece was fed to first, until everyone is told of the piece.
    fed: BTreeMap<u64, PeerId>,
    /// Per peer fed first: pieces in a row whose copy had not spread by then.
    unspread: HashMap<PeerId, u32>,
}

impl Fanout {
    /// The next of `class` in turn (not empty) is fed `seq` first.
    pub fn feed(&mut self, seq: u64, class: &[PeerId]) -> PeerId {
        self.turn = self.turn.wrapping_add(1);
        let target = class[self.turn % class.len()];
        self.fed.insert(seq, target);
        target
    }

    /// Whom `seq` was fed to first, until everyone is told of it.
    #[cfg(test)]
    pub fn fed_first(&self, seq: u64) -> Option<PeerId> {
        self.fed.get(&seq).copied()
    }

    pub fn evict(&mut self, start: u64) {
        self.fed = self.fed.split_off(&start);
    }

    pub fn forget_peer(&mut self, id: PeerId) {
        self.unspread.remove(&id);
    }

    /// Everyone is told of `seq` now, and `holders` peers announced it to us before that.
    pub fn told_all(&mut self, seq: u64, holders: u32) {
        let Some(first) = self.fed.remove(&seq) else {
            return;
        };
        let strikes = self.unspread.entry(first).or_default();
        *strikes = if holders >= SPREAD_BY_HOLD {
            0
        } else {
            *strikes + 1
        };
    }

    pub fn spreads(&self, id: PeerId) -> bool {
        self.unspread.get(&id).is_none_or(|&n| n < MAX_UNSPREAD)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use crate::swarm::fixtures::{active_peer, config, key, peer_claims, piece};
    use crate::swarm::upload::FANOUT_GRACE;
    use crate::swarm::{Role, RoleState, Swarm};

    #[test]
    fn the_injector_stops_feeding_first_a_seed_whose_copies_do_not_spread() {
        let t0 = Instant::now();
        let mut s = Swarm::new(config(Role::Injector, 0), t0);
        let (a, b) = (active_peer(&mut s, 1), active_peer(&mut s, 2));
        let receivers = [active_peer(&mut s, 3), active_peer(&mut s, 4)];
        for id in [a, b] {
            s.peers.get_mut(id).unwrap().is_seed = true;
        }
        let mut fed = Vec::new();
        for seq in 0..16u64 {
            s.now = t0 + Duration::from_millis(200 * seq);
            s.add_local_piece(piece(seq, &key()));
            let RoleState::Injector { fanout, .. } = &s.role else {
                unreachable!()
            };
            let first = fanout.fed_first(seq).unwrap();
            fed.push(if first == a { 'a' } else { 'b' });
            // What a passes on reaches the receivers, who tell us; what b gets goes nowhere.
            if first == a {
                for r in receivers {
                    peer_claims(&mut s, r, [seq]);
                }
            }
            s.now += FANOUT_GRACE;
            s.announce_held();
        }
        // In turn until b's fourth piece in a row did not spread; a alone from then on.
        let fed: String = fed.into_iter().collect();
        assert_eq!(fed, "babababaaaaaaaaa");
        // Without a, a receiver rather than b; with nobody else left, b again.
        s.peers.remove(a);
        assert!(receivers.contains(&s.fanout_target(99).unwrap()));
        for r in receivers {
            s.peers.remove(r);
        }
        assert_eq!(s.fanout_target(100), Some(b));
    }
}
