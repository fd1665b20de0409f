//! Sans-IO cutter from MPEG-TS bytes to raw pieces (unsigned payloads with a timestamp and a
//! random-access flag). It never reads a clock: `now` (monotonic, for the flush time bound)
//! and `wall_us` (the injector's wall clock, µs since the Unix epoch, for the piece
//! timestamp) are passed in by the driver.
//!
//! Invariants:
//! * a payload is whole 188-byte packets, at most `max_payload` bytes;
//! * the payloads, concatenated, equal the input minus the junk dropped while resyncing;
//! * a packet that starts a video random-access point starts a piece, preceded in that piece
//!   by the PAT/PMT (and other non-video packets) that came directly before it within the
//!   current piece, so that a receiver starting at a random-access piece can demux at once;
//! * memory is bounded: one piece plus fewer than 2 packets of carried input.

use std::time::{Duration, Instant};

use super::ts::{PACKET_SIZE, Packet, PacketKind, ProgramTracker, SYNC_BYTE, VideoCodec};

/// The default time bound on a piece.
pub const DEFAULT_FLUSH_AFTER: Duration = Duration::from_millis(200);

/// A piece before signing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawPiece {
    /// Injector wall clock (µs since the Unix epoch) when the piece's first packet arrived.
    pub timestamp_us: u64,
    /// The piece starts at a video keyframe (possibly after PAT/PMT).
    pub random_access: bool,
    /// Whole 188-byte TS packets.
    pub payload: Vec<u8>,
}

/// See the module docs.
#[derive(Debug)]
pub struct Packetizer {
    max_payload: usize,
    flush_after: Duration,
    tracker: ProgramTracker,
    /// Input bytes not yet consumed (fewer than 189).
    carry: Vec<u8>,
    synced: bool,
    piece: Vec<u8>,
    /// Arrival (monotonic, wall) of the current piece's first packet.
    piece_start: Option<(Instant, u64)>,
    piece_random_access: bool,
    /// Offset and arrival of the first PAT packet after the last video packet of the
    /// current piece: where a following keyframe's piece would begin.
    psi_tail: Option<(usize, Instant, u64)>,
    last_now: Option<(Instant, u64)>,
    bytes_in: u64,
    bytes_dropped: u64,
}

impl Packetizer {
    /// `max_payload` is rounded down to a multiple of 188 (at least one packet).
    pub fn new(max_payload: usize, flush_after: Duration) -> Self {
        let max_payload = (max_payload / PACKET_SIZE).max(1) * PACKET_SIZE;
        Packetizer {
            max_payload,
            flush_after,
            tracker: ProgramTracker::new(),
            carry: Vec::with_capacity(2 * PACKET_SIZE),
            synced: false,
            piece: Vec::new(),
            piece_start: None,
            piece_random_access: false,
            psi_tail: None,
            last_now: None,
            bytes_in: 0,
            bytes_dropped: 0,
        }
    }

    /// The largest payload this packetizer makes.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// The video PID and codec learnt from the PMT, if any.
    pub fn video(&self) -> Option<(u16, VideoCodec)> {
        self.tracker.video()
    }

    /// Feed bytes in any alignment (resyncs on 0x47 confirmed by another 0x47 188 bytes
    /// later; drops and counts junk). Returns the pieces completed by this input.
    pub fn push(&mut self, now: Instant, wall_us: u64, bytes: &[u8]) -> Vec<RawPiece> {
        self.bytes_in += bytes.len() as u64;
        self.last_now = Some((now, wall_us));
        let mut out = Vec::new();
        if self.carry.is_empty() {
            let used = self.scan(bytes, now, wall_us, false, &mut out);
            self.carry.extend_from_slice(&bytes[used..]);
        } else {
            let mut work = std::mem::take(&mut self.carry);
            work.extend_from_slice(bytes);
            let used = self.scan(&work, now, wall_us, false, &mut out);
            work.drain(..used);
            if work.capacity() > 16 * PACKET_SIZE {
                work.shrink_to(2 * PACKET_SIZE);
            }
            self.carry = work;
        }
        out
    }

    /// When the time bound will flush the current piece (None if empty).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.piece_start.map(|(t, _)| t + self.flush_after)
    }

    /// Flush the current piece if its time bound has passed.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<RawPiece> {
        match self.poll_timeout() {
            Some(deadline) if now >= deadline => self.flush(),
            _ => None,
        }
    }

    /// End of input: flush what is left (whole packets only; a trailing partial packet
    /// counts as dropped). Usually one piece; two when the last packet starts a keyframe.
    pub fn finish(&mut self) -> Vec<RawPiece> {
        let mut out = Vec::new();
        let work = std::mem::take(&mut self.carry);
        // Nothing was ever pushed: nothing to flush.
        let Some((now, wall_us)) = self.last_now else {
            return out;
        };
        let used = self.scan(&work, now, wall_us, true, &mut out);
        self.bytes_dropped += (work.len() - used) as u64;
        self.synced = false;
        out.extend(self.flush());
        out
    }

    /// All bytes pushed so far.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in
    }

    /// Junk bytes dropped while (re)synchronising.
    pub fn bytes_dropped(&self) -> u64 {
        self.bytes_dropped
    }

    /// Cut `data` into packets; returns how many bytes were consumed (accepted or dropped).
    /// Without `at_end`, a candidate packet needs the next sync byte as confirmation;
    /// at the end of input, the end itself confirms a final whole packet.
    fn scan(
        &mut self,
        data: &[u8],
        now: Instant,
        wall_us: u64,
        at_end: bool,
        out: &mut Vec<RawPiece>,
    ) -> usize {
        let mut p = 0;
        loop {
            let rest = &data[p..];
            if self.synced {
                if rest.len() < PACKET_SIZE {
                    return p;
                }
                if rest[0] == SYNC_BYTE {
                    let mut pkt = [0u8; PACKET_SIZE];
                    pkt.copy_from_slice(&rest[..PACKET_SIZE]);
                    self.accept(&pkt, now, wall_us, out);
                    p += PACKET_SIZE;
                    continue;
                }
                self.synced = false;
            }
            match rest.iter().position(|&b| b == SYNC_BYTE) {
                None => {
                    self.bytes_dropped += rest.len() as u64;
                    return data.len();
                }
                Some(i) => {
                    self.bytes_dropped += i as u64;
                    p += i;
                    let rest = &data[p..];
                    if rest.len() <= PACKET_SIZE {
                        if at_end && rest.len() == PACKET_SIZE {
                            self.synced = true;
                            continue;
                        }
                        return p;
                    }
                    if rest[PACKET_SIZE] == SYNC_BYTE {
                        self.synced = true;
                    } else {
                        self.bytes_dropped += 1;
                        p += 1;
                    }
                }
            }
        }
    }

    fn accept(
        &mut self,
        pkt: &[u8; PACKET_SIZE],
        now: Instant,
        wall_us: u64,
        out: &mut Vec<RawPiece>,
    ) {
        if let Some(piece) = self.handle_timeout(now) {
            out.push(piece);
        }
        let kind = match Packet::parse(pkt) {
            Some(p) => self.tracker.observe(&p),
            None => PacketKind::Other,
        };
        match kind {
            PacketKind::Video {
                random_access: true,
            } => {
                match self.psi_tail {
                    Some((off, t, w))
                        if self.piece.len() - off + PACKET_SIZE <= self.max_payload =>
                    {
                        if off > 0 {
                            let tail = self.piece.split_off(off);
                            out.extend(self.flush());
                            self.piece = tail;
                            self.piece_start = Some((t, w));
                        }
                    }
                    _ => out.extend(self.flush()),
                }
                self.psi_tail = None;
                self.append(pkt, now, wall_us);
                self.piece_random_access = true;
            }
            PacketKind::Video { .. } => {
                self.psi_tail = None;
                self.make_room(out);
                self.append(pkt, now, wall_us);
            }
            PacketKind::Pat => {
                self.make_room(out);
                if self.psi_tail.is_none() {
                    self.psi_tail = Some((self.piece.len(), now, wall_us));
                }
                self.append(pkt, now, wall_us);
            }
            PacketKind::Pmt | PacketKind::Other => {
                self.make_room(out);
                self.append(pkt, now, wall_us);
            }
        }
        // A full piece goes out at once, unless its tail may still move to a keyframe's
        // piece: then the next packet (or the time bound) decides.
        if self.piece.len() + PACKET_SIZE > self.max_payload && self.psi_tail.is_none() {
            out.extend(self.flush());
        }
    }

    /// Flush the current piece if the next packet does not fit. When a PAT follows the last
    /// video packet, cut before that PAT instead, so that the PSI stays together with a
    /// keyframe that may follow it.
    fn make_room(&mut self, out: &mut Vec<RawPiece>) {
        if self.piece.len() + PACKET_SIZE <= self.max_payload {
            return;
        }
        match self.psi_tail {
            Some((off, t, w)) if off > 0 => {
                let tail = self.piece.split_off(off);
                out.extend(self.flush());
                self.piece = tail;
                self.piece_start = Some((t, w));
                self.psi_tail = Some((0, t, w));
            }
            _ => out.extend(self.flush()),
        }
    }

    fn append(&mut self, pkt: &[u8; PACKET_SIZE], now: Instant, wall_us: u64) {
        if self.piece.is_empty() {
            self.piece_start = Some((now, wall_us));
            self.piece.reserve(self.max_payload);
        }
        self.piece.extend_from_slice(pkt);
    }

    fn flush(&mut self) -> Option<RawPiece> {
        let start = self.piece_start.take();
        let random_access = std::mem::take(&mut self.piece_random_access);
        self.psi_tail = None;
        if self.piece.is_empty() {
            return None;
        }
        Some(RawPiece {
            timestamp_us: start.map_or(0, |(_, w)| w),
            random_access,
            payload: std::mem::take(&mut self.piece),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inject::ts::build::{packet, pat_section, pmt_section, psi_packet};
    use rand::{Rng, SeedableRng};

    fn synthetic_stream() -> (Vec<u8>, usize) {
        // PAT, PMT, keyframe, 3 video, audio, PAT, PMT, keyframe, 2 video.
        let pat = psi_packet(0, &pat_section(0x1000));
        let pmt = psi_packet(0x1000, &pmt_section(0x100, &[(0x1b, 0x100), (0x0f, 0x101)]));
        let key = packet(
            0x100,
            true,
            Some((0x40, Some(0))),
            &[0, 0, 1, 0xe0, 0, 0, 0x80, 0, 0],
        );
        let vid = packet(0x100, false, None, &[1; 100]);
        let aud = packet(0x101, true, None, &[2; 100]);
        let mut s = Vec::new();
        for p in [
            &pat, &pmt, &key, &vid, &vid, &vid, &aud, &pat, &pmt, &key, &vid, &vid,
        ] {
            s.extend_from_slice(p);
        }
        (s, 7)
    }

    fn pids(payload: &[u8]) -> Vec<u16> {
        payload
            .chunks(188)
            .map(|c| Packet::parse(c).unwrap().pid())
            .collect()
    }

    #[test]
    fn keyframe_piece_takes_the_psi_before_it() {
        let (s, split) = synthetic_stream();
        let t0 = Instant::now();
        let mut pz = Packetizer::new(188 * 100, DEFAULT_FLUSH_AFTER);
        let mut pieces = pz.push(t0, 1_000, &s);
        pieces.extend(pz.finish());
        assert_eq!(pieces.len(), 2);
        assert!(pieces.iter().all(|p| p.random_access));
        assert_eq!(pieces[0].payload, s[..split * 188]);
        assert_eq!(pids(&pieces[1].payload)[..3], [0, 0x1000, 0x100]);
        assert_eq!(pieces.concat_payloads(), s);
        assert_eq!(pz.bytes_in(), s.len() as u64);
        assert_eq!(pz.bytes_dropped(), 0);
    }

    #[test]
    fn full_piece_with_psi_tail_waits_for_the_next_packet() {
        let (s, split) = synthetic_stream();
        // The first piece is full exactly after the second PMT.
        let mut pz = Packetizer::new(188 * (split + 2), DEFAULT_FLUSH_AFTER);
        let t0 = Instant::now();
        let mut pieces = Vec::new();
        for c in s.chunks(188) {
            pieces.extend(pz.push(t0, 0, c));
        }
        pieces.extend(pz.finish());
        assert_eq!(pieces.len(), 2);
        assert_eq!(pids(&pieces[1].payload)[..3], [0, 0x1000, 0x100]);
        assert!(pieces[1].random_access);
        assert_eq!(pieces.concat_payloads(), s);
    }

    #[test]
    fn time_bound_and_size_bound() {
        let vid = packet(0x100, false, None, &[1; 10]);
        let t0 = Instant::now();
        let mut pz = Packetizer::new(188 * 3 + 100, Duration::from_millis(200));
        assert_eq!(pz.max_payload(), 188 * 3);
        assert_eq!(pz.poll_timeout(), None);
        // Unsynchronised, the first packet waits for the next sync byte as confirmation.
        assert!(pz.push(t0, 5, &vid).is_empty());
        assert_eq!(pz.poll_timeout(), None);
        let t1 = t0 + Duration::from_millis(10);
        assert!(pz.push(t1, 6, &vid).is_empty());
        assert_eq!(pz.poll_timeout(), Some(t1 + Duration::from_millis(200)));
        assert_eq!(pz.handle_timeout(t1 + Duration::from_millis(199)), None);
        let p = pz.handle_timeout(t1 + Duration::from_millis(200)).unwrap();
        assert_eq!(
            (p.timestamp_us, p.random_access, p.payload.len()),
            (6, false, 376)
        );
        assert_eq!(pz.poll_timeout(), None);
        // Size: 7 packets -> 3 + 3 (+1 left).
        let seven: Vec<u8> = std::iter::repeat_n(vid, 7).flatten().collect();
        let pieces = pz.push(t0, 6, &seven);
        assert_eq!(pieces.len(), 2);
        assert!(pieces.iter().all(|p| p.payload.len() == 188 * 3));
        // A push after the deadline flushes the old piece before taking new packets.
        let late = t0 + Duration::from_secs(1);
        let pieces = pz.push(late, 7, &vid);
        assert_eq!(pieces.len(), 1);
        assert_eq!(pieces[0].payload.len(), 188);
        assert_eq!(pz.finish()[0].timestamp_us, 7);
    }

    #[test]
    fn junk_is_dropped_and_counted() {
        let (s, _) = synthetic_stream();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut input = Vec::new();
        let mut junk = 0;
        for (i, c) in s.chunks(188).enumerate() {
            if i % 3 == 0 {
                let n = rng.random_range(1..400);
                input.extend((0..n).map(|_| rng.random_range(0..0x47u8)));
                junk += n;
            }
            input.extend_from_slice(c);
        }
        input.extend_from_slice(&[0x47, 1, 2]); // partial packet at the end
        junk += 3;
        let mut pz = Packetizer::new(188 * 4, DEFAULT_FLUSH_AFTER);
        let mut pieces = Vec::new();
        let t0 = Instant::now();
        for c in input.chunks(rng.random_range(1..300)) {
            pieces.extend(pz.push(t0, 0, c));
        }
        pieces.extend(pz.finish());
        assert_eq!(pieces.concat_payloads(), s);
        assert_eq!(pz.bytes_dropped(), junk as u64);
        assert_eq!(pz.bytes_in(), input.len() as u64);
        assert!(pieces.iter().all(|p| p.payload.len() <= 188 * 4));
    }

    #[test]
    fn single_packet_input_and_hostile_bytes() {
        let vid = packet(0x100, false, None, &[1; 10]);
        let mut pz = Packetizer::new(188, DEFAULT_FLUSH_AFTER);
        assert!(pz.push(Instant::now(), 0, &vid).is_empty());
        assert_eq!(pz.finish().concat_payloads(), vid);
        // Random bytes full of sync bytes: bounded, byte accounting holds.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut pz = Packetizer::new(188 * 7, DEFAULT_FLUSH_AFTER);
        let mut out = Vec::new();
        let t0 = Instant::now();
        for i in 0..2000 {
            let mut buf = vec![0u8; rng.random_range(0..2000)];
            rng.fill(&mut buf[..]);
            for b in buf.iter_mut() {
                if rng.random_range(0..8) == 0 {
                    *b = 0x47;
                }
            }
            if i % 2 == 0 {
                // Some validly framed packets with random contents.
                for k in (0..buf.len()).step_by(188) {
                    buf[k] = 0x47;
                }
            }
            out.extend(pz.push(t0 + Duration::from_millis(i), i, &buf));
            assert!(pz.carry.len() <= 188);
        }
        out.extend(pz.finish());
        let total: usize = out.iter().map(|p| p.payload.len()).sum();
        assert_eq!(total as u64 + pz.bytes_dropped(), pz.bytes_in());
        assert!(
            out.iter()
                .all(|p| p.payload.len() <= 188 * 7 && p.payload.len() % 188 == 0)
        );
    }

    trait Concat {
        fn concat_payloads(&self) -> Vec<u8>;
    }
    impl Concat for Vec<RawPiece> {
        fn concat_payloads(&self) -> Vec<u8> {
            self.iter()
                .flat_map(|p| p.payload.iter().copied())
                .collect()
        }
    }

    /// On real H.264/HEVC files made by ffmpeg (feature `media-tests`, on in the full suite).
    #[cfg(feature = "media-tests")]
    mod files {
        use super::*;
        use crate::inject::ts::{PAT_PID, pes_payload};
        use crate::test_media::small as ts_file;

        fn is_irap(codec: VideoCodec, nal: u8) -> bool {
            match codec {
                VideoCodec::H264 => nal & 0x1f == 5,
                VideoCodec::Hevc => (16..=23).contains(&((nal >> 1) & 0x3f)),
                VideoCodec::Other(_) => false,
            }
        }

        fn has_irap(codec: VideoCodec, es: &[u8]) -> bool {
            es.windows(4)
                .any(|w| w[..3] == [0, 0, 1] && is_irap(codec, w[3]))
        }

        /// Video elementary stream bytes from the first PES start in `ts`, PES by PES.
        fn video_pes(ts: &[u8], vpid: u16) -> Vec<Vec<u8>> {
            let mut all: Vec<Vec<u8>> = Vec::new();
            for c in ts.chunks(188) {
                let p = Packet::parse(c).unwrap();
                if p.pid() != vpid {
                    continue;
                }
                if p.pusi() {
                    all.push(pes_payload(p.payload()).unwrap_or_default().to_vec());
                } else if let Some(last) = all.last_mut() {
                    last.extend_from_slice(p.payload());
                }
            }
            all
        }

        fn check_file(video: &'static str, clear_rai: bool) {
            let path = ts_file(&format!("pz-{video}-4s.ts"), 4, video);
            let mut data = std::fs::read(&path).unwrap();
            assert_eq!(data.len() % 188, 0);
            if clear_rai {
                // Force the NAL scan: clear every random_access_indicator.
                for c in data.chunks_mut(188) {
                    if c[3] & 0x20 != 0 && c[4] > 0 {
                        c[5] &= !0x40;
                    }
                }
            }
            let mut tracker = ProgramTracker::new();
            for c in data.chunks(188) {
                tracker.observe(&Packet::parse(c).unwrap());
            }
            let (vpid, codec) = tracker.video().expect("video in PMT");
            let keyframes = video_pes(&data, vpid)
                .iter()
                .filter(|es| has_irap(codec, es))
                .count();
            // 4 s at 30 fps, GOP 15: 8 keyframes.
            assert!((7..=9).contains(&keyframes), "{keyframes} keyframes");

            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
            for max_packets in [7usize, 64, 400] {
                let max = max_packets * 188;
                let mut pz = Packetizer::new(max, DEFAULT_FLUSH_AFTER);
                let mut pieces = Vec::new();
                let t0 = Instant::now();
                let mut rest = &data[..];
                while !rest.is_empty() {
                    let n = rng.random_range(1..=rest.len().min(5000));
                    pieces.extend(pz.push(t0, 0, &rest[..n]));
                    rest = &rest[n..];
                }
                pieces.extend(pz.finish());
                assert_eq!(pieces.concat_payloads(), data, "concatenation == input");
                assert_eq!(pz.bytes_dropped(), 0);
                let mut ra = 0;
                let mut offset = 0;
                for p in &pieces {
                    assert!(p.payload.len() <= max && p.payload.len() % 188 == 0);
                    if p.random_access {
                        ra += 1;
                        let first = Packet::parse(&p.payload).unwrap();
                        assert_eq!(first.pid(), PAT_PID, "random-access piece starts with PAT");
                        // The first video PES of the piece is a keyframe. A small piece may end
                        // before the IRAP NAL (after a long SEI): then look at the whole PES.
                        let es = video_pes(&p.payload, vpid);
                        let whole = video_pes(&data[offset..], vpid);
                        let within = es.first().is_some_and(|es| has_irap(codec, es));
                        assert!(
                            within || (max_packets < 64 && has_irap(codec, &whole[0])),
                            "random-access piece holds the keyframe"
                        );
                    }
                    offset += p.payload.len();
                }
                assert_eq!(ra, keyframes, "one random-access piece per keyframe");
            }

            // With time passing (1 ms per chunk) and the time bound flushing: still exact.
            let mut pz = Packetizer::new(188 * 64, DEFAULT_FLUSH_AFTER);
            let mut pieces = Vec::new();
            let mut now = Instant::now();
            for c in data.chunks(1316) {
                now += Duration::from_millis(1);
                if pz.poll_timeout().is_some_and(|t| t <= now) {
                    pieces.extend(pz.handle_timeout(now));
                }
                pieces.extend(pz.push(now, 0, c));
            }
            pieces.extend(pz.finish());
            assert_eq!(pieces.concat_payloads(), data);
            let ra = pieces.iter().filter(|p| p.random_access).count();
            assert_eq!(ra, keyframes);
        }

        #[test]
        fn h264_file_pieces() {
            check_file("h264", false);
        }

        #[test]
        fn h264_file_pieces_by_nal_scan() {
            check_file("h264", true);
        }

        #[test]
        fn hevc_file_pieces() {
            check_file("hevc", false);
        }

        #[test]
        fn hevc_file_pieces_by_nal_scan() {
            check_file("hevc", true);
        }
    }
}
