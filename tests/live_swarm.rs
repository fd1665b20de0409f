//! A real swarm on loopback: separate `nordlys` processes found through Debian's opentracker,
//! streaming a 20 s 720p H.264/AAC MPEG-TS file made by ffmpeg (not by the GStreamer encoders
//! the other tests use). Checks byte identity, continuity, start-up time, lag, the injector's
//! share of the upload, and receiver memory.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::opentracker::OpenTracker;
use common::{
    final_status, http_status, media, nordlys, peak_rss_kib, status_port, wait_status,
    wait_status_port,
};

const RECEIVERS: usize = 8;
const SEEDS: usize = 2;

struct Node {
    child: Child,
    stderr: PathBuf,
    /// Where the node prints its status address.
    stdout: PathBuf,
    output: Option<PathBuf>,
}

/// Starts a node whose status endpoint listens on a port the kernel picks: a port chosen
/// beforehand could be taken meanwhile by one of the swarm's outbound connections.
fn spawn(args: &[String], dir: &Path, name: &str, output: Option<PathBuf>) -> Node {
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
        output,
    }
}

impl Node {
    /// The status port, once the node has printed `status on http://ADDR/status`.
    fn status_port(&self) -> Option<u16> {
        status_port(&self.stdout)
    }

    /// As `status_port`, waiting for it.
    fn wait_status_port(&mut self) -> u16 {
        wait_status_port(&mut self.child, &self.stdout)
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    assert!(!v.is_empty());
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

struct Outcome {
    continuity: Vec<f64>,
    startup_ms: Vec<f64>,
    lag_ms: Vec<f64>,
    injector_copies: f64,
    peak_rss_mib: f64,
}

fn run_swarm(
    dir: &Path,
    torrent: &Path,
    key: &Path,
    input: &Path,
    kbit: u64,
    latency: u64,
) -> Outcome {
    let t = torrent.display().to_string();
    let base = |role: &str| {
        vec![
            role.to_string(),
            "--torrent".into(),
            t.clone(),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ]
    };
    let mut inj_args = base("inject");
    inj_args.extend([
        "--key".into(),
        key.display().to_string(),
        "--input".into(),
        input.display().to_string(),
        "--upload-limit".into(),
        (kbit * 3).to_string(),
        "--linger".into(),
        "8".into(),
    ]);
    let mut injector = spawn(&inj_args, dir, &format!("injector-{latency}"), None);
    let mut seeds: Vec<Node> = (0..SEEDS)
        .map(|i| spawn(&base("seed"), dir, &format!("seed{i}-{latency}"), None))
        .collect();
    // The scenario: receivers join a stream 3 s under way, once the seeds have joined it.
    // The injector reads its input at the stream's own rate, so 3 s of stream have been
    // injected when it has read 3/20 of the 20 s file.
    let input_len = std::fs::metadata(input).unwrap().len();
    let inj_status = injector.wait_status_port();
    wait_status(inj_status, Duration::from_secs(30), "3 s of stream", |s| {
        s["bytes_in"].as_u64().unwrap_or(0) * 20 >= input_len * 3 && s["newest_seq"].is_u64()
    });
    for s in seeds.iter_mut() {
        let port = s.wait_status_port();
        wait_status(port, Duration::from_secs(30), "a seed in the swarm", |s| {
            s["newest_seq"].is_u64()
        });
    }
    let mut receivers: Vec<Node> = (0..RECEIVERS)
        .map(|i| {
            let out = dir.join(format!("out{i}-{latency}.ts"));
            let mut a = base("receive");
            a.extend([
                "--output".into(),
                out.display().to_string(),
                "--latency".into(),
                latency.to_string(),
                "--upload-limit".into(),
                (kbit * 2).to_string(),
            ]);
            spawn(&a, dir, &format!("receiver{i}-{latency}"), Some(out))
        })
        .collect();

    // Sample lag and memory while the stream runs, until every receiver has exited.
    let mut lag_samples: Vec<Vec<f64>> = vec![Vec::new(); RECEIVERS];
    let mut peak_rss = 0u64;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut running = 0;
        for (i, r) in receivers.iter_mut().enumerate() {
            if r.child.try_wait().unwrap().is_some() {
                continue;
            }
            running += 1;
            peak_rss = peak_rss.max(peak_rss_kib(r.child.id()).unwrap_or(0));
            if let Some(st) = r.status_port().and_then(http_status)
                && st["state"] == "playing"
                && let Some(lag) = st["lag_ms"].as_f64()
            {
                lag_samples[i].push(lag);
            }
        }
        if running == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "receivers did not finish in time"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let input_bytes = std::fs::read(input).unwrap();
    let mut outcome = Outcome {
        continuity: vec![],
        startup_ms: vec![],
        lag_ms: vec![],
        injector_copies: 0.0,
        peak_rss_mib: peak_rss as f64 / 1024.0,
    };
    for (i, r) in receivers.iter_mut().enumerate() {
        let status = r.child.wait().unwrap();
        let log = std::fs::read_to_string(&r.stderr).unwrap();
        assert!(status.success(), "receiver {i} failed: {log}");
        let fin = final_status(&log)
            .unwrap_or_else(|| panic!("receiver {i} printed no final status: {log}"));
        let out = std::fs::read(r.output.as_ref().unwrap()).unwrap();
        assert!(
            out.len() > input_bytes.len() / 2,
            "receiver {i} wrote only {} bytes",
            out.len()
        );
        let missed = fin["pieces_missed"].as_u64().unwrap();
        assert_eq!(missed, 0, "receiver {i} skipped pieces: {fin}");
        let holes = holes_in_tail(&input_bytes, &out)
            .unwrap_or_else(|e| panic!("receiver {i}: {e}; final status {fin}"));
        assert_eq!(holes, 0, "receiver {i}: holes in the output");
        outcome.continuity.push(fin["continuity"].as_f64().unwrap());
        outcome.startup_ms.push(fin["startup_ms"].as_f64().unwrap());
        assert!(
            !lag_samples[i].is_empty(),
            "receiver {i} was never seen playing"
        );
        outcome.lag_ms.push(median(lag_samples[i].clone()));
    }
    for s in seeds.iter_mut() {
        let status = s.child.wait().unwrap();
        assert!(
            status.success(),
            "seed failed: {}",
            std::fs::read_to_string(&s.stderr).unwrap()
        );
    }
    let status = injector.child.wait().unwrap();
    let log = std::fs::read_to_string(&injector.stderr).unwrap();
    assert!(status.success(), "injector failed: {log}");
    let fin = final_status(&log).expect("injector final status");
    let bytes_in = fin["bytes_in"].as_f64().unwrap();
    assert_eq!(
        bytes_in as usize,
        input_bytes.len(),
        "injector read the whole file"
    );
    outcome.injector_copies = fin["bytes_up"].as_f64().unwrap() / bytes_in;
    eprintln!(
        "latency {latency} ms: continuity min {:.4}, startup median {:.0} ms, lag median {:.0} ms, injector copies {:.2}, receiver peak RSS {:.1} MiB",
        outcome.continuity.iter().cloned().fold(1.0, f64::min),
        median(outcome.startup_ms.clone()),
        median(outcome.lag_ms.clone()),
        outcome.injector_copies,
        outcome.peak_rss_mib
    );
    outcome
}

#[test]
fn concert_swarm_over_opentracker() {
    let input = media::concert_720p_h264_aac();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("event.key");
    let torrent = dir.path().join("event.torrent");
    let run = |args: &[&str]| {
        let out = Command::new(nordlys()).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    run(&["keygen", "--out", key.to_str().unwrap()]);
    // The infohash does not depend on the tracker list, so it is known before the tracker runs.
    let created = run(&[
        "create",
        "--key",
        key.to_str().unwrap(),
        "--name",
        "concert",
        "--out",
        torrent.to_str().unwrap(),
    ]);
    let infohash = created
        .lines()
        .next()
        .unwrap()
        .strip_prefix("infohash ")
        .unwrap()
        .to_string();
    let tracker = OpenTracker::start(std::slice::from_ref(&infohash));
    let url = format!("http://127.0.0.1:{}/announce", tracker.port);
    let created = run(&[
        "create",
        "--key",
        key.to_str().unwrap(),
        "--name",
        "concert",
        "--tracker",
        &url,
        "--force", // the same torrent, now naming the tracker
        "--out",
        torrent.to_str().unwrap(),
    ]);
    assert!(created.contains(&infohash));

    let size = std::fs::metadata(&input).unwrap().len();
    let kbit = size * 8 / 20 / 1000 + 1; // the stream's bitrate

    let normal = run_swarm(dir.path(), &torrent, &key, &input, kbit, 2000);
    for c in &normal.continuity {
        assert!(*c >= 0.999, "continuity {c}");
    }
    assert!(median(normal.startup_ms.clone()) <= 1500.0);
    assert!(median(normal.lag_ms.clone()) <= 2500.0);
    assert!(
        normal.injector_copies <= 1.5,
        "injector uploaded {:.2} copies",
        normal.injector_copies
    );
    assert!(
        normal.peak_rss_mib < 64.0,
        "receiver peak RSS {:.1} MiB",
        normal.peak_rss_mib
    );

    // 500 ms leaves a receiver little slack when 12 processes share 2 cores; still no piece
    // may be skipped. (One skip was allowed here from 2026-12-05: about one run in three
    // skipped a piece. On 2026-12-07, with the start waiting up to 1.5 s for its prebuffer
    // instead of 0.7 s, 20 runs of 20 beside a busy loop skipped none.)
    let low = run_swarm(dir.path(), &torrent, &key, &input, kbit, 500);
    for c in &low.continuity {
        assert!(*c >= 0.99, "continuity {c}");
    }
    assert!(median(low.startup_ms.clone()) <= 1000.0);
    assert!(median(low.lag_ms.clone()) <= 800.0);
    assert!(low.peak_rss_mib < 64.0);
}

/// Checks that `out` is the tail of `input` from some point on, with whole runs of bytes left
/// out (the pieces a receiver skipped) and nothing else changed; returns how many runs.
fn holes_in_tail(input: &[u8], out: &[u8]) -> Result<u64, String> {
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let probe = |at: usize| &out[at..out.len().min(at + 4096)];
    let mut j = find(input, probe(0)).ok_or("the output's start is not in the input")?;
    let mut i = 0;
    let mut holes = 0;
    loop {
        let same = out[i..]
            .iter()
            .zip(&input[j..])
            .take_while(|(a, b)| a == b)
            .count();
        i += same;
        j += same;
        if i == out.len() {
            break;
        }
        holes += 1;
        let skip = find(&input[j..], probe(i))
            .ok_or_else(|| format!("output byte {i} on is nowhere later in the input"))?;
        j += skip;
    }
    if j != input.len() {
        return Err(format!(
            "the output stops {} bytes short of the end",
            input.len() - j
        ));
    }
    Ok(holes)
}
