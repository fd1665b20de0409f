//! Throughput figures reported in the README:
//! - `verify`: signed pieces one core checks per second (32 KiB pieces);
//! - `sign`: pieces the injector signs per second;
//! - `wire`: peer-wire decode of piece messages;
//! - `sim`: virtual seconds of a 20-receiver swarm simulated per wall second.
//!
//! The loopback fan-out rate of one seedbox is measured by `examples/fanout.rs`.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::SigningKey;
use nordlys::piece::{PieceHeader, SignedPiece};
use nordlys::sim::{NodeSpec, Sim, StreamSpec};
use nordlys::swarm::{Role, wire};
use nordlys::torrent::{DEFAULT_PIECE_LENGTH, InfoHash};

fn piece(key: &SigningKey, ih: &InfoHash) -> SignedPiece {
    let header = PieceHeader {
        seq: 1,
        epoch: 1,
        timestamp_us: 1,
        flags: 0,
        payload_len: 0,
    };
    SignedPiece::sign(key, ih, header, &vec![0x47; DEFAULT_PIECE_LENGTH as usize])
}

fn pieces(c: &mut Criterion) {
    let key = SigningKey::from_bytes(&[1; 32]);
    let ih = InfoHash([2; 20]);
    let p = piece(&key, &ih);
    let vk = key.verifying_key();
    let mut g = c.benchmark_group("piece");
    g.throughput(Throughput::Elements(1));
    g.bench_function("verify", |b| {
        b.iter(|| SignedPiece::verify(p.wire().clone(), &vk, &ih, DEFAULT_PIECE_LENGTH).unwrap())
    });
    let payload = vec![0x47; DEFAULT_PIECE_LENGTH as usize];
    g.bench_function("sign", |b| {
        b.iter(|| {
            let h = PieceHeader {
                seq: 1,
                epoch: 1,
                timestamp_us: 1,
                flags: 0,
                payload_len: 0,
            };
            SignedPiece::sign(&key, &ih, h, &payload)
        })
    });
    let mut frame = BytesMut::new();
    wire::encode(
        &wire::Message::Live(wire::LiveMessage::Piece(p.wire().clone())),
        1,
        &mut frame,
    );
    let frame: Bytes = frame.freeze();
    g.bench_function("wire_decode", |b| {
        b.iter(|| wire::decode(&frame, wire::max_message_len(DEFAULT_PIECE_LENGTH)).unwrap())
    });
    g.finish();
}

fn simulator(c: &mut Criterion) {
    let mut g = c.benchmark_group("sim");
    g.sample_size(10);
    g.throughput(Throughput::Elements(10)); // virtual seconds per iteration
    g.bench_function("20_receivers_10s", |b| {
        b.iter(|| {
            let stream = StreamSpec {
                piece_payload: 188 * 100,
                piece_interval: Duration::from_millis(100),
                keyframe_every: 5,
                pieces: 100,
                drop_seqs: vec![],
            };
            let mut nodes = vec![NodeSpec::new(Role::Injector), NodeSpec::new(Role::Seed)];
            for i in 0..20 {
                nodes.push(NodeSpec {
                    join_at: Duration::from_millis(1000 + i * 10),
                    ..NodeSpec::new(Role::Receiver)
                });
            }
            let mut sim = Sim::new(1, Duration::from_millis(5), stream, nodes);
            sim.run_for(Duration::from_secs(10));
        })
    });
    g.finish();
}

criterion_group!(benches, pieces, simulator);
criterion_main!(benches);
