//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod media;
pub mod opentracker;
pub mod raw;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

/// The `nordlys` binary cargo built for these tests.
pub fn nordlys() -> &'static str {
    env!("CARGO_BIN_EXE_nordlys")
}

/// A new key and a live torrent for it in `dir`, announcing to `tracker` if given.
pub fn make_event(
    dir: &std::path::Path,
    tracker: Option<&str>,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = dir.join("event.key");
    run_ok(&["keygen", "--out", key.to_str().unwrap()]);
    let torrent = create_torrent(&key, tracker, &dir.join("event.torrent"));
    (key, torrent)
}

/// `nordlys create` of the test event signed with `key`, naming `tracker` if given, written
/// to `out`. The announce URL is outside the info dictionary: the same key gives the same
/// infohash with or without a tracker.
pub fn create_torrent(
    key: &std::path::Path,
    tracker: Option<&str>,
    out: &std::path::Path,
) -> std::path::PathBuf {
    let mut create = vec![
        "create",
        "--key",
        key.to_str().unwrap(),
        "--name",
        "Test concert",
    ];
    if let Some(url) = tracker {
        create.extend(["--tracker", url]);
    }
    create.extend(["--out", out.to_str().unwrap()]);
    run_ok(&create);
    out.to_path_buf()
}

/// Runs `nordlys ARGS` to the end; panics with its stderr if it fails.
fn run_ok(args: &[&str]) {
    let out = std::process::Command::new(nordlys())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The address a child process printed on a line `{prefix}ADDR{suffix}` of `stdout` (the file
/// its standard output goes to), if it has printed it yet. This is how the tests learn the
/// ports that the kernel picked for `127.0.0.1:0`: a port chosen in advance could be taken
/// meanwhile by another test or by one of a swarm's outbound connections.
pub fn printed_addr(stdout: &Path, prefix: &str, suffix: &str) -> Option<SocketAddr> {
    let out = std::fs::read_to_string(stdout).ok()?;
    out.lines()
        .find_map(|l| l.strip_prefix(prefix)?.strip_suffix(suffix))?
        .parse()
        .ok()
}

/// Waits (up to `limit`) until `child` has printed its `{prefix}ADDR{suffix}` line into
/// `stdout`; panics if it exits first or takes longer.
pub fn wait_printed_addr(
    child: &mut Child,
    stdout: &Path,
    prefix: &str,
    suffix: &str,
    limit: Duration,
) -> SocketAddr {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(addr) = printed_addr(stdout, prefix, suffix) {
            return addr;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the process exited ({status}) before printing `{prefix}ADDR{suffix}`; stdout: {}",
                std::fs::read_to_string(stdout).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "no `{prefix}ADDR{suffix}` line within {limit:?}; stdout: {}",
            std::fs::read_to_string(stdout).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The status port a node started with `--status-addr 127.0.0.1:0` printed
/// (`status on http://ADDR/status`), once it has.
pub fn status_port(stdout: &Path) -> Option<u16> {
    printed_addr(stdout, "status on http://", "/status").map(|a| a.port())
}

/// As [`status_port`], waiting for it.
pub fn wait_status_port(child: &mut Child, stdout: &Path) -> u16 {
    wait_printed_addr(
        child,
        stdout,
        "status on http://",
        "/status",
        Duration::from_secs(15),
    )
    .port()
}

/// Polls `GET /status` on `port` until `pred` holds (or `limit` passes, then panics with
/// the last status seen); returns that status.
pub fn wait_status(
    port: u16,
    limit: Duration,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    let mut last = None;
    while Instant::now() < deadline {
        if let Some(st) = http_status(port) {
            if pred(&st) {
                return st;
            }
            last = Some(st);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {limit:?} waiting for {what}; last status {last:#?}");
}

/// TCP ports that process `pid` listens on (from `/proc`): how the tests learn the port of a
/// program that binds `127.0.0.1:0` but does not print it (opentracker).
pub fn listening_ports(pid: u32) -> Vec<u16> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return vec![];
    };
    let inodes: Vec<String> = fds
        .filter_map(|e| {
            let link = std::fs::read_link(e.ok()?.path()).ok()?;
            let link = link.to_str()?;
            Some(
                link.strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect();
    let mut ports = vec![];
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]) {
                let port = f[1]
                    .rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok());
                ports.extend(port);
            }
        }
    }
    ports
}

/// `GET /status` on 127.0.0.1:port; `None` while nothing answers.
pub fn http_status(port: u16) -> Option<serde_json::Value> {
    let mut s =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(300))
            .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let json = body.split("\r\n\r\n").nth(1)?;
    serde_json::from_str(json).ok()
}

/// The `final status {json}` line a node prints on stderr as it exits.
pub fn final_status(log: &str) -> Option<serde_json::Value> {
    let line = log
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("final status "))?;
    serde_json::from_str(line).ok()
}

/// Peak resident memory of a process (VmHWM), in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `GET path` on 127.0.0.1:port: the response's head and body; `None` while nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(String, String)> {
    let mut s =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(300))
            .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((head.to_string(), body.to_string()))
}
