//! Peer exchange (BEP 11, `ut_pex`): each peer hears from us which peers can be dialled, and
//! we learn of more peers than a tracker's sample of 50. A node behind a NAT can only dial
//! out, so what it needs is addresses that accept connections: we tell only those we
//! connected to ourselves (flag [`wire::PEX_REACHABLE`]), and take only those so flagged.
//!
//! Bounded both ways: at most [`MAX_ADDED`] addresses a message, one message per
//! [`EVERY`] to a peer (after a first one [`FIRST`] after its handshake), and a peer's
//! messages closer together than [`MIN_GAP`] are ignored. What we take is a hint, dialled like
//! a tracker's address, into the address book, which is bounded too.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::wire::{self, Pex};

/// The first message to a peer, soon enough to help a flash crowd.
pub const FIRST: Duration = Duration::from_secs(5);
/// BEP 11: at most one message a minute.
pub const EVERY: Duration = Duration::from_secs(60);
/// A peer's messages closer together than this are ignored.
pub const MIN_GAP: Duration = Duration::from_secs(20);
/// Addresses added in one message (libtorrent also sends at most 50).
pub const MAX_ADDED: usize = 50;

/// Our PEX state with one peer.
#[derive(Debug, Default)]
pub struct PeerPex {
    /// The id the peer wants PEX messages sent with; `None`: it does not take them.
    id: Option<u8>,
    /// The addresses we told it of and have not since told it dropped.
    told: BTreeSet<SocketAddr>,
    next_send: Option<Instant>,
    last_heard: Option<Instant>,
}

impl PeerPex {
    /// Its extended handshake came: if it takes PEX, the first message is due after [`FIRST`].
    pub fn start(&mut self, id: Option<u8>, now: Instant) {
        self.id = id;
        self.next_send = id.map(|_| now + FIRST);
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.next_send
    }

    /// The message due now, if one is, with the id to send it under: `reachable` (the peers
    /// we dialled, without this one) against what it was told before. Nothing new, nothing
    /// sent.
    pub fn due(&mut self, now: Instant, reachable: &BTreeSet<SocketAddr>) -> Option<(u8, Pex)> {
        let id = self.id?;
        if self.next_send.is_none_or(|t| now < t) {
            return None;
        }
        self.next_send = Some(now + EVERY);
        let dropped: Vec<SocketAddr> = self.told.difference(reachable).copied().collect();
        let added: Vec<(SocketAddr, u8)> = (reachable.difference(&self.told))
            .take(MAX_ADDED)
            .map(|&a| (a, wire::PEX_REACHABLE))
            .collect();
        if added.is_empty() && dropped.is_empty() {
            return None;
        }
        for a in &dropped {
            self.told.remove(a);
        }
        self.told.extend(added.iter().map(|(a, _)| *a));
        Some((id, Pex { added, dropped }))
    }

    /// A message from the peer: the addresses it says accept connections, at most
    /// [`MAX_ADDED`], or nothing if it came too soon after the last one.
    pub fn heard(&mut self, now: Instant, pex: Pex) -> Vec<SocketAddr> {
        if self.last_heard.is_some_and(|t| now < t + MIN_GAP) {
            return Vec::new();
        }
        self.last_heard = Some(now);
        (pex.added.into_iter())
            .filter(|(_, flags)| flags & wire::PEX_REACHABLE != 0)
            .map(|(a, _)| a)
            .take(MAX_ADDED)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], 6000 + i))
    }

    fn set(r: impl IntoIterator<Item = u16>) -> BTreeSet<SocketAddr> {
        r.into_iter().map(addr).collect()
    }

    #[test]
    fn a_peer_hears_first_after_first_then_only_what_changed_each_minute() {
        let t0 = Instant::now();
        let mut p = PeerPex::default();
        p.start(Some(9), t0);
        assert_eq!(
            p.due(t0 + FIRST - Duration::from_millis(1), &set(1..=3)),
            None
        );
        let (id, first) = p.due(t0 + FIRST, &set(1..=3)).unwrap();
        assert_eq!(id, 9);
        assert_eq!(first.added.len(), 3);
        assert!(first.added.iter().all(|(_, f)| *f == wire::PEX_REACHABLE));
        assert!(first.dropped.is_empty());
        // Not again within the minute, whatever changed.
        let t1 = t0 + FIRST;
        assert_eq!(p.due(t1 + EVERY / 2, &set(2..=5)), None);
        let (_, next) = p.due(t1 + EVERY, &set(2..=5)).unwrap();
        assert_eq!(next.added, vec![(addr(4), 0x10), (addr(5), 0x10)]);
        assert_eq!(next.dropped, vec![addr(1)]);
        // Nothing changed: nothing sent.
        assert_eq!(p.due(t1 + EVERY * 2, &set(2..=5)), None);
    }

    #[test]
    fn a_peer_without_pex_hears_nothing_and_a_message_holds_at_most_max_added() {
        let t0 = Instant::now();
        let mut none = PeerPex::default();
        none.start(None, t0);
        assert_eq!(none.due(t0 + FIRST, &set(1..=3)), None);
        let mut p = PeerPex::default();
        p.start(Some(2), t0);
        let (_, m) = p.due(t0 + FIRST, &set(1..=120)).unwrap();
        assert_eq!(m.added.len(), MAX_ADDED);
        // The rest come in the next messages.
        let (_, m) = p.due(t0 + FIRST + EVERY, &set(1..=120)).unwrap();
        assert_eq!(m.added.len(), MAX_ADDED);
    }

    #[test]
    fn what_we_take_is_reachable_bounded_and_not_too_often() {
        let t0 = Instant::now();
        let mut p = PeerPex::default();
        let pex = |n: u16| Pex {
            added: (1..=n)
                .map(|i| (addr(i), if i % 2 == 0 { wire::PEX_REACHABLE } else { 0 }))
                .collect(),
            dropped: vec![],
        };
        assert_eq!(p.heard(t0, pex(6)), vec![addr(2), addr(4), addr(6)]);
        // Too soon after the last: ignored.
        assert!(
            p.heard(t0 + MIN_GAP - Duration::from_millis(1), pex(6))
                .is_empty()
        );
        assert_eq!(p.heard(t0 + MIN_GAP * 2, pex(200)).len(), MAX_ADDED);
    }
}
