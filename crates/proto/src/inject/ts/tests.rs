//! Tests of the TS parser (the packet and section builders are in `build`).

use super::build::*;
use super::*;
use rand::{Rng, SeedableRng};

fn pes(es: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 1, 0xe0, 0, 0, 0x80, 0x80, 5, 0x21, 0, 1, 0, 1];
    v.extend_from_slice(es);
    v
}

#[test]
fn header_adaptation_and_pcr() {
    let pcr = 123_456_789_012u64;
    let raw = packet(0x100, true, Some((0x80 | 0x40, Some(pcr))), b"abc");
    let p = Packet::parse(&raw).unwrap();
    assert_eq!(p.pid(), 0x100);
    assert!(p.pusi());
    let af = p.adaptation().unwrap();
    assert!(af.random_access && af.discontinuity);
    assert_eq!(af.pcr, Some(pcr));
    assert_eq!(p.payload(), b"abc");
    assert_eq!(p.payload_offset(), Some(185));
    assert!(Packet::parse(&raw[..187]).is_none());
    let mut bad = raw;
    bad[0] = 0x46;
    assert!(Packet::parse(&bad).is_none());
}

#[test]
fn pat_pmt_roundtrip_and_crc() {
    let pat = pat_section(0x1000);
    assert_eq!(
        parse_pat(&pat).unwrap(),
        vec![PatEntry {
            program_number: 1,
            pmt_pid: 0x1000
        }]
    );
    let mut broken = pat.clone();
    broken[9] ^= 1;
    assert_eq!(parse_pat(&broken), Err(PsiError::Crc));
    let pmt = pmt_section(0x100, &[(0x1b, 0x100), (0x0f, 0x101)]);
    let parsed = parse_pmt(&pmt).unwrap();
    assert_eq!(parsed.pcr_pid, 0x100);
    assert_eq!(parsed.streams.len(), 2);
    assert_eq!(
        parsed.streams[1],
        EsInfo {
            stream_type: 0x0f,
            pid: 0x101
        }
    );
    assert_eq!(parse_pmt(&pat), Err(PsiError::TableId(0)));
    assert_eq!(parse_pmt(&pmt[..5]), Err(PsiError::Short));
}

#[test]
fn tracker_classifies_and_finds_keyframes() {
    let mut t = ProgramTracker::new();
    let pat = psi_packet(0, &pat_section(0x1000));
    let pmt = psi_packet(0x1000, &pmt_section(0x100, &[(0x0f, 0x101), (0x1b, 0x100)]));
    assert_eq!(t.observe(&Packet::parse(&pat).unwrap()), PacketKind::Pat);
    assert_eq!(t.observe(&Packet::parse(&pmt).unwrap()), PacketKind::Pmt);
    assert_eq!(t.video(), Some((0x100, VideoCodec::H264)));
    assert_eq!(t.pcr_pid(), Some(0x100));
    let cases: &[(&[u8], bool)] = &[
        (&[0, 0, 0, 1, 0x09, 0xf0, 0, 0, 1, 0x65, 0x88], true), // AUD, IDR
        (&[0, 0, 0, 1, 0x09, 0xf0, 0, 0, 1, 0x41, 0x9a], false), // AUD, non-IDR
        (
            &[0, 0, 1, 0x67, 0x42, 0, 0, 1, 0x68, 0xce, 0, 0, 1, 0x06, 5],
            true,
        ), // SPS, PPS, SEI..
        (&[0, 0, 1, 0x67, 0x42, 0, 0, 1, 0x41, 0x9a], false),   // SPS then non-IDR slice
        (&[0, 0, 1, 0x09, 0xf0], false),
    ];
    for (es, want) in cases {
        let raw = packet(0x100, true, None, &pes(es));
        let kind = t.observe(&Packet::parse(&raw).unwrap());
        assert_eq!(
            kind,
            PacketKind::Video {
                random_access: *want
            },
            "{es:02x?}"
        );
    }
    // Not PUSI: never a keyframe from the NAL scan; RAI counts.
    let raw = packet(0x100, false, None, &[0, 0, 1, 0x65]);
    assert_eq!(
        t.observe(&Packet::parse(&raw).unwrap()),
        PacketKind::Video {
            random_access: false
        }
    );
    let raw = packet(0x100, false, Some((0x40, None)), &[1, 2, 3]);
    assert_eq!(
        t.observe(&Packet::parse(&raw).unwrap()),
        PacketKind::Video {
            random_access: true
        }
    );
    let raw = packet(0x101, true, Some((0x40, None)), &[1, 2, 3]);
    assert_eq!(t.observe(&Packet::parse(&raw).unwrap()), PacketKind::Other);
}

#[test]
fn hevc_irap() {
    let codec = VideoCodec::Hevc;
    let idr = pes(&[0, 0, 1, 0x46, 1, 0, 0, 1, 0x26, 1]); // AUD, IDR_W_RADL (19)
    let cra = pes(&[0, 0, 1, 0x2a, 1]); // CRA (21)
    let trail = pes(&[0, 0, 1, 0x02, 1]); // TRAIL_R (1)
    let vps = pes(&[0, 0, 1, 0x40, 1, 0, 0, 1, 0x42, 1]); // VPS, SPS, then nothing
    for (es, want) in [(idr, true), (cra, true), (trail, false), (vps, true)] {
        let raw = packet(0x100, true, None, &es);
        assert_eq!(is_random_access(&Packet::parse(&raw).unwrap(), codec), want);
    }
}

#[test]
fn section_spanning_packets() {
    let streams: Vec<(u8, u16)> = (0..60).map(|i| (0x0f, 0x200 + i)).collect();
    let section = pmt_section(0x100, &streams);
    assert!(section.len() > 184);
    let mut first = vec![0u8];
    first.extend_from_slice(&section[..183]);
    let mut p1 = [0u8; 188];
    p1[..4].copy_from_slice(&[0x47, 0x50, 0x00, 0x10]);
    p1[4..].copy_from_slice(&first);
    let rest = &section[183..];
    let mut p2 = [0xffu8; 188];
    p2[..4].copy_from_slice(&[0x47, 0x10, 0x00, 0x11]);
    p2[4..4 + rest.len()].copy_from_slice(rest);
    let mut asm = SectionAssembler::default();
    let mut got = Vec::new();
    for raw in [&p1, &p2] {
        asm.push(&Packet::parse(raw).unwrap(), |s| got.push(s.to_vec()));
    }
    assert_eq!(got, vec![section.clone()]);
    assert_eq!(parse_pmt(&got[0]).unwrap().streams.len(), 60);
}

#[test]
fn random_input_never_panics() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut tracker = ProgramTracker::new();
    // Seed the tracker so that random video packets get the NAL scan.
    let pat = psi_packet(0, &pat_section(0x1000));
    let pmt = psi_packet(0x1000, &pmt_section(0x100, &[(0x1b, 0x100)]));
    tracker.observe(&Packet::parse(&pat).unwrap());
    tracker.observe(&Packet::parse(&pmt).unwrap());
    for i in 0..200_000 {
        let mut raw = [0u8; 188];
        rng.fill(&mut raw[..]);
        raw[0] = 0x47;
        // Bias towards interesting PIDs and flags.
        match i % 4 {
            0 => raw[1] &= 0xe0,
            1 => raw[1] = (raw[1] & 0xe0) | 0x10,
            2 => {
                raw[1] = (raw[1] & 0xe0) | 0x01;
                raw[2] = 0;
                raw[4..7].copy_from_slice(&[0, 0, 1]);
            }
            _ => {}
        }
        let p = Packet::parse(&raw).unwrap();
        let _ = p.adaptation();
        let _ = p.payload();
        let _ = tracker.observe(&p);
        let _ = is_random_access(&p, VideoCodec::Hevc);
        let len = rng.random_range(0..188);
        let _ = parse_pat(&raw[4..4 + len.min(184)]);
        let _ = parse_pmt(&raw[4..4 + len.min(184)]);
        let _ = pes_payload(&raw[4..4 + len.min(184)]);
        // Random bodies with a valid header and CRC reach the table parsers' loops.
        let mut section = raw[4..4 + len.min(170)].to_vec();
        if section.len() >= 8 {
            section[0] = if i % 2 == 0 { 0x02 } else { 0x00 };
            let l = section.len() - 3 + 4;
            section[1] = 0xb0 | (l >> 8) as u8;
            section[2] = l as u8;
            let section = with_crc(section);
            let _ = parse_pat(&section);
            let _ = parse_pmt(&section);
        }
    }
}
