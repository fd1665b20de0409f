//! Test fixtures shared by the core's tests and its sub-states' unit tests: one signing key
//! and torrent, a test stream of signed pieces, and peers set up past their handshakes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ed25519_dalek::SigningKey;

use super::*;
use crate::piece::{FLAG_RANDOM_ACCESS, PieceHeader};

pub(crate) const PAYLOAD: usize = 188 * 4;
/// The test stream makes a piece every 40 ms.
pub(crate) const PIECE_US: u64 = 40_000;

pub(crate) fn key() -> SigningKey {
    SigningKey::from_bytes(&[9; 32])
}

pub(crate) fn info_hash() -> InfoHash {
    InfoHash([3; 20])
}

pub(crate) fn config(role: Role, n: u8) -> Config {
    let mut c = Config::new(role, info_hash(), key().verifying_key());
    c.max_payload = PAYLOAD as u32;
    c.peer_id = [b'a' + n; 20];
    c.listen_port = Some(6881);
    c.self_addrs = vec![addr(n, 6881)];
    c.rng_seed = n as u64;
    c
}

pub(crate) fn addr(host: u8, port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, host], port))
}

/// The injector timestamp of piece `seq` of the test stream.
pub(crate) fn timestamp(seq: u64) -> u64 {
    1_000_000 + seq * PIECE_US
}

/// The test stream has a keyframe every 10th piece.
fn flags(seq: u64) -> u8 {
    if seq.is_multiple_of(10) {
        FLAG_RANDOM_ACCESS
    } else {
        0
    }
}

/// Piece `seq` of the test stream signed with `key`.
pub(crate) fn piece(seq: u64, key: &SigningKey) -> SignedPiece {
    piece_flagged(seq, flags(seq), key)
}

/// A truthful HAVE entry for piece `seq` of the test stream.
pub(crate) fn have(seq: u64) -> HaveEntry {
    HaveEntry {
        seq,
        timestamp_us: timestamp(seq),
        flags: flags(seq),
    }
}

/// A store holding pieces `seqs` of the test stream.
pub(crate) fn store_of(seqs: impl IntoIterator<Item = u64>) -> Store {
    let mut store = Store::new(30_000_000, 1 << 30);
    for seq in seqs {
        store.insert(piece(seq, &key()));
    }
    store
}

/// A receiver's playout with `latency` of buffer, hooked in on keyframe `hook` of the test
/// stream after the gather time, and the instant it hooked in (`start` + `HOOK_GATHER`).
pub(crate) fn hooked(latency: Duration, hook: u64, start: Instant) -> (Playout, Instant) {
    let edge = hook + latency.as_micros() as u64 / PIECE_US;
    let mut known = Known::default();
    for seq in hook..=edge {
        known.learn(&have(seq), 1, start);
    }
    let mut playout = Playout::new(latency);
    assert_eq!(playout.try_hook(start, &known, edge), None, "gathers first");
    let at = start + playout::HOOK_GATHER;
    assert_eq!(playout.try_hook(at, &known, edge), Some(hook));
    (playout, at)
}

/// As [`hooked`], and pieces `hook..=upto` output at the instant returned: the player clock
/// plays `hook` then. `upto` must cover the prebuffer.
pub(crate) fn playing(
    latency: Duration,
    hook: u64,
    upto: u64,
    start: Instant,
) -> (Playout, Store, Instant) {
    let (mut playout, at) = hooked(latency, hook, start);
    let store = store_of(hook..=upto);
    let out = playout.advance(at, &store);
    assert_eq!(out.len() as u64, upto - hook + 1, "{out:?}");
    (playout, store, at)
}

/// A peer past both handshakes, each side unchoking the other.
pub(crate) fn active(host: u8, now: Instant) -> Peer {
    let mut p = Peer::new(addr(host, 6881), true, now);
    p.phase = Phase::Active;
    p.live_id = wire::OUR_LIVE_ID;
    p.peer_choking = false;
    p.am_choking = false;
    p
}

/// Piece `seq` of the test stream with the given flags (an end-of-stream piece is empty).
pub(crate) fn piece_flagged(seq: u64, flags: u8, key: &SigningKey) -> SignedPiece {
    let header = PieceHeader {
        seq,
        epoch: 1,
        timestamp_us: timestamp(seq),
        flags,
        payload_len: 0,
    };
    let payload: &[u8] = if header.end_of_stream() {
        &[]
    } else {
        &[0x47; PAYLOAD]
    };
    SignedPiece::sign(key, &info_hash(), header, payload)
}

/// An [`active`] peer connected to `s`.
pub(crate) fn active_peer(s: &mut Swarm, host: u8) -> PeerId {
    let p = active(host, s.now);
    s.peers.insert(p)
}

/// Peer `id` tells `s` it holds `seqs` of the test stream.
pub(crate) fn peer_claims(s: &mut Swarm, id: PeerId, seqs: impl IntoIterator<Item = u64> + Clone) {
    s.peers.learn_haves(id, 0, seqs.clone().into_iter());
    for seq in seqs {
        s.known.learn(&have(seq), id, s.now);
    }
}

/// Decodes the whole frames at the front of `buf`, leaving a partial one there.
pub(crate) fn decode_frames(buf: &mut BytesMut) -> Vec<Message> {
    let mut messages = Vec::new();
    while let Ok(n) = wire::frame_len(buf, 1 << 20) {
        let frame = buf.split_to(n).freeze();
        messages.push(wire::decode_frame(&frame).unwrap());
    }
    messages
}

/// The live messages queued for peer `id` since the last call (the outbox is emptied).
pub(crate) fn sent_live(s: &mut Swarm, id: PeerId) -> Vec<LiveMessage> {
    let p = s.peers.get_mut(id).unwrap();
    let mut buf = BytesMut::new();
    for bytes in p.outbox.take() {
        buf.extend_from_slice(&bytes);
    }
    (decode_frames(&mut buf).into_iter())
        .filter_map(|m| match m {
            Message::Live(live) => Some(live),
            _ => None,
        })
        .collect()
}
