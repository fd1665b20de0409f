//! The simulator's synthetic MPEG-TS stream, fed to the real injector.

use std::time::Duration;

use crate::inject::ts::build::{packet, pat_section, pmt_section, psi_packet};
use crate::inject::ts::{PACKET_SIZE, PCR_HZ, PCR_WRAP};

/// The simulator's MPEG-TS source: one program, H.264 video on [`SyntheticTs::VIDEO_PID`]
/// (also the PCR PID) and AAC audio on [`SyntheticTs::AUDIO_PID`], made chunk by chunk, one
/// chunk per piece interval, each chunk `piece_payload / 188` whole packets:
///
/// ```text
/// keyframe chunk: PAT | PMT | video PES start (RAI, PCR; AUD SPS PPS IDR) | video ... | audio PES
/// other chunks:              video PES start (PCR; AUD, non-IDR slice)    | video ... | audio PES
/// ```
///
/// Every `keyframe_every`-th chunk (from the first) is a keyframe chunk; the packetizer finds
/// its keyframe both by the adaptation field's random_access_indicator and by the IDR NAL
/// unit, and cuts exactly one piece per chunk (a chunk fills a piece), so piece `n` is chunk
/// `n` and is random-access when `n` is a multiple of `keyframe_every`. Continuity counters
/// run per PID, the PCR and PTS follow the chunk's time, and every video packet carries the
/// chunk number and its index in the chunk, so no two chunks are alike.
#[derive(Debug, Clone)]
pub struct SyntheticTs {
    packets: usize,
    keyframe_every: u64,
    interval: Duration,
    chunk: u64,
    /// Continuity counters of PAT, PMT, video, audio.
    cc: [u8; 4],
}

impl SyntheticTs {
    pub const PMT_PID: u16 = 0x1000;
    pub const VIDEO_PID: u16 = 0x100;
    pub const AUDIO_PID: u16 = 0x101;

    /// Chunks of `piece_payload` bytes rounded down to whole packets (at least 3: PAT, PMT
    /// and the keyframe's first packet), one every `interval`.
    pub fn new(piece_payload: usize, keyframe_every: u64, interval: Duration) -> Self {
        let packets = piece_payload / PACKET_SIZE;
        assert!(
            packets >= 3,
            "a piece of {piece_payload} bytes cannot hold PAT, PMT and a keyframe packet"
        );
        SyntheticTs {
            packets,
            keyframe_every,
            interval,
            chunk: 0,
            cc: [0; 4],
        }
    }

    /// Bytes of every chunk.
    pub fn chunk_len(&self) -> usize {
        self.packets * PACKET_SIZE
    }

    /// Chunks made so far.
    pub fn chunks_made(&self) -> u64 {
        self.chunk
    }

    /// The TS of the next piece interval.
    pub fn next_chunk(&mut self) -> Vec<u8> {
        let n = self.chunk;
        self.chunk += 1;
        let keyframe = n.is_multiple_of(self.keyframe_every);
        let t = self.interval.as_nanos() * u128::from(n);
        // 27 MHz PCR; PTS (90 kHz) 100 ms ahead of it, the decoder's buffer.
        let pcr = (t * u128::from(PCR_HZ) / 1_000_000_000) as u64 % PCR_WRAP;
        let pts = (pcr / 300 + 9_000) & ((1 << 33) - 1);
        let mut out = Vec::with_capacity(self.chunk_len());
        let mut room = self.packets;

        if keyframe {
            let pat = psi_packet(0, &pat_section(Self::PMT_PID));
            let pmt = psi_packet(
                Self::PMT_PID,
                &pmt_section(
                    Self::VIDEO_PID,
                    &[(0x1b, Self::VIDEO_PID), (0x0f, Self::AUDIO_PID)],
                ),
            );
            out.extend_from_slice(&self.counted(0, pat));
            out.extend_from_slice(&self.counted(1, pmt));
            room -= 2;
        }

        // The access unit's first packet: PES header, then the NAL units that tell an IDR
        // picture (SPS, PPS, IDR slice) from another one (non-IDR slice).
        let mut pes = vec![0, 0, 1, 0xe0, 0, 0, 0x80, 0x80, 5];
        pes.extend_from_slice(&pts_bytes(pts));
        pes.extend_from_slice(&[0, 0, 0, 1, 0x09, if keyframe { 0x10 } else { 0x30 }]);
        if keyframe {
            pes.extend_from_slice(&[0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80]);
            pes.extend_from_slice(&[0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80]);
            pes.extend_from_slice(&[0, 0, 1, 0x65, 0x88, 0x84]);
        } else {
            pes.extend_from_slice(&[0, 0, 1, 0x41, 0x9a, 0x02]);
        }
        pes.extend_from_slice(&tag(n, 0));
        let flags = if keyframe { 0x40 } else { 0 };
        let start = packet(Self::VIDEO_PID, true, Some((flags, Some(pcr))), &pes);
        out.extend_from_slice(&self.counted(2, start));
        room -= 1;

        // The rest of the picture, and one audio frame to end the chunk.
        let audio = room > 0;
        let video = room.saturating_sub(1);
        for i in 1..=video {
            let mut body = [0x5a; 184];
            body[..10].copy_from_slice(&tag(n, i as u16));
            let pkt = packet(Self::VIDEO_PID, false, None, &body);
            out.extend_from_slice(&self.counted(2, pkt));
        }
        if audio {
            let mut pes = vec![0, 0, 1, 0xc0, 0, 0, 0x80, 0x80, 5];
            pes.extend_from_slice(&pts_bytes(pts));
            // An ADTS header (AAC-LC, 48 kHz, stereo) and a frame tagged like the video.
            let frame = 7 + 10 + 16;
            pes.extend_from_slice(&[
                0xff,
                0xf1,
                0x4c,
                0x80,
                (frame >> 3) as u8,
                ((frame & 7) << 5) as u8 | 0x1f,
                0xfc,
            ]);
            pes.extend_from_slice(&tag(n, u16::MAX));
            pes.extend_from_slice(&[0x21; 16]);
            let len = pes.len() - 6;
            pes[4..6].copy_from_slice(&(len as u16).to_be_bytes());
            let pkt = packet(Self::AUDIO_PID, true, None, &pes);
            out.extend_from_slice(&self.counted(3, pkt));
        }
        debug_assert_eq!(out.len(), self.chunk_len());
        out
    }

    /// Sets the packet's continuity counter from the PID's counter `which`.
    fn counted(&mut self, which: usize, mut pkt: [u8; PACKET_SIZE]) -> [u8; PACKET_SIZE] {
        pkt[3] = pkt[3] & 0xf0 | self.cc[which];
        self.cc[which] = (self.cc[which] + 1) & 0x0f;
        pkt
    }
}

/// Chunk number and packet index, to tell every packet of the stream apart.
fn tag(chunk: u64, index: u16) -> [u8; 10] {
    let mut t = [0u8; 10];
    t[..8].copy_from_slice(&chunk.to_be_bytes());
    t[8..].copy_from_slice(&index.to_be_bytes());
    t
}

/// A PES PTS field ('0010' prefix, marker bits).
fn pts_bytes(pts: u64) -> [u8; 5] {
    [
        0x21 | ((pts >> 29) & 0x0e) as u8,
        (pts >> 22) as u8,
        ((pts >> 14) & 0xfe) as u8 | 1,
        (pts >> 7) as u8,
        ((pts << 1) & 0xfe) as u8 | 1,
    ]
}
