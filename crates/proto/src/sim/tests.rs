use super::*;
use crate::inject::ts::{Packet, PacketKind, ProgramTracker, VideoCodec};

#[test]
fn synthetic_ts_is_valid_and_tags_keyframes_both_ways() {
    let mut ts = SyntheticTs::new(188 * 12 + 50, 3, Duration::from_millis(40));
    assert_eq!(ts.chunk_len(), 188 * 12);
    let mut tracker = ProgramTracker::new();
    let mut cc: HashMap<u16, u8> = HashMap::new();
    let mut last_pcr = None;
    for n in 0..10u64 {
        let chunk = ts.next_chunk();
        assert_eq!(chunk.len(), 188 * 12);
        let mut keyframes = 0;
        for (i, c) in chunk.chunks(188).enumerate() {
            let p = Packet::parse(c).unwrap();
            let h = p.header();
            if let Some(prev) = cc.insert(h.pid, h.continuity_counter) {
                assert_eq!(
                    h.continuity_counter,
                    (prev + 1) & 0x0f,
                    "CC of {:#x}",
                    h.pid
                );
            }
            if let Some(pcr) = p.adaptation().and_then(|a| a.pcr) {
                assert!(last_pcr.is_none_or(|l| pcr > l));
                assert_eq!(pcr, n * 40 * 27_000);
                last_pcr = Some(pcr);
            }
            let kind = tracker.observe(&p);
            if let PacketKind::Video {
                random_access: true,
            } = kind
            {
                keyframes += 1;
                // The NAL scan agrees with the random_access_indicator.
                let mut bare = c.to_vec();
                bare[5] &= !0x40;
                let bare = Packet::parse(&bare).unwrap();
                assert!(crate::inject::ts::is_random_access(&bare, VideoCodec::H264));
                assert_eq!(i, 2, "after PAT and PMT");
            }
            assert_eq!(h.pid == 0, n % 3 == 0 && i == 0);
        }
        assert_eq!(keyframes, usize::from(n % 3 == 0), "chunk {n}");
    }
    assert_eq!(
        tracker.video(),
        Some((SyntheticTs::VIDEO_PID, VideoCodec::H264))
    );
    assert_eq!(tracker.pcr_pid(), Some(SyntheticTs::VIDEO_PID));
}

fn one_receiver(stream: StreamSpec) -> Sim {
    let nodes = vec![
        NodeSpec::new(Role::Injector),
        NodeSpec {
            latency: Duration::from_millis(500),
            join_at: Duration::from_millis(300),
            ..NodeSpec::new(Role::Receiver)
        },
    ];
    let mut sim = Sim::new(4, Duration::from_millis(1), stream, nodes);
    sim.run_for(Duration::from_secs(10));
    sim
}

#[test]
fn the_injector_node_is_fed_through_the_injector() {
    let stream = StreamSpec {
        piece_payload: 188 * 10,
        piece_interval: Duration::from_millis(100),
        keyframe_every: 4,
        pieces: 30,
        drop_seqs: vec![FIRST_SEQ + 21],
    };
    let sim = one_receiver(stream);
    // One piece per interval, numbered from the epoch; the dropped one was made too.
    let seqs: Vec<u64> = sim.injected.iter().map(|(s, _)| *s).collect();
    let want: Vec<u64> = (FIRST_SEQ..FIRST_SEQ + 30)
        .filter(|&s| s != FIRST_SEQ + 21)
        .collect();
    assert_eq!(seqs, want);
    assert_eq!(sim.dropped.len(), 1);
    assert_eq!(sim.dropped[0].0, FIRST_SEQ + 21);
    assert_eq!(sim.injector().pieces_made(), 31);
    assert!(sim.injector().is_finished());
    assert_eq!(sim.injector().bytes_in(), 30 * 188 * 10);

    let st = sim.status(1).unwrap();
    assert_eq!(st.state, crate::swarm::State::Ended, "{st:?}");
    let hook = st.hook_seq.unwrap();
    assert_eq!((hook - FIRST_SEQ) % 4, 0, "hooked at a keyframe piece");
    let mut keyframes = 0;
    for d in sim.deliveries(1) {
        if let Delivery::Data {
            seq,
            payload,
            random_access,
            ..
        } = d
        {
            assert_eq!(Some(payload), sim.injected_payload(*seq));
            assert_eq!(
                *random_access,
                (seq - FIRST_SEQ).is_multiple_of(4),
                "piece {seq}"
            );
            keyframes += usize::from(*random_access);
        }
    }
    assert!(keyframes >= 5);
    assert_eq!(sim.output(1), &sim.expected_from(hook)[..]);
    assert!(matches!(sim.deliveries(1).last(), Some(Delivery::End)));
}

#[test]
fn a_lossy_connection_sends_a_window_at_once_and_keeps_the_mathis_rate() {
    let lossy = |role| NodeSpec {
        loss: 0.01,
        ..NodeSpec::new(role)
    };
    let stream = StreamSpec {
        piece_payload: 188 * 10,
        piece_interval: Duration::from_millis(100),
        keyframe_every: 4,
        pieces: 1,
        drop_seqs: vec![],
    };
    // 50 ms each way: a 200 ms round trip; 1.99 % loss on the path.
    let mut sim = Sim::new(
        1,
        Duration::from_millis(100),
        stream,
        vec![lossy(Role::Seed), lossy(Role::Receiver)],
    );
    let now = sim.now;
    let rtt = 0.2;
    let p = 1.0 - 0.99f64 * 0.99;
    let rate = MSS / rtt * 1.22 / p.sqrt();
    let window = (rate * rtt) as usize;
    // Idle: a piece that fits in the window leaves at once.
    let (left, arrives) = sim.arrival(0, 7, 1, window - 100);
    assert_eq!(left, now);
    let link = Duration::from_millis(100);
    assert!(
        arrives == now + link || arrives == now + link * 3,
        "{arrives:?}"
    );
    // Backlogged: the rate, one window ahead of it.
    let mut last = now;
    for _ in 0..20 {
        last = sim.arrival(0, 7, 1, window).0;
    }
    let paced = (21 * window - 100) as f64 / rate;
    let ahead = (last - now).as_secs_f64() - (paced - rtt);
    assert!(ahead.abs() < 1e-3, "{ahead}");
    // Another connection of the same node has its own window.
    assert_eq!(sim.arrival(0, 8, 1, 1000).0, now);
}

#[test]
fn a_bbr_sender_keeps_its_uplink_rate_under_loss_and_a_lost_segment_still_costs_a_round_trip() {
    let rate = 1_000_000.0; // bytes a second on the sender's uplink
    let lossy = |role| NodeSpec {
        loss: 0.01,
        congestion: Congestion::Bbr,
        link_rate: Some(rate as u64),
        ..NodeSpec::new(role)
    };
    let stream = StreamSpec {
        piece_payload: 188 * 10,
        piece_interval: Duration::from_millis(100),
        keyframe_every: 4,
        pieces: 1,
        drop_seqs: vec![],
    };
    let mut sim = Sim::new(
        1,
        Duration::from_millis(100),
        stream,
        vec![lossy(Role::Seed), lossy(Role::Receiver)],
    );
    let now = sim.now;
    let p = 1.0 - 0.99f64 * 0.99;
    let link = Duration::from_millis(100);
    // 20 pieces of 32 KiB, backlogged on one connection: the uplink's rate, less what is
    // sent again. CUBIC would carry them at about 0.12 MB/s here (see the test above).
    let len = 32 * 1024;
    let (mut late, mut last_arrival) = (0, now);
    for k in 1..=20 {
        let (left, arrives) = sim.arrival(0, 7, 1, len);
        let on_uplink = (k * len) as f64 / (rate * (1.0 - p));
        assert!(((left - now).as_secs_f64() - on_uplink).abs() < 1e-6, "{k}");
        // In order: a piece waits for a lost segment of the one before it.
        assert!(arrives >= last_arrival.max(left + link));
        late += usize::from(arrives >= left + link * 3);
        last_arrival = arrives;
    }
    // 23 segments a piece at 1.99 % loss: about 37 % of pieces lose one (seeded: 8 of 20).
    assert_eq!(late, 8);
}
