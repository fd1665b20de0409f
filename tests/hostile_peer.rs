//! A hostile peer over real TCP: it relays the injector's piece announcements to a receiver
//! and answers every request with a well-framed piece signed by the wrong key. The receiver
//! must put none of it into its output, and ban the peer.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::raw::{greet, read_msg};
use common::{final_status, nordlys};
use ed25519_dalek::SigningKey;
use nordlys::piece::{PieceHeader, SignedPiece};
use nordlys::swarm::wire::{self, LiveMessage, Message, Role};
use nordlys::test_media::{Spec, ts_file};
use nordlys::torrent::{InfoHash, LiveTorrent};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Learns piece announcements from the injector and hands them on.
async fn listen_to_injector(
    addr: std::net::SocketAddr,
    ih: InfoHash,
    haves: mpsc::Sender<Message>,
) {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return;
    };
    let Some(mut buf) = greet(&mut s, &ih, 0xee, Role::Seed).await else {
        return;
    };
    while let Some(msg) = read_msg(&mut s, &mut buf).await {
        if matches!(msg, Message::Live(LiveMessage::Have { .. })) && haves.send(msg).await.is_err()
        {
            return;
        }
    }
}

/// Serves the receiver: every HAVE relayed, every request answered with a forged piece.
async fn serve_receiver(
    listener: TcpListener,
    ih: InfoHash,
    mut haves: mpsc::Receiver<Message>,
) -> u32 {
    let forger = SigningKey::from_bytes(&[0x66; 32]);
    let (mut s, _) = listener.accept().await.unwrap();
    let Some(mut buf) = greet(&mut s, &ih, 0xdd, Role::Seed).await else {
        return 0;
    };
    let mut forged = 0;
    loop {
        tokio::select! {
            have = haves.recv() => {
                let Some(have) = have else { return forged };
                let mut out = BytesMut::new();
                wire::encode(&have, wire::OUR_LIVE_ID, &mut out);
                if s.write_all(&out).await.is_err() { return forged; }
            }
            msg = read_msg(&mut s, &mut buf) => match msg {
                Some(Message::Live(LiveMessage::Request { seq })) => {
                    let header = PieceHeader { seq, epoch: 0, timestamp_us: 0, flags: 0, payload_len: 0 };
                    let piece = SignedPiece::sign(&forger, &ih, header, &[0x47; 188 * 4]);
                    let mut out = BytesMut::new();
                    wire::encode(&Message::Live(LiveMessage::Piece(Bytes::clone(piece.wire()))), wire::OUR_LIVE_ID, &mut out);
                    forged += 1;
                    if s.write_all(&out).await.is_err() { return forged; }
                }
                Some(_) => {}
                None => return forged, // closed: banned
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_piece_is_not_output_and_its_sender_is_banned() {
    let input = ts_file(Spec::new("h264", 640, 360, 8));
    let dir = tempfile::tempdir().unwrap();
    let (key, torrent) = common::make_event(dir.path(), None);
    let ih = LiveTorrent::read(&torrent).unwrap().info_hash;
    let inj_out = dir.path().join("inj.out");
    let mut injector = Command::new(nordlys())
        .args([
            "inject",
            "--torrent",
            torrent.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ])
        .args(["--input", input.to_str().unwrap(), "--linger", "3"])
        .args(["--listen", "127.0.0.1:0"])
        .stdout(std::fs::File::create(&inj_out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The port the kernel picked, printed once the injector listens.
    let inj_addr = common::wait_printed_addr(
        &mut injector,
        &inj_out,
        "injecting on ",
        "",
        Duration::from_secs(10),
    );
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(listen_to_injector(inj_addr, ih, tx));
    let hostile = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hostile_addr = hostile.local_addr().unwrap();
    let server = tokio::spawn(serve_receiver(hostile, ih, rx));

    let out = dir.path().join("out.ts");
    let log = dir.path().join("recv.log");
    let mut receiver = Command::new(nordlys())
        .args([
            "receive",
            "--torrent",
            torrent.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ])
        .args([
            "--latency",
            "1000",
            "--listen",
            "127.0.0.1:0",
            "--linger",
            "1",
        ])
        .args([
            "--peer",
            &hostile_addr.to_string(),
            "--peer",
            &inj_addr.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || receiver.wait().unwrap())
        .await
        .unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "receiver failed: {text}");
    let forged = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap();
    let fin = final_status(&text).expect("final status");
    assert!(forged >= 1, "the receiver never asked the hostile peer");
    assert!(fin["pieces_rejected"].as_u64() >= Some(1), "{fin}");
    assert_eq!(fin["peers_banned"], 1, "{fin}");
    assert!(text.contains("banning peer"), "the ban is logged: {text}");
    let output = std::fs::read(&out).unwrap();
    let input_bytes = std::fs::read(&input).unwrap();
    assert!(
        !output.is_empty() && input_bytes.ends_with(&output),
        "forged bytes reached the output"
    );
    let _ = injector.wait();
}
