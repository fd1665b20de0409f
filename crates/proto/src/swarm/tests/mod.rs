//! Tests of the core through its contract: a scripted raw-wire peer (the test writes every
//! byte the remote sends and reads every byte the core answers), and [`Pair`], two cores
//! joined in memory (as quinn-proto's tests do), with virtual time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ed25519_dalek::SigningKey;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::fixtures::*;
use super::*;
use crate::piece::FLAG_RANDOM_ACCESS;
use crate::wire::{Handshake, Message};

mod claims;
mod connections;

fn drain(s: &mut Swarm) -> Vec<Output> {
    std::iter::from_fn(|| s.poll_output()).collect()
}

/// What the core sent one connection, decoded.
#[derive(Default)]
struct Heard {
    handshake: Option<Handshake>,
    messages: Vec<Message>,
    disconnected: Option<DisconnectReason>,
    buf: BytesMut,
}

impl Heard {
    fn take(&mut self, outputs: &[Output], peer: PeerId) {
        for out in outputs {
            match out {
                Output::Transmit { peer: p, data } if *p == peer => {
                    self.buf.extend_from_slice(data)
                }
                Output::Disconnect { peer: p, reason } if *p == peer => {
                    self.disconnected = Some(reason.clone())
                }
                _ => {}
            }
        }
        if self.handshake.is_none() && self.buf.len() >= wire::HANDSHAKE_LEN {
            self.handshake = Some(Handshake::decode(&self.buf).unwrap());
            let _ = self.buf.split_to(wire::HANDSHAKE_LEN);
        }
        self.messages.extend(decode_frames(&mut self.buf));
    }

    fn requests(&self) -> Vec<u64> {
        self.messages
            .iter()
            .filter_map(|m| match m {
                Message::Live(LiveMessage::Request { seq }) => Some(*seq),
                _ => None,
            })
            .collect()
    }
}

/// A remote peer whose every byte the test writes.
struct RawPeer {
    id: PeerId,
    heard: Heard,
}

impl RawPeer {
    fn connect(s: &mut Swarm, now: Instant, from: SocketAddr) -> RawPeer {
        RawPeer::with(s, now, from, Direction::Inbound)
    }

    /// A peer the core dialled (so it accepts connections).
    fn dialled(s: &mut Swarm, now: Instant, at: SocketAddr) -> RawPeer {
        RawPeer::with(s, now, at, Direction::Outbound)
    }

    fn with(s: &mut Swarm, now: Instant, addr: SocketAddr, direction: Direction) -> RawPeer {
        let id = s.accept(now, addr, direction).unwrap();
        let mut heard = Heard::default();
        heard.take(&drain(s), id);
        RawPeer { id, heard }
    }

    fn send(&mut self, s: &mut Swarm, now: Instant, bytes: &[u8]) {
        s.handle(now, Input::Data(self.id, Bytes::copy_from_slice(bytes)));
        self.heard.take(&drain(s), self.id);
    }

    /// Sends a message and leaves what the core answers for the caller to drain (when
    /// several raw peers hear the same core).
    fn send_quiet(&mut self, s: &mut Swarm, now: Instant, msg: Message) {
        let mut buf = BytesMut::new();
        wire::encode(&msg, wire::OUR_LIVE_ID, &mut buf);
        s.handle(now, Input::Data(self.id, buf.freeze()));
    }

    fn send_msg(&mut self, s: &mut Swarm, now: Instant, msg: Message) {
        let mut buf = BytesMut::new();
        wire::encode(&msg, wire::OUR_LIVE_ID, &mut buf);
        self.send(s, now, &buf);
    }

    /// The BitTorrent handshake, then the BEP 10 one, as our own client sends them, without
    /// peer exchange (so that the core sends the test no PEX messages).
    fn handshake(&mut self, s: &mut Swarm, now: Instant, peer_id: [u8; 20], role: Role) {
        self.handshake_with_pex(s, now, peer_id, role, None);
    }

    fn handshake_with_pex(
        &mut self,
        s: &mut Swarm,
        now: Instant,
        peer_id: [u8; 20],
        role: Role,
        pex_id: Option<u8>,
    ) {
        let hs = Handshake {
            extensions: true,
            info_hash: info_hash().0,
            peer_id,
        };
        self.send(s, now, &hs.encode());
        let ext = ExtHandshake {
            live_id: Some(wire::OUR_LIVE_ID),
            listen_port: Some(6881),
            role: Some(role),
            client: Some("raw".into()),
            pex_id,
        };
        self.send_msg(s, now, Message::ExtHandshake(ext));
    }

    fn have(&mut self, s: &mut Swarm, now: Instant, seqs: impl IntoIterator<Item = u64>) {
        self.send_msg(s, now, have_msg(seqs.into_iter().map(have).collect()));
    }
}

#[test]
fn a_peer_sending_a_forged_piece_is_banned_by_address_and_id() {
    let t0 = Instant::now();
    let mut s = Swarm::new(config(Role::Seed, 0), t0);
    let mut raw = RawPeer::connect(&mut s, t0, addr(1, 40000));
    assert_eq!(raw.heard.handshake.as_ref().unwrap().peer_id, [b'a'; 20]);
    let evil_id = [b'z'; 20];
    raw.handshake(&mut s, t0, evil_id, Role::Seed);
    raw.send_msg(&mut s, t0, Message::Unchoke);
    raw.have(&mut s, t0, [10]);
    assert_eq!(
        raw.heard.requests(),
        vec![10],
        "the seed asks for what it lacks"
    );

    let forged = piece(10, &SigningKey::from_bytes(&[66; 32]));
    raw.send_msg(
        &mut s,
        t0,
        Message::Live(LiveMessage::Piece(forged.wire().clone())),
    );
    assert!(
        matches!(
            raw.heard.disconnected,
            Some(DisconnectReason::BadPiece { seq: 10, .. })
        ),
        "{:?}",
        raw.heard.disconnected
    );
    s.handle(t0, Input::Closed(raw.id));
    assert_eq!(s.status(t0).peers_banned, 1);

    // The same id from the same host is refused at the handshake; from another host it is
    // someone else's claim and accepted.
    let mut again = RawPeer::connect(&mut s, t0, addr(1, 40001));
    again.handshake(&mut s, t0, evil_id, Role::Seed);
    assert_eq!(again.heard.disconnected, Some(DisconnectReason::Banned));
    let mut other = RawPeer::connect(&mut s, t0, addr(2, 40000));
    other.handshake(&mut s, t0, evil_id, Role::Seed);
    assert_eq!(other.heard.disconnected, None);

    // Its listen address is never dialled.
    s.handle(t0, Input::PeerAddrs(vec![addr(1, 6881)]));
    assert!(!drain(&mut s).contains(&Output::Connect(addr(1, 6881))));
}

#[test]
fn a_peer_asking_again_for_pieces_it_was_given_gets_each_once_then_is_banned() {
    let t0 = Instant::now();
    let mut s = Swarm::new(config(Role::Injector, 0), t0);
    for seq in 1..=3 {
        s.handle(t0, Input::LocalPiece(piece(seq, &key())));
    }
    let mut raw = RawPeer::connect(&mut s, t0, addr(1, 40000));
    raw.handshake(&mut s, t0, [b'g'; 20], Role::Receiver);
    raw.send_msg(&mut s, t0, Message::Interested);
    let pieces = |raw: &RawPeer| {
        (raw.heard.messages.iter())
            .filter(|m| matches!(m, Message::Live(LiveMessage::Piece(_))))
            .count()
    };
    let request = |raw: &mut RawPeer, s: &mut Swarm, seq| {
        raw.send_msg(s, t0, Message::Live(LiveMessage::Request { seq }));
    };
    for seq in 1..=3 {
        request(&mut raw, &mut s, seq);
    }
    assert_eq!(pieces(&raw), 3, "each piece asked for is served");
    for round in 0..peer::MAX_REPEATED_REQUESTS {
        request(&mut raw, &mut s, 1 + u64::from(round) % 3);
    }
    assert_eq!(pieces(&raw), 3, "a piece given is not given again");
    assert_eq!(raw.heard.disconnected, None, "a few repeats are forgiven");
    request(&mut raw, &mut s, 2);
    assert_eq!(
        raw.heard.disconnected,
        Some(DisconnectReason::RepeatedRequests {
            repeats: peer::MAX_REPEATED_REQUESTS + 1
        })
    );
    assert_eq!(s.status(t0).peers_banned, 1);
}

#[test]
fn reading_a_have_for_a_piece_already_asked_for_does_not_rerun_the_picker() {
    let t0 = Instant::now();
    let mut s = Swarm::new(config(Role::Seed, 0), t0);
    let mut raws: Vec<RawPeer> = (1..=3)
        .map(|i| {
            let mut r = RawPeer::connect(&mut s, t0, addr(i, 40000));
            r.handshake(&mut s, t0, [b'k' + i; 20], Role::Seed);
            r.send_msg(&mut s, t0, Message::Unchoke);
            r
        })
        .collect();
    raws[0].have(&mut s, t0, [10]);
    assert!(s.download.is_inflight(10));
    assert!(!s.download.wants_pick());
    raws[1].have(&mut s, t0, [10]);
    let asked: usize = raws.iter().map(|r| r.heard.requests().len()).sum();
    assert_eq!(asked, 1, "one request for one piece");
    raws[2].have(&mut s, t0, [11]);
    assert!(s.download.is_inflight(11), "a new piece is picked at once");
}

/// Two cores joined in memory: what one transmits, the other reads `one_way` later.
struct Pair {
    a: Swarm,
    b: Swarm,
    now: Instant,
    one_way: Duration,
    /// (arrival, to b?, connection id at the receiver, bytes)
    wire: Vec<(Instant, bool, PeerId, Bytes)>,
    /// Connection ids: a's id for the link -> b's id, and back.
    links: Vec<(PeerId, PeerId)>,
    /// (by a?, the connection's id there, why)
    disconnects: Vec<(bool, PeerId, DisconnectReason)>,
    /// When set, every transmission is read in random slices of 1 to 64 bytes, as TCP may
    /// hand them over, instead of whole.
    split_reads: Option<ChaCha8Rng>,
}

impl Pair {
    fn new(a: Config, b: Config) -> Pair {
        let now = Instant::now();
        Pair {
            a: Swarm::new(a, now),
            b: Swarm::new(b, now),
            now,
            one_way: Duration::from_millis(5),
            wire: Vec::new(),
            links: Vec::new(),
            disconnects: Vec::new(),
            split_reads: None,
        }
    }

    /// `a` dials `b` (or `b` dials `a`); both take the connection.
    fn connect(&mut self, a_dials: bool) {
        let (ap, bp) = (addr(1, 6881), addr(2, 6881));
        let (a_dir, b_dir) = if a_dials {
            (Direction::Outbound, Direction::Inbound)
        } else {
            (Direction::Inbound, Direction::Outbound)
        };
        let ia = self.a.accept(self.now, bp, a_dir).unwrap();
        let ib = self.b.accept(self.now, ap, b_dir).unwrap();
        self.links.push((ia, ib));
        self.collect();
    }

    fn collect(&mut self) {
        for from_a in [true, false] {
            let s = if from_a { &mut self.a } else { &mut self.b };
            for out in drain(s) {
                match out {
                    Output::Transmit { peer, data } => {
                        let to = self
                            .links
                            .iter()
                            .find(|(ia, ib)| if from_a { *ia == peer } else { *ib == peer });
                        if let Some(&(ia, ib)) = to {
                            let remote = if from_a { ib } else { ia };
                            let at = self.now + self.one_way;
                            let mut data = data;
                            while let Some(rng) = &mut self.split_reads
                                && data.len() > 1
                            {
                                use rand::Rng;
                                let cut = rng.random_range(1..=64).min(data.len());
                                self.wire.push((at, from_a, remote, data.split_to(cut)));
                            }
                            self.wire.push((at, from_a, remote, data));
                        }
                    }
                    Output::Disconnect { peer, reason } => {
                        self.disconnects.push((from_a, peer, reason))
                    }
                    _ => {}
                }
            }
        }
    }

    /// `a`, the injector, makes pieces `seqs` of the test stream 40 ms apart; the run goes
    /// on 3 s from the first.
    fn inject(&mut self, seqs: std::ops::RangeInclusive<u64>) {
        let start = self.now;
        for seq in seqs {
            self.a
                .handle(self.now, Input::LocalPiece(piece(seq, &key())));
            self.collect();
            let next = self.now + Duration::from_millis(40);
            self.run(next);
        }
        self.run(start + Duration::from_secs(3));
    }

    /// Runs until `until`: bytes arrive in order, timers fire when nothing arrives sooner.
    fn run(&mut self, until: Instant) {
        loop {
            self.wire.sort_by_key(|(at, ..)| *at);
            let timer = [self.a.poll_timeout(), self.b.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let next_byte = self.wire.first().map(|(at, ..)| *at);
            let next = match (next_byte, timer) {
                (Some(b), Some(t)) => b.min(t),
                (b, t) => b.or(t).unwrap_or(until),
            };
            if next > until {
                self.now = until;
                return;
            }
            self.now = next;
            if next_byte == Some(next) {
                let (_, to_b, conn, data) = self.wire.remove(0);
                let s = if to_b { &mut self.b } else { &mut self.a };
                s.handle(next, Input::Data(conn, data));
            } else {
                self.a.handle(next, Input::Timeout);
                self.b.handle(next, Input::Timeout);
            }
            self.collect();
        }
    }
}

#[test]
fn pair_a_seed_fetches_what_the_injector_lets_go() {
    seed_fetches_from_injector(None);
}

#[test]
fn pair_reads_split_anywhere_give_the_same_pieces() {
    seed_fetches_from_injector(Some(ChaCha8Rng::seed_from_u64(7)));
}

fn seed_fetches_from_injector(split_reads: Option<ChaCha8Rng>) {
    let mut pair = Pair::new(config(Role::Injector, 1), config(Role::Seed, 2));
    let whole_reads = split_reads.is_none();
    pair.split_reads = split_reads;
    pair.connect(false);
    pair.inject(1..=20);
    assert!(pair.disconnects.is_empty(), "{:?}", pair.disconnects);
    let seed = pair.b.status(pair.now);
    let missing: Vec<u64> = (1..=20).filter(|s| !pair.b.store.contains(*s)).collect();
    assert_eq!(
        missing,
        Vec::<u64>::new(),
        "a piece told late is fetched too"
    );
    for seq in 1..=20 {
        let (sent, got) = (
            pair.a.store.get(seq).unwrap(),
            pair.b.store.get(seq).unwrap(),
        );
        assert_eq!(got.wire(), sent.wire());
        if whole_reads {
            // Read whole, a piece is kept in the very bytes it was sent in: never copied.
            assert_eq!(got.wire().as_ptr(), sent.wire().as_ptr());
        }
    }
    assert_eq!(seed.pieces_received, 20);
    assert_eq!(pair.a.stats.pieces_sent, 20);
    assert_eq!(seed.pieces_rejected + seed.duplicates, 0);
}

#[test]
fn pair_two_connections_between_the_same_peers_become_one() {
    let mut pair = Pair::new(config(Role::Seed, 1), config(Role::Seed, 2));
    // Both dial at once, as two peers that learn of each other from a tracker do.
    pair.connect(true);
    pair.connect(false);
    let until = pair.now + Duration::from_secs(1);
    pair.run(until);
    let mut closed: Vec<(bool, PeerId)> = pair
        .disconnects
        .iter()
        .filter(|(.., r)| *r == DisconnectReason::Duplicate)
        .map(|(by_a, id, _)| (*by_a, *id))
        .collect();
    closed.sort();
    // Both sides close the same one of the two: the one the peer with the larger id (b)
    // opened, the second.
    let (a_second, b_second) = pair.links[1];
    assert_eq!(
        closed,
        vec![(false, b_second), (true, a_second)],
        "{:?}",
        pair.disconnects
    );
    assert_eq!(pair.a.status(pair.now).peers, 1);
    assert_eq!(pair.b.status(pair.now).peers, 1);
}

#[test]
fn pair_a_silent_connection_is_kept_alive_and_a_dead_one_times_out() {
    let mut pair = Pair::new(config(Role::Seed, 1), config(Role::Seed, 2));
    pair.connect(true);
    let until = pair.now + peer::IDLE_TIMEOUT * 2;
    pair.run(until);
    assert!(
        pair.disconnects.is_empty(),
        "keep-alives hold it: {:?}",
        pair.disconnects
    );

    // A connection whose peer never completes the handshake is closed after the timeout.
    let t = pair.now;
    let id = pair.a.accept(t, addr(9, 1), Direction::Inbound).unwrap();
    drain(&mut pair.a);
    let deadline = pair.a.poll_timeout().unwrap();
    assert!(deadline <= t + peer::HANDSHAKE_TIMEOUT);
    pair.a.handle(t + peer::HANDSHAKE_TIMEOUT, Input::Timeout);
    let outs = drain(&mut pair.a);
    assert!(outs.contains(&Output::Disconnect {
        peer: id,
        reason: DisconnectReason::HandshakeTimeout
    }));
}

#[test]
fn a_peer_that_trickles_a_message_a_byte_a_second_is_closed_as_silent() {
    let t0 = Instant::now();
    let mut s = Swarm::new(config(Role::Seed, 0), t0);
    let mut slow = RawPeer::connect(&mut s, t0, addr(2, 40000));
    slow.handshake(&mut s, t0, [b's'; 20], Role::Seed);
    let mut idle = RawPeer::connect(&mut s, t0, addr(3, 40000));
    idle.handshake(&mut s, t0, [b'i'; 20], Role::Seed);
    // A HAVE longer than the idle timeout in seconds, a byte a second (slowloris), beside
    // a peer that says nothing but a keep-alive every 30 s.
    let mut frame = BytesMut::new();
    wire::encode(
        &have_msg((1..=20).map(have).collect()),
        wire::OUR_LIVE_ID,
        &mut frame,
    );
    let idle_s = peer::IDLE_TIMEOUT.as_secs() as usize;
    assert!(frame.len() > idle_s + 10);
    let mut closed = Vec::new();
    for i in 1..=idle_s + 10 {
        let now = t0 + Duration::from_secs(i as u64);
        s.handle(
            now,
            Input::Data(slow.id, Bytes::copy_from_slice(&frame[i - 1..i])),
        );
        if i % 30 == 0 {
            idle.send_quiet(&mut s, now, Message::KeepAlive);
        }
        s.handle(now, Input::Timeout);
        closed.extend(drain(&mut s).into_iter().filter_map(|o| match o {
            Output::Disconnect { peer, reason } => Some((peer, reason, i)),
            _ => None,
        }));
    }
    // Closed when the idle timeout came, 120 bytes into a message it never finished.
    assert_eq!(closed, vec![(slow.id, DisconnectReason::Silent, idle_s)]);
    assert!(s.peers.contains(idle.id), "keep-alives hold a connection");
}

#[test]
fn an_unsorted_extended_handshake_is_accepted() {
    let t0 = Instant::now();
    let mut s = Swarm::new(config(Role::Seed, 0), t0);
    let mut raw = RawPeer::connect(&mut s, t0, addr(1, 40000));
    let hs = Handshake {
        extensions: true,
        info_hash: info_hash().0,
        peer_id: [b'u'; 20],
    };
    raw.send(&mut s, t0, &hs.encode());
    // Keys out of order at both levels, and one we do not know, as other clients send them.
    let ext: &[u8] = b"d1:v5:other1:md6:ut_pexi2e12:nordlys_livei1ee1:pi6881e4:reqqi250ee";
    let mut frame = Vec::new();
    frame.extend_from_slice(&(ext.len() as u32 + 2).to_be_bytes());
    frame.extend_from_slice(&[20, 0]);
    frame.extend_from_slice(ext);
    raw.send(&mut s, t0, &frame);
    assert_eq!(raw.heard.disconnected, None);
    let p = s.peers.get(raw.id).unwrap();
    assert!(p.is_active());
    assert_eq!(p.listen_addr, Some(addr(1, 6881)));
}

#[test]
fn a_refused_piece_is_asked_for_again_when_the_refusal_runs_out() {
    let t0 = Instant::now();
    let mut s = Swarm::new(config(Role::Seed, 0), t0);
    let mut raw = RawPeer::connect(&mut s, t0, addr(1, 40000));
    raw.handshake(&mut s, t0, [b'r'; 20], Role::Seed);
    raw.send_msg(&mut s, t0, Message::Unchoke);
    raw.have(&mut s, t0, [10]);
    assert_eq!(raw.heard.requests(), vec![10]);
    raw.send_msg(&mut s, t0, Message::Live(LiveMessage::Reject { seq: 10 }));
    // Nothing else happens: only time passes. The core asks again once the refusal ends.
    let mut now = t0;
    while raw.heard.requests().len() < 2 {
        now = s.poll_timeout().unwrap();
        assert!(
            now - t0 <= peer::REFUSE_FOR + Duration::from_millis(10),
            "asked again in time"
        );
        s.handle(now, Input::Timeout);
        raw.heard.take(&drain(&mut s), raw.id);
    }
    assert!(now - t0 >= peer::REFUSE_FOR);
    assert_eq!(raw.heard.requests(), vec![10, 10]);
}

fn have_msg(entries: Vec<HaveEntry>) -> Message {
    Message::Live(LiveMessage::Have {
        window_start: 0,
        entries,
    })
}

fn send_have(raw: &mut RawPeer, s: &mut Swarm, now: Instant, entries: Vec<HaveEntry>) {
    raw.send_msg(s, now, have_msg(entries));
}

fn send_piece(raw: &mut RawPeer, s: &mut Swarm, now: Instant, seq: u64) {
    let wire = piece(seq, &key()).wire().clone();
    raw.send_msg(s, now, Message::Live(LiveMessage::Piece(wire)));
}

#[test]
fn pair_with_substreams_the_injector_pushes_every_piece_after_the_subscriptions() {
    let with_push = |role, n| {
        let mut c = config(role, n);
        c.substreams = 4;
        c
    };
    let mut pair = Pair::new(with_push(Role::Injector, 1), with_push(Role::Seed, 2));
    pair.connect(false);
    pair.inject(1..=40);
    assert!(pair.disconnects.is_empty(), "{:?}", pair.disconnects);
    let (injector, seed) = (pair.a.status(pair.now), pair.b.status(pair.now));
    assert!((1..=40).all(|seq| pair.b.store.contains(seq)));
    // Piece 1 is made before the connection is up, piece 2 is told (the first HAVE); both
    // are fetched. That HAVE makes the injector a parent candidate, and from piece 3 on each
    // substream is pushed, unrequested.
    assert_eq!((seed.push.parents, injector.push.children), (4, 4));
    assert_eq!(
        (seed.pieces_received, seed.push.counters.pushes_received),
        (40, 38)
    );
    assert_eq!(injector.push.counters.pushes_sent, 38);
    let c = seed.push.counters;
    assert_eq!(seed.duplicates + c.repairs + c.parent_refusals, 0);
}

#[test]
fn bytes_from_the_injector_are_counted_apart_from_the_other_peers() {
    let t0 = Instant::now();
    let mut s = Swarm::new(config(Role::Seed, 0), t0);
    let mut injector = RawPeer::connect(&mut s, t0, addr(2, 40000));
    injector.handshake(&mut s, t0, [b'i'; 20], Role::Injector);
    let mut seed = RawPeer::connect(&mut s, t0, addr(3, 40000));
    seed.handshake(&mut s, t0, [b's'; 20], Role::Seed);
    injector.send_msg(&mut s, t0, Message::Unchoke);
    seed.send_msg(&mut s, t0, Message::Unchoke);
    // Each holds pieces the other does not, so each is asked for its own.
    send_have(&mut injector, &mut s, t0, vec![have(1), have(2)]);
    send_have(&mut seed, &mut s, t0, vec![have(3), have(4), have(5)]);
    let outs = drain(&mut s);
    injector.heard.take(&outs, injector.id);
    seed.heard.take(&outs, seed.id);
    let (from_injector, from_seed) = (injector.heard.requests(), seed.heard.requests());
    assert_eq!((from_injector.len(), from_seed.len()), (2, 3));
    for seq in from_injector {
        send_piece(&mut injector, &mut s, t0, seq);
    }
    for seq in from_seed {
        send_piece(&mut seed, &mut s, t0, seq);
    }
    let st = s.status(t0);
    let payload = PAYLOAD as u64;
    assert_eq!(st.pieces_received, 5, "{st:?}");
    assert_eq!(
        (st.bytes_down, st.bytes_down_injector),
        (5 * payload, 2 * payload)
    );
}
