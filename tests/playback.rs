//! Playback through the whole chain, headless: built-in tracker, injector on an ffmpeg-made
//! file, receiver playing with fake sinks. Frames rendered, first frame, snapshots, and an
//! injector restart (playing -> slate -> playing) without restarting the receiver.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{
    final_status, http_get, http_status, make_event, nordlys, wait_printed_addr, wait_status,
    wait_status_port,
};
use nordlys::test_media::{Spec, png_summary, ts_file};

/// Each of these tests decodes 720p in real time and counts frames or times a restart: run
/// them one at a time, so that they measure the receiver and not each other.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A `nordlys` process, killed when dropped; its stdout (where it prints the addresses it
/// listens on) goes to `stdout`.
struct Proc(Child, PathBuf);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// The port of its status endpoint (started with `--status-addr 127.0.0.1:0`).
    fn status_port(&mut self) -> u16 {
        wait_status_port(&mut self.0, &self.1)
    }
}

/// Starts `nordlys args`, stderr to `log` and stdout to `log` with the extension `out`.
fn start(args: &[String], log: &Path) -> Proc {
    start_with(Command::new(nordlys()), args, log)
}

/// As [`start`], with `cmd`'s environment.
fn start_with(mut cmd: Command, args: &[String], log: &Path) -> Proc {
    let stdout = log.with_extension("out");
    Proc(
        cmd.args(args)
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("start nordlys"),
        stdout,
    )
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Key, torrent and a running built-in tracker in `dir`.
fn event(dir: &Path) -> (PathBuf, PathBuf, Proc) {
    let mut tracker = start(
        &strings(&["tracker", "--listen", "127.0.0.1:0"]),
        &dir.join("tracker.log"),
    );
    let addr = wait_printed_addr(
        &mut tracker.0,
        &tracker.1,
        "tracker on http://",
        "/announce",
        Duration::from_secs(15),
    );
    let url = format!("http://{addr}/announce");
    let (key, torrent) = make_event(dir, Some(&url));
    (key, torrent, tracker)
}

fn injector(key: &Path, torrent: &Path, input: &Path, log: &Path) -> Proc {
    start(
        &strings(&[
            "inject",
            "--torrent",
            torrent.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--linger",
            "3",
            "--status-addr",
            "127.0.0.1:0",
        ]),
        log,
    )
}

/// A receiver with fake sinks and a status endpoint on a port the kernel picks.
fn receiver(torrent: &Path, extra: &[&str], log: &Path) -> Proc {
    let mut args = strings(&[
        "receive",
        "--torrent",
        torrent.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--video-sink",
        "fake",
        "--audio-sink",
        "fake",
        "--latency",
        "1000",
        "--status-addr",
        "127.0.0.1:0",
    ]);
    args.extend(strings(extra));
    start(&args, log)
}

fn wait_exit(p: &mut Proc, limit: Duration, log: &Path) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = p.0.try_wait().unwrap() {
            let text = std::fs::read_to_string(log).unwrap();
            assert!(status.success(), "process failed: {text}");
            return final_status(&text).unwrap_or_else(|| panic!("no final status: {text}"));
        }
        assert!(
            Instant::now() < deadline,
            "process did not exit: {}",
            std::fs::read_to_string(log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn plays(codec: &'static str) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = ts_file(Spec::new(codec, 1280, 720, 10));
    let (key, torrent, _tracker) = event(d);
    let mut inj = injector(&key, &torrent, &input, &d.join("inj.log"));
    // Join a stream 3 s under way: the injector reads its input at the stream's own rate,
    // so it has injected 3 s when it has read 3/10 of the 10 s file.
    let input_len = std::fs::metadata(&input).unwrap().len();
    wait_status(
        inj.status_port(),
        Duration::from_secs(30),
        "3 s of stream",
        |s| s["bytes_in"].as_u64().unwrap_or(0) * 10 >= input_len * 3 && s["newest_seq"].is_u64(),
    );
    let log = d.join("recv.log");
    let mut recv = receiver(&torrent, &[], &log);
    let port = recv.status_port();
    let playing = wait_status(port, Duration::from_secs(10), "the first frame", |s| {
        s["frames_rendered"].as_u64() > Some(0)
    });
    let fin = wait_exit(&mut recv, Duration::from_secs(30), &log);
    let first_frame = playing["first_frame_ms"].as_u64().unwrap();
    // Frames the stream holds from the hook-in point to its end.
    let span_ms = fin["output_span_ms"].as_u64().unwrap();
    let expected = (span_ms as f64 / 1000.0 * 30.0).floor();
    let rendered = fin["frames_rendered"].as_u64().unwrap_or(0) as f64;
    eprintln!(
        "{codec}: first frame {first_frame} ms, {rendered} of {expected} frames, decoder {}",
        fin["decoder"]
    );
    assert!(first_frame <= 1500, "first frame after {first_frame} ms");
    assert!(
        rendered >= 0.9 * expected,
        "{rendered} frames rendered of {expected}"
    );
    assert!(
        fin["audio"]["buffers"].as_u64() > Some(0),
        "no audio decoded: {fin}"
    );
    assert_eq!(fin["video"]["width"], 1280);
}

#[test]
fn receiver_plays_h264_joining_under_way() {
    let _one_at_a_time = one_at_a_time();
    plays("h264");
}

#[test]
fn receiver_plays_hevc_joining_under_way() {
    let _one_at_a_time = one_at_a_time();
    plays("hevc");
}

/// The next snapshot written after now, summarised.
fn fresh_snapshot(port: u16, path: &Path) -> (f64, f64) {
    let n = http_status(port).unwrap()["snapshots_written"]
        .as_u64()
        .unwrap_or(0);
    wait_status(port, Duration::from_secs(5), "a new snapshot", |s| {
        s["snapshots_written"].as_u64() >= Some(n + 2)
    });
    let (luma, colour, _) = png_summary(path);
    (luma, colour)
}

#[test]
fn injector_restart_brings_the_picture_back_and_snapshots_show_what_is_on_screen() {
    let _one_at_a_time = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = ts_file(Spec::new("h264", 1280, 720, 30));
    let (key, torrent, _tracker) = event(d);
    let mut inj = injector(&key, &torrent, &input, &d.join("inj1.log"));
    let snap = d.join("screen.png");
    let mut recv = receiver(
        &torrent,
        &[
            "--snapshot",
            snap.to_str().unwrap(),
            "--snapshot-every",
            "0.5",
        ],
        &d.join("recv.log"),
    );
    let port = recv.status_port();
    wait_status(port, Duration::from_secs(15), "playing", |s| {
        s["state"] == "playing" && s["showing"] == "picture"
    });
    let (_, colour) = fresh_snapshot(port, &snap);
    assert!(
        colour > 0.5,
        "while playing the snapshot should show the test picture ({colour:.2} colourful)"
    );

    // The injector dies: the slate replaces the frozen picture.
    inj.0.kill().unwrap();
    inj.0.wait().unwrap();
    let before = wait_status(port, Duration::from_secs(10), "the slate", |s| {
        s["showing"] == "slate"
    });
    let (luma, colour) = fresh_snapshot(port, &snap);
    assert!(
        colour < 0.05 && luma < 60.0,
        "starved, the snapshot should show the slate (luma {luma:.0}, colour {colour:.2})"
    );

    // Same torrent and key again: the picture returns by itself, the receiver never restarted.
    let restarted = Instant::now();
    let _inj2 = injector(&key, &torrent, &input, &d.join("inj2.log"));
    let frames_before = before["frames_rendered"].as_u64().unwrap();
    wait_status(
        port,
        Duration::from_secs(5),
        "the picture after the restart",
        |s| s["showing"] == "picture" && s["frames_rendered"].as_u64() > Some(frames_before + 10),
    );
    eprintln!(
        "picture back {} ms after the injector restarted",
        restarted.elapsed().as_millis()
    );
    let (luma, colour) = fresh_snapshot(port, &snap);
    assert!(
        colour > 0.5,
        "after the restart the snapshot should show the picture again (luma {luma:.0}, \
         colour {colour:.2}); status {}, receiver log {}",
        http_status(port).unwrap(),
        std::fs::read_to_string(d.join("recv.log")).unwrap_or_default()
    );
}

#[test]
fn demo_runs_headless_and_reports_frames() {
    let _one_at_a_time = one_at_a_time();
    let out = Command::new(nordlys())
        .args(["demo", "--headless", "--duration", "15"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("demo ended"))
        .expect("summary line");
    let frames: u64 = summary
        .split(", ")
        .find_map(|part| part.strip_suffix(" frames rendered"))
        .and_then(|n| n.parse().ok())
        .expect("frames rendered in the summary");
    assert!(frames >= 300, "{summary}");
}

/// The appliance with a broken config does not exit (systemd would restart it in a loop): it
/// stays up and shows the error on the slate.
#[test]
fn bad_config_shows_the_slate_and_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("nordlys.toml");
    std::fs::write(
        &config,
        "[stream]\nsource = \"/boot/event.torrent\"\ntarget_latncy_ms = 1\n",
    )
    .unwrap();
    let snap = dir.path().join("slate.png");
    // As under the unit (XDG_CACHE_HOME in its CacheDirectory, HOME not writable): the
    // GStreamer registry must be written there, or it is rebuilt at every start.
    let cache = dir.path().join("cache");
    let mut cmd = Command::new(nordlys());
    cmd.env("XDG_CACHE_HOME", &cache)
        .env("HOME", dir.path().join("no-home"))
        .env_remove("GST_REGISTRY")
        .env_remove("GST_REGISTRY_1_0");
    let mut recv = start_with(
        cmd,
        &strings(&[
            "receive",
            "--config",
            config.to_str().unwrap(),
            "--video-sink",
            "fake",
            "--snapshot",
            snap.to_str().unwrap(),
            "--snapshot-every",
            "0.3",
            "--status-addr",
            "127.0.0.1:0",
        ]),
        &dir.path().join("recv.log"),
    );
    // The hall's state can be read over the network in the error state too.
    let port = recv.status_port();
    let status = http_status(port).expect("/status answers");
    assert_eq!(status["state"], "error", "{status}");
    assert!(
        (status["last_error"].as_str()).is_some_and(|e| e.contains("line 3, column 1")),
        "{status}"
    );
    // The page and the metrics too.
    let (_, page) = http_get(port, "/").expect("GET / answers");
    assert!(
        page.contains("class=\"state error\">error</span>") && page.contains("line 3, column 1"),
        "{page}"
    );
    let (_, metrics) = http_get(port, "/metrics").expect("GET /metrics answers");
    assert!(
        metrics.contains("nordlys_state{state=\"error\"} 1\n"),
        "{metrics}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !snap.exists() {
        assert!(
            recv.0.try_wait().unwrap().is_none(),
            "the receiver exited on a bad config"
        );
        assert!(Instant::now() < deadline, "no snapshot of the slate");
        std::thread::sleep(Duration::from_millis(100));
    }
    let registry = std::fs::read_dir(cache.join("gstreamer-1.0"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
        .unwrap_or_default();
    assert!(
        (registry.iter()).any(|n| n.to_string_lossy().starts_with("registry.")),
        "no GStreamer registry under XDG_CACHE_HOME: {registry:?}"
    );
    // Let the snapshot finish being written: a complete PNG ends with the IEND chunk.
    while !std::fs::read(&snap)
        .unwrap_or_default()
        .ends_with(&[0xae, 0x42, 0x60, 0x82])
    {
        assert!(Instant::now() < deadline, "snapshot never completed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (luma, colour, _) = png_summary(&snap);
    assert!(
        colour < 0.05 && luma < 60.0,
        "expected the dark slate (luma {luma:.0}, colour {colour:.2})"
    );
    assert!(
        recv.0.try_wait().unwrap().is_none(),
        "the receiver exited on a bad config"
    );
    let log = std::fs::read_to_string(dir.path().join("recv.log")).unwrap();
    assert!(
        log.contains("line 3, column 1"),
        "the error names where: {log}"
    );
}
