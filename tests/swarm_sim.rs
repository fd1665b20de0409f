//! The sans-IO swarm core driven in memory with virtual time: no sockets, seeded, repeatable.

use std::time::Duration;

use nordlys::sim::{Hostile, NodeSpec, Sim, StreamSpec};
use nordlys::swarm::{Delivery, Role, State};

const PAYLOAD: usize = 188 * 100; // 18.8 kB
const INTERVAL: Duration = Duration::from_millis(100); // so 188 kB/s, about 1.5 Mbit/s
const RATE: u64 = (PAYLOAD as u64) * 10;

fn stream(pieces: u64) -> StreamSpec {
    StreamSpec {
        piece_payload: PAYLOAD,
        piece_interval: INTERVAL,
        keyframe_every: 5,
        pieces,
        drop_seqs: vec![],
    }
}

/// 1 injector (3x bitrate), 2 seedboxes, `receivers` receivers (2x bitrate) joining at 3 s.
fn concert(receivers: usize, latency_ms: u64) -> Vec<NodeSpec> {
    let mut nodes = vec![NodeSpec {
        upload_limit: Some(RATE * 3),
        ..NodeSpec::new(Role::Injector)
    }];
    for _ in 0..2 {
        nodes.push(NodeSpec {
            join_at: Duration::from_millis(500),
            ..NodeSpec::new(Role::Seed)
        });
    }
    for i in 0..receivers {
        nodes.push(NodeSpec {
            upload_limit: Some(RATE * 2),
            latency: Duration::from_millis(latency_ms),
            join_at: Duration::from_millis(3000 + 37 * i as u64),
            ..NodeSpec::new(Role::Receiver)
        });
    }
    nodes
}

/// Compares outputs without printing megabytes when they differ.
fn assert_same(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let at = got
            .iter()
            .zip(want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        panic!(
            "{what}: {} bytes vs {} expected, first difference at byte {at}",
            got.len(),
            want.len()
        );
    }
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

struct Outcome {
    startup: Vec<u64>,
    lag: Vec<u64>,
    injector_copies: f64,
}

fn run_concert(seed: u64, receivers: usize, latency_ms: u64) -> (Sim, Outcome) {
    let pieces = 200; // 20 s
    let mut sim = Sim::new(
        seed,
        Duration::from_millis(1),
        stream(pieces),
        concert(receivers, latency_ms),
    );
    let mut lag = Vec::new();
    // Sample lag once a second while the stream runs, as the status endpoint would.
    for s in 5..20 {
        sim.run_for(Duration::from_secs(s));
        for i in 3..sim.node_count() {
            let st = sim.status(i).unwrap();
            if let Some(ts) = st.output_timestamp_us {
                lag.push((sim.wall_us() - ts) / 1000);
            }
        }
    }
    sim.run_for(Duration::from_secs(40));
    let mut startup = Vec::new();
    for i in 3..sim.node_count() {
        let st = sim.status(i).unwrap();
        assert_eq!(st.state, State::Ended, "receiver {i}: {st:?}");
        if st.pieces_missed > 0 {
            let gaps: Vec<_> = sim
                .deliveries(i)
                .iter()
                .filter(|d| matches!(d, Delivery::Gap { .. }))
                .collect();
            panic!(
                "receiver {i} missed pieces: {gaps:?} hook {:?} {st:?}",
                st.hook_seq
            );
        }
        assert!(st.continuity >= 0.999, "receiver {i}: {st:?}");
        let hook = st.hook_seq.unwrap();
        if std::env::var_os("SIMDEBUG").is_some() {
            let gaps: Vec<_> = sim
                .deliveries(i)
                .iter()
                .filter(|d| matches!(d, Delivery::Gap { .. }))
                .collect();
            eprintln!("receiver {i}: {gaps:?} {st:?}");
        }
        assert_same(
            sim.output(i),
            &sim.expected_from(hook),
            &format!("receiver {i}"),
        );
        assert!(matches!(sim.deliveries(i).last(), Some(Delivery::End)));
        // Join time is 3 s + 37 ms * n; startup counts from the node's own start.
        startup.push(st.startup_ms.unwrap());
        // The start's steps, in order: an announcement heard, the hook piece chosen at least
        // HOOK_GATHER (150 ms) later, the first byte out.
        let (told, hooked) = (st.first_told_ms.unwrap(), st.hooked_ms.unwrap());
        assert!(
            told + 150 <= hooked && hooked <= st.startup_ms.unwrap(),
            "receiver {i}: {st:?}"
        );
    }
    let inj = sim.status(0).unwrap();
    let stream_bytes = (PAYLOAD as u64) * pieces;
    let injector_copies = inj.bytes_up as f64 / stream_bytes as f64;
    (
        sim,
        Outcome {
            startup,
            lag,
            injector_copies,
        },
    )
}

#[test]
fn concert_swarm_delivers_every_byte_and_the_swarm_carries_the_load() {
    let (_sim, out) = run_concert(7, 20, 2000);
    let (startup, lag) = (median(out.startup.clone()), median(out.lag.clone()));
    eprintln!(
        "startup median {startup} ms, lag median {lag} ms, injector copies {:.2}",
        out.injector_copies
    );
    // Seeded: the exact figures (2026-12-07); a change shows here and its commit explains it.
    // The goals: startup <= 1.5 s, lag <= 2.5 s, the injector at most 1.5 copies. Startup
    // was 556 ms before uploaders refused at once what would wait over 250 ms, 495 ms before
    // dialable nodes opened a quarter of their connections themselves instead of half.
    let copies = (out.injector_copies * 100.0).round() / 100.0;
    assert_eq!((startup, lag, copies), (449, 100, 1.03));
}

#[test]
fn low_latency_target_holds_continuity() {
    let (_sim, out) = run_concert(11, 20, 500);
    let (startup, lag) = (median(out.startup), median(out.lag));
    eprintln!(
        "startup median {startup} ms, lag median {lag} ms, injector copies {:.2}",
        out.injector_copies
    );
    // Seeded, exact (2026-12-07); the goals: startup <= 1 s, lag <= 0.8 s (1.02 copies
    // before a piece waited for the connection to drain the one before it; startup 199 ms
    // before addresses were dialled at random).
    let copies = (out.injector_copies * 100.0).round() / 100.0;
    assert_eq!((startup, lag, copies), (195, 100, 1.03));
}

#[test]
fn same_seed_same_run() {
    let run = |seed| {
        let mut sim = Sim::new(seed, Duration::from_millis(3), stream(60), concert(6, 1000));
        sim.run_for(Duration::from_secs(15));
        let statuses: Vec<String> = (0..sim.node_count())
            .map(|i| format!("{:?}", sim.status(i).unwrap()))
            .collect();
        (statuses, sim.events_run)
    };
    assert_eq!(run(3), run(3));
}

#[test]
fn bad_signature_is_never_output_and_the_sender_is_banned() {
    let mut nodes = vec![
        NodeSpec {
            upload_limit: Some(RATE * 3),
            ..NodeSpec::new(Role::Injector)
        },
        NodeSpec {
            hostile: Some(Hostile::Forger),
            join_at: Duration::from_millis(200),
            ..NodeSpec::new(Role::Seed)
        },
    ];
    for i in 0..4 {
        nodes.push(NodeSpec {
            latency: Duration::from_millis(1000),
            join_at: Duration::from_millis(2000 + 10 * i),
            ..NodeSpec::new(Role::Receiver)
        });
    }
    let mut sim = Sim::new(5, Duration::from_millis(2), stream(80), nodes);
    sim.run_for(Duration::from_secs(30));
    let mut rejected = 0;
    for i in 2..6 {
        let st = sim.status(i).unwrap();
        assert_eq!(st.state, State::Ended);
        rejected += st.pieces_rejected;
        // Every byte output is the injector's own: each piece's payload is exactly what the
        // injector made for its sequence number. (With its only seedbox hostile, a receiver may miss
        // pieces; this test is about what reaches the output, not continuity.)
        let mut data = 0;
        for d in sim.deliveries(i) {
            if let Delivery::Data { seq, payload, .. } = d {
                assert_eq!(
                    Some(payload),
                    sim.injected_payload(*seq),
                    "receiver {i}, piece {seq}"
                );
                data += 1;
            }
        }
        assert!(data > 40, "receiver {i} output only {data} pieces");
        assert!(st.peers_banned <= 1);
    }
    assert!(rejected >= 1, "the hostile seed never got to send a piece");
    // Everyone who got a bad piece banned its sender.
    let banned: u64 = (2..6).map(|i| sim.status(i).unwrap().peers_banned).sum();
    assert_eq!(banned, rejected);
}

#[test]
fn a_lost_piece_is_skipped_counted_and_output_goes_on() {
    let mut s = stream(80);
    s.drop_seqs = vec![nordlys::sim::FIRST_SEQ + 50];
    let nodes = concert(5, 1000);
    let mut sim = Sim::new(9, Duration::from_millis(2), s, nodes);
    sim.run_for(Duration::from_secs(30));
    for i in 3..8 {
        let st = sim.status(i).unwrap();
        assert_eq!(st.state, State::Ended, "{st:?}");
        assert_eq!(st.pieces_missed, 1, "receiver {i}");
        let gaps: Vec<_> = sim
            .deliveries(i)
            .iter()
            .filter(|d| matches!(d, Delivery::Gap { .. }))
            .collect();
        assert_eq!(
            gaps,
            vec![&Delivery::Gap {
                next_seq: nordlys::sim::FIRST_SEQ + 51,
                count: 1
            }]
        );
        let hook = st.hook_seq.unwrap();
        let want = sim.expected_from(hook);
        // The injector made and signed piece 50, but its swarm never saw it: no receiver
        // outputs it, and what they output is everything else.
        let (seq, lost) = &sim.dropped[0];
        assert_eq!(*seq, nordlys::sim::FIRST_SEQ + 50);
        assert_eq!(lost.len(), PAYLOAD);
        let pos = sim.output(i).windows(PAYLOAD).position(|w| w == &lost[..]);
        assert!(pos.is_none(), "the dropped piece was output");
        assert!(sim.injected_payload(*seq).is_none());
        assert_same(sim.output(i), &want, &format!("receiver {i}"));
    }
}

#[test]
fn joiner_hooks_in_at_a_keyframe_its_latency_behind() {
    let nodes = vec![
        NodeSpec::new(Role::Injector),
        NodeSpec {
            join_at: Duration::from_millis(100),
            ..NodeSpec::new(Role::Seed)
        },
        NodeSpec {
            latency: Duration::from_millis(1500),
            join_at: Duration::from_millis(6050),
            ..NodeSpec::new(Role::Receiver)
        },
    ];
    let mut sim = Sim::new(1, Duration::from_millis(1), stream(100), nodes);
    sim.run_for(Duration::from_millis(6500));
    let st = sim.status(2).unwrap();
    let hook = st.hook_seq.expect("hooked");
    let first = nordlys::sim::FIRST_SEQ;
    assert_eq!((hook - first) % 5, 0, "hook {hook} is not a keyframe piece");
    // At 6.05 s the newest piece is 60; the newest keyframe at least 1.5 s older is 45.
    assert_eq!(hook - first, 45);
    assert_eq!(st.state, State::Playing);
}

#[test]
fn a_peer_that_asks_for_everything_again_and_again_gets_each_piece_once_and_stalls_no_one() {
    // The case from the hardening issue: 1 injector, 2 seedboxes, 8 receivers, and one extra
    // peer that asks every peer for every recent piece whenever it sends anything.
    let pieces = 200;
    let run = |with_greedy: bool| {
        let mut nodes = concert(8, 2000);
        if with_greedy {
            nodes.push(NodeSpec {
                hostile: Some(Hostile::Greedy),
                upload_limit: Some(0),
                join_at: Duration::from_millis(3100),
                ..NodeSpec::new(Role::Receiver)
            });
        }
        let mut sim = Sim::new(11, Duration::from_millis(1), stream(pieces), nodes);
        sim.run_for(Duration::from_secs(30));
        sim
    };
    let (honest, attacked) = (run(false), run(true));
    let greedy = attacked.node_count() - 1;
    let uploaded = |sim: &Sim| -> u64 { (0..11).map(|i| sim.status(i).unwrap().bytes_up).sum() };
    let mut banned = 0;
    for i in 0..greedy {
        let st = attacked.status(i).unwrap();
        banned += st.peers_banned;
        if i >= 3 {
            assert_eq!(st.state, State::Ended, "receiver {i}: {st:?}");
            assert!(st.continuity >= 0.999, "receiver {i}: {st:?}");
            let hook = st.hook_seq.unwrap();
            let output = attacked.output(i);
            assert_same(
                output,
                &attacked.expected_from(hook),
                &format!("receiver {i}"),
            );
        }
    }
    // What it drew beyond an honest swarm's upload: at most one copy of the stream from each
    // of the 11 nodes (it was 39 copies before requests for pieces given were refused).
    let stream_bytes = PAYLOAD as u64 * pieces;
    let extra = uploaded(&attacked).saturating_sub(uploaded(&honest));
    let copies = extra as f64 / stream_bytes as f64;
    eprintln!("the greedy peer drew {copies:.2} copies of the stream");
    assert!(
        copies <= 11.0,
        "the greedy peer drew {copies:.2} copies of the stream"
    );
    assert!(
        banned >= 1,
        "nobody banned the peer that asks again and again"
    );
}

/// The concert of [`run_concert`] (8 honest receivers at 1 s latency) with `kinds` of hostile
/// peers joining among them as receivers. Every honest receiver ends with a byte-exact copy of
/// the stream from its hook-in on, on time; what the run did is returned for more checks.
fn concert_with_hostile(seed: u64, kinds: &[Hostile]) -> Sim {
    let mut nodes = concert(8, 1000);
    for (k, &kind) in kinds.iter().enumerate() {
        nodes.push(NodeSpec {
            hostile: Some(kind),
            upload_limit: Some(RATE * 2),
            join_at: Duration::from_millis(2900 + 70 * k as u64),
            ..NodeSpec::new(Role::Receiver)
        });
    }
    let mut sim = Sim::new(seed, Duration::from_millis(1), stream(200), nodes);
    sim.run_for(Duration::from_secs(40));
    assert_honest_receivers_whole(&sim, &format!("with {kinds:?}"));
    sim
}

/// The 8 honest receivers of a concert (nodes 3 to 10) ended with a byte-exact copy of the
/// stream from their hook-in on, no piece missed or late.
fn assert_honest_receivers_whole(sim: &Sim, what: &str) {
    for i in 3..11 {
        let st = sim.status(i).unwrap();
        assert_eq!(st.state, State::Ended, "receiver {i} {what}: {st:?}");
        assert_eq!(
            (st.pieces_missed, st.pieces_late),
            (0, 0),
            "receiver {i} {what}: {st:?}"
        );
        let hook = st.hook_seq.unwrap();
        assert_same(
            sim.output(i),
            &sim.expected_from(hook),
            &format!("receiver {i} {what}"),
        );
    }
}

#[test]
fn each_kind_of_hostile_peer_alone_leaves_every_honest_output_whole() {
    for kind in Hostile::ALL {
        let sim = concert_with_hostile(11, &[kind; 3]);
        let honest = (1..11).map(|i| sim.status(i).unwrap());
        let (banned, rejected, refused, timeouts) = honest.fold((0, 0, 0, 0), |t, st| {
            (
                t.0 + st.peers_banned,
                t.1 + st.pieces_rejected,
                t.2 + st.claims_refused,
                t.3 + st.request_timeouts,
            )
        });
        eprintln!(
            "{kind:?}: banned {banned}, rejected {rejected}, claims refused {refused}, \
             request timeouts {timeouts}"
        );
        match kind {
            // Each bad piece cost its sender the connection and its address.
            Hostile::Forger => assert!(rejected > 0 && banned == rejected),
            Hostile::Liar => assert!(refused > 0 && banned > 0),
            // Routed around (each of its timeouts makes it look twice as slow), not banned:
            // a peer without upload is honest too.
            Hostile::Staller => assert!(timeouts > 0 && banned == 0),
            Hostile::Greedy => assert!(banned > 0),
            Hostile::Leech => unreachable!("a control, not an adversary: not in ALL"),
        }
    }
}

#[test]
fn hostile_peers_of_every_kind_at_30_percent_leave_every_honest_output_whole() {
    // 11 honest nodes (injector, 2 seedboxes, 8 receivers) and 5 hostile: 31 %.
    use Hostile::*;
    concert_with_hostile(12, &[Forger, Greedy, Staller, Liar, Forger]);
}

#[test]
fn a_seedbox_that_forges_what_the_injector_feeds_it_first_is_fed_first_no_more() {
    // The concert's first seedbox (untrusted: the injector has no --trusted) flips a byte of
    // every piece it sends. Receivers ban it at its first piece, but the injector feeds it
    // every other new piece first and tells the others of that piece only a second later.
    let mut nodes = concert(8, 1000);
    nodes[1].hostile = Some(Hostile::Forger);
    let mut sim = Sim::new(5, Duration::from_millis(1), stream(200), nodes);
    sim.run_for(Duration::from_secs(40));
    assert_honest_receivers_whole(&sim, "beside a forging seedbox");
}

/// `scenarios/concert-200.toml` as `nordlys simulate` runs it: 200 receivers joining a running
/// stream within 20 s, NATs, receivers without upload, churn, round trips of 20-250 ms. Seeded,
/// so its figures are exact; they move when the core's behaviour does (say why in the commit).
#[test]
fn the_200_receiver_concert_scenario_gives_its_seeded_figures() {
    use nordlys::sim::scenario::Scenario;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/concert-200.toml");
    let sc: Scenario = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut sim = sc.build().unwrap();
    sim.run_for(sc.run_time());
    let s = sc.report(&sim).summary;
    assert_eq!((s.receivers, s.never_started, s.hostile), (200, 0, 0));
    let figures = format!(
        "at 0.995 {:.3}, mean {:.3}, worst {:.3}, origin {:.2}, delay {:?} ms, events {}",
        s.continuity_995,
        s.continuity_mean,
        s.continuity_min,
        s.origin_copies,
        s.delay_median_ms,
        s.events
    );
    // Before dialable nodes opened a quarter of their connections themselves instead of
    // half (2026-12-07): at 0.995 0.745, mean 0.986, worst 0.364, origin 1.05, delay 1370 ms,
    // events 7140082; before uploaders refused at once what would wait over 250 ms: 0.600,
    // 0.987, 0.749, 1.05, 1510 ms, 6320164. Seeds 2 and 3 in README, "Figures".
    assert_eq!(
        figures,
        "at 0.995 0.890, mean 0.996, worst 0.880, origin 1.10, delay Some(1210) ms, events 7247818"
    );
}
