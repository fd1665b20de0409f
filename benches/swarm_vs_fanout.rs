//! The real swarm against plain fan-out, on loopback, under the same origin cap.
//!
//! For each audience size N, three systems carry the same input (the 20 s 720p H.264/AAC
//! MPEG-TS file ffmpeg makes for `tests/live_swarm.rs`, about 2.8 Mbit/s), each paced in real
//! time from its PCR, and N receivers join 3 s into the stream:
//!
//! - **nordlys**: separate `nordlys` processes found through Debian's opentracker: 1 injector
//!   with its upload capped at 3x the stream's bitrate, 2 seedboxes, N receivers writing the
//!   stream to files (`--latency 2000`, upload capped at 2x, as in `tests/live_swarm.rs`).
//!   Origin upload: the injector's `bytes_up` (piece payload) from its final status.
//! - **HTTP**: an origin written here (tokio) streams the file close-delimited over HTTP/1.1
//!   to every client that connects; all clients share one token bucket of 3x the bitrate
//!   (taken in turn, first come first served, so each of N clients gets 3/N of the bitrate
//!   when N > 3). Each 10 ms of stream is one chunk, queued for every client; a chunk still
//!   unsent 2 s after it was released is dropped for that client (a live server does not
//!   keep an unbounded backlog). Second variant: the same server admitting only as many
//!   clients as the cap can carry (3; the others get 503). Clients are in-process tokio
//!   tasks. Origin upload: the body bytes written.
//! - **SRT**: GStreamer's `srtsink` in listener mode (in this process, so its per-caller
//!   statistics can be read) after `filesrc ! tsparse set-timestamps=true` with `sync=true`
//!   (paced by the PCR), and N `gst-launch-1.0 srtsrc ! filesink` processes. GStreamer has no
//!   cap shared by all callers: the capped run sets libsrt's per-connection `maxbw` to 3x/N
//!   of the bitrate (so the total would be 3x; libsrt lets a caller have about a quarter
//!   more); the uncapped run shows what serving everyone costs.
//!   SRT latency 2000 ms, as the receivers' `--latency`. The listener keeps its callers
//!   4 s after the end of the input (the data still in flight). Origin upload: the sum over
//!   callers of libsrt's `bytes-sent` (payload, retransmissions included).
//!
//! Per receiver: **packet share**, the share of the input's 188-byte TS packets from the
//! first one the receiver got to the end of the input that are in its output, in order
//! (aligned by content; the same for all three systems); **byte-exact**, the output is
//! exactly the input from that first packet to the end. A nordlys receiver's continuity is
//! the lower of its packet share and its own `continuity` (final status: pieces on time over
//! pieces due, so a late piece counts against it); HTTP and SRT receivers' is the packet
//! share. **First byte**: nordlys `startup_ms` (process start to the first byte out); HTTP
//! from connecting to the first body byte; SRT from starting `gst-launch-1.0` to the first
//! byte in its file (polled every 50 ms; SRT holds data back by its latency).
//!
//! Run: `cargo bench --bench swarm_vs_fanout -- --receivers 10,25,50` (about 2 minutes per
//! audience size). Options: `--systems nordlys,http,srt` (a subset), `--chart PATH` (default
//! docs/figures/real-swarm-vs-fanout.svg; `-` for none), `--keep` (keep the outputs under
//! target/swarm-vs-fanout/). Needs opentracker, ffmpeg and GStreamer's srt plugin
//! (`scripts/setup`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::opentracker::OpenTracker;
use common::{final_status, media, nordlys, wait_status, wait_status_port};
use gstreamer as gst;
use gstreamer::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const TS: usize = 188;
/// Receivers join this far into the stream.
const JOIN_AT: f64 = 3.0;
/// The origin's upload cap and a receiver's, in copies of the stream's bitrate.
const ORIGIN_CAP: u64 = 3;
const RECEIVER_CAP: u64 = 2;
const SEEDS: usize = 2;
/// `--latency` of nordlys receivers and SRT's latency.
const LATENCY_MS: u64 = 2000;
/// The HTTP origin drops a chunk for a client that it could not send within this time.
const HTTP_MAX_BEHIND: Duration = Duration::from_secs(2);
/// The HTTP origin's pacing step (one chunk).
const HTTP_TICK: Duration = Duration::from_millis(10);
/// What counts as served.
const GOOD: f64 = 0.999;

/// The input, its packets' release times and an index of its packets by content.
struct Input {
    path: PathBuf,
    data: Bytes,
    /// Release time of each packet, seconds after the first PCR (interpolated between PCRs).
    times: Vec<f64>,
    duration: f64,
    /// The stream's bitrate, kbit/s, rounded up.
    kbit: u64,
    index: HashMap<u64, Vec<u32>>,
}

impl Input {
    fn load(path: PathBuf) -> Input {
        let data = Bytes::from(std::fs::read(&path).expect("read the input"));
        assert!(
            data.len() % TS == 0 && data.chunks(TS).all(|p| p[0] == 0x47),
            "the input is not whole 188-byte TS packets"
        );
        let times = pcr_times(&data);
        let duration = *times.last().unwrap();
        let kbit = (data.len() as f64 * 8.0 / duration / 1000.0).ceil() as u64;
        let mut index: HashMap<u64, Vec<u32>> = HashMap::new();
        for (i, p) in data.chunks(TS).enumerate() {
            index.entry(hash(p)).or_default().push(i as u32);
        }
        Input {
            path,
            data,
            times,
            duration,
            kbit,
            index,
        }
    }

    fn packets(&self) -> usize {
        self.data.len() / TS
    }

    fn packet(&self, i: usize) -> &[u8] {
        &self.data[i * TS..(i + 1) * TS]
    }

    fn bytes_per_sec(&self) -> f64 {
        self.kbit as f64 * 1000.0 / 8.0
    }
}

fn hash(p: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    p.hash(&mut h);
    h.finish()
}

/// Each packet's time from the PCRs of the first PID that carries one, interpolated by
/// position between PCRs, seconds after the first PCR.
fn pcr_times(data: &[u8]) -> Vec<f64> {
    let pcr = |p: &[u8]| -> Option<(u16, f64)> {
        let pid = u16::from(p[1] & 0x1f) << 8 | u16::from(p[2]);
        let has_af = p[3] & 0x20 != 0;
        if !has_af || p[4] < 7 || p[5] & 0x10 == 0 {
            return None;
        }
        let base = u64::from(p[6]) << 25
            | u64::from(p[7]) << 17
            | u64::from(p[8]) << 9
            | u64::from(p[9]) << 1
            | u64::from(p[10]) >> 7;
        let ext = u64::from(p[10] & 1) << 8 | u64::from(p[11]);
        Some((pid, (base * 300 + ext) as f64 / 27e6))
    };
    let mut marks: Vec<(usize, f64)> = vec![];
    let mut pcr_pid = None;
    for (i, p) in data.chunks(TS).enumerate() {
        if let Some((pid, t)) = pcr(p)
            && *pcr_pid.get_or_insert(pid) == pid
        {
            marks.push((i, t));
        }
    }
    assert!(marks.len() >= 2, "the input has too few PCRs to be paced");
    let t0 = marks[0].1;
    let n = data.len() / TS;
    let mut times = vec![0.0; n];
    for w in marks.windows(2) {
        let ((ia, ta), (ib, tb)) = (w[0], w[1]);
        for (i, t) in times.iter_mut().enumerate().take(ib).skip(ia) {
            *t = ta - t0 + (i - ia) as f64 / (ib - ia) as f64 * (tb - ta);
        }
    }
    let (il, tl) = *marks.last().unwrap();
    for t in &mut times[il..] {
        *t = tl - t0;
    }
    times
}

/// How a receiver's output lines up with the input.
#[derive(Clone, Copy, Debug, Default)]
struct Alignment {
    /// The first input packet the output holds.
    first: Option<usize>,
    /// Input packets from `first` on found in the output, in order.
    matched: usize,
    /// Input packets from `first` to the end.
    expected: usize,
    /// Output bytes that are no input packet in its place.
    junk: usize,
}

impl Alignment {
    fn share(&self) -> f64 {
        if self.expected == 0 {
            0.0
        } else {
            self.matched as f64 / self.expected as f64
        }
    }

    /// The output is the input from its first packet to the end, byte for byte.
    fn exact(&self) -> bool {
        self.first.is_some() && self.junk == 0 && self.matched == self.expected
    }
}

/// Lines `out` up with the input, packet by packet: a packet that is not the next one
/// expected is looked up by content (the first later match followed by the same next 8
/// packets as in the input, so that repeated tables do not mislead), skipping what is
/// missing; bytes matching no packet are junk, and the search resumes a byte later.
fn align(input: &Input, out: &[u8]) -> Alignment {
    const RUN: usize = 8;
    let m = input.packets();
    let mut a = Alignment::default();
    let (mut o, mut j) = (0usize, 0usize);
    while o + TS <= out.len() {
        let p = &out[o..o + TS];
        if a.first.is_some() && j < m && p == input.packet(j) {
            a.matched += 1;
            (o, j) = (o + TS, j + 1);
            continue;
        }
        let runs_on = |k: usize| {
            (1..=RUN).all(|r| {
                let (oo, kk) = (o + r * TS, k + r);
                oo + TS > out.len() || (kk < m && out[oo..oo + TS] == *input.packet(kk))
            })
        };
        let candidates: Vec<usize> = (input.index.get(&hash(p)).into_iter().flatten())
            .map(|&k| k as usize)
            .filter(|&k| k >= j && input.packet(k) == p)
            .collect();
        let found =
            (candidates.iter().copied().find(|&k| runs_on(k))).or(candidates.first().copied());
        match found {
            Some(k) => {
                a.first.get_or_insert(k);
                a.matched += 1;
                (o, j) = (o + TS, k + 1);
            }
            None => {
                a.junk += 1;
                o += 1;
            }
        }
    }
    a.junk += out.len() - o;
    a.expected = a.first.map_or(0, |f| m - f);
    a
}

/// One receiver's figures.
#[derive(Clone, Debug)]
struct Receiver {
    /// What counts: for nordlys the lower of its own continuity and the packet share.
    continuity: f64,
    exact: bool,
    first_byte_ms: Option<f64>,
}

struct Run {
    system: &'static str,
    receivers: Vec<Receiver>,
    /// Origin upload, bytes of stream payload.
    origin_bytes: u64,
    notes: Vec<String>,
}

impl Run {
    fn served(&self) -> usize {
        (self.receivers.iter())
            .filter(|r| r.continuity >= GOOD)
            .count()
    }

    fn copies(&self, input: &Input) -> f64 {
        self.origin_bytes as f64 / input.data.len() as f64
    }

    fn per_copy(&self, input: &Input) -> f64 {
        let c = self.copies(input);
        if c > 0.0 {
            self.served() as f64 / c
        } else {
            0.0
        }
    }

    fn row(&self, input: &Input) -> String {
        let n = self.receivers.len();
        let exact = self.receivers.iter().filter(|r| r.exact).count();
        let worst = (self.receivers.iter())
            .map(|r| r.continuity)
            .fold(1.0, f64::min);
        let mean = self.receivers.iter().map(|r| r.continuity).sum::<f64>() / n.max(1) as f64;
        let mut fb: Vec<f64> = self
            .receivers
            .iter()
            .filter_map(|r| r.first_byte_ms)
            .collect();
        fb.sort_by(f64::total_cmp);
        let fb = match (fb.get(fb.len() / 2), fb.last()) {
            (Some(m), Some(w)) => format!("{:.2} / {:.2} s", m / 1000.0, w / 1000.0),
            _ => "-".to_string(),
        };
        format!(
            "| {} | {} | {} of {n} | {exact} of {n} | {worst:.3} | {mean:.3} | {:.2} | {:.2} | {fb} |",
            self.system,
            n,
            self.served(),
            self.copies(input),
            self.per_copy(input),
        )
    }
}

const HEADER: &str = "| system | receivers | at continuity >= 0.999 | byte-exact | worst continuity | mean continuity | origin upload, copies | served per copy | first byte, median / worst |\n|---|---|---|---|---|---|---|---|---|";

// ---------------------------------------------------------------------------------------
// nordlys

struct Node {
    child: Child,
    stderr: PathBuf,
    stdout: PathBuf,
}

fn spawn(args: &[String], dir: &Path, name: &str) -> Node {
    let stderr = dir.join(format!("{name}.log"));
    let stdout = dir.join(format!("{name}.out"));
    let child = Command::new(nordlys())
        .args(args)
        .args(["--status-addr", "127.0.0.1:0"])
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("start nordlys");
    Node {
        child,
        stderr,
        stdout,
    }
}

/// Waits for `child` until `deadline`, then kills it (it is ours); whether it exited 0.
fn wait_or_kill(child: &mut Child, deadline: Instant) -> bool {
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.success();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn run_cli(args: &[&str]) -> String {
    let out = Command::new(nordlys()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "nordlys {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn run_nordlys(dir: &Path, input: &Input, n: usize, keep: bool) -> Run {
    let key = dir.join("event.key");
    let torrent = dir.join("event.torrent");
    let (k, t) = (key.to_str().unwrap(), torrent.to_str().unwrap());
    run_cli(&["keygen", "--out", k]);
    let created = run_cli(&["create", "--key", k, "--name", "bench", "--out", t]);
    let infohash = (created.lines().next())
        .and_then(|l| l.strip_prefix("infohash "))
        .expect("create prints the infohash")
        .to_string();
    let tracker = OpenTracker::start(std::slice::from_ref(&infohash));
    let url = tracker.announce_url();
    run_cli(&[
        "create",
        "--key",
        k,
        "--name",
        "bench",
        "--tracker",
        &url,
        "--force",
        "--out",
        t,
    ]);

    let base = |role: &str| -> Vec<String> {
        [role, "--torrent", t, "--listen", "127.0.0.1:0"]
            .map(String::from)
            .to_vec()
    };
    let mut inj_args = base("inject");
    inj_args.extend([
        "--key".into(),
        k.into(),
        "--input".into(),
        input.path.display().to_string(),
        "--upload-limit".into(),
        (input.kbit * ORIGIN_CAP).to_string(),
        "--linger".into(),
        "8".into(),
    ]);
    let mut injector = spawn(&inj_args, dir, "injector");
    let mut seeds: Vec<Node> = (0..SEEDS)
        .map(|i| spawn(&base("seed"), dir, &format!("seed{i}")))
        .collect();
    let len = input.data.len() as f64;
    let port = wait_status_port(&mut injector.child, &injector.stdout);
    wait_status(port, Duration::from_secs(30), "3 s of stream", |s| {
        s["bytes_in"].as_f64().unwrap_or(0.0) >= len * JOIN_AT / input.duration
            && s["newest_seq"].is_u64()
    });
    for s in &mut seeds {
        let port = wait_status_port(&mut s.child, &s.stdout);
        wait_status(port, Duration::from_secs(30), "a seed in the swarm", |s| {
            s["newest_seq"].is_u64()
        });
    }
    let mut receivers: Vec<(Node, PathBuf)> = (0..n)
        .map(|i| {
            let out = dir.join(format!("out{i}.ts"));
            let mut a = base("receive");
            a.extend([
                "--output".into(),
                out.display().to_string(),
                "--latency".into(),
                LATENCY_MS.to_string(),
                "--upload-limit".into(),
                (input.kbit * RECEIVER_CAP).to_string(),
            ]);
            (spawn(&a, dir, &format!("receiver{i}")), out)
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs_f64(input.duration + 60.0);
    let exited: Vec<bool> = (receivers.iter_mut())
        .map(|(r, _)| wait_or_kill(&mut r.child, deadline))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    for s in &mut seeds {
        wait_or_kill(&mut s.child, deadline);
    }
    let inj_ok = wait_or_kill(&mut injector.child, deadline);
    let inj_log = std::fs::read_to_string(&injector.stderr).unwrap_or_default();
    let inj = final_status(&inj_log).expect("the injector's final status");
    let origin_bytes = inj["bytes_up"].as_u64().unwrap();
    assert_eq!(
        inj["bytes_in"].as_u64(),
        Some(input.data.len() as u64),
        "the injector read the whole input"
    );
    let mut notes = vec![];
    if !inj_ok {
        notes.push("the injector did not exit 0".into());
    }
    let (mut missed, mut late, mut failed, mut from_injector) = (0, 0, 0, 0);
    let mut out = vec![];
    for (i, ((r, path), ok)) in receivers.iter().zip(&exited).enumerate() {
        let log = std::fs::read_to_string(&r.stderr).unwrap_or_default();
        let fin = final_status(&log);
        let bytes = std::fs::read(path).unwrap_or_default();
        let a = align(input, &bytes);
        if !keep {
            let _ = std::fs::remove_file(path);
        }
        let own = fin.as_ref().and_then(|f| f["continuity"].as_f64());
        let get = |k: &str| fin.as_ref().and_then(|f| f[k].as_u64()).unwrap_or(0);
        from_injector += get("bytes_down_injector");
        missed += get("pieces_missed");
        late += get("pieces_late");
        if !ok {
            failed += 1;
        }
        let continuity = own.unwrap_or(0.0).min(a.share());
        if continuity < GOOD || !a.exact() || !ok {
            notes.push(format!(
                "receiver {i}: exit {}, own continuity {own:?}, packet share {:.4} ({} of {}), junk {} B, missed {}, late {}, startup_ms {:?}, request_timeouts_at_start {}",
                if *ok { "0" } else { "not 0" },
                a.share(),
                a.matched,
                a.expected,
                a.junk,
                get("pieces_missed"),
                get("pieces_late"),
                fin.as_ref().and_then(|f| f["startup_ms"].as_u64()),
                get("request_timeouts_at_start"),
            ));
        }
        out.push(Receiver {
            continuity,
            exact: a.exact(),
            first_byte_ms: fin.as_ref().and_then(|f| f["startup_ms"].as_f64()),
        });
    }
    notes.insert(
        0,
        format!(
            "receivers: {failed} did not exit 0, {missed} pieces missed and {late} late in all, {:.2} copies straight from the injector; seeds uploaded {}",
            from_injector as f64 / input.data.len() as f64,
            seeds_upload(&seeds, input)
        ),
    );
    drop(tracker);
    Run {
        system: "nordlys",
        receivers: out,
        origin_bytes,
        notes,
    }
}

fn seeds_upload(seeds: &[Node], input: &Input) -> String {
    let copies: Vec<String> = (seeds.iter())
        .map(|s| {
            let log = std::fs::read_to_string(&s.stderr).unwrap_or_default();
            final_status(&log)
                .and_then(|f| f["bytes_up"].as_f64())
                .map_or("?".into(), |b| {
                    format!("{:.2}", b / input.data.len() as f64)
                })
        })
        .collect();
    format!("{} copies", copies.join(" and "))
}

// ---------------------------------------------------------------------------------------
// HTTP

/// One token bucket for the whole origin, taken in turn (tokio's mutex is fair, first in
/// first out), so clients waiting for upload are served round robin.
struct Bucket {
    rate: f64,
    burst: f64,
    state: tokio::sync::Mutex<(f64, Instant)>,
}

impl Bucket {
    fn new(rate: f64) -> Bucket {
        Bucket {
            rate,
            burst: rate * 0.05,
            state: tokio::sync::Mutex::new((0.0, Instant::now())),
        }
    }

    async fn take(&self, n: usize) {
        let n = n as f64;
        let mut s = self.state.lock().await;
        let refill = |s: &mut (f64, Instant)| {
            let now = Instant::now();
            s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * self.rate).min(self.burst.max(n));
            s.1 = now;
        };
        refill(&mut s);
        if s.0 < n {
            tokio::time::sleep(Duration::from_secs_f64((n - s.0) / self.rate)).await;
            refill(&mut s);
        }
        s.0 -= n;
    }
}

type Chunk = (Instant, Bytes);

struct Origin {
    clients: Mutex<Vec<mpsc::UnboundedSender<Chunk>>>,
    ended: std::sync::atomic::AtomicBool,
    bucket: Bucket,
    sent: AtomicU64,
    dropped_chunks: AtomicU64,
    /// At most this many clients are served at once (the others get 503).
    admit: Option<usize>,
    admitted: AtomicU64,
    refused: AtomicU64,
}

async fn serve(origin: Arc<Origin>, listener: TcpListener) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            return;
        };
        let origin = origin.clone();
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                match sock.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(k) => head.extend_from_slice(&buf[..k]),
                }
            }
            let full = origin
                .admit
                .is_some_and(|a| origin.admitted.load(Ordering::SeqCst) >= a as u64);
            if full || origin.ended.load(Ordering::SeqCst) {
                origin.refused.fetch_add(1, Ordering::SeqCst);
                let _ = sock
                    .write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
                return;
            }
            origin.admitted.fetch_add(1, Ordering::SeqCst);
            let (tx, mut rx) = mpsc::unbounded_channel::<Chunk>();
            origin.clients.lock().unwrap().push(tx);
            if sock
                .write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nConnection: close\r\n\r\n",
                )
                .await
                .is_err()
            {
                return;
            }
            while let Some((released, chunk)) = rx.recv().await {
                if released.elapsed() > HTTP_MAX_BEHIND {
                    origin.dropped_chunks.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                origin.bucket.take(chunk.len()).await;
                if sock.write_all(&chunk).await.is_err() {
                    return;
                }
                origin.sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            let _ = sock.shutdown().await;
        });
    }
}

/// Releases the input to every client at the times of its PCRs, one chunk per tick.
async fn pace(origin: Arc<Origin>, input: Arc<Input>) {
    let start = Instant::now();
    let mut next = 0;
    let mut tick = tokio::time::interval(HTTP_TICK);
    while next < input.packets() {
        tick.tick().await;
        let now = start.elapsed().as_secs_f64();
        let mut end = next;
        while end < input.packets() && input.times[end] <= now {
            end += 1;
        }
        if end == next {
            continue;
        }
        let chunk = input.data.slice(next * TS..end * TS);
        next = end;
        let released = Instant::now();
        (origin.clients.lock().unwrap()).retain(|c| c.send((released, chunk.clone())).is_ok());
    }
    origin.ended.store(true, Ordering::SeqCst);
    origin.clients.lock().unwrap().clear();
}

/// GET the stream; the body and the time from connecting to its first byte.
async fn http_client(addr: std::net::SocketAddr) -> (Vec<u8>, Option<f64>) {
    let t0 = Instant::now();
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return (vec![], None);
    };
    if (s.write_all(b"GET /stream.ts HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"))
        .await
        .is_err()
    {
        return (vec![], None);
    }
    let mut all = Vec::new();
    let mut body_at = None;
    let mut first = None;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(k) => all.extend_from_slice(&buf[..k]),
        }
        if body_at.is_none() {
            body_at = all.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
        }
        if let Some(b) = body_at
            && first.is_none()
            && all.len() > b
        {
            first = Some(t0.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let ok = all.starts_with(b"HTTP/1.1 200");
    let body = match (ok, body_at) {
        (true, Some(b)) => all.split_off(b),
        _ => vec![],
    };
    (body, first)
}

async fn run_http_variant(input: Arc<Input>, n: usize, admit: Option<usize>) -> Run {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let origin = Arc::new(Origin {
        clients: Mutex::new(vec![]),
        ended: false.into(),
        bucket: Bucket::new(input.bytes_per_sec() * ORIGIN_CAP as f64),
        sent: 0.into(),
        dropped_chunks: 0.into(),
        admit,
        admitted: 0.into(),
        refused: 0.into(),
    });
    let server = tokio::spawn(serve(origin.clone(), listener));
    let pacer = tokio::spawn(pace(origin.clone(), input.clone()));
    tokio::time::sleep(Duration::from_secs_f64(JOIN_AT)).await;
    let clients: Vec<_> = (0..n).map(|_| tokio::spawn(http_client(addr))).collect();
    let mut receivers = vec![];
    for c in clients {
        let (body, first) = c.await.unwrap();
        let a = align(&input, &body);
        receivers.push(Receiver {
            continuity: a.share(),
            exact: a.exact(),
            first_byte_ms: first,
        });
    }
    pacer.await.unwrap();
    server.abort();
    let notes = vec![format!(
        "{} clients admitted, {} refused; {} chunks of 10 ms dropped for clients more than {} s behind",
        origin.admitted.load(Ordering::SeqCst),
        origin.refused.load(Ordering::SeqCst),
        origin.dropped_chunks.load(Ordering::SeqCst),
        HTTP_MAX_BEHIND.as_secs()
    )];
    Run {
        system: if admit.is_some() {
            "HTTP, admission to the cap"
        } else {
            "HTTP, shared cap"
        },
        receivers,
        origin_bytes: origin.sent.load(Ordering::SeqCst),
        notes,
    }
}

fn run_http(input: &Arc<Input>, n: usize) -> (Run, Run) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let fit = (ORIGIN_CAP as usize).min(n);
    rt.block_on(async {
        tokio::join!(
            run_http_variant(input.clone(), n, None),
            run_http_variant(input.clone(), n, Some(fit)),
        )
    })
}

// ---------------------------------------------------------------------------------------
// SRT

fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

/// Per caller (by its port): the highest `bytes-sent`, retransmitted and dropped bytes seen.
fn poll_srt_stats(sink: &gst::Element, seen: &mut HashMap<u32, (u64, u64, u64)>) {
    let stats = sink.property::<gst::Structure>("stats");
    let Ok(callers) = stats.get::<gst::glib::ValueArray>("callers") else {
        return;
    };
    for v in callers.iter() {
        let Ok(s) = v.get::<gst::Structure>() else {
            continue;
        };
        let port = s
            .get::<gst::glib::Object>("caller-address")
            .ok()
            .and_then(|a| a.property_value("port").get::<u32>().ok())
            .unwrap_or(0);
        let get = |k: &str| s.get::<u64>(k).unwrap_or(0);
        let e = seen.entry(port).or_default();
        e.0 = e.0.max(get("bytes-sent"));
        e.1 = e.1.max(get("bytes-retransmitted"));
        e.2 = e.2.max(get("bytes-sent-dropped"));
    }
}

fn run_srt(dir: &Path, input: &Input, n: usize, maxbw: Option<u64>, keep: bool) -> Run {
    gst::init().expect("GStreamer");
    let port = free_udp_port();
    let mut uri = format!("srt://127.0.0.1:{port}?mode=listener");
    if let Some(bw) = maxbw {
        let _ = write!(uri, "&maxbw={bw}");
    }
    let make = |f: &str| gst::ElementFactory::make(f).build().expect(f);
    let src = make("filesrc");
    src.set_property("location", input.path.to_str().unwrap());
    let parse = make("tsparse");
    parse.set_property("set-timestamps", true);
    let sink = make("srtsink");
    sink.set_property("uri", &uri);
    sink.set_property("latency", LATENCY_MS as i32);
    sink.set_property("wait-for-connection", false);
    sink.set_property("sync", true);
    let pipeline = gst::Pipeline::new();
    pipeline.add_many([&src, &parse, &sink]).unwrap();
    gst::Element::link_many([&src, &parse, &sink]).unwrap();
    let bus = pipeline.bus().unwrap();
    pipeline.set_state(gst::State::Playing).expect("play");
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(JOIN_AT));
    let client_uri = format!("uri=srt://127.0.0.1:{port}?mode=caller");
    let latency = format!("latency={LATENCY_MS}");
    let mut clients: Vec<(Child, PathBuf, Instant, Option<f64>)> = (0..n)
        .map(|i| {
            let out = dir.join(format!("out{i}.ts"));
            let child = Command::new("gst-launch-1.0")
                .args(["-q", "srtsrc", &client_uri, &latency, "!", "filesink"])
                .arg(format!("location={}", out.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join(format!("client{i}.log"))).unwrap())
                .spawn()
                .expect("gst-launch-1.0");
            (child, out, Instant::now(), None)
        })
        .collect();
    let mut seen = HashMap::new();
    let mut eos_at = None;
    let linger = Duration::from_millis(LATENCY_MS + 2000);
    let deadline = start + Duration::from_secs_f64(input.duration + 30.0);
    let mut notes = vec![];
    loop {
        while let Some(msg) = bus.pop() {
            match msg.view() {
                gst::MessageView::Eos(..) => {
                    eos_at.get_or_insert(Instant::now());
                }
                gst::MessageView::Error(e) => {
                    notes.push(format!("sender error: {}", e.error()));
                    eos_at.get_or_insert(Instant::now());
                }
                _ => {}
            }
        }
        poll_srt_stats(&sink, &mut seen);
        for (_, out, spawned, first) in &mut clients {
            if first.is_none() && std::fs::metadata(&*out).is_ok_and(|m| m.len() > 0) {
                *first = Some(spawned.elapsed().as_secs_f64() * 1000.0);
            }
        }
        if eos_at.is_some_and(|t| t.elapsed() >= linger) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let paced = eos_at.map(|t| t.duration_since(start).as_secs_f64());
    poll_srt_stats(&sink, &mut seen);
    pipeline.set_state(gst::State::Null).unwrap();
    // The callers would try to reconnect: stop them (our own children), as Ctrl-C would.
    std::thread::sleep(Duration::from_millis(500));
    for (c, ..) in &clients {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
    }
    let stop = Instant::now() + Duration::from_secs(5);
    for (c, ..) in &mut clients {
        wait_or_kill(c, stop);
    }
    let mut receivers = vec![];
    for (_, out, _, first) in &clients {
        let bytes = std::fs::read(out).unwrap_or_default();
        let a = align(input, &bytes);
        if !keep {
            let _ = std::fs::remove_file(out);
        }
        receivers.push(Receiver {
            continuity: a.share(),
            exact: a.exact(),
            first_byte_ms: *first,
        });
    }
    let sent: u64 = seen.values().map(|v| v.0).sum();
    let retrans: u64 = seen.values().map(|v| v.1).sum();
    let dropped: u64 = seen.values().map(|v| v.2).sum();
    notes.push(format!(
        "sender reached the end of the input {} s after it started (paced: the input is {:.1} s); {} callers seen; retransmitted {:.2} copies, dropped as too late {:.2} copies",
        paced.map_or("never".into(), |p| format!("{p:.1}")),
        input.duration,
        seen.len(),
        retrans as f64 / input.data.len() as f64,
        dropped as f64 / input.data.len() as f64,
    ));
    Run {
        system: if maxbw.is_some() {
            "SRT, maxbw 3x/N per connection"
        } else {
            "SRT, uncapped"
        },
        receivers,
        origin_bytes: sent,
        notes,
    }
}

// ---------------------------------------------------------------------------------------
// The chart

/// A plain SVG line chart of served receivers per copy against N, one line per system.
fn chart(series: &[(&str, Vec<(f64, f64)>)]) -> String {
    const W: f64 = 720.0;
    const H: f64 = 420.0;
    const M: f64 = 60.0;
    const RIGHT: f64 = 250.0;
    const COLOURS: [&str; 5] = ["#1f77b4", "#d62728", "#ff7f0e", "#2ca02c", "#9467bd"];
    // Dashes, so that a line lying on another still shows.
    const DASHES: [&str; 5] = ["none", "9 5", "3 4", "2 6", "12 4"];
    let pts = series.iter().flat_map(|(_, p)| p.iter());
    let (mut x1, mut y1) = (1.0f64, 1.0f64);
    for &(x, y) in pts {
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    let y1 = (y1 / 5.0).ceil() * 5.0;
    let (x0, y0) = (0.0, 0.0);
    let sx = |x: f64| M + (x - x0) / (x1 - x0) * (W - M - RIGHT);
    let sy = |y: f64| H - M - (y - y0) / (y1 - y0) * (H - 2.0 * M);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="24" text-anchor="middle" font-size="15">Receivers at continuity &gt;= 0.999 per copy of origin upload</text>
<text x="{}" y="42" text-anchor="middle" fill="gray">one run, one 2.8 Mbit/s stream; origin capped at 3x its bitrate (SRT: per connection, or not at all)</text>
<line x1="{M}" y1="{}" x2="{}" y2="{}" stroke="black"/>
<line x1="{M}" y1="{M}" x2="{M}" y2="{}" stroke="black"/>
<text x="{}" y="{}" text-anchor="middle">receivers (N), real processes on loopback</text>
<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">receivers served per copy</text>
"#,
        W / 2.0,
        W / 2.0,
        H - M,
        W - RIGHT,
        H - M,
        H - M,
        (M + W - RIGHT) / 2.0,
        H - 16.0,
        H / 2.0,
        H / 2.0,
    );
    for k in 0..=5 {
        let f = k as f64 / 5.0;
        let (x, y) = (x0 + f * (x1 - x0), y0 + f * (y1 - y0));
        let _ = writeln!(
            svg,
            r##"<line x1="{0:.1}" y1="{M}" x2="{0:.1}" y2="{1}" stroke="#ddd"/><text x="{0:.1}" y="{2}" text-anchor="middle">{3:.0}</text>"##,
            sx(x),
            H - M,
            H - M + 16.0,
            x
        );
        let _ = writeln!(
            svg,
            r##"<line x1="{M}" y1="{0:.1}" x2="{1}" y2="{0:.1}" stroke="#ddd"/><text x="{2}" y="{3:.1}" text-anchor="end">{4:.0}</text>"##,
            sy(y),
            W - RIGHT,
            M - 6.0,
            sy(y) + 4.0,
            y
        );
    }
    for (k, (name, points)) in series.iter().enumerate() {
        let colour = COLOURS[k % COLOURS.len()];
        let dash = DASHES[k % DASHES.len()];
        let path: Vec<String> = (points.iter())
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" stroke-dasharray="{dash}" points="{}"/>"#,
            path.join(" ")
        );
        for &(x, y) in points {
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{colour}"><title>{name}, N={x}: {y:.2}</title></circle>"#,
                sx(x),
                sy(y)
            );
        }
        let ly = M + 18.0 * k as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{}" y1="{ly:.1}" x2="{}" y2="{ly:.1}" stroke="{colour}" stroke-width="2" stroke-dasharray="{dash}"/><text x="{}" y="{:.1}" fill="{colour}">{name}</text>"#,
            W - RIGHT + 15.0,
            W - RIGHT + 35.0,
            W - RIGHT + 40.0,
            ly + 4.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

// ---------------------------------------------------------------------------------------

struct Args {
    receivers: Vec<usize>,
    systems: Vec<String>,
    chart: Option<PathBuf>,
    keep: bool,
}

fn args() -> Args {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut a = Args {
        receivers: vec![10, 25, 50],
        systems: ["nordlys", "http", "srt"].map(String::from).to_vec(),
        chart: Some(root.join("docs/figures/real-swarm-vs-fanout.svg")),
        keep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--bench" => {} // cargo bench passes it
            "--receivers" => {
                a.receivers = (value().split(','))
                    .map(|v| v.trim().parse().expect("--receivers N,N,..."))
                    .collect()
            }
            "--systems" => a.systems = value().split(',').map(String::from).collect(),
            "--chart" => {
                let v = value();
                a.chart = (v != "-").then(|| root.join(v));
            }
            "--keep" => a.keep = true,
            other => panic!(
                "unknown argument {other}; use --receivers N,N,.. --systems nordlys,http,srt --chart PATH|- --keep"
            ),
        }
    }
    a
}

fn main() {
    let args = args();
    let input = Arc::new(Input::load(media::concert_720p_h264_aac()));
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/swarm-vs-fanout");
    let began = Instant::now();
    eprintln!(
        "input {}: {} bytes, {:.2} s by its PCR, {} kbit/s; origin cap {} kbit/s",
        input.path.display(),
        input.data.len(),
        input.duration,
        input.kbit,
        input.kbit * ORIGIN_CAP
    );
    let mut all: Vec<(usize, Vec<Run>)> = vec![];
    for &n in &args.receivers {
        let mut runs = vec![];
        let dir = |name: &str| {
            let d = root.join(format!("n{n}/{name}"));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            d
        };
        let has = |s: &str| args.systems.iter().any(|x| x == s);
        let report = |run: Run, runs: &mut Vec<Run>| {
            eprintln!(
                "[{:.0} s] N={n} {}",
                began.elapsed().as_secs_f64(),
                run.row(&input)
            );
            for note in &run.notes {
                eprintln!("    {note}");
            }
            runs.push(run);
        };
        if has("nordlys") {
            let run = run_nordlys(&dir("nordlys"), &input, n, args.keep);
            report(run, &mut runs);
        }
        if has("http") {
            let (shared, admitted) = run_http(&input, n);
            report(shared, &mut runs);
            report(admitted, &mut runs);
        }
        if has("srt") {
            let per_conn = (input.bytes_per_sec() * ORIGIN_CAP as f64 / n as f64) as u64;
            let run = run_srt(&dir("srt-capped"), &input, n, Some(per_conn), args.keep);
            report(run, &mut runs);
            let run = run_srt(&dir("srt-uncapped"), &input, n, None, args.keep);
            report(run, &mut runs);
        }
        all.push((n, runs));
    }
    println!(
        "\nswarm_vs_fanout: {:.1} s of {} kbit/s MPEG-TS on loopback, receivers join {JOIN_AT} s in; origin cap {}x; {:.0} s of wall time\n",
        input.duration,
        input.kbit,
        ORIGIN_CAP,
        began.elapsed().as_secs_f64()
    );
    println!("{HEADER}");
    for (_, runs) in &all {
        for run in runs {
            println!("{}", run.row(&input));
        }
    }
    let mut series: Vec<(&str, Vec<(f64, f64)>)> = vec![];
    for (n, runs) in &all {
        for run in runs {
            let y = run.per_copy(&input);
            match series.iter_mut().find(|(s, _)| *s == run.system) {
                Some((_, pts)) => pts.push((*n as f64, y)),
                None => series.push((run.system, vec![(*n as f64, y)])),
            }
        }
    }
    if let Some(path) = &args.chart {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, chart(&series)).unwrap();
        println!("\nchart: {}", path.display());
    }
}
