//! The address book: where peers can be dialled, when to try again, and who is banned.
//!
//! Bounded: at most `capacity` addresses; a dial that failed `MAX_DIAL_FAILURES` times in a
//! row is forgotten (a tracker may name it again). Failed or short-lived connections back
//! off exponentially, so a full or hostile peer is not hammered.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

pub const CONNECT_RETRY_MIN: Duration = Duration::from_secs(1);
pub const CONNECT_RETRY_MAX: Duration = Duration::from_secs(30);
pub const MAX_DIAL_FAILURES: u32 = 8;

#[derive(Debug, Default)]
struct Entry {
    next_try: Option<Instant>,
    failures: u32,
    /// Dialling, or a connection to this listen address is up.
    busy: bool,
}

#[derive(Debug)]
pub struct AddrBook {
    entries: HashMap<SocketAddr, Entry>,
    /// Banned peers by (address, peer id): an id alone is the peer's own claim, and banning it
    /// everywhere would let an impostor get an honest peer banned.
    banned_ids: HashSet<(IpAddr, [u8; 20])>,
    banned_addrs: HashSet<SocketAddr>,
    own: HashSet<SocketAddr>,
    capacity: usize,
    /// Something changed that may allow a dial (new addresses, a slot or address freed).
    changed: bool,
}

fn backoff(failures: u32) -> Duration {
    (CONNECT_RETRY_MIN * 2u32.saturating_pow(failures.min(5))).min(CONNECT_RETRY_MAX)
}

impl AddrBook {
    pub fn new(own: impl IntoIterator<Item = SocketAddr>, capacity: usize) -> Self {
        AddrBook {
            entries: HashMap::new(),
            banned_ids: HashSet::new(),
            banned_addrs: HashSet::new(),
            own: own.into_iter().collect(),
            capacity,
            changed: false,
        }
    }

    /// Remembers an address to dial; false if it is ours, banned, or the book is full.
    pub fn add(&mut self, addr: SocketAddr) -> bool {
        if self.own.contains(&addr) || self.banned_addrs.contains(&addr) {
            return false;
        }
        if self.entries.contains_key(&addr) {
            return true;
        }
        if self.entries.len() >= self.capacity {
            return false;
        }
        self.entries.insert(addr, Entry::default());
        self.changed = true;
        true
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, addr: &SocketAddr) -> bool {
        self.entries.contains_key(addr)
    }

    /// The address turned out to be our own: forget it and never dial it.
    pub fn mark_own(&mut self, addr: SocketAddr) {
        self.own.insert(addr);
        self.entries.remove(&addr);
    }

    /// A connection to (or from) the peer listening at `addr` is up: do not dial it. An
    /// address told by an inbound peer is remembered only while there is room, so peers that
    /// claim ever new ports cannot grow the book.
    pub fn mark_connected(&mut self, addr: SocketAddr) {
        if self.add(addr)
            && let Some(e) = self.entries.get_mut(&addr)
        {
            e.busy = true;
        }
    }

    /// A dial we made failed: back off, and forget an address that keeps failing.
    pub fn dial_failed(&mut self, addr: SocketAddr, now: Instant) {
        self.changed = true;
        let Some(e) = self.entries.get_mut(&addr) else {
            return;
        };
        e.failures += 1;
        if e.failures >= MAX_DIAL_FAILURES {
            self.entries.remove(&addr);
            return;
        }
        e.busy = false;
        e.next_try = Some(now + backoff(e.failures));
    }

    /// A connection ended. One that ended soon (a full or banning peer) counts as a failed
    /// dial, so it is retried with growing backoff instead of at once, forever.
    pub fn connection_ended(&mut self, addr: SocketAddr, now: Instant, short_lived: bool) {
        self.changed = true;
        if let Some(e) = self.entries.get_mut(&addr) {
            e.busy = false;
            e.failures = if short_lived { e.failures + 1 } else { 0 };
            e.next_try = Some(now + backoff(e.failures));
        }
    }

    pub fn ban(&mut self, ip: IpAddr, id: Option<[u8; 20]>, listen: Option<SocketAddr>) {
        if let Some(id) = id {
            self.banned_ids.insert((ip, id));
        }
        if let Some(listen) = listen {
            self.banned_addrs.insert(listen);
            self.entries.remove(&listen);
        }
    }

    pub fn is_banned_id(&self, ip: IpAddr, id: &[u8; 20]) -> bool {
        self.banned_ids.contains(&(ip, *id))
    }

    pub fn is_banned_addr(&self, addr: &SocketAddr) -> bool {
        self.banned_addrs.contains(addr)
    }

    /// Whether `take_dials` may find something: addresses or room changed since it last ran.
    pub fn changed(&self) -> bool {
        self.changed
    }

    /// Up to `room` addresses to dial now, drawn at random (from `rng`, so a seeded node is
    /// deterministic), skipping those `connected` already reaches under another socket
    /// address. They count as busy until `dial_failed` or `connection_ended`. At random, not
    /// in a fixed order: every node dialling the same first addresses fills those peers up
    /// while others stay idle, and the late joiners are refused by all of them.
    pub fn take_dials(
        &mut self,
        now: Instant,
        room: usize,
        connected: &HashSet<SocketAddr>,
        rng: &mut impl rand::Rng,
    ) -> Vec<SocketAddr> {
        self.changed = false;
        if room == 0 {
            return Vec::new();
        }
        let mut ready: Vec<SocketAddr> = self
            .entries
            .iter()
            .filter(|(a, e)| {
                !e.busy && e.next_try.is_none_or(|t| now >= t) && !connected.contains(a)
            })
            .map(|(a, _)| *a)
            .collect();
        // Sorted first: the map's own order differs from process to process.
        ready.sort_unstable();
        let (chosen, _) = rand::seq::SliceRandom::partial_shuffle(&mut ready[..], rng, room);
        let chosen = chosen.to_vec();
        for a in &chosen {
            let e = self.entries.get_mut(a).unwrap();
            e.busy = true;
            e.next_try = Some(now + CONNECT_RETRY_MIN);
        }
        chosen
    }

    /// When the next backed-off address may be dialled (after `now`).
    pub fn next_dial(&self, now: Instant) -> Option<Instant> {
        self.entries
            .values()
            .filter(|e| !e.busy)
            .filter_map(|e| e.next_try)
            .filter(|&t| t > now)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], 6000 + i))
    }

    #[test]
    fn bounded_and_never_our_own_or_banned() {
        let mut book = AddrBook::new([addr(0)], 3);
        assert!(!book.add(addr(0)), "our own address");
        assert!(book.add(addr(1)) && book.add(addr(2)) && book.add(addr(3)));
        assert!(!book.add(addr(4)), "full");
        assert!(book.add(addr(1)), "a known address is still known");
        book.ban(addr(1).ip(), None, Some(addr(1)));
        assert!(!book.contains(&addr(1)) && !book.add(addr(1)));
        assert!(book.add(addr(4)), "the ban freed a place");
        book.mark_own(addr(2));
        assert!(!book.add(addr(2)));
        assert_eq!(book.len(), 2);
        // Listen addresses that connected peers claim are bounded too.
        for i in 10..20 {
            book.mark_connected(addr(i));
        }
        assert_eq!(book.len(), 3);
    }

    #[test]
    fn dials_back_off_and_a_failing_address_is_forgotten() {
        let t0 = Instant::now();
        let mut book = AddrBook::new([], 10);
        book.add(addr(1));
        let none = HashSet::new();
        assert_eq!(book.take_dials(t0, 5, &none, &mut rng()), vec![addr(1)]);
        assert!(
            book.take_dials(t0, 5, &none, &mut rng()).is_empty(),
            "busy while dialling"
        );
        book.dial_failed(addr(1), t0);
        assert_eq!(book.next_dial(t0), Some(t0 + Duration::from_secs(2)));
        assert!(
            book.take_dials(t0 + Duration::from_secs(1), 5, &none, &mut rng())
                .is_empty()
        );
        let mut t = t0 + Duration::from_secs(2);
        assert_eq!(book.take_dials(t, 5, &none, &mut rng()), vec![addr(1)]);
        for _ in 1..MAX_DIAL_FAILURES - 1 {
            book.dial_failed(addr(1), t);
            let at = book.next_dial(t).unwrap();
            assert!(at - t <= CONNECT_RETRY_MAX);
            t = at;
            assert_eq!(book.take_dials(t, 5, &none, &mut rng()), vec![addr(1)]);
        }
        book.dial_failed(addr(1), t);
        assert!(
            !book.contains(&addr(1)),
            "forgotten after {MAX_DIAL_FAILURES} failures"
        );
    }

    #[test]
    fn short_lived_connections_back_off_long_ones_do_not() {
        let t0 = Instant::now();
        let mut book = AddrBook::new([], 10);
        book.add(addr(1));
        let none = HashSet::new();
        book.take_dials(t0, 1, &none, &mut rng());
        book.connection_ended(addr(1), t0, true);
        book.take_dials(t0 + Duration::from_secs(2), 1, &none, &mut rng());
        book.connection_ended(addr(1), t0, true);
        assert_eq!(book.next_dial(t0), Some(t0 + Duration::from_secs(4)));
        book.take_dials(t0 + Duration::from_secs(4), 1, &none, &mut rng());
        book.connection_ended(addr(1), t0, false);
        assert_eq!(book.next_dial(t0), Some(t0 + CONNECT_RETRY_MIN));
    }

    fn rng() -> rand_chacha::ChaCha8Rng {
        rand::SeedableRng::seed_from_u64(1)
    }

    #[test]
    fn dials_at_random_within_room_skipping_connected() {
        let t0 = Instant::now();
        let mut book = AddrBook::new([], 100);
        for i in 1..=50 {
            book.add(addr(i));
        }
        let connected: HashSet<_> = [addr(1)].into();
        let first = book.take_dials(t0, 10, &connected, &mut rng());
        assert_eq!(first.len(), 10);
        assert!(!first.contains(&addr(1)));
        assert!(!book.changed());
        // Not the ten lowest: every node dialling those would fill them up.
        let lowest: Vec<_> = (2..=11).map(addr).collect();
        let mut sorted = first.clone();
        sorted.sort();
        assert_ne!(sorted, lowest);
        // The same seed draws the same addresses.
        let mut again = AddrBook::new([], 100);
        for i in (1..=50).rev() {
            again.add(addr(i));
        }
        assert_eq!(again.take_dials(t0, 10, &connected, &mut rng()), first);
    }

    #[test]
    fn bans_by_address_and_id_pair() {
        let mut book = AddrBook::new([], 10);
        let id = [7u8; 20];
        book.ban(addr(1).ip(), Some(id), None);
        assert!(book.is_banned_id(addr(1).ip(), &id));
        let other_host: IpAddr = [10, 0, 0, 2].into();
        assert!(
            !book.is_banned_id(other_host, &id),
            "an id is banned only with its address"
        );
    }
}
