//! Adversaries over real TCP: a swarm of real `nordlys` processes (1 injector, 2 seedboxes, 8
//! receivers joining 3 s in at `--latency 1000`, found through opentracker) with scripted
//! raw-wire peers among them that lie in each of the ways a peer can, alone and all at once
//! (about 30 % of the swarm). Every honest receiver must end with a byte-exact suffix of the
//! input, continuity >= 0.995 and exit 0; forgers and replayers must be banned.
//!
//! The adversaries announce themselves to the tracker (so every honest node dials them) and
//! are named to the receivers with `--peer`; each plays its part on every connection.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::opentracker::OpenTracker;
use common::raw::{greet, read_msg};
use common::{final_status, nordlys, wait_status, wait_status_port};
use ed25519_dalek::SigningKey;
use nordlys::piece::{FLAG_RANDOM_ACCESS, PieceHeader, SignedPiece};
use nordlys::swarm::wire::{self, HaveEntry, LiveMessage, Message, Role};
use nordlys::test_media::{Spec, ts_file};
use nordlys::torrent::{InfoHash, LiveTorrent};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;

const RECEIVERS: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Maximum-size HAVEs of pieces a million numbers past the newest.
    FarFuture,
    /// Claims every piece it heard of as a keyframe, and the 30 after the newest before they
    /// are made; never answers a request.
    FutureClaims,
    /// Answers requests with pieces signed by another key.
    Forger,
    /// Answers requests with pieces signed by the event's key for another swarm.
    Replayer,
}

/// What the adversaries did: pieces they sent that honest peers must reject.
#[derive(Default)]
struct Tally {
    bad_pieces_sent: AtomicU64,
}

fn encode(msg: &Message) -> BytesMut {
    let mut out = BytesMut::new();
    wire::encode(msg, wire::OUR_LIVE_ID, &mut out);
    out
}

fn have(entries: Vec<HaveEntry>) -> Message {
    Message::Live(LiveMessage::Have {
        window_start: 0,
        entries,
    })
}

/// One connection of an adversary, from the handshakes to the end. `news` carries the
/// pieces its other connections heard of, which a forger or replayer claims at once, as they
/// are (so that it is asked for them before their honest holders are).
async fn play(
    mut s: TcpStream,
    kind: Kind,
    id: u8,
    ih: InfoHash,
    key: SigningKey,
    tally: Arc<Tally>,
    news: broadcast::Sender<Vec<HaveEntry>>,
) {
    let mut heard_elsewhere = news.subscribe();
    let Some(mut buf) = greet(&mut s, &ih, id, Role::Receiver).await else {
        return;
    };
    // Pieces the honest peer told us of: seq -> timestamp.
    let mut heard: BTreeMap<u64, u64> = BTreeMap::new();
    let mut told_far = false;
    loop {
        let msg = tokio::select! {
            msg = read_msg(&mut s, &mut buf) => match msg {
                Some(msg) => msg,
                None => break,
            },
            news = heard_elsewhere.recv() => match news {
                Ok(entries) if matches!(kind, Kind::Forger | Kind::Replayer) => {
                    heard.extend(entries.iter().map(|e| (e.seq, e.timestamp_us)));
                    if s.write_all(&encode(&have(entries))).await.is_err() {
                        break;
                    }
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => break,
                _ => continue,
            },
        };
        let reply = match msg {
            Message::Live(LiveMessage::Have { entries, .. }) => {
                let _ = news.send(entries.clone());
                heard.extend(entries.iter().map(|e| (e.seq, e.timestamp_us)));
                let Some((&newest, &ts)) = heard.last_key_value() else {
                    continue;
                };
                let claim = |seq, timestamp_us| HaveEntry {
                    seq,
                    timestamp_us,
                    flags: FLAG_RANDOM_ACCESS,
                };
                match kind {
                    Kind::FarFuture if !told_far => {
                        told_far = true;
                        let far = newest + 1_000_000;
                        let n = wire::MAX_HAVE_ENTRIES as u64;
                        Some(have((far..far + n).map(|seq| claim(seq, ts)).collect()))
                    }
                    Kind::FutureClaims => {
                        let mut lies: Vec<HaveEntry> =
                            heard.iter().map(|(&seq, &t)| claim(seq, t)).collect();
                        lies.extend((newest + 1..=newest + 30).map(|seq| claim(seq, ts)));
                        Some(have(lies))
                    }
                    // Told as they are: a false claim would get them banned before their
                    // pieces are asked for, and these kinds are here to send bad pieces.
                    Kind::Forger | Kind::Replayer => Some(have(entries)),
                    Kind::FarFuture => None,
                }
            }
            Message::Live(LiveMessage::Request { seq })
                if matches!(kind, Kind::Forger | Kind::Replayer) =>
            {
                let header = PieceHeader {
                    seq,
                    epoch: heard.keys().next().copied().unwrap_or(0),
                    timestamp_us: heard.get(&seq).copied().unwrap_or(0),
                    flags: 0,
                    payload_len: 0,
                };
                let (signer, swarm) = match kind {
                    Kind::Forger => (SigningKey::from_bytes(&[0x66; 32]), ih),
                    _ => (key.clone(), InfoHash([0x77; 20])),
                };
                let piece = SignedPiece::sign(&signer, &swarm, header, &[0x47; 188 * 4]);
                tally.bad_pieces_sent.fetch_add(1, Ordering::Relaxed);
                Some(Message::Live(LiveMessage::Piece(Bytes::clone(
                    piece.wire(),
                ))))
            }
            _ => None,
        };
        if let Some(reply) = reply
            && s.write_all(&encode(&reply)).await.is_err()
        {
            break;
        }
    }
}

/// An adversary: listens, announces itself to the tracker, plays `kind` on every connection.
async fn adversary(
    kind: Kind,
    id: u8,
    ih: InfoHash,
    key: SigningKey,
    tracker: &OpenTracker,
    tally: Arc<Tally>,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut q = String::from("/announce?info_hash=");
    nordlys::net::tracker::percent_encode_into(&ih.0, &mut q);
    q.push_str(&format!(
        "&peer_id={}&port={}&uploaded=0&downloaded=0&left=1&compact=1&event=started",
        String::from_utf8(vec![b'a' + id % 26; 20]).unwrap(),
        addr.port()
    ));
    tracker.get(&q).expect("announce the adversary");
    let (news, _) = broadcast::channel(4096);
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let (key, tally, news) = (key.clone(), tally.clone(), news.clone());
            tokio::spawn(play(s, kind, id, ih, key, tally, news));
        }
    });
    addr
}

fn spawn(args: &[String], log: &Path) -> Child {
    command(args, log)
        .stdout(Stdio::null())
        .spawn()
        .expect("start nordlys")
}

/// As [`spawn`], keeping what it prints (the status address) in `stdout`.
fn spawn_with_stdout(args: &[String], log: &Path, stdout: &Path) -> Child {
    let out = std::fs::File::create(stdout).unwrap();
    command(args, log)
        .stdout(out)
        .spawn()
        .expect("start nordlys")
}

fn command(args: &[String], log: &Path) -> Command {
    let mut c = Command::new(nordlys());
    c.args(args).stderr(std::fs::File::create(log).unwrap());
    c
}

/// One run: the honest swarm with `kinds` among it. Checks every honest receiver.
async fn run(kinds: &[Kind], input: &Path, kbit: u64) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key_path, torrent_probe) = common::make_event(d, None);
    let ih = LiveTorrent::read(&torrent_probe).unwrap().info_hash;
    let tracker = OpenTracker::start(&[ih.hex()]);
    // The torrent again, now naming the tracker (which had to know the infohash first).
    let torrent = common::create_torrent(
        &key_path,
        Some(&tracker.announce_url()),
        &d.join("tracked.torrent"),
    );
    assert_eq!(LiveTorrent::read(&torrent).unwrap().info_hash, ih);
    let key = nordlys::keys::read(&key_path).unwrap();

    let tally = Arc::new(Tally::default());
    let mut adversaries = Vec::new();
    for (i, &kind) in kinds.iter().enumerate() {
        let addr = adversary(
            kind,
            0xa0 + i as u8,
            ih,
            key.clone(),
            &tracker,
            tally.clone(),
        )
        .await;
        adversaries.push(addr);
    }

    let t = torrent.display().to_string();
    let base = |role: &str| -> Vec<String> {
        [role, "--torrent", &t, "--listen", "127.0.0.1:0"]
            .map(String::from)
            .to_vec()
    };
    let mut inj = base("inject");
    inj.extend(["--key".into(), key_path.display().to_string()]);
    inj.extend(["--input".into(), input.display().to_string()]);
    inj.extend(["--upload-limit".into(), (kbit * 3).to_string()]);
    inj.extend(["--linger".into(), "6".into()]);
    inj.extend(["--status-addr".into(), "127.0.0.1:0".into()]);
    let inj_out = d.join("injector.out");
    let mut injector = spawn_with_stdout(&inj, &d.join("injector.log"), &inj_out);
    let mut seeds: Vec<Child> = (0..2)
        .map(|i| spawn(&base("seed"), &d.join(format!("seed{i}.log"))))
        .collect();
    // The receivers join once 3 s of the 10 s input went in, as in the scenario.
    let input_len = std::fs::metadata(input).unwrap().len();
    let port = wait_status_port(&mut injector, &inj_out);
    tokio::task::spawn_blocking(move || {
        wait_status(port, Duration::from_secs(30), "3 s of stream", |s| {
            s["bytes_in"].as_u64().unwrap_or(0) * 10 >= input_len * 3
        })
    })
    .await
    .unwrap();
    let receivers: Vec<(Child, PathBuf, PathBuf)> = (0..RECEIVERS)
        .map(|i| {
            let (out, log) = (d.join(format!("out{i}.ts")), d.join(format!("recv{i}.log")));
            let mut a = base("receive");
            a.extend(["--output".into(), out.display().to_string()]);
            a.extend([
                "--latency".into(),
                "1000".into(),
                "--linger".into(),
                "2".into(),
            ]);
            a.extend(["--upload-limit".into(), (kbit * 2).to_string()]);
            for addr in &adversaries {
                a.extend(["--peer".into(), addr.to_string()]);
            }
            (spawn(&a, &log), out, log)
        })
        .collect();

    let input_bytes = std::fs::read(input).unwrap();
    let (mut banned, mut rejected_total) = (0, 0);
    for (i, (child, out, log)) in receivers.into_iter().enumerate() {
        let mut child = child;
        let status = tokio::task::spawn_blocking(move || {
            // Bounded: a stream of a few seconds ends well within this.
            for _ in 0..600 {
                if let Some(st) = child.try_wait().unwrap() {
                    return Some(st);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            None
        })
        .await
        .unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        let tail: String = text.lines().rev().take(15).collect::<Vec<_>>().join("\n");
        assert!(
            status.is_some_and(|s| s.success()),
            "{kinds:?}: receiver {i} did not exit 0 ({status:?}): {tail}"
        );
        let fin = final_status(&text).expect("final status");
        // What the receiver logged at warning level or above: its bans and hook-ins again.
        let warnings: String = (text.lines())
            .filter(|l| !l.contains(" INFO ") || l.contains("hooked in"))
            .take(40)
            .collect::<Vec<_>>()
            .join("\n");
        let continuity = fin["continuity"].as_f64().unwrap();
        assert!(
            continuity >= 0.995,
            "{kinds:?}: receiver {i}: {fin}\n{warnings}"
        );
        // Each bad piece cost its sender the connection and its address.
        let (rejected, bans) = (
            fin["pieces_rejected"].as_u64(),
            fin["peers_banned"].as_u64(),
        );
        assert!(bans >= rejected, "{kinds:?}: receiver {i}: {fin}");
        banned += bans.unwrap();
        rejected_total += rejected.unwrap();
        let output = std::fs::read(&out).unwrap();
        assert!(
            output.len() > input_bytes.len() / 3 && input_bytes.ends_with(&output),
            "{kinds:?}: receiver {i}: {} bytes out of {}, not a suffix of the input: {fin}\n\
             {warnings}",
            output.len(),
            input_bytes.len()
        );
    }
    for child in seeds.iter_mut().chain([&mut injector]) {
        let _ = tokio::task::block_in_place(|| child.wait());
    }
    let sent = tally.bad_pieces_sent.load(Ordering::Relaxed);
    eprintln!(
        "{kinds:?}: {sent} bad pieces sent, {rejected_total} rejected and {banned} bans by \
         receivers"
    );
    if kinds
        .iter()
        .any(|k| matches!(k, Kind::Forger | Kind::Replayer))
    {
        assert!(rejected_total > 0, "{kinds:?}: no receiver got a bad piece");
    }
    if kinds.contains(&Kind::FarFuture) {
        assert!(banned > 0, "{kinds:?}: the liar was never banned");
    }
}

fn clip() -> (PathBuf, u64) {
    let input = ts_file(Spec::new("h264", 640, 360, 10));
    let bytes = std::fs::metadata(&input).unwrap().len();
    (input, bytes * 8 / 10 / 1000 + 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liars_forgers_and_replayers_each_alone_leave_every_honest_output_whole() {
    let (input, kbit) = clip();
    for kind in [
        Kind::FarFuture,
        Kind::FutureClaims,
        Kind::Forger,
        Kind::Replayer,
    ] {
        run(&[kind], &input, kbit).await;
    }
}

/// All kinds at once: 5 of 16 peers (31 %). Once seen with a receiver at continuity 0.977
/// (one piece of 43 late, two stallers in turn each holding a request for a quarter of the
/// latency); on 2026-12-07 it passed 16 runs of 16, 10 of them beside a busy loop. CI then
/// saw a receiver start 6.1 s late (the peers that claim unmade pieces were asked first and
/// never answered): fixed by banning a claim a verified piece contradicts (`FalseClaim`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_kinds_together_at_30_percent_leave_every_honest_output_whole() {
    let (input, kbit) = clip();
    use Kind::*;
    run(
        &[FarFuture, FutureClaims, Forger, Replayer, FutureClaims],
        &input,
        kbit,
    )
    .await;
}
