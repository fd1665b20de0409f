//! The command line as a user meets it: every refusal names the flag or key, the value and
//! what is accepted; stdout carries only the stream when it is the output; logs are plain
//! text when stderr is not a terminal. Each test runs the built binary; ports are picked by
//! the kernel (port 0) and read back from what the node prints; waits are on conditions with
//! a deadline, never fixed sleeps.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::nordlys;

/// Runs nordlys to completion, killing it (and failing) if it takes longer than `limit`. For
/// short commands only: their output must fit in the pipes, which are read at the end.
fn run_within(args: &[&str], limit: Duration) -> Output {
    let child = Command::new(nordlys())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nordlys");
    wait_within(child, limit, args)
}

fn run(args: &[&str]) -> Output {
    run_within(args, Duration::from_secs(20))
}

fn wait_within(mut child: Child, limit: Duration, what: &[&str]) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "{what:?} still running after {limit:?}; stderr: {}",
                stderr(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The command failed with exactly this message (after the `nordlys: ` prefix).
fn fails_with(o: &Output, message: &str) {
    assert!(!o.status.success(), "exit 0; stderr: {}", stderr(o));
    let text = stderr(o);
    assert!(
        text.lines().any(|l| l == format!("nordlys: {message}")),
        "expected the line\n  nordlys: {message}\nin stderr:\n{text}"
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A key and a torrent (window 30 s, no tracker) in `dir`.
fn event(dir: &Path) -> (PathBuf, PathBuf) {
    common::make_event(dir, None)
}

const HTTP_ONLY: &str = "expected an http:// announce URL such as \
    http://tracker.example:6969/announce (udp:// and https:// trackers are not supported yet)";

#[test]
fn create_refuses_trackers_no_role_can_use() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = event(dir.path());
    let out = dir.path().join("new.torrent");
    for (tracker, why) in [
        ("udp://tracker.example:1337/announce", "is a udp:// URL"),
        ("https://tracker.example/announce", "is a https:// URL"),
    ] {
        let o = run(&[
            "create",
            "--key",
            s(&key),
            "--name",
            "n",
            "--tracker",
            tracker,
            "--out",
            s(&out),
        ]);
        fails_with(&o, &format!("--tracker `{tracker}` {why}; {HTTP_ONLY}"));
        assert!(!out.exists());
    }
    let o = run(&[
        "create",
        "--key",
        s(&key),
        "--name",
        "n",
        "--tracker",
        "notaurl",
        "--out",
        s(&out),
    ]);
    fails_with(
        &o,
        &format!("--tracker `notaurl` is not a URL (relative URL without a base); {HTTP_ONLY}"),
    );
}

#[test]
fn create_warns_without_tracker_and_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let (key, torrent) = event(dir.path());
    let before = std::fs::read(&torrent).unwrap();
    let create = |extra: &[&str]| {
        let mut args = vec![
            "create",
            "--key",
            s(&key),
            "--name",
            "other",
            "--out",
            s(&torrent),
        ];
        args.extend(extra);
        run(&args)
    };
    let o = create(&[]);
    fails_with(
        &o,
        &format!(
            "--out {}: the file exists; pass --force to replace it",
            s(&torrent)
        ),
    );
    assert_eq!(
        std::fs::read(&torrent).unwrap(),
        before,
        "the file was changed"
    );
    let o = create(&["--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_ne!(std::fs::read(&torrent).unwrap(), before);
    assert!(
        stderr(&o).contains(
            "nordlys: warning: the torrent names no tracker: every node will need --peer \
             (or --tracker) to find the others"
        ),
        "{}",
        stderr(&o)
    );
}

#[test]
fn keygen_and_create_name_the_flag_they_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = event(dir.path());
    let o = run(&["keygen", "--out", s(&key)]);
    fails_with(
        &o,
        &format!(
            "--out {}: the file exists; a key is never overwritten (move it away first)",
            s(&key)
        ),
    );
    let out = dir.path().join("x.torrent");
    let create = |flag: &str, value: &str| {
        run(&[
            "create",
            "--key",
            s(&key),
            "--name",
            "n",
            flag,
            value,
            "--out",
            s(&out),
        ])
    };
    let o = create("--piece-size", "1000");
    assert!(!o.status.success());
    assert!(
        stderr(&o)
            .starts_with("nordlys: --piece-size 1000: piece length 1000 must be a multiple of 188"),
        "{}",
        stderr(&o)
    );
    let o = create("--window", "0");
    assert!(!o.status.success());
    assert!(
        stderr(&o).starts_with("nordlys: --window 0: window 0 s must be between 1 and "),
        "{}",
        stderr(&o)
    );
}

#[test]
fn receive_refuses_magnet_and_https_with_the_honest_reason() {
    let magnet = "magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567&dn=x";
    let o = run(&["receive", "--torrent", magnet, "--output", "-"]);
    fails_with(
        &o,
        &format!(
            "--torrent is `{magnet}`: magnet links are not supported yet; expected a .torrent \
             file path or an http:// URL of one"
        ),
    );
    assert!(o.stdout.is_empty());
    let url = "https://venue.example/e.torrent";
    let o = run(&["receive", "--torrent", url, "--output", "-"]);
    fails_with(
        &o,
        &format!(
            "--torrent is `{url}`: https is not supported yet (this build has no TLS); expected \
             a .torrent file path or an http:// URL of one"
        ),
    );
}

#[test]
fn receive_refuses_a_latency_beyond_the_window_naming_flag_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let (_, torrent) = event(dir.path());
    let o = run(&[
        "receive",
        "--torrent",
        s(&torrent),
        "--output",
        "-",
        "--latency",
        "45000",
    ]);
    fails_with(
        &o,
        "--latency 45000 ms is outside 200..=29999 ms: the latency must be at least 200 ms and \
         below the torrent's window of 30 s (peers keep no older stream)",
    );
    let o = run(&[
        "receive",
        "--torrent",
        s(&torrent),
        "--output",
        "-",
        "--upload-limit",
        "0",
    ]);
    fails_with(
        &o,
        "--upload-limit 0 kbit/s is not a limit; expected at least 1 (leave it out for no limit)",
    );
    let o = run(&[
        "receive",
        "--torrent",
        s(&torrent),
        "--output",
        "-",
        "--snapshot-every",
        "0",
    ]);
    fails_with(&o, "--snapshot-every 0 s: expected at least 0.1 seconds");
    let o = run(&[
        "seed",
        "--torrent",
        s(&torrent),
        "--tracker",
        "udp://t.example:1/announce",
    ]);
    fails_with(
        &o,
        &format!("--tracker `udp://t.example:1/announce` is a udp:// URL; {HTTP_ONLY}"),
    );
}

#[test]
fn check_config_applies_the_receivers_rules() {
    let dir = tempfile::tempdir().unwrap();
    let (_, torrent) = event(dir.path());
    let cfg = dir.path().join("nordlys.toml");
    let check = |text: String| {
        std::fs::write(&cfg, text).unwrap();
        run(&["check-config", s(&cfg)])
    };
    let o = check(format!(
        "[stream]\nsource = \"{}\"\ntarget_latency_ms = 45000\n",
        s(&torrent)
    ));
    assert!(!o.status.success());
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        text.contains(&format!(
            "{}: line 3, column 21: `stream.target_latency_ms` 45000 ms is outside 200..=29999 \
             ms: the latency must be at least 200 ms and below the torrent's window of 30 s",
            s(&cfg)
        )),
        "{text}"
    );
    let o = check("[stream]\nsource = \"https://venue.example/e.torrent\"\n".into());
    assert!(!o.status.success());
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        text.contains(
            "line 2, column 10: `stream.source` is `https://venue.example/e.torrent`: https is \
             not supported yet"
        ),
        "{text}"
    );
    let o = check(format!(
        "[stream]\nsource = \"{}\"\ntarget_latency_ms = 2000\n",
        s(&torrent)
    ));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("below the torrent's window of 30 s"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

/// Polls `cond` every 20 ms until it holds or `limit` passes.
fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `receive --output - --status-addr`: the status line goes to stderr, stdout carries exactly
/// the stream (every byte of it a contiguous run of the injected file), the log on a
/// non-terminal stderr has no colour codes, and the final status keeps one meaning per field.
#[test]
fn stdout_carries_only_the_stream() {
    let input = nordlys::test_media::ts_file(nordlys::test_media::Spec::new("h264", 320, 180, 6));
    let dir = tempfile::tempdir().unwrap();
    let (key, torrent) = event(dir.path());
    let inj_out = dir.path().join("inject.out");
    let mut injector = Command::new(nordlys())
        .args(["inject", "--torrent", s(&torrent), "--key", s(&key)])
        .args([
            "--input",
            s(&input),
            "--listen",
            "127.0.0.1:0",
            "--linger",
            "5",
        ])
        .stdout(std::fs::File::create(&inj_out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut inj_addr = String::new();
    wait_for(Duration::from_secs(20), "the injector's address", || {
        let text = std::fs::read_to_string(&inj_out).unwrap_or_default();
        match text.lines().find_map(|l| l.strip_prefix("injecting on ")) {
            Some(a) => {
                inj_addr = a.to_string();
                true
            }
            None => false,
        }
    });
    // Files, not pipes: a pipe nobody reads while we wait would stall the receiver.
    let (rx_out, rx_err) = (dir.path().join("rx.out"), dir.path().join("rx.err"));
    let receiver = Command::new(nordlys())
        .args(["receive", "--torrent", s(&torrent), "--output", "-"])
        .args(["--peer", &inj_addr, "--listen", "127.0.0.1:0"])
        .args([
            "--status-addr",
            "127.0.0.1:0",
            "--latency",
            "1000",
            "--linger",
            "4",
        ])
        .stdout(std::fs::File::create(&rx_out).unwrap())
        .stderr(std::fs::File::create(&rx_err).unwrap())
        .spawn()
        .unwrap();
    let out = wait_within(receiver, Duration::from_secs(60), &["receive"]);
    let _ = injector.kill();
    let _ = injector.wait();
    let log = std::fs::read_to_string(&rx_err).unwrap();
    assert!(out.status.success(), "{log}");
    assert!(log.contains("status on http://127.0.0.1:"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log that is not a terminal: {log}"
    );
    assert!(!log.contains("Some("), "{log}");
    // The final status: state and ended agree, and lag_ms is the lag at the end of the
    // stream, not the time since the last output (which includes the 4 s linger).
    let fin = common::final_status(&log).expect("final status");
    assert_eq!(
        (fin["state"].as_str(), fin["ended"].as_bool()),
        (Some("ended"), Some(true)),
        "{fin}"
    );
    documented(&fin);
    let lag = fin["lag_ms"].as_u64().expect("lag_ms");
    assert!(lag < 3500, "final lag_ms {lag}: {fin}");
    let got = std::fs::read(&rx_out).unwrap();
    assert!(got.len() >= 188 * 100, "only {} bytes on stdout", got.len());
    assert_eq!(got[0], 0x47, "stdout does not start with a TS packet");
    let want = std::fs::read(&input).unwrap();
    let head = &got[..188 * 10];
    let at = want
        .windows(head.len())
        .position(|w| w == head)
        .expect("the start of stdout is not in the input");
    assert!(
        want[at..].starts_with(&got),
        "stdout is not a contiguous run of the input"
    );
}

#[test]
fn simulate_refuses_values_it_cannot_run_naming_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let sc = dir.path().join("sc.toml");
    for (text, message) in [
        (
            "duration_s = 10.0\nreceivers = 0\n",
            "line 2, column 13: `receivers` = 0 is out of range; expected a whole number from 1 \
             to 100000",
        ),
        (
            "receivers = 5\n\nloss = -0.1\n",
            "line 3, column 8: `loss` = -0.1 is out of range; expected a share from 0 up to (not \
             including) 0.5",
        ),
    ] {
        std::fs::write(&sc, text).unwrap();
        let o = run(&["simulate", s(&sc)]);
        fails_with(&o, &format!("{}: {message}", s(&sc)));
        assert!(
            o.stdout.is_empty(),
            "{}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
    std::fs::write(&sc, "receivers = 5\n").unwrap();
    let o = run(&["simulate", s(&sc), "--sweep", "10,0"]);
    fails_with(
        &o,
        "--sweep 0 is out of range; expected audience sizes from 1 to 100000",
    );
}

#[test]
fn simulate_over_seeds_summarises_the_spread_and_keeps_each_report() {
    let dir = tempfile::tempdir().unwrap();
    let sc = dir.path().join("sc.toml");
    std::fs::write(
        &sc,
        "receivers = 6\nduration_s = 4.0\njoin_from_s = 1.0\njoin_over_s = 1.0\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let o = run(&["simulate", s(&sc), "--seeds", "3,4,5", "--out", s(&out)]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for seed in [3, 4, 5] {
        assert!(
            stdout.contains(&format!("--- seed {seed}\n6 receivers")),
            "{stdout}"
        );
        let report = std::fs::read_to_string(out.join(format!("seed-{seed}/report.json"))).unwrap();
        assert!(report.contains(&format!("\"seed\": {seed},")), "{report}");
    }
    assert!(stdout.contains("=== over 3 seeds"), "{stdout}");
    assert!(stdout.contains("\ncontinuity >= 0.995: "), "{stdout}");
    let o = run(&["simulate", s(&sc), "--seeds", "3", "--seed", "4"]);
    assert!(
        !o.status.success(),
        "--seed and --seeds together are refused"
    );
}

/// The line after `prefix` in a file a node writes, once it is there.
fn wait_for_line(path: &Path, prefix: &str) -> String {
    let mut found = String::new();
    wait_for(Duration::from_secs(20), prefix, || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        match text.lines().find_map(|l| l.strip_prefix(prefix)) {
            Some(rest) => {
                found = rest.to_string();
                true
            }
            None => false,
        }
    });
    found
}

/// A receiver whose latency is more stream than the swarm ever holds (a 6 s stream, 8 s of
/// latency) says so in /status while it waits, and exits with an error naming the flag and
/// value within latency + 5 s of the first piece it hears of.
#[test]
fn impossible_latency_is_reported_then_refused_within_its_bound() {
    let input = nordlys::test_media::ts_file(nordlys::test_media::Spec::new("h264", 320, 180, 6));
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    let torrent = dir.path().join("t.torrent");
    assert!(run(&["keygen", "--out", s(&key)]).status.success());
    let o = run(&[
        "create",
        "--key",
        s(&key),
        "--name",
        "short",
        "--window",
        "10",
        "--out",
        s(&torrent),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let inj_out = dir.path().join("inject.out");
    let mut injector = Command::new(nordlys())
        .args(["inject", "--torrent", s(&torrent), "--key", s(&key)])
        .args([
            "--input",
            s(&input),
            "--listen",
            "127.0.0.1:0",
            "--linger",
            "60",
        ])
        .stdout(std::fs::File::create(&inj_out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let inj_addr = wait_for_line(&inj_out, "injecting on ");
    let (rx_out, rx_err) = (dir.path().join("rx.out"), dir.path().join("rx.err"));
    let receiver = Command::new(nordlys())
        .args(["receive", "--torrent", s(&torrent)])
        .args(["--output", s(&dir.path().join("out.ts"))])
        .args(["--peer", &inj_addr, "--listen", "127.0.0.1:0"])
        .args(["--status-addr", "127.0.0.1:0", "--latency", "8000"])
        .stdout(std::fs::File::create(&rx_out).unwrap())
        .stderr(std::fs::File::create(&rx_err).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let addr = wait_for_line(&rx_out, "status on http://");
    let port: u16 = addr
        .trim_end_matches("/status")
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("status port");
    wait_for(Duration::from_secs(15), "waiting_for in /status", || {
        common::http_status(port).is_some_and(|st| {
            st["state"] == "joining"
                && st["waiting_for"].as_str().is_some_and(|w| {
                    w == "waiting for 8000 ms of stream behind the newest piece (--latency); \
                          the swarm holds less so far"
                })
        })
    });
    let out = wait_within(receiver, Duration::from_secs(40), &["receive"]);
    let took = started.elapsed();
    let _ = injector.kill();
    let _ = injector.wait();
    let log = std::fs::read_to_string(&rx_err).unwrap();
    assert!(!out.status.success(), "{log}");
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("nordlys: no start ")
            && last.ends_with(
                " s after the first piece was announced: the swarm does not hold --latency 8000 \
                 ms of stream behind its newest piece (the stream is younger than that, or \
                 ended); lower the latency"
            ),
        "{log}"
    );
    assert!(log.contains("WARN"), "the wait was not logged: {log}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

/// Every field of a status is in the README's /status tables.
fn documented(status: &serde_json::Value) {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let missing: Vec<&String> = (status.as_object().expect("an object").keys())
        .filter(|k| !readme.contains(&format!("| `{k}`")) && !readme.contains(&format!(", `{k}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "/status fields not in README.md: {missing:?}"
    );
}

#[test]
fn the_players_status_fields_are_documented() {
    documented(&serde_json::to_value(nordlys::player::PlayerStats::default()).unwrap());
}

/// A receiver with no tracker and no peer starts with a warning and says in /status what it
/// waits for.
#[test]
fn a_receiver_without_peers_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (_, torrent) = event(dir.path());
    let (rx_out, rx_err) = (dir.path().join("rx.out"), dir.path().join("rx.err"));
    let mut receiver = Command::new(nordlys())
        .args(["receive", "--torrent", s(&torrent)])
        .args(["--output", s(&dir.path().join("out.ts"))])
        .args(["--listen", "127.0.0.1:0", "--status-addr", "127.0.0.1:0"])
        .stdout(std::fs::File::create(&rx_out).unwrap())
        .stderr(std::fs::File::create(&rx_err).unwrap())
        .spawn()
        .unwrap();
    let addr = wait_for_line(&rx_out, "status on http://");
    let port: u16 = addr
        .trim_end_matches("/status")
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("status port");
    let mut waiting = String::new();
    wait_for(Duration::from_secs(15), "waiting_for in /status", || {
        let st = common::http_status(port);
        waiting = st
            .as_ref()
            .and_then(|st| st["waiting_for"].as_str().map(str::to_string))
            .unwrap_or_default();
        !waiting.is_empty()
    });
    let _ = receiver.kill();
    let _ = receiver.wait();
    assert!(
        waiting.starts_with(
            "no peers: no tracker and no --peer: only peers that connect to 127.0.0.1:"
        ) && waiting.ends_with(" can be found"),
        "{waiting}"
    );
    let log = std::fs::read_to_string(&rx_err).unwrap();
    assert!(
        log.contains("no tracker (the torrent names none, no --tracker) and no --peer: waiting for peers to connect to 127.0.0.1:"),
        "{log}"
    );
    assert!(log.contains(&format!("joining: {waiting}")), "{log}");
}

/// A receiver whose only tracker cannot be reached says so in /status.
#[test]
fn a_receiver_says_no_tracker_is_reachable() {
    let dir = tempfile::tempdir().unwrap();
    let (_, torrent) = event(dir.path());
    // A port the kernel picked and nobody listens on any more: connections are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tracker = format!("http://127.0.0.1:{port}/announce");
    let (rx_out, rx_err) = (dir.path().join("rx.out"), dir.path().join("rx.err"));
    let mut receiver = Command::new(nordlys())
        .args(["receive", "--torrent", s(&torrent), "--tracker", &tracker])
        .args(["--output", s(&dir.path().join("out.ts"))])
        .args(["--listen", "127.0.0.1:0", "--status-addr", "127.0.0.1:0"])
        .stdout(std::fs::File::create(&rx_out).unwrap())
        .stderr(std::fs::File::create(&rx_err).unwrap())
        .spawn()
        .unwrap();
    let addr = wait_for_line(&rx_out, "status on http://");
    let status_port: u16 = addr
        .trim_end_matches("/status")
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("status port");
    let want = format!(
        "no peers: no tracker reachable; tracker {tracker} failed: cannot connect; no --peer"
    );
    let mut last = serde_json::Value::Null;
    wait_for(
        Duration::from_secs(15),
        "no tracker reachable in /status",
        || {
            last = common::http_status(status_port).unwrap_or_default();
            last["waiting_for"] == want.as_str()
        },
    );
    let _ = receiver.kill();
    let _ = receiver.wait();
    let log = std::fs::read_to_string(&rx_err).unwrap();
    assert!(log.contains(&format!("joining: {want}")), "{log}");
}
