use super::*;
use crate::swarm::fixtures::{PAYLOAD, active_peer, config, key, piece, sent_live};

const MS: Duration = Duration::from_millis(1);

#[test]
fn off_means_no_parents_no_children_and_nothing_awaited() {
    let p = Push::new(0);
    assert!(!p.is_on());
    assert_eq!(p.orphans().count(), 0);
    assert!(!p.is_parent_of(1, 5));
    assert_eq!(p.index(5), None);
}

#[test]
fn a_piece_of_a_subscribed_substream_is_left_to_the_push_for_its_grace_then_repaired() {
    let t0 = Instant::now();
    let mut p = Push::new(4);
    assert_eq!(p.orphans().collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    p.subscribed(1, 7, 5);
    assert!(p.is_parent_of(7, 5) && !p.is_parent_of(7, 6) && !p.is_parent_of(8, 5));
    // Known of when we subscribed: fetched by pull.
    assert_eq!(p.awaits(5, t0, None, t0), None);
    // Newer: left to the push for the least grace while its lag is unknown.
    assert_eq!(p.awaits(9, t0, None, t0), Some(t0 + GRACE_MIN));
    assert_eq!(p.awaits(9, t0, None, t0 + GRACE_MIN), None);
    assert_eq!(p.awaits(10, t0, None, t0), None, "another substream");
    // Due: left to the push until it becomes urgent, however long the grace.
    let urgent = t0 + Duration::from_secs(3);
    assert_eq!(p.awaits(9, t0, Some(urgent), t0), Some(urgent));
    // Once a later piece of the substream is pushed, this one was skipped: pull it.
    p.pushed(13, MS);
    assert_eq!(p.awaits(9, t0, Some(urgent), t0), None);
    assert_eq!(p.awaits(17, t0, Some(urgent), t0), Some(urgent));
    // A slow parent gets a longer grace, never beyond GRACE_MAX.
    for _ in 0..40 {
        p.pushed(9, 600 * MS);
    }
    assert_eq!(p.grace(9), Some(GRACE_MAX));
    assert_eq!(p.counters.pushes_received, 41);
}

#[test]
fn a_parent_that_leaves_max_misses_in_a_row_to_pull_is_replaced_and_shunned() {
    let t0 = Instant::now();
    let mut p = Push::new(4);
    p.subscribed(1, 7, 5);
    assert_eq!(p.repairing(1), None, "not its to push: no miss");
    assert_eq!(p.counters.repairs, 0);
    for _ in 1..MAX_MISSES {
        assert_eq!(p.repairing(9), None);
    }
    p.pushed(13, MS);
    assert_eq!(
        p.parent(1).unwrap().misses,
        0,
        "a push starts the count over"
    );
    for _ in 1..MAX_MISSES {
        assert_eq!(p.repairing(9), None);
    }
    assert_eq!(p.repairing(9), Some(1));
    assert_eq!(p.lose_parent(1, t0), Some(7));
    assert!(p.is_shunned(7, 1, t0 + SHUN_FOR - MS));
    assert!(!p.is_shunned(7, 1, t0 + SHUN_FOR));
    assert!(!p.is_shunned(7, 2, t0));
    assert_eq!(p.orphans().collect::<Vec<_>>(), vec![0, 1, 2, 3]);
}

#[test]
fn pushes_go_to_children_in_turn_and_a_child_that_cannot_keep_up_is_given_up() {
    let t0 = Instant::now();
    let mut p = Push::new(2);
    p.add_child(1, 0);
    p.add_child(1, 0); // twice: once
    p.add_child(2, 0);
    p.add_child(2, 1);
    assert_eq!(p.child_slots(), 3);
    assert_eq!(p.children(0).collect::<Vec<_>>(), vec![1, 2]);
    p.queue(1, 10, t0);
    p.queue(2, 10, t0);
    p.queue(2, 11, t0);
    let mut overloaded = Vec::new();
    let mut order = Vec::new();
    while let Some((child, seq)) = p.next(t0, |_| true, &mut overloaded) {
        p.sent(child, seq, t0);
        order.push((child, seq));
    }
    assert_eq!(order, vec![(1, 10), (2, 10), (2, 11)]);
    assert!(p.was_pushed(2, 11) && !p.was_pushed(1, 11));
    // Pushes that wait too long are dropped; MAX_DROPS in a row give the child up.
    for seq in 20..20 + MAX_DROPS as u64 {
        p.queue(1, seq * 2, t0);
    }
    assert_eq!(p.next(t0 + PUSH_WAIT, |_| true, &mut overloaded), None);
    assert_eq!(overloaded, vec![(1, 0)]);
    assert_eq!(p.counters.pushes_dropped, MAX_DROPS as u64);
    // Unsubscribed: its queue for that substream goes; the last one removes it.
    p.queue(2, 30, t0);
    p.queue(2, 31, t0);
    p.remove_child(2, 0);
    assert!(!p.is_queued(2, 30) && p.is_queued(2, 31));
    assert_eq!(p.forget_peer(2), Vec::<usize>::new());
    assert_eq!((p.child_slots(), p.children_of(0)), (1, 1));
}

#[test]
fn a_lost_connection_frees_the_substreams_it_was_parent_of() {
    let t0 = Instant::now();
    let mut p = Push::new(3);
    p.subscribed(0, 5, 0);
    p.subscribed(2, 5, 0);
    p.subscribed(1, 6, 0);
    assert_eq!(p.parent_load(5), 2);
    assert_eq!(p.forget_peer(5), vec![0, 2]);
    assert_eq!(p.orphans().collect::<Vec<_>>(), vec![0, 2]);
    assert!(!p.is_shunned(5, 0, t0), "gone, not shunned");
    assert_eq!(p.counters.parent_changes, 3);
}

fn sub(index: u8) -> Substream {
    Substream { index, of: 4 }
}

fn pushing(role: Role, upload_limit: Option<u64>) -> Swarm {
    let mut c = config(role, 1);
    c.substreams = 4;
    c.upload_limit = upload_limit;
    let mut s = Swarm::new(c, Instant::now());
    for seq in 0..10 {
        s.store.insert(piece(seq, &key()));
    }
    s
}

#[test]
fn a_node_takes_children_while_its_upload_has_room_and_pushes_them_what_it_verifies() {
    // 40 ms pieces of about 850 bytes: a substream of 4 is about 5.3 kB/s; PUSH_SHARE of
    // 17 kB/s, 15.3 kB/s, pushes two of them (not quite three).
    let mut s = pushing(Role::Seed, Some(17_000));
    assert_eq!(s.push_capacity(), 2, "{}", PAYLOAD);
    let (a, b) = (active_peer(&mut s, 2), active_peer(&mut s, 3));
    s.on_subscribe(a, sub(1));
    s.on_subscribe(a, sub(1)); // again: nothing changes
    s.on_subscribe(b, sub(2));
    s.on_subscribe(b, sub(3)); // no room
    s.on_subscribe(a, Substream { index: 0, of: 8 }); // another split
    assert_eq!(
        sent_live(&mut s, a),
        vec![LiveMessage::Unsubscribe(Substream { index: 0, of: 8 })]
    );
    assert_eq!(sent_live(&mut s, b), vec![LiveMessage::Unsubscribe(sub(3))]);
    assert!(s.push.is_child(a, 1) && s.push.is_child(b, 2) && !s.push.is_child(b, 3));
    // Piece 13 is substream 1: pushed to a, told to nobody by HAVE.
    s.accept_piece(piece(13, &key()));
    s.serve_requests();
    let sent = sent_live(&mut s, a);
    assert!(matches!(sent[..], [LiveMessage::Piece(_)]), "{sent:?}");
    assert!(matches!(
        sent_live(&mut s, b)[..],
        [LiveMessage::Have { .. }]
    ));
    assert!(s.push.was_pushed(a, 13));
    // A repair that crossed the push is refused, and not held against the child.
    s.on_request(a, 13);
    assert_eq!(sent_live(&mut s, a), vec![LiveMessage::Reject { seq: 13 }]);
    assert_eq!(s.peers.get(a).unwrap().repeated_requests, 0);
    // The child leaves the substream: room for another.
    s.on_unsubscribe(a, sub(1));
    s.on_subscribe(b, sub(3));
    assert!(s.push.is_child(b, 3) && !s.push.is_child(a, 1));
}

#[test]
fn the_injector_pushes_each_substream_to_one_child_and_a_seedbox_displaces_a_receiver() {
    let mut s = pushing(Role::Injector, None);
    let (receiver, other, seedbox) = (
        active_peer(&mut s, 2),
        active_peer(&mut s, 3),
        active_peer(&mut s, 4),
    );
    s.peers.get_mut(seedbox).unwrap().is_seed = true;
    s.on_subscribe(receiver, sub(0));
    s.on_subscribe(other, sub(0));
    assert_eq!(
        sent_live(&mut s, other),
        vec![LiveMessage::Unsubscribe(sub(0))]
    );
    s.on_subscribe(seedbox, sub(0));
    assert_eq!(
        sent_live(&mut s, receiver),
        vec![LiveMessage::Unsubscribe(sub(0))]
    );
    assert_eq!(s.push.children(0).collect::<Vec<_>>(), vec![seedbox]);
    // A second seedbox does not displace the first.
    let second = active_peer(&mut s, 5);
    s.peers.get_mut(second).unwrap().is_seed = true;
    s.on_subscribe(second, sub(0));
    assert_eq!(
        sent_live(&mut s, second),
        vec![LiveMessage::Unsubscribe(sub(0))]
    );
}

#[test]
fn a_child_chooses_the_peer_that_tells_soonest_spreads_substreams_and_never_its_own_child() {
    let mut s = pushing(Role::Receiver, None);
    let t0 = s.now;
    let (near, far, source, child) = (
        active_peer(&mut s, 2),
        active_peer(&mut s, 3),
        active_peer(&mut s, 4),
        active_peer(&mut s, 5),
    );
    s.peers.get_mut(source).unwrap().is_source = true;
    s.push.told(near, Duration::from_millis(10));
    s.push.told(far, Duration::from_millis(300));
    s.push.told(source, Duration::ZERO);
    s.push.told(child, Duration::from_millis(30));
    s.on_subscribe(child, sub(0));
    s.on_subscribe(child, sub(1));
    s.choose_parents();
    let parents: Vec<PeerId> = (0..4).map(|i| s.push.parent(i).unwrap().peer).collect();
    // Not the injector (it feeds the first tier), not a child of that substream; the
    // soonest teller first, then the others so that no parent carries two substreams
    // while another carries none.
    assert_eq!(parents, vec![near, far, child, near]);
    assert_eq!(s.push.counters.parent_changes, 4);
    let subscribes = |s: &mut Swarm, id| sent_live(s, id);
    assert_eq!(
        subscribes(&mut s, far),
        vec![LiveMessage::Subscribe(sub(1))]
    );
    // Refused: that parent is not asked again for any substream for a while.
    s.on_unsubscribe(near, sub(0));
    assert!(s.push.is_shunned(near, 3, t0) && s.push.parent(3).is_some());
    s.choose_parents();
    assert_eq!(s.push.parent(0).map(|p| p.peer), Some(far));
}
