//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod media;
pub mod opentracker;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

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
    let torrent = dir.join("event.torrent");
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
    create.extend(["--out", torrent.to_str().unwrap()]);
    for args in [vec!["keygen", "--out", key.to_str().unwrap()], create] {
        let out = std::process::Command::new(nordlys())
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (key, torrent)
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
