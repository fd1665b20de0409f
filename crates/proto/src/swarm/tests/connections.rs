//! Connections and addresses: accepting, dialling, the address book, peer exchange.

use super::*;

#[test]
fn inbound_connections_beyond_max_peers_are_refused() {
    let t0 = Instant::now();
    let mut c = config(Role::Seed, 0);
    c.max_peers = 2;
    let mut s = Swarm::new(c, t0);
    assert!(s.accept(t0, addr(1, 5000), Direction::Inbound).is_ok());
    assert!(s.accept(t0, addr(2, 5000), Direction::Inbound).is_ok());
    assert_eq!(
        s.accept(t0, addr(3, 5000), Direction::Inbound),
        Err(Refusal::Full)
    );
    // A refused connection leaves nothing behind.
    assert_eq!(s.peers.len(), 2);
}

#[test]
fn failed_dials_are_retried_after_a_growing_backoff() {
    let t0 = Instant::now();
    let mut s = Swarm::new(config(Role::Receiver, 0), t0);
    let target = addr(1, 6881);
    s.handle(t0, Input::PeerAddrs(vec![target]));
    let dials = |outs: Vec<Output>| {
        outs.iter()
            .filter(|o| **o == Output::Connect(target))
            .count()
    };
    assert_eq!(dials(drain(&mut s)), 1);
    let mut now = t0;
    let mut waits = Vec::new();
    for _ in 0..3 {
        s.handle(now, Input::ConnectFailed(target));
        assert_eq!(dials(drain(&mut s)), 0, "not at once");
        // Step through the timers until the core dials again.
        let failed_at = now;
        loop {
            now = s.poll_timeout().unwrap();
            s.handle(now, Input::Timeout);
            if dials(drain(&mut s)) == 1 {
                break;
            }
            assert!(now - failed_at < Duration::from_secs(60));
        }
        waits.push(now - failed_at);
    }
    assert_eq!(
        waits,
        [2, 4, 8].map(Duration::from_secs).to_vec(),
        "the backoff doubles"
    );
}

#[test]
fn peers_exchange_the_addresses_that_accept_connections() {
    let t0 = Instant::now();
    let mut s = Swarm::new(config(Role::Receiver, 0), t0);
    // Two peers we dialled, so they accept connections, and one that dialled us.
    for (i, a) in [(1u8, addr(1, 6881)), (2, addr(2, 6881))] {
        RawPeer::dialled(&mut s, t0, a).handshake(&mut s, t0, [i; 20], Role::Receiver);
    }
    let mut listener = RawPeer::connect(&mut s, t0, addr(3, 40000));
    let pex_id = Some(wire::OUR_PEX_ID);
    listener.handshake_with_pex(&mut s, t0, [3; 20], Role::Receiver, pex_id);
    let pex_heard = |l: &RawPeer| -> Vec<wire::Pex> {
        (l.heard.messages.iter())
            .filter_map(|m| match m {
                Message::Pex(p) => Some(p.clone()),
                _ => None,
            })
            .collect()
    };
    // Told after pex::FIRST, of the peers we dialled only.
    s.handle(t0 + pex::FIRST - Duration::from_millis(1), Input::Timeout);
    listener.heard.take(&drain(&mut s), listener.id);
    assert!(pex_heard(&listener).is_empty());
    let t1 = t0 + pex::FIRST;
    s.handle(t1, Input::Timeout);
    listener.heard.take(&drain(&mut s), listener.id);
    let told = pex_heard(&listener);
    assert_eq!(told.len(), 1);
    assert_eq!(
        told[0].added,
        vec![
            (addr(1, 6881), wire::PEX_REACHABLE),
            (addr(2, 6881), wire::PEX_REACHABLE)
        ]
    );
    // What it tells us: the peers flagged as accepting connections are dialled.
    let mut buf = BytesMut::new();
    let pex = wire::Pex {
        added: vec![(addr(7, 6881), wire::PEX_REACHABLE), (addr(8, 6881), 0)],
        dropped: vec![],
    };
    wire::encode(&Message::Pex(pex), wire::OUR_PEX_ID, &mut buf);
    s.handle(t1, Input::Data(listener.id, buf.freeze()));
    let dials: Vec<Output> = (drain(&mut s).into_iter())
        .filter(|o| matches!(o, Output::Connect(_)))
        .collect();
    assert_eq!(dials, vec![Output::Connect(addr(7, 6881))]);
    assert_eq!(s.status(t1).pex_addrs, 1);
}

#[test]
fn a_node_dials_a_quarter_of_max_peers_until_it_learns_that_nobody_can_dial_it() {
    let t0 = Instant::now();
    let run = |dialled_by_someone: bool| {
        let mut c = config(Role::Receiver, 0);
        c.max_peers = 10;
        let mut s = Swarm::new(c, t0);
        s.handle(
            t0,
            Input::PeerAddrs((1..=30).map(|i| addr(i, 6881)).collect()),
        );
        let dials = |s: &mut Swarm| -> Vec<SocketAddr> {
            (drain(s).into_iter())
                .filter_map(|o| match o {
                    Output::Connect(a) => Some(a),
                    _ => None,
                })
                .collect()
        };
        let mut counts = vec![];
        let first = dials(&mut s);
        counts.push(first.len());
        for a in first {
            s.accept(t0, a, Direction::Outbound).unwrap();
        }
        if dialled_by_someone {
            s.accept(t0, addr(100, 5000), Direction::Inbound).unwrap();
        }
        // Step through the timers up to UNDIALABLE_AFTER.
        let mut later = 0;
        while let Some(at) = s.poll_timeout().filter(|&at| at <= t0 + UNDIALABLE_AFTER) {
            s.handle(at, Input::Timeout);
            later += dials(&mut s).len();
        }
        counts.push(later);
        counts
    };
    // Three quarters of the slots stay for peers that can only dial out; a node nobody
    // dials takes them.
    assert_eq!(run(false), [3, 7]);
    assert_eq!(run(true), [3, 0]);
}

#[test]
fn the_address_book_is_bounded() {
    let t0 = Instant::now();
    let mut c = config(Role::Receiver, 0);
    c.max_peers = 5000;
    let mut s = Swarm::new(c, t0);
    let many: Vec<SocketAddr> = (0..3000u32)
        .map(|i| SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 6881)))
        .collect();
    s.handle(t0, Input::PeerAddrs(many));
    let dials = drain(&mut s)
        .iter()
        .filter(|o| matches!(o, Output::Connect(_)))
        .count();
    assert_eq!(dials, MAX_ADDRS);
}
