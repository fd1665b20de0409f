//! What peers say of pieces: claims are hints, and a lie, once the bytes prove it, costs
//! the liar its connection.

use super::*;

/// A HAVE entry for a piece that does not exist (yet): its number, a timestamp, keyframe.
fn claim(seq: u64, timestamp_us: u64) -> HaveEntry {
    HaveEntry {
        seq,
        timestamp_us,
        flags: FLAG_RANDOM_ACCESS,
    }
}

/// `raw`, a seed, answers at once the requests it heard since the first `served`.
fn answer_requests(raw: &mut RawPeer, s: &mut Swarm, now: Instant, served: &mut usize) {
    let asked = raw.heard.requests();
    for &want in &asked[*served..] {
        let wire = piece(want, &key()).wire().clone();
        raw.send_quiet(s, now, Message::Live(LiveMessage::Piece(wire)));
    }
    *served = asked.len();
}

#[test]
fn claims_beyond_what_the_injector_can_have_made_are_refused_and_their_maker_banned() {
    let t0 = Instant::now();
    let mut s = Swarm::new(config(Role::Seed, 0), t0);
    // A liar speaks first: two maximum-size HAVEs of pieces a million numbers ahead. Nothing
    // is verified yet, so nothing tells them apart from the truth, but they must not crowd
    // out what honest peers say.
    let mut liar = RawPeer::connect(&mut s, t0, addr(2, 40000));
    liar.handshake(&mut s, t0, [b'l'; 20], Role::Seed);
    for part in 0..2u64 {
        let far = 1_000_000 + part * wire::MAX_HAVE_ENTRIES as u64;
        let entries = (far..far + wire::MAX_HAVE_ENTRIES as u64)
            .map(|seq| claim(seq, 1_400_000))
            .collect();
        send_have(&mut liar, &mut s, t0, entries);
    }
    let mut honest = RawPeer::connect(&mut s, t0, addr(1, 40000));
    honest.handshake(&mut s, t0, [b'h'; 20], Role::Seed);
    honest.send_msg(&mut s, t0, Message::Unchoke);
    honest.have(&mut s, t0, [10]);
    assert_eq!(
        honest.heard.requests(),
        vec![10],
        "the honest claim is heard"
    );
    send_piece(&mut honest, &mut s, t0, 10);
    assert_eq!(
        s.status(t0).newest_seq,
        Some(10),
        "the edge is what was verified"
    );

    // Now the edge is known: the next far-future claims are lies, and cost the liar.
    let t1 = t0 + Duration::from_millis(40);
    send_have(&mut liar, &mut s, t1, vec![claim(5_000_000, 1_440_000); 1]);
    assert_eq!(liar.heard.disconnected, None, "one claim is forgiven");
    let lies = (2_000_000..2_000_100)
        .map(|seq| claim(seq, 1_440_000))
        .collect();
    send_have(&mut liar, &mut s, t1, lies);
    assert_eq!(
        liar.heard.disconnected,
        Some(DisconnectReason::ImplausibleClaims { claims: 101 })
    );
    let st = s.status(t1);
    assert_eq!((st.claims_refused, st.peers_banned), (101, 1));
    assert_eq!(st.newest_seq, Some(10), "claims never move the edge");
    s.handle(t1, Input::Closed(liar.id));

    // The honest peer's next piece flows as before.
    honest.have(&mut s, t1, [11]);
    assert_eq!(honest.heard.requests(), vec![10, 11]);
    send_piece(&mut honest, &mut s, t1, 11);
    assert_eq!(s.status(t1).newest_seq, Some(11));
}

#[test]
fn a_claim_that_says_of_a_verified_piece_what_it_is_not_bans_its_maker() {
    let t0 = Instant::now();
    let mut s = Swarm::new(config(Role::Seed, 0), t0);
    let mut honest = RawPeer::connect(&mut s, t0, addr(1, 40000));
    honest.handshake(&mut s, t0, [b'h'; 20], Role::Seed);
    honest.send_msg(&mut s, t0, Message::Unchoke);
    honest.have(&mut s, t0, [10]);
    send_piece(&mut honest, &mut s, t0, 10);
    let truth = have(10);
    let lies = [
        HaveEntry {
            timestamp_us: truth.timestamp_us + 1,
            ..truth
        },
        HaveEntry {
            flags: truth.flags ^ FLAG_RANDOM_ACCESS,
            ..truth
        },
    ];
    for (host, lie) in (2..).zip(lies) {
        let mut liar = RawPeer::connect(&mut s, t0, addr(host, 40000));
        liar.handshake(&mut s, t0, [host; 20], Role::Seed);
        send_have(&mut liar, &mut s, t0, vec![truth]);
        assert_eq!(liar.heard.disconnected, None, "the truth is no lie");
        send_have(&mut liar, &mut s, t0, vec![lie]);
        assert_eq!(
            liar.heard.disconnected,
            Some(DisconnectReason::FalseClaim { seq: 10 }),
            "{lie:?}"
        );
    }
    assert_eq!(s.status(t0).peers_banned, 2);
}

#[test]
fn keyframes_a_peer_made_up_mislead_hook_in_once_and_then_stand_no_more() {
    // A receiver with 440 ms of latency (11 pieces). Pieces are made every 40 ms for 4 s.
    // A liar that chokes us (so it is never asked) tells of each first, as a keyframe; an
    // honest seed then tells the truth (a keyframe every 10th) and answers every request
    // at once.
    let t0 = Instant::now();
    let mut c = config(Role::Receiver, 0);
    c.latency = Duration::from_millis(440);
    let mut s = Swarm::new(c, t0);
    let mut liar = RawPeer::connect(&mut s, t0, addr(2, 40000));
    liar.handshake(&mut s, t0, [b'l'; 20], Role::Seed);
    let mut honest = RawPeer::connect(&mut s, t0, addr(1, 40000));
    honest.handshake(&mut s, t0, [b'h'; 20], Role::Seed);
    honest.send_msg(&mut s, t0, Message::Unchoke);

    let (mut served, mut first_out) = (0, None);
    for seq in 1..=100u64 {
        let made = t0 + Duration::from_millis(40 * seq);
        if liar.heard.disconnected.is_none() {
            liar.send_quiet(&mut s, made, have_msg(vec![claim(seq, timestamp(seq))]));
        }
        honest.send_quiet(&mut s, made, have_msg(vec![have(seq)]));
        for step in 0..8 {
            let now = made + Duration::from_millis(5 * step);
            s.handle(now, Input::Timeout);
            let outs = drain(&mut s);
            honest.heard.take(&outs, honest.id);
            liar.heard.take(&outs, liar.id);
            first_out = first_out.or(outs.iter().find_map(|o| match o {
                Output::Deliver(Delivery::Data { seq, .. }) => Some(*seq),
                _ => None,
            }));
            answer_requests(&mut honest, &mut s, now, &mut served);
        }
    }
    // Hook-in took the newest "keyframe" a latency behind the edge, piece 1: the liar's
    // word. Piece 1, verified, proved the liar wrong: banned, and its claims lost their
    // keyframe flags (the honest seed's stood in), so the second hook-in went to 10, a real
    // keyframe, instead of trying the liar's next "keyframe", and the next, in turn.
    assert_eq!(
        liar.heard.disconnected,
        Some(DisconnectReason::FalseClaim { seq: 1 })
    );
    let asked = honest.heard.requests();
    let expected: Vec<u64> = (1..=7).chain(10..=100).collect();
    assert_eq!(asked, expected);
    let st = s.status(t0 + Duration::from_secs(4));
    assert_eq!((st.hook_seq, first_out), (Some(10), Some(10)), "{st:?}");
    assert_eq!((st.peers_banned, st.pieces_missed), (1, 0), "{st:?}");
}

#[test]
fn a_peer_that_claims_pieces_and_never_delivers_is_routed_around_benched_and_banned_once_caught() {
    // A receiver, an honest seed that answers every request at once, and a staller that
    // claims everything the seed has plus 30 pieces not made yet, each a keyframe, and never
    // answers a request. Pieces are made every 40 ms for 6 s.
    let t0 = Instant::now();
    let mut c = config(Role::Receiver, 0);
    c.latency = Duration::from_millis(400);
    let mut s = Swarm::new(c, t0);
    let mut honest = RawPeer::connect(&mut s, t0, addr(1, 40000));
    honest.handshake(&mut s, t0, [b'h'; 20], Role::Seed);
    honest.send_msg(&mut s, t0, Message::Unchoke);
    let mut staller = RawPeer::connect(&mut s, t0, addr(2, 40000));
    staller.handshake(&mut s, t0, [b's'; 20], Role::Seed);
    staller.send_msg(&mut s, t0, Message::Unchoke);

    let mut outputs = Vec::new();
    let mut served = 0;
    let mut now = t0;
    let mut hear = |s: &mut Swarm, honest: &mut RawPeer, staller: &mut RawPeer| {
        let outs = drain(s);
        honest.heard.take(&outs, honest.id);
        staller.heard.take(&outs, staller.id);
        outputs.extend(outs.into_iter().filter_map(|o| match o {
            Output::Deliver(d) => Some(d),
            _ => None,
        }));
    };
    for seq in 0..150u64 {
        now = t0 + Duration::from_millis(40 * seq);
        honest.send_quiet(&mut s, now, have_msg(vec![have(seq)]));
        let mut lies: Vec<HaveEntry> = (seq.saturating_sub(5)..=seq)
            .map(|n| claim(n, timestamp(n)))
            .collect();
        lies.extend((seq + 1..=seq + 30).map(|n| claim(n, timestamp(seq))));
        staller.send_quiet(&mut s, now, have_msg(lies));
        hear(&mut s, &mut honest, &mut staller);
        // Time passes in 5 ms steps until the next piece is made; the seed answers at once.
        let next = now + Duration::from_millis(40);
        while now < next {
            answer_requests(&mut honest, &mut s, now, &mut served);
            hear(&mut s, &mut honest, &mut staller);
            now += Duration::from_millis(5);
            s.handle(now, Input::Timeout);
            hear(&mut s, &mut honest, &mut staller);
        }
    }
    // With one honest peer and one liar nothing tells them apart before a piece is
    // verified: the liar's newest claim is the told edge, its keyframe flags mislead hook-in
    // once (the hook piece is not a keyframe: hook-in starts over). It was asked 6 times,
    // each timed out after a quarter of the latency at most; having never delivered, it was
    // benched after 2 in a row, 3 times. Piece 30, the first verified here that it told of
    // first (before it was made, with the timestamp of the piece then newest), proved it a
    // liar: banned, and no further request went to it. Nothing was skipped or late.
    let st = s.status(now);
    assert_eq!(staller.heard.requests().len(), 6, "{st:?}");
    assert_eq!(
        (st.request_timeouts, st.peers_benched, st.peers_banned),
        (6, 3, 1)
    );
    assert_eq!(
        staller.heard.disconnected,
        Some(DisconnectReason::FalseClaim { seq: 30 })
    );
    assert!(
        !outputs.iter().any(|d| matches!(d, Delivery::Gap { .. })),
        "no hole in the output"
    );
    assert_eq!((st.hook_seq, st.pieces_received), (Some(30), 120), "{st:?}");
    assert_eq!((st.pieces_missed, st.pieces_late), (0, 0), "{st:?}");
    assert_eq!(st.newest_seq, Some(149), "claims never move the edge");
    assert_eq!(
        st.told_seq,
        Some(149),
        "the liar's word (seq 179) is gone with it"
    );
}
