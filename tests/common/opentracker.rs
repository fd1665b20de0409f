//! Starts a real opentracker on a loopback port the kernel picks, for integration tests.
//!
//! Debian's `opentracker` is the whitelist build: it refuses every infohash not listed in the
//! file named by `access.whitelist`. We write that file and a config into a temporary directory
//! and run, with that directory as working directory:
//!
//! ```text
//! /usr/bin/opentracker -f DIR/opentracker.conf
//!
//! # DIR/opentracker.conf
//! listen.tcp 127.0.0.1:0
//! access.whitelist DIR/whitelist
//! ```
//!
//! Port 0 lets the kernel pick a free port as opentracker binds it; opentracker does not print
//! it, so it is read back from `/proc` (the listening socket among the process's descriptors).
//! With only `listen.tcp` given it binds no UDP port (so parallel instances do not clash on the
//! default 6969). Started as root it switches to user `nobody`, so the directory and files are
//! made world-readable. The whitelist is loaded by a worker thread, possibly after the socket
//! accepts connections, so readiness is an announce that is not refused (then withdrawn with
//! `event=stopped`). Note that opentracker lists the announcing peer itself in its answer.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const OPENTRACKER: &str = "/usr/bin/opentracker";
const START_DEADLINE: Duration = Duration::from_secs(10);

pub struct OpenTracker {
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl OpenTracker {
    /// Starts opentracker allowing the given hex infohashes (40 hex digits each) and waits
    /// until it answers announces for them. Panics with a clear message when it cannot.
    pub fn start(infohashes: &[String]) -> Self {
        assert!(
            Path::new(OPENTRACKER).exists(),
            "{OPENTRACKER} is missing: install it with `apt-get install -y opentracker` \
             (the project's test command does this)"
        );
        for h in infohashes {
            assert!(
                h.len() == 40 && h.bytes().all(|b| b.is_ascii_hexdigit()),
                "not a hex infohash: {h:?}"
            );
        }
        Self::try_start(infohashes).unwrap_or_else(|e| panic!("opentracker did not start: {e}"))
    }

    fn try_start(infohashes: &[String]) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("opentracker-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let world_readable = |p: &Path, mode| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
                .map_err(|e| e.to_string())
        };
        world_readable(dir.path(), 0o755)?;
        let whitelist = dir.path().join("whitelist");
        let mut list = infohashes.join("\n").to_ascii_lowercase();
        list.push('\n');
        std::fs::write(&whitelist, list).map_err(|e| e.to_string())?;
        world_readable(&whitelist, 0o644)?;
        let config = dir.path().join("opentracker.conf");
        std::fs::write(
            &config,
            format!(
                "listen.tcp 127.0.0.1:0\naccess.whitelist {}\n",
                whitelist.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        world_readable(&config, 0o644)?;
        let log = std::fs::File::create(dir.path().join("log")).map_err(|e| e.to_string())?;
        let child = Command::new(OPENTRACKER)
            .arg("-f")
            .arg(&config)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawning {OPENTRACKER}: {e}"))?;
        let mut tracker = OpenTracker {
            port: 0,
            child,
            dir,
        };
        tracker.port = tracker.wait_listening()?;
        tracker.wait_ready(infohashes.first())?;
        Ok(tracker)
    }

    pub fn announce_url(&self) -> String {
        format!("http://127.0.0.1:{}/announce", self.port)
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// The port the kernel gave opentracker's listening socket, once it has one.
    fn wait_listening(&mut self) -> Result<u16, String> {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("opentracker exited with {status}: {}", self.log()));
            }
            if let Some(&port) = super::listening_ports(self.child.id()).first() {
                return Ok(port);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "opentracker listened on no port within {START_DEADLINE:?}; log: {}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_ready(&mut self, probe_hash: Option<&String>) -> Result<(), String> {
        let deadline = Instant::now() + START_DEADLINE;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("opentracker exited with {status}: {}", self.log()));
            }
            let ready = match probe_hash {
                None => TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok(),
                Some(hash) => match self.get(&probe_query(hash, "started")) {
                    Ok(body) if !body.contains("failure reason") => {
                        // Withdraw the probe peer so tests see only their own peers.
                        let _ = self.get(&probe_query(hash, "stopped"));
                        true
                    }
                    _ => false,
                },
            };
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "opentracker on port {} not ready within {START_DEADLINE:?}; log: {}",
                    self.port,
                    self.log()
                ));
            }
            // Poll interval while waiting for the process to come up.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A plain HTTP/1.0 GET of `path_and_query`; the body as (lossy) text.
    pub fn get(&self, path_and_query: &str) -> std::io::Result<String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(
            format!("GET {path_and_query} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes(),
        )?;
        let mut response = Vec::new();
        s.take(1 << 20).read_to_end(&mut response)?;
        let text = String::from_utf8_lossy(&response).into_owned();
        Ok(match text.split_once("\r\n\r\n") {
            Some((_, body)) => body.to_string(),
            None => text,
        })
    }
}

impl Drop for OpenTracker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn probe_query(hex_hash: &str, event: &str) -> String {
    let mut q = String::from("/announce?info_hash=");
    for pair in hex_hash.as_bytes().chunks(2) {
        q.push('%');
        q.push_str(std::str::from_utf8(pair).unwrap_or("00"));
    }
    q.push_str("&peer_id=-PROBE-0000000000000&port=1&left=0&compact=1&numwant=0&event=");
    q.push_str(event);
    q
}
