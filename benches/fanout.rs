//! How fast one seedbox fans a stream out on loopback.
//!
//! In one process: an injector fed a synthetic stream at a set rate, feeding one trusted
//! seedbox (the injector's own upload is capped just above one copy), and eight receivers
//! that do not upload, so every copy they get comes from the seedbox. For each offered rate
//! it prints the seedbox's upload rate and the receivers' worst continuity. Everything shares
//! this machine's cores (receivers verify every piece), so the figure is for the whole box.
//!
//! Run: `cargo bench --bench fanout` (about a minute).

use std::time::{Duration, Instant};

use bytes::Bytes;
use nordlys::net::node::{self, InjectorInput, NodeOptions};
use nordlys::swarm::Role;
use nordlys::torrent::LiveTorrent;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

const RECEIVERS: usize = 8;
const RUN: Duration = Duration::from_secs(6);

/// The next `n` packets of an ffmpeg-made H.264/AAC file, looped (so the stream has
/// keyframes for receivers to hook in at).
fn ts_chunk(file: &[u8], n: usize, pos: &mut usize) -> Bytes {
    let mut out = Vec::with_capacity(188 * n);
    for _ in 0..n {
        if *pos + 188 > file.len() {
            *pos = 0;
        }
        out.extend_from_slice(&file[*pos..*pos + 188]);
        *pos += 188;
    }
    Bytes::from(out)
}

async fn start(
    role: Role,
    torrent: &LiveTorrent,
    limit: Option<u64>,
    trusted: Vec<std::net::SocketAddr>,
    peers: Vec<std::net::SocketAddr>,
    injector: Option<InjectorInput>,
    deliveries: Option<mpsc::Sender<nordlys::swarm::Delivery>>,
) -> (
    std::net::SocketAddr,
    node::NodeHandles,
    tokio::task::JoinHandle<anyhow::Result<node::NodeStatus>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_tx, rx) = mpsc::channel(1);
    let (ready_tx, ready_rx) = oneshot::channel();
    let opts = NodeOptions {
        role,
        torrent: torrent.clone(),
        listener,
        static_peers: peers,
        upload_limit_bytes: limit,
        latency: Duration::from_millis(1000),
        trusted,
        linger: Duration::from_millis(500),
        started: Instant::now(),
        max_peers: 50,
        upload_slots: 40,
        substreams: 0,
        peer_id: node::new_peer_id(),
    };
    let task = tokio::spawn(async move {
        let _keep = _tx;
        node::run(opts, injector, deliveries, rx, ready_tx).await
    });
    (addr, ready_rx.await.unwrap(), task)
}

async fn run(mbit: u64, file: &[u8]) -> (f64, f64) {
    let key = nordlys::keys::generate().unwrap();
    let bytes = LiveTorrent::create("fanout", &key.verifying_key(), 188 * 174, 10, &[]).unwrap();
    let torrent = LiveTorrent::parse(&bytes).unwrap();
    let rate = mbit * 1_000_000 / 8;

    let (seed_addr, seed_h, seed_task) =
        start(Role::Seed, &torrent, None, vec![], vec![], None, None).await;
    let (chunks_tx, chunks) = mpsc::channel(64);
    let injector = InjectorInput {
        key,
        chunks,
        flush_after: Duration::from_millis(50),
    };
    let (inj_addr, _inj_h, inj_task) = start(
        Role::Injector,
        &torrent,
        Some(rate * 13 / 10),
        vec![seed_addr],
        vec![seed_addr],
        Some(injector),
        None,
    )
    .await;
    let mut receivers = Vec::new();
    for _ in 0..RECEIVERS {
        let (tx, mut rx) = mpsc::channel(4096);
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let r = start(
            Role::Receiver,
            &torrent,
            Some(1),
            vec![],
            vec![seed_addr, inj_addr],
            None,
            Some(tx),
        )
        .await;
        receivers.push(r);
    }
    // Feed the stream at `rate` in 10 ms steps.
    let begin = Instant::now();
    let mut pos = 0usize;
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut seed_at_1s = None;
    while begin.elapsed() < RUN {
        tick.tick().await;
        let due = (begin.elapsed().as_secs_f64() * rate as f64) as u64;
        while sent + 188 * 64 <= due {
            chunks_tx.send(ts_chunk(file, 64, &mut pos)).await.unwrap();
            sent += 188 * 64;
        }
        if seed_at_1s.is_none() && begin.elapsed() >= Duration::from_secs(1) {
            seed_at_1s = Some((Instant::now(), status(&seed_h).await.swarm.bytes_up));
        }
    }
    let (t1, up1) = seed_at_1s.unwrap();
    let seed_st = status(&seed_h).await;
    let up2 = seed_st.swarm.bytes_up;
    if std::env::var_os("FANOUT_DEBUG").is_some() {
        let inj = status(&_inj_h).await;
        eprintln!(
            "injector emitted {} sent {} up {}; seed received {} down {} up {}; timeouts {}",
            inj.swarm.pieces_emitted,
            inj.swarm.bytes_up,
            inj.swarm.bytes_up,
            seed_st.swarm.pieces_received,
            seed_st.swarm.bytes_down,
            seed_st.swarm.bytes_up,
            seed_st.swarm.request_timeouts
        );
        for (_, h, _) in &receivers {
            let r = status(h).await;
            eprintln!(
                "  receiver {:?} received {} missed {} timeouts {} dup {}",
                r.swarm.state,
                r.swarm.pieces_received,
                r.swarm.pieces_missed,
                r.swarm.request_timeouts,
                r.swarm.duplicates
            );
        }
    }
    let seed_rate = (up2 - up1) as f64 / t1.elapsed().as_secs_f64();
    drop(chunks_tx);
    let mut worst = 1.0f64;
    for (_, h, _) in &receivers {
        worst = worst.min(status(h).await.swarm.continuity);
    }
    for (_, _, t) in receivers {
        t.abort();
    }
    inj_task.abort();
    seed_task.abort();
    (seed_rate * 8.0 / 1e6, worst)
}

async fn status(h: &node::NodeHandles) -> node::NodeStatus {
    let (tx, rx) = oneshot::channel();
    h.status_requests.send(tx).await.unwrap();
    rx.await.unwrap()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let path = nordlys::test_media::ts_file(nordlys::test_media::Spec::new("h264", 1280, 720, 10));
    let file = std::fs::read(path).unwrap();
    println!("stream Mbit/s | seedbox upload Mbit/s ({RECEIVERS} receivers) | worst continuity");
    let rates: Vec<u64> = std::env::var("FANOUT_RATES")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or(vec![5, 50, 100, 200, 300]);
    for mbit in rates {
        let (up, worst) = rt.block_on(run(mbit, &file));
        println!("{mbit:>13} | {up:>38.1} | {worst:.3}");
    }
}
