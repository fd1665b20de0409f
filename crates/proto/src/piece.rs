//! Signed live pieces (see `docs/PROTOCOL.md`, "Pieces").
//!
//! ```text
//! seq u64 | epoch u64 | timestamp_us u64 | flags u8 | payload_len u32 | payload | signature[64]
//! ```
//! All integers are big-endian. The Ed25519 signature covers `infohash | header | payload`, so a
//! piece cannot be replayed into another swarm. A piece is kept in its wire form (`Bytes`) so
//! that storing and forwarding it never copies the payload.

use bytes::Bytes;
use ed25519_dalek::ed25519::signature::{MultipartSigner, MultipartVerifier};
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};

use crate::torrent::InfoHash;

pub const TS_PACKET: usize = 188;
pub const HEADER_LEN: usize = 8 + 8 + 8 + 1 + 4;
pub const SIGNATURE_LEN: usize = 64;
/// Bytes a piece adds to its payload on the wire.
pub const OVERHEAD: usize = HEADER_LEN + SIGNATURE_LEN;

/// The piece's payload starts at a video random-access point (a keyframe).
pub const FLAG_RANDOM_ACCESS: u8 = 1;
/// The stream ends with this piece; it carries no payload.
pub const FLAG_END_OF_STREAM: u8 = 2;
const KNOWN_FLAGS: u8 = FLAG_RANDOM_ACCESS | FLAG_END_OF_STREAM;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PieceHeader {
    /// Grows by one per piece; never reused for a torrent.
    pub seq: u64,
    /// The first `seq` of this injector run: sequence numbers below it that were never seen
    /// will never exist, so receivers skip them without counting a loss.
    pub epoch: u64,
    /// Injector wall clock, microseconds since the Unix epoch, when the first packet arrived.
    pub timestamp_us: u64,
    pub flags: u8,
    pub payload_len: u32,
}

impl PieceHeader {
    pub fn random_access(&self) -> bool {
        self.flags & FLAG_RANDOM_ACCESS != 0
    }

    pub fn end_of_stream(&self) -> bool {
        self.flags & FLAG_END_OF_STREAM != 0
    }

    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..8].copy_from_slice(&self.seq.to_be_bytes());
        out[8..16].copy_from_slice(&self.epoch.to_be_bytes());
        out[16..24].copy_from_slice(&self.timestamp_us.to_be_bytes());
        out[24] = self.flags;
        out[25..29].copy_from_slice(&self.payload_len.to_be_bytes());
        out
    }

    fn decode(bytes: &[u8; HEADER_LEN]) -> Self {
        let u64_at = |i: usize| u64::from_be_bytes(bytes[i..i + 8].try_into().unwrap());
        PieceHeader {
            seq: u64_at(0),
            epoch: u64_at(8),
            timestamp_us: u64_at(16),
            flags: bytes[24],
            payload_len: u32::from_be_bytes(bytes[25..29].try_into().unwrap()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PieceError {
    #[error("piece is {0} bytes, too short for header and signature")]
    TooShort(usize),
    #[error("payload length {declared} does not match the {actual} bytes present")]
    LengthMismatch { declared: u32, actual: usize },
    #[error("payload of {0} bytes is larger than the torrent's piece length")]
    TooLong(u32),
    #[error("payload of {0} bytes is not whole 188-byte TS packets")]
    NotWholePackets(u32),
    #[error("unknown flag bits {0:#04x}")]
    UnknownFlags(u8),
    #[error("end-of-stream piece carries a payload")]
    EndWithPayload,
    #[error("epoch {epoch} is after the sequence number {seq}")]
    BadEpoch { epoch: u64, seq: u64 },
    #[error("signature does not verify")]
    BadSignature,
}

/// A piece whose signature has been checked (or that we signed ourselves).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedPiece {
    header: PieceHeader,
    wire: Bytes,
}

impl SignedPiece {
    pub fn sign(
        key: &SigningKey,
        info_hash: &InfoHash,
        mut header: PieceHeader,
        payload: &[u8],
    ) -> Self {
        header.payload_len = payload.len() as u32;
        let head = header.encode();
        let signature: Signature = key.multipart_sign(&[&info_hash.0, &head, payload]);
        let mut wire = Vec::with_capacity(OVERHEAD + payload.len());
        wire.extend_from_slice(&head);
        wire.extend_from_slice(payload);
        wire.extend_from_slice(&signature.to_bytes());
        SignedPiece {
            header,
            wire: wire.into(),
        }
    }

    /// Checks structure and signature of a piece received from a peer. Nothing unverified gets
    /// past this function.
    pub fn verify(
        wire: Bytes,
        key: &VerifyingKey,
        info_hash: &InfoHash,
        max_payload: u32,
    ) -> Result<Self, PieceError> {
        let header = Self::check_structure(&wire, max_payload)?;
        let payload_end = HEADER_LEN + header.payload_len as usize;
        let signature = Signature::from_bytes(wire[payload_end..].try_into().unwrap());
        key.multipart_verify(
            &[
                &info_hash.0,
                &wire[..HEADER_LEN],
                &wire[HEADER_LEN..payload_end],
            ],
            &signature,
        )
        .map_err(|_| PieceError::BadSignature)?;
        Ok(SignedPiece { header, wire })
    }

    /// The header of a piece, checked for structure only (not for its signature).
    pub fn check_structure(wire: &[u8], max_payload: u32) -> Result<PieceHeader, PieceError> {
        if wire.len() < OVERHEAD {
            return Err(PieceError::TooShort(wire.len()));
        }
        let header = PieceHeader::decode(wire[..HEADER_LEN].try_into().unwrap());
        let actual = wire.len() - OVERHEAD;
        if header.payload_len as usize != actual {
            return Err(PieceError::LengthMismatch {
                declared: header.payload_len,
                actual,
            });
        }
        if header.payload_len > max_payload {
            return Err(PieceError::TooLong(header.payload_len));
        }
        if !(header.payload_len as usize).is_multiple_of(TS_PACKET) {
            return Err(PieceError::NotWholePackets(header.payload_len));
        }
        if header.flags & !KNOWN_FLAGS != 0 {
            return Err(PieceError::UnknownFlags(header.flags));
        }
        if header.end_of_stream() && header.payload_len != 0 {
            return Err(PieceError::EndWithPayload);
        }
        if header.epoch > header.seq {
            return Err(PieceError::BadEpoch {
                epoch: header.epoch,
                seq: header.seq,
            });
        }
        Ok(header)
    }

    pub fn header(&self) -> &PieceHeader {
        &self.header
    }

    pub fn seq(&self) -> u64 {
        self.header.seq
    }

    pub fn payload(&self) -> Bytes {
        self.wire
            .slice(HEADER_LEN..HEADER_LEN + self.header.payload_len as usize)
    }

    /// The whole piece as sent on the wire: header, payload, signature.
    pub fn wire(&self) -> &Bytes {
        &self.wire
    }
}

/// Verdicts on pieces, shared by the many cores of one process (the simulator): a piece
/// relayed through the swarm reaches every node as the same shared bytes, so its signature
/// is checked once instead of once per node. A verdict is keyed by the memory the piece
/// lives in, which the memo holds on to, so those addresses cannot be reused for other bytes
/// while the verdict is kept; any other bytes, a forged copy included, are checked in full.
#[derive(Debug, Default)]
pub struct VerifyMemo {
    inner: std::sync::Mutex<MemoInner>,
}

#[derive(Debug, Default)]
struct MemoInner {
    verdicts: std::collections::HashMap<MemoKey, (Bytes, Result<PieceHeader, PieceError>)>,
    order: std::collections::VecDeque<MemoKey>,
}

/// Where the bytes live, how many, and what they were checked against.
type MemoKey = (usize, usize, [u8; 32], [u8; 20], u32);

impl VerifyMemo {
    /// Verdicts kept at most; the oldest goes first. A live window is a few hundred pieces.
    pub const CAPACITY: usize = 2048;

    /// [`SignedPiece::verify`], answered from the memo for bytes it has seen.
    pub fn verify(
        &self,
        wire: Bytes,
        key: &VerifyingKey,
        info_hash: &InfoHash,
        max_payload: u32,
    ) -> Result<SignedPiece, PieceError> {
        let id = (
            wire.as_ptr() as usize,
            wire.len(),
            key.to_bytes(),
            info_hash.0,
            max_payload,
        );
        let mut memo = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, verdict)) = memo.verdicts.get(&id) {
            return verdict.clone().map(|header| SignedPiece { header, wire });
        }
        let verdict = SignedPiece::verify(wire.clone(), key, info_hash, max_payload);
        let kept = verdict.as_ref().map(|p| p.header).map_err(Clone::clone);
        if memo.order.len() >= Self::CAPACITY
            && let Some(old) = memo.order.pop_front()
        {
            memo.verdicts.remove(&old);
        }
        memo.order.push_back(id);
        memo.verdicts.insert(id, (wire, kept));
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (SigningKey, InfoHash) {
        (SigningKey::from_bytes(&[3; 32]), InfoHash([9; 20]))
    }

    fn header(seq: u64, flags: u8) -> PieceHeader {
        PieceHeader {
            seq,
            epoch: 1,
            timestamp_us: 1_000_000,
            flags,
            payload_len: 0,
        }
    }

    #[test]
    fn sign_verify_round_trip() {
        let (key, ih) = setup();
        let payload = vec![0x47; 188 * 3];
        let piece = SignedPiece::sign(&key, &ih, header(5, FLAG_RANDOM_ACCESS), &payload);
        let back =
            SignedPiece::verify(piece.wire().clone(), &key.verifying_key(), &ih, 188 * 4).unwrap();
        assert_eq!(back, piece);
        assert_eq!(&back.payload()[..], &payload[..]);
        assert!(back.header().random_access());
    }

    #[test]
    fn the_memo_checks_each_piece_once_and_forged_copies_in_full() {
        let (key, ih) = setup();
        let vk = key.verifying_key();
        let memo = VerifyMemo::default();
        let piece = SignedPiece::sign(&key, &ih, header(5, 0), &[0x47; 188]);
        for _ in 0..3 {
            let back = memo.verify(piece.wire().clone(), &vk, &ih, 188).unwrap();
            assert_eq!(back, piece);
        }
        assert_eq!(memo.inner.lock().unwrap().verdicts.len(), 1);
        // The same bytes, one flipped, in memory of their own: checked, and refused.
        let mut forged = piece.wire().to_vec();
        forged[HEADER_LEN] ^= 1;
        let forged = Bytes::from(forged);
        for _ in 0..2 {
            let err = memo.verify(forged.clone(), &vk, &ih, 188).unwrap_err();
            assert_eq!(err, PieceError::BadSignature);
        }
        // The honest bytes checked against another swarm's key: not the verdict kept for ours.
        let other = SigningKey::from_bytes(&[4; 32]).verifying_key();
        assert!(memo.verify(piece.wire().clone(), &other, &ih, 188).is_err());
        assert!(memo.verify(piece.wire().clone(), &vk, &ih, 188).is_ok());
    }

    #[test]
    fn every_tampered_byte_is_caught() {
        let (key, ih) = setup();
        let piece = SignedPiece::sign(&key, &ih, header(5, 0), &[0x47; 188]);
        for i in 0..piece.wire().len() {
            let mut bad = piece.wire().to_vec();
            bad[i] ^= 0x01;
            assert!(SignedPiece::verify(bad.into(), &key.verifying_key(), &ih, 1 << 20).is_err());
        }
        // Another swarm's infohash is a different message.
        let other = InfoHash([8; 20]);
        assert_eq!(
            SignedPiece::verify(piece.wire().clone(), &key.verifying_key(), &other, 1 << 20),
            Err(PieceError::BadSignature)
        );
    }

    #[test]
    fn structure_errors() {
        let (key, ih) = setup();
        let vk = key.verifying_key();
        assert_eq!(
            SignedPiece::verify(Bytes::from_static(&[0; 10]), &vk, &ih, 1 << 20),
            Err(PieceError::TooShort(10))
        );
        let big = SignedPiece::sign(&key, &ih, header(1, 0), &[0x47; 188 * 2]);
        assert_eq!(
            SignedPiece::verify(big.wire().clone(), &vk, &ih, 188),
            Err(PieceError::TooLong(376))
        );
        let odd = SignedPiece::sign(&key, &ih, header(1, 0), &[0x47; 100]);
        assert_eq!(
            SignedPiece::verify(odd.wire().clone(), &vk, &ih, 1 << 20),
            Err(PieceError::NotWholePackets(100))
        );
        let eos = SignedPiece::sign(&key, &ih, header(1, FLAG_END_OF_STREAM), &[0x47; 188]);
        assert_eq!(
            SignedPiece::verify(eos.wire().clone(), &vk, &ih, 1 << 20),
            Err(PieceError::EndWithPayload)
        );
    }
}
