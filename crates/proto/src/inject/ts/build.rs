//! Builders of TS packets and PSI sections, for tests here and in the crates above (and for the
//! simulator's synthetic stream).

use super::*;

/// Build a packet: header + optional adaptation field (flags, pcr) + payload, stuffed.
pub fn packet(pid: u16, pusi: bool, af: Option<(u8, Option<u64>)>, payload: &[u8]) -> [u8; 188] {
    let mut p = [0xffu8; 188];
    p[0] = 0x47;
    p[1] = (if pusi { 0x40 } else { 0 }) | (pid >> 8) as u8 & 0x1f;
    p[2] = pid as u8;
    let mut off = 4;
    let mut ctrl = 0x10;
    if let Some((flags, pcr)) = af {
        ctrl |= 0x20;
        let mut afb = vec![flags | if pcr.is_some() { 0x10 } else { 0 }];
        if let Some(pcr) = pcr {
            let base = pcr / 300;
            let ext = pcr % 300;
            afb.extend_from_slice(&[
                (base >> 25) as u8,
                (base >> 17) as u8,
                (base >> 9) as u8,
                (base >> 1) as u8,
                ((base & 1) << 7) as u8 | 0x7e | (ext >> 8) as u8,
                ext as u8,
            ]);
        }
        // Stuff the adaptation field so that the payload ends the packet.
        let room = 188 - 5 - payload.len();
        assert!(afb.len() <= room);
        afb.resize(room, 0xff);
        p[4] = afb.len() as u8;
        p[5..5 + afb.len()].copy_from_slice(&afb);
        off = 5 + afb.len();
    } else if payload.len() < 184 {
        // Stuff with an adaptation field.
        ctrl |= 0x20;
        let room = 184 - payload.len() - 1;
        p[4] = room as u8;
        if room > 0 {
            p[5] = 0;
        }
        off = 5 + room;
    }
    p[3] = ctrl;
    p[off..off + payload.len()].copy_from_slice(payload);
    p
}

pub fn with_crc(mut section: Vec<u8>) -> Vec<u8> {
    let crc = crc32_mpeg2(&section);
    section.extend_from_slice(&crc.to_be_bytes());
    section
}

pub fn pat_section(pmt_pid: u16) -> Vec<u8> {
    with_crc(vec![
        0x00,
        0xb0,
        13,
        0,
        1,
        0xc1,
        0,
        0,
        0,
        1,
        0xe0 | (pmt_pid >> 8) as u8,
        pmt_pid as u8,
    ])
}

pub fn pmt_section(pcr_pid: u16, streams: &[(u8, u16)]) -> Vec<u8> {
    let mut s = vec![
        0x02,
        0xb0,
        0,
        0,
        1,
        0xc1,
        0,
        0,
        0xe0 | (pcr_pid >> 8) as u8,
        pcr_pid as u8,
        0xf0,
        0,
    ];
    for &(t, pid) in streams {
        s.extend_from_slice(&[t, 0xe0 | (pid >> 8) as u8, pid as u8, 0xf0, 0]);
    }
    let len = s.len() - 3 + 4;
    s[1] = 0xb0 | (len >> 8) as u8;
    s[2] = len as u8;
    with_crc(s)
}

pub fn psi_packet(pid: u16, section: &[u8]) -> [u8; 188] {
    let mut payload = vec![0u8];
    payload.extend_from_slice(section);
    let mut p = [0xffu8; 188];
    p[0] = 0x47;
    p[1] = 0x40 | (pid >> 8) as u8 & 0x1f;
    p[2] = pid as u8;
    p[3] = 0x10;
    p[4..4 + payload.len()].copy_from_slice(&payload);
    p
}
