//! The source layer end to end through its public API: input -> packetizer -> raw pieces.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nordlys::source::input::{Pace, open};
use nordlys::source::packetizer::{DEFAULT_FLUSH_AFTER, Packetizer, RawPiece};
use nordlys::source::ts::{PAT_PID, Packet, PacketKind, ProgramTracker, is_random_access};
use nordlys::test_media::{Spec, ts_file};

fn media(_name: &str) -> PathBuf {
    ts_file(Spec {
        gop: 15,
        ..Spec::new("h264", 640, 360, 3)
    })
}

/// The first packet of a piece that belongs to the video PID starts a keyframe.
fn starts_keyframe(pz: &Packetizer, piece: &RawPiece) -> bool {
    let (vpid, codec) = pz.video().expect("video PID known");
    piece
        .payload
        .chunks(188)
        .filter_map(Packet::parse)
        .find(|p| p.pid() == vpid)
        .is_some_and(|p| is_random_access(&p, codec))
}

#[tokio::test]
async fn file_to_pieces_is_exact_and_keyframe_aligned() {
    let path = media("it-h264-3s.ts");
    let want = std::fs::read(&path).unwrap();
    let mut input = open(path.to_str().unwrap(), Pace::None).await.unwrap();
    let mut pz = Packetizer::new(188 * 64, DEFAULT_FLUSH_AFTER);
    let now = Instant::now();
    let mut pieces = Vec::new();
    while let Some(chunk) = input.recv().await {
        pieces.extend(pz.push(now, 1, &chunk));
    }
    assert_eq!(input.error(), None);
    pieces.extend(pz.finish());
    let got: Vec<u8> = pieces.iter().flat_map(|p| p.payload.clone()).collect();
    assert_eq!(got, want);
    let ra: Vec<&RawPiece> = pieces.iter().filter(|p| p.random_access).collect();
    // 3 s, GOP 15 at 30 fps.
    assert!(
        (5..=7).contains(&ra.len()),
        "{} random-access pieces",
        ra.len()
    );
    for p in ra {
        assert_eq!(Packet::parse(&p.payload).unwrap().pid(), PAT_PID);
        assert!(starts_keyframe(&pz, p));
    }
}

/// Packets of a random-access piece up to (not including) its first video packet, and
/// whether that video packet starts a keyframe. `tracker` follows the whole stream.
fn psi_before_keyframe(tracker: &mut ProgramTracker, piece: &RawPiece) -> (Vec<PacketKind>, bool) {
    let mut before = Vec::new();
    for p in piece.payload.chunks(188).filter_map(Packet::parse) {
        match tracker.observe(&p) {
            PacketKind::Video { random_access } => return (before, random_access),
            kind => before.push(kind),
        }
    }
    (before, false)
}

#[tokio::test]
async fn test_pattern_to_pieces() {
    let mut input = open("test-pattern", Pace::Pcr).await.unwrap();
    let mut pz = Packetizer::new(188 * 64, DEFAULT_FLUSH_AFTER);
    let mut tracker = ProgramTracker::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut random_access = 0;
    let mut pieces = 0;
    // Live input: run until four keyframe pieces went out (the GOP is 30 frames at 30 fps).
    while random_access < 4 {
        let chunk = tokio::time::timeout_at(deadline, input.recv())
            .await
            .expect("four keyframes within 60 s")
            .unwrap_or_else(|| panic!("input ended: {:?}", input.error()));
        let now = Instant::now();
        let mut out = pz.push(now, 0, &chunk);
        out.extend(pz.handle_timeout(now));
        for p in out {
            assert!(p.payload.len() <= 188 * 64 && p.payload.len() % 188 == 0);
            pieces += 1;
            let (before, keyframe) = psi_before_keyframe(&mut tracker, &p);
            if p.random_access {
                random_access += 1;
                assert!(starts_keyframe(&pz, &p));
                assert!(keyframe);
                if random_access > 1 {
                    // The muxer repeats PAT and PMT right before every keyframe, so a
                    // receiver joining at this piece can demux at once.
                    assert_eq!(
                        Packet::parse(&p.payload).unwrap().pid(),
                        PAT_PID,
                        "random-access piece {random_access} does not start with a PAT"
                    );
                    assert!(
                        before.contains(&PacketKind::Pmt),
                        "random-access piece {random_access}: no PMT before the keyframe \
                         ({before:?})"
                    );
                }
            }
        }
    }
    assert_eq!(pz.bytes_dropped(), 0);
    assert!(pieces > random_access);
}
