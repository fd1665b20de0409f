use super::*;
use crate::swarm::fixtures::{
    PAYLOAD, active_peer, config, have, key, peer_claims, piece, sent_live,
};

/// A seed holding pieces `0..=40` of the test stream.
fn seed_with_pieces(mut c: Config, now: Instant) -> Swarm {
    c.role = Role::Seed;
    let mut s = Swarm::new(c, now);
    for seq in 0..=40 {
        s.store.insert(piece(seq, &key()));
    }
    s
}

fn pieces_sent(s: &mut Swarm, id: PeerId) -> Vec<u64> {
    pieces_sent_in(&sent_live(s, id))
}

fn queued(s: &Swarm, id: PeerId) -> Vec<u64> {
    s.peers
        .get(id)
        .unwrap()
        .queue
        .iter()
        .map(|(seq, _)| *seq)
        .collect()
}

#[test]
fn a_request_for_a_piece_already_given_on_the_connection_is_refused_and_counted() {
    let t0 = Instant::now();
    let mut s = seed_with_pieces(config(Role::Seed, 0), t0);
    let (a, b) = (active_peer(&mut s, 1), active_peer(&mut s, 2));
    s.on_request(a, 5);
    s.serve_requests();
    assert_eq!(pieces_sent(&mut s, a), vec![5]);
    s.on_request(a, 5);
    assert_eq!(sent_live(&mut s, a), vec![LiveMessage::Reject { seq: 5 }]);
    assert_eq!(queued(&s, a), Vec::<u64>::new());
    assert_eq!(s.peers.get(a).unwrap().repeated_requests, 1);
    // Given is per connection: another peer gets the piece.
    s.on_request(b, 5);
    s.serve_requests();
    assert_eq!(pieces_sent(&mut s, b), vec![5]);
    // Past the repeats forgiven, the asker is banned.
    for _ in 1..=peer::MAX_REPEATED_REQUESTS {
        s.on_request(a, 5);
    }
    assert!(!s.peers.contains(a));
    let banned = Output::Disconnect {
        peer: a,
        reason: DisconnectReason::RepeatedRequests {
            repeats: peer::MAX_REPEATED_REQUESTS + 1,
        },
    };
    assert!(s.outputs.contains(&banned));
}

#[test]
fn a_request_for_a_piece_the_peer_announced_is_refused_and_counted_and_queued_ones_dropped() {
    let t0 = Instant::now();
    let mut s = seed_with_pieces(config(Role::Seed, 0), t0);
    let id = active_peer(&mut s, 1);
    for seq in [3, 4] {
        s.on_request(id, seq);
    }
    // It got 3 from someone else and says so (as a HAVE does): 3 is not sent.
    peer_claims(&mut s, id, [3]);
    s.drop_announced_requests(id);
    assert_eq!(queued(&s, id), vec![4]);
    // Asking for what it announced is asking twice.
    s.on_request(id, 3);
    assert_eq!(sent_live(&mut s, id), vec![LiveMessage::Reject { seq: 3 }]);
    assert_eq!(s.peers.get(id).unwrap().repeated_requests, 1);
    s.serve_requests();
    assert_eq!(pieces_sent(&mut s, id), vec![4]);
}

#[test]
fn a_peer_has_at_most_max_queue_per_peer_requests_queued_and_each_piece_once() {
    let t0 = Instant::now();
    let mut s = seed_with_pieces(config(Role::Seed, 0), t0);
    let id = active_peer(&mut s, 1);
    s.on_request(id, 0);
    s.on_request(id, 0); // asked twice while queued: queued once
    let full = MAX_QUEUE_PER_PEER as u64;
    for seq in 1..full {
        s.on_request(id, seq);
    }
    s.on_request(id, full);
    assert_eq!(queued(&s, id), (0..full).collect::<Vec<_>>());
    assert_eq!(
        sent_live(&mut s, id),
        vec![LiveMessage::Reject { seq: full }]
    );
    assert_eq!(s.peers.get(id).unwrap().repeated_requests, 0);
}

#[test]
fn a_repeated_request_for_a_piece_queued_in_a_full_queue_is_ignored_like_any_repeat() {
    let t0 = Instant::now();
    let mut s = seed_with_pieces(config(Role::Seed, 0), t0);
    let id = active_peer(&mut s, 1);
    let full = MAX_QUEUE_PER_PEER as u64;
    for seq in 1..=full {
        s.on_request(id, seq);
    }
    s.on_request(id, full);
    assert_eq!(
        sent_live(&mut s, id),
        vec![],
        "no Reject for a piece about to be sent"
    );
    s.serve_requests();
    assert_eq!(pieces_sent(&mut s, id), (1..=full).collect::<Vec<_>>());
}

#[test]
fn requests_from_a_choked_peer_or_for_a_piece_not_held_are_refused() {
    let t0 = Instant::now();
    let mut s = seed_with_pieces(config(Role::Seed, 0), t0);
    let id = active_peer(&mut s, 1);
    s.on_request(id, 41);
    s.peers.get_mut(id).unwrap().am_choking = true;
    s.on_request(id, 3);
    let rejects = vec![
        LiveMessage::Reject { seq: 41 },
        LiveMessage::Reject { seq: 3 },
    ];
    assert_eq!(sent_live(&mut s, id), rejects);
    assert!(queued(&s, id).is_empty() && s.upload.queued.is_empty());
}

#[test]
fn a_request_queued_for_max_queue_wait_is_refused_and_a_cancelled_one_dropped() {
    let t0 = Instant::now();
    let mut c = config(Role::Seed, 0);
    // A piece a second, and the bucket drained: nothing goes within the wait.
    c.upload_limit = Some(PAYLOAD as u64);
    c.admit_wait = None;
    let mut s = seed_with_pieces(c, t0);
    s.upload
        .bucket
        .as_mut()
        .unwrap()
        .try_take(PAYLOAD as u64, t0);
    let id = active_peer(&mut s, 1);
    for seq in [1, 2, 3] {
        s.on_request(id, seq);
    }
    s.on_cancel(id, 2);
    assert_eq!(queued(&s, id), vec![1, 3]);
    s.now = t0 + peer::MAX_QUEUE_WAIT - Duration::from_millis(1);
    s.expire_queue(id);
    assert_eq!(queued(&s, id), vec![1, 3]);
    s.now = t0 + peer::MAX_QUEUE_WAIT;
    s.expire_queue(id);
    assert!(queued(&s, id).is_empty() && s.upload.queued.is_empty());
    let rejects = vec![
        LiveMessage::Reject { seq: 1 },
        LiveMessage::Reject { seq: 3 },
    ];
    assert_eq!(sent_live(&mut s, id), rejects);
}

#[test]
fn a_node_that_cannot_send_a_piece_a_second_announces_nothing_and_refuses_at_once() {
    let t0 = Instant::now();
    let mut c = config(Role::Seed, 0);
    c.upload_limit = Some(PAYLOAD as u64 - 1);
    let mut s = seed_with_pieces(c, t0);
    let id = active_peer(&mut s, 1);
    s.send_have(id, vec![have(5)]);
    s.on_request(id, 5);
    assert_eq!(sent_live(&mut s, id), vec![LiveMessage::Reject { seq: 5 }]);
    assert!(queued(&s, id).is_empty());
    // Nothing was offered, so an honest peer asks for nothing: a peer that keeps asking
    // is banned like one that asks again for what it has.
    for seq in 1..=peer::MAX_REPEATED_REQUESTS as u64 {
        s.on_request(id, seq);
    }
    assert!(!s.peers.contains(id));
    // At a piece a second it serves, and tells.
    let mut c = config(Role::Seed, 0);
    c.upload_limit = Some(PAYLOAD as u64);
    let mut s = seed_with_pieces(c, t0);
    let id = active_peer(&mut s, 1);
    s.send_have(id, vec![have(5)]);
    s.on_request(id, 5);
    assert!(matches!(
        sent_live(&mut s, id)[..],
        [LiveMessage::Have { .. }]
    ));
    assert_eq!(queued(&s, id), vec![5]);
}

#[test]
fn under_the_upload_limit_trusted_peers_are_served_first_then_the_others_in_turn() {
    let (a, b, trusted) = (0, 1, 2);
    let order = serve_one_a_second(&[&[1, 2], &[1, 2], &[5, 6]], |s, ids| {
        s.peers.get_mut(ids[trusted]).unwrap().trusted = true;
    });
    let expected = [(trusted, 5), (trusted, 6), (a, 1), (b, 1), (a, 2), (b, 2)];
    assert_eq!(order, expected);
}

#[test]
fn a_peers_request_for_its_oldest_piece_goes_first_and_the_peers_in_turn() {
    let (a, b) = (0, 1);
    // a asks for 7 before 2: its 2 goes first. Across peers the turn decides, not the
    // piece (a's 7 before b's 5).
    let order = serve_one_a_second(&[&[7, 2], &[5, 2]], |_, _| {});
    let expected = [(a, 2), (b, 2), (a, 7), (b, 5)];
    assert_eq!(order, expected);
}

#[test]
fn peers_that_delivered_to_us_are_served_before_those_that_never_did() {
    let (taker, giver, other_giver) = (0, 1, 2);
    let order = serve_one_a_second(&[&[1, 2], &[3, 4], &[3]], |s, ids| {
        for i in [giver, other_giver] {
            s.peers.get_mut(ids[i]).unwrap().standing.delivered();
        }
    });
    // The givers in turn, then what is left to the peer that only takes, though it
    // asked for older pieces.
    let expected = [
        (giver, 3),
        (other_giver, 3),
        (giver, 4),
        (taker, 1),
        (taker, 2),
    ];
    assert_eq!(order, expected);
}

#[test]
fn a_request_that_would_wait_past_admit_wait_is_refused_at_once_unless_trusted() {
    let t0 = Instant::now();
    let mut c = config(Role::Seed, 0);
    // Ten pieces a second, the bucket drained: each piece queued is 100 ms of waiting.
    c.upload_limit = Some(10 * PAYLOAD as u64);
    let mut s = seed_with_pieces(c, t0);
    s.upload.take(PAYLOAD as u64, t0).unwrap();
    let (a, b, giver, trusted) = (
        active_peer(&mut s, 1),
        active_peer(&mut s, 2),
        active_peer(&mut s, 3),
        active_peer(&mut s, 4),
    );
    s.peers.get_mut(giver).unwrap().standing.delivered();
    s.peers.get_mut(trusted).unwrap().trusted = true;
    s.on_request(a, 1);
    s.on_request(a, 2); // sent within 200 ms
    assert!(sent_live(&mut s, a).is_empty());
    s.on_request(a, 3);
    assert_eq!(sent_live(&mut s, a), vec![LiveMessage::Reject { seq: 3 }]);
    // In turn, b's first waits for one of a's only: queued.
    s.on_request(b, 4);
    assert!(sent_live(&mut s, b).is_empty());
    // Served before the others, but the uploader is busy all the same: ask elsewhere.
    s.on_request(giver, 5);
    assert_eq!(
        sent_live(&mut s, giver),
        vec![LiveMessage::Reject { seq: 5 }]
    );
    for seq in 6..=9 {
        s.on_request(trusted, seq);
    }
    assert!(sent_live(&mut s, trusted).is_empty());
    assert_eq!(queued(&s, a), vec![1, 2]);
    assert_eq!(queued(&s, b), vec![4]);
    assert_eq!(queued(&s, trusted), (6..=9).collect::<Vec<_>>());
    assert_eq!(s.peers.get(a).unwrap().repeated_requests, 0);
    // Without a limit, or without admission, everything is queued.
    let mut c = config(Role::Seed, 0);
    c.upload_limit = Some(PAYLOAD as u64);
    c.admit_wait = None;
    let mut s = seed_with_pieces(c, t0);
    let a = active_peer(&mut s, 1);
    for seq in 1..=5 {
        s.on_request(a, seq);
    }
    assert_eq!(queued(&s, a), (1..=5).collect::<Vec<_>>());
}

#[test]
fn a_peer_that_left_our_request_unanswered_and_never_delivered_is_served_last() {
    let (staller, taker) = (0, 1);
    let order = serve_one_a_second(&[&[1, 2], &[3, 4]], |s, ids| {
        let now = s.now;
        s.peers
            .get_mut(ids[staller])
            .unwrap()
            .standing
            .timed_out(now);
    });
    let expected = [(taker, 3), (taker, 4), (staller, 1), (staller, 2)];
    assert_eq!(order, expected);
}

#[test]
fn a_suspect_is_neither_unchoked_at_once_nor_chosen_as_the_optimistic_unchoke() {
    let t0 = Instant::now();
    let mut s = seed_with_pieces(config(Role::Seed, 0), t0);
    let (honest, staller) = (active_peer(&mut s, 1), active_peer(&mut s, 2));
    s.peers.get_mut(staller).unwrap().standing.timed_out(t0);
    for id in [honest, staller] {
        let p = s.peers.get_mut(id).unwrap();
        p.peer_interested = true;
        p.am_choking = true;
        s.rechoke_if_slot_free(id);
    }
    let choking = |s: &Swarm, id| s.peers.get(id).unwrap().am_choking;
    assert!(!choking(&s, honest) && choking(&s, staller));
    for _ in 0..OPTIMISTIC_EVERY * 3 {
        s.rechoke();
        assert_ne!(s.upload.optimistic, Some(staller));
        assert!(choking(&s, staller));
    }
    // Once it delivers it is a peer like any other.
    s.peers.get_mut(staller).unwrap().standing.delivered();
    s.rechoke();
    assert!(!choking(&s, staller));
}

#[test]
fn the_injector_refuses_untrusted_peers_a_piece_its_peers_announce_and_serves_the_rest() {
    let t0 = Instant::now();
    let mut s = Swarm::new(config(Role::Injector, 0), t0);
    for seq in 0..=2 {
        s.store.insert(piece(seq, &key()));
    }
    let asker = active_peer(&mut s, 1);
    let trusted = active_peer(&mut s, 2);
    s.peers.get_mut(trusted).unwrap().trusted = true;
    let holders: Vec<PeerId> = (3..3 + INJECTOR_REPAIRS_BELOW as u8)
        .map(|host| active_peer(&mut s, host))
        .collect();
    for id in [asker, trusted] {
        s.peers.get_mut(id).unwrap().am_choking = false;
    }
    // Piece 1 is announced by all the holders but one, piece 2 by all of them.
    for (i, &id) in holders.iter().enumerate() {
        let seqs: Vec<u64> = if i == 0 { vec![2] } else { vec![1, 2] };
        peer_claims(&mut s, id, seqs);
    }
    for seq in [1, 2] {
        s.on_request(asker, seq);
        s.on_request(trusted, seq);
    }
    s.serve_requests();
    assert_eq!(pieces_sent(&mut s, trusted), vec![1, 2]);
    let to_asker = sent_live(&mut s, asker);
    assert!(
        to_asker.contains(&LiveMessage::Reject { seq: 2 }),
        "{to_asker:?}"
    );
    assert_eq!(pieces_sent_in(&to_asker), vec![1]);
    // Refusing is not a penalty: an honest peer may ask the origin for what it lacks.
    assert_eq!(s.peers.get(asker).unwrap().repeated_requests, 0);
}

fn pieces_sent_in(msgs: &[LiveMessage]) -> Vec<u64> {
    (msgs.iter())
        .filter_map(|m| match m {
            LiveMessage::Piece(wire) => {
                Some(SignedPiece::check_structure(wire, 1 << 20).unwrap().seq)
            }
            _ => None,
        })
        .collect()
}

/// A seed with an upload limit of one piece a second, and one peer per entry of `asks`,
/// which asks for those pieces, all after `setup`: which peer (its index in `asks`) got
/// which piece, in order.
fn serve_one_a_second(
    asks: &[&[u64]],
    setup: impl FnOnce(&mut Swarm, &[PeerId]),
) -> Vec<(usize, u64)> {
    let t0 = Instant::now();
    let mut c = config(Role::Seed, 0);
    // A burst of one piece: each second lets exactly one more go.
    c.upload_limit = Some(PAYLOAD as u64);
    c.admit_wait = None; // the order, not the admission
    let mut s = seed_with_pieces(c, t0);
    let ids: Vec<PeerId> = (1..=asks.len() as u8)
        .map(|host| active_peer(&mut s, host))
        .collect();
    setup(&mut s, &ids);
    for (&id, seqs) in ids.iter().zip(asks) {
        for &seq in *seqs {
            s.on_request(id, seq);
        }
    }
    let mut order = Vec::new();
    let pieces: usize = asks.iter().map(|seqs| seqs.len()).sum();
    for second in 0..pieces as u64 {
        s.now = t0 + Duration::from_secs(second);
        s.serve_requests();
        // While requests wait, the limit says when the next may go.
        let next_turn = s.timers.0[Timer::Upload as usize];
        let waiting = !s.upload.queued.is_empty();
        assert_eq!(next_turn.is_some_and(|at| at > s.now), waiting, "{second}");
        for (i, &id) in ids.iter().enumerate() {
            order.extend(pieces_sent(&mut s, id).into_iter().map(|seq| (i, seq)));
        }
    }
    order
}

#[test]
fn a_piece_waits_until_the_connection_drained_the_one_before_it() {
    let t0 = Instant::now();
    let mut c = config(Role::Seed, 0);
    c.send_backlog = Some(0);
    let mut s = seed_with_pieces(c, t0);
    let (slow, other) = (active_peer(&mut s, 1), active_peer(&mut s, 2));
    for seq in [1, 2] {
        s.on_request(slow, seq);
    }
    s.on_request(other, 3);
    s.serve_requests();
    s.flush(); // handed to the driver, which reports the bytes as they leave
    // One piece each: the slow connection's second waits, the other peer is not held up.
    assert_eq!(queued(&s, slow), vec![2]);
    assert!(queued(&s, other).is_empty());
    let unsent = s.peers.get(slow).unwrap().unsent;
    assert!(unsent > PAYLOAD, "{unsent}");
    s.timers.set(Timer::Rechoke, None); // nobody choked meanwhile
    s.handle(t0, Input::Sent(slow, unsent - 1));
    assert_eq!(queued(&s, slow), vec![2], "one byte still to go");
    s.handle(t0, Input::Sent(slow, 1));
    assert!(queued(&s, slow).is_empty());
    assert_eq!(pieces_sent(&mut s, slow), Vec::<u64>::new(), "flushed");
    assert!(s.peers.get(slow).unwrap().unsent > PAYLOAD, "piece 2 went");
}
