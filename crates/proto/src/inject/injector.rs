//! The sans-IO injector: MPEG-TS bytes in, signed pieces out, then the end of the stream.
//!
//! It owns the [`Packetizer`], the signing key, the torrent's info hash, the epoch and the next
//! sequence number, so that every driver (the tokio node, the simulator, tests) makes pieces
//! the same way. Like the packetizer it never reads a clock: `now` (monotonic, for the
//! packetizer's time bound) and `wall_us` (the injector's wall clock, µs since the Unix epoch)
//! are passed in.
//!
//! Invariants:
//! * sequence numbers are consecutive from the epoch, one per piece, the end-of-stream piece
//!   included; every piece carries that epoch;
//! * a data piece's timestamp is the wall clock when its first packet arrived (the
//!   packetizer's), the end-of-stream piece's the wall clock passed to [`Injector::finish`];
//! * [`FLAG_RANDOM_ACCESS`] marks the pieces the packetizer started at a video keyframe;
//! * the end-of-stream piece is the last piece, made once, with no payload; input after it is
//!   ignored.

use std::time::{Duration, Instant};

use ed25519_dalek::{SigningKey, VerifyingKey};

use super::packetizer::{Packetizer, RawPiece};
use super::ts::VideoCodec;
use crate::piece::{FLAG_END_OF_STREAM, FLAG_RANDOM_ACCESS, PieceHeader, SignedPiece};
use crate::torrent::InfoHash;

/// See the module docs.
#[derive(Debug)]
pub struct Injector {
    packetizer: Packetizer,
    key: SigningKey,
    info_hash: InfoHash,
    epoch: u64,
    next_seq: u64,
    finished: bool,
}

impl Injector {
    /// An injector whose first piece has sequence number `epoch`. `max_payload` (the torrent's
    /// piece length) and `flush_after` (the time bound on a piece) go to the [`Packetizer`].
    ///
    /// The tokio driver passes the wall clock in milliseconds as the epoch, so that a
    /// restarted injector continues above its earlier run (at fewer than 1000 pieces a
    /// second); receivers skip sequence numbers below the epoch without counting a loss.
    pub fn new(
        key: SigningKey,
        info_hash: InfoHash,
        max_payload: usize,
        flush_after: Duration,
        epoch: u64,
    ) -> Self {
        Injector {
            packetizer: Packetizer::new(max_payload, flush_after),
            key,
            info_hash,
            epoch,
            next_seq: epoch,
            finished: false,
        }
    }

    /// Feed MPEG-TS bytes in any alignment; returns the pieces completed by them, in sequence
    /// order. Ignored (nothing returned, nothing counted) after [`Injector::finish`].
    pub fn push(&mut self, now: Instant, wall_us: u64, ts: &[u8]) -> Vec<SignedPiece> {
        if self.finished {
            return Vec::new();
        }
        let raw = self.packetizer.push(now, wall_us, ts);
        raw.into_iter().map(|r| self.sign(r)).collect()
    }

    /// When the packetizer's time bound will flush the piece it holds (None if it holds
    /// nothing, or after the end of stream).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.finished {
            return None;
        }
        self.packetizer.poll_timeout()
    }

    /// Flush the piece held if its time bound has passed. (Its timestamp is that of its first
    /// packet, so no wall clock is needed here.)
    pub fn handle_timeout(&mut self, now: Instant) -> Option<SignedPiece> {
        if self.finished {
            return None;
        }
        let raw = self.packetizer.handle_timeout(now)?;
        Some(self.sign(raw))
    }

    /// End of input: the pieces made of what the packetizer still holds, then the signed
    /// end-of-stream piece, stamped `wall_us`. A second call returns nothing.
    pub fn finish(&mut self, wall_us: u64) -> Vec<SignedPiece> {
        if self.finished {
            return Vec::new();
        }
        let mut out: Vec<SignedPiece> = self
            .packetizer
            .finish()
            .into_iter()
            .map(|r| self.sign(r))
            .collect();
        let eos = PieceHeader {
            seq: self.take_seq(),
            epoch: self.epoch,
            timestamp_us: wall_us,
            flags: FLAG_END_OF_STREAM,
            payload_len: 0,
        };
        out.push(SignedPiece::sign(&self.key, &self.info_hash, eos, &[]));
        self.finished = true;
        out
    }

    /// The end-of-stream piece has been made.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The sequence number of the first piece.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The sequence number the next piece will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Pieces signed so far, the end-of-stream piece included.
    pub fn pieces_made(&self) -> u64 {
        self.next_seq - self.epoch
    }

    /// All MPEG-TS bytes pushed (before the end of stream).
    pub fn bytes_in(&self) -> u64 {
        self.packetizer.bytes_in()
    }

    /// Junk bytes the packetizer dropped while (re)synchronising, and a trailing partial
    /// packet at the end.
    pub fn bytes_dropped(&self) -> u64 {
        self.packetizer.bytes_dropped()
    }

    /// The largest payload of a piece (the piece length rounded down to whole packets).
    pub fn max_payload(&self) -> usize {
        self.packetizer.max_payload()
    }

    /// The video PID and codec learnt from the PMT, if any.
    pub fn video(&self) -> Option<(u16, VideoCodec)> {
        self.packetizer.video()
    }

    /// The key receivers check the pieces with.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    fn sign(&mut self, raw: RawPiece) -> SignedPiece {
        let header = PieceHeader {
            seq: self.take_seq(),
            epoch: self.epoch,
            timestamp_us: raw.timestamp_us,
            flags: if raw.random_access {
                FLAG_RANDOM_ACCESS
            } else {
                0
            },
            payload_len: 0,
        };
        SignedPiece::sign(&self.key, &self.info_hash, header, &raw.payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inject::packetizer::DEFAULT_FLUSH_AFTER;
    use crate::inject::ts::build::packet;
    use crate::piece::{PieceError, TS_PACKET};
    use crate::sim::SyntheticTs;
    use rand::{Rng, SeedableRng};

    const EPOCH: u64 = 1_700_000_000_000;
    const PACKETS: usize = 20;

    fn injector(max_payload: usize, flush_after: Duration) -> Injector {
        Injector::new(
            SigningKey::from_bytes(&[7; 32]),
            InfoHash([3; 20]),
            max_payload,
            flush_after,
            EPOCH,
        )
    }

    fn check(inj: &Injector, pieces: &[SignedPiece]) -> Result<(), PieceError> {
        for p in pieces {
            let back = SignedPiece::verify(
                p.wire().clone(),
                &inj.verifying_key(),
                &InfoHash([3; 20]),
                inj.max_payload() as u32,
            )?;
            assert_eq!(&back, p);
        }
        Ok(())
    }

    fn concat(pieces: &[SignedPiece]) -> Vec<u8> {
        pieces.iter().flat_map(|p| p.payload().to_vec()).collect()
    }

    #[test]
    fn pieces_are_consecutive_signed_and_end_once() {
        let interval = Duration::from_millis(100);
        let mut ts = SyntheticTs::new(TS_PACKET * PACKETS, 4, interval);
        let chunks: Vec<Vec<u8>> = (0..10).map(|_| ts.next_chunk()).collect();
        let input = chunks.concat();
        // Fed in random slices, each chunk's slices at the chunk's time.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut inj = injector(TS_PACKET * PACKETS, DEFAULT_FLUSH_AFTER);
        let t0 = Instant::now();
        let mut pieces = Vec::new();
        for (n, chunk) in chunks.iter().enumerate() {
            let now = t0 + interval * n as u32;
            let wall = 5_000_000 + 100_000 * n as u64;
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                let k = rng.random_range(1..=rest.len().min(700));
                pieces.extend(inj.push(now, wall, &rest[..k]));
                rest = &rest[k..];
            }
        }
        assert_eq!(inj.poll_timeout(), None, "every chunk fills one piece");
        pieces.extend(inj.finish(9_999_999));
        check(&inj, &pieces).unwrap();

        // One piece per chunk, then the end of stream.
        assert_eq!(pieces.len(), 11);
        for (i, p) in pieces.iter().enumerate() {
            let h = p.header();
            assert_eq!((h.seq, h.epoch), (EPOCH + i as u64, EPOCH));
        }
        let (eos, data) = pieces.split_last().unwrap();
        assert!(eos.header().end_of_stream() && eos.payload().is_empty());
        assert_eq!(eos.header().timestamp_us, 9_999_999);
        assert!(data.iter().all(|p| !p.header().end_of_stream()));
        for (n, p) in data.iter().enumerate() {
            assert_eq!(p.header().random_access(), n % 4 == 0, "piece {n}");
            assert_eq!(p.header().timestamp_us, 5_000_000 + 100_000 * n as u64);
            assert_eq!(&p.payload()[..], &chunks[n][..]);
        }
        assert_eq!(concat(data), input);
        assert_eq!(inj.bytes_in(), input.len() as u64);
        assert_eq!(inj.bytes_dropped(), 0);
        assert_eq!(inj.pieces_made(), 11);
        assert!(inj.is_finished());

        // Once: input after the end is ignored, and so is another finish.
        assert!(inj.push(t0, 0, &input).is_empty());
        assert!(inj.finish(0).is_empty());
        assert_eq!(inj.handle_timeout(t0 + Duration::from_secs(9)), None);
        assert_eq!(inj.bytes_in(), input.len() as u64);
        assert_eq!(inj.next_seq(), EPOCH + 11);
    }

    #[test]
    fn time_bound_flushes_a_partial_piece() {
        let flush = Duration::from_millis(200);
        let mut inj = injector(TS_PACKET * PACKETS, flush);
        let mut ts = SyntheticTs::new(TS_PACKET * PACKETS, 2, Duration::from_millis(100));
        let chunk = ts.next_chunk();
        let t0 = Instant::now();
        // Half a piece: nothing yet, the time bound is armed from the first packet.
        assert!(inj.push(t0, 1_000, &chunk[..TS_PACKET * 10]).is_empty());
        assert_eq!(inj.poll_timeout(), Some(t0 + flush));
        assert_eq!(
            inj.handle_timeout(t0 + flush - Duration::from_millis(1)),
            None
        );
        let p = inj.handle_timeout(t0 + flush).unwrap();
        assert_eq!((p.seq(), p.header().timestamp_us), (EPOCH, 1_000));
        assert!(p.header().random_access());
        assert_eq!(&p.payload()[..], &chunk[..TS_PACKET * 10]);
        assert_eq!(inj.poll_timeout(), None);

        // The rest, one more packet and a trailing partial packet: finish flushes the whole
        // packets, drops the partial one, and ends the stream.
        let t1 = t0 + Duration::from_secs(1);
        let vid = packet(0x100, false, None, &[9; 184]);
        let rest = [&chunk[TS_PACKET * 10..], &vid[..], &vid[..100]].concat();
        assert!(inj.push(t1, 2_000, &rest).is_empty());
        let end = inj.finish(4_000);
        check(&inj, &end).unwrap();
        assert_eq!(end.len(), 2);
        assert_eq!(&end[0].payload()[..], &rest[..TS_PACKET * 11]);
        assert_eq!(end[0].header().timestamp_us, 2_000);
        assert!(!end[0].header().random_access());
        assert_eq!(
            (
                end[1].seq(),
                end[1].header().flags,
                end[1].header().timestamp_us
            ),
            (EPOCH + 2, FLAG_END_OF_STREAM, 4_000)
        );
        assert_eq!(inj.bytes_dropped(), 100);
    }

    #[test]
    fn empty_input_ends_with_the_end_of_stream_piece_alone() {
        let mut inj = injector(TS_PACKET * 4, DEFAULT_FLUSH_AFTER);
        assert_eq!(inj.poll_timeout(), None);
        let end = inj.finish(42);
        check(&inj, &end).unwrap();
        assert_eq!(end.len(), 1);
        let h = end[0].header();
        assert_eq!((h.seq, h.epoch, h.timestamp_us), (EPOCH, EPOCH, 42));
        assert!(h.end_of_stream());
        assert_eq!(inj.pieces_made(), 1);
    }
}
