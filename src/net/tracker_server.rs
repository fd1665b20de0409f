//! The built-in HTTP tracker (`nordlys tracker --listen ADDR`).
//!
//! `GET /announce` takes the BEP 3 parameters and answers with compact `peers`/`peers6` (BEP 23,
//! BEP 7) when `compact=1`, else the dictionary list. `GET /scrape` answers for the given
//! infohashes (no full scrape). `GET /` is a one-line status. Bad requests get HTTP 200 with a
//! bencoded `failure reason`, as trackers do.
//!
//! The bookkeeping is [`Registry`], which takes `now` as an argument and does no I/O, so its
//! rules (expiry, limits, peer selection) are tested with synthetic time. Memory is bounded by
//! [`TrackerConfig`]: at most `max_torrents` swarms of at most `max_peers_per_torrent` peers.
//! Peers expire after two intervals without an announce; expired peers are dropped lazily on
//! every announce to their swarm and by a sweep every interval in [`serve`].
//!
//! A peer's address is the connection's remote IP. The `ip` parameter is honoured only when the
//! request comes from loopback (a local test harness or a reverse proxy on the same host).
//! Unlike opentracker, the announcing peer is left out of its own peer list.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bendy::encoding::Encoder;
use tokio::time::Instant;

use crate::torrent::InfoHash;

pub const DEFAULT_NUMWANT: usize = 50;
pub const MAX_NUMWANT: usize = 200;
/// At most this many infohashes in one scrape.
pub const MAX_SCRAPE_HASHES: usize = 64;
/// Longer queries are refused before parsing.
const MAX_QUERY_BYTES: usize = 4096;

#[derive(Clone, Debug)]
pub struct TrackerConfig {
    /// The `interval` sent to peers; peers expire after twice this without an announce.
    pub interval: Duration,
    pub max_torrents: usize,
    pub max_peers_per_torrent: usize,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            interval: Duration::from_secs(30),
            max_torrents: 10_000,
            max_peers_per_torrent: 5_000,
        }
    }
}

/// What a peer told us in one announce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnounceParams {
    pub info_hash: InfoHash,
    pub peer_id: [u8; 20],
    pub port: u16,
    pub left: u64,
    pub event: Option<String>,
    pub numwant: usize,
    pub compact: bool,
    pub no_peer_id: bool,
    pub ip: Option<IpAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    pub peer_id: [u8; 20],
    pub addr: SocketAddr,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnounceReply {
    pub interval: Duration,
    pub complete: usize,
    pub incomplete: usize,
    pub peers: Vec<PeerInfo>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScrapeEntry {
    pub complete: usize,
    pub incomplete: usize,
}

struct Peer {
    addr: SocketAddr,
    seeder: bool,
    last_seen: Instant,
}

#[derive(Default)]
struct Swarm {
    peers: HashMap<[u8; 20], Peer>,
    /// Rotates the starting point of peer selection so large swarms spread their load.
    cursor: usize,
}

impl Swarm {
    fn prune(&mut self, now: Instant, ttl: Duration) {
        self.peers
            .retain(|_, p| now.saturating_duration_since(p.last_seen) <= ttl);
    }

    fn counts(&self) -> ScrapeEntry {
        let complete = self.peers.values().filter(|p| p.seeder).count();
        ScrapeEntry {
            complete,
            incomplete: self.peers.len() - complete,
        }
    }
}

/// All swarms the tracker knows. Pure bookkeeping: time comes in as `now`.
pub struct Registry {
    config: TrackerConfig,
    swarms: HashMap<InfoHash, Swarm>,
}

impl Registry {
    pub fn new(config: TrackerConfig) -> Self {
        Registry {
            config,
            swarms: HashMap::new(),
        }
    }

    fn ttl(&self) -> Duration {
        self.config.interval * 2
    }

    /// Records an announce from `addr` and returns up to `numwant` other peers.
    pub fn announce(
        &mut self,
        now: Instant,
        p: &AnnounceParams,
        addr: SocketAddr,
    ) -> Result<AnnounceReply, &'static str> {
        let ttl = self.ttl();
        let interval = self.config.interval;
        if p.event.as_deref() == Some("stopped") {
            if let Some(swarm) = self.swarms.get_mut(&p.info_hash) {
                swarm.peers.remove(&p.peer_id);
                swarm.prune(now, ttl);
                let counts = swarm.counts();
                if swarm.peers.is_empty() {
                    self.swarms.remove(&p.info_hash);
                }
                return Ok(AnnounceReply {
                    interval,
                    complete: counts.complete,
                    incomplete: counts.incomplete,
                    peers: Vec::new(),
                });
            }
            return Ok(AnnounceReply {
                interval,
                complete: 0,
                incomplete: 0,
                peers: Vec::new(),
            });
        }
        if !self.swarms.contains_key(&p.info_hash) && self.swarms.len() >= self.config.max_torrents
        {
            return Err("tracker is full (too many torrents)");
        }
        let max_peers = self.config.max_peers_per_torrent;
        let swarm = self.swarms.entry(p.info_hash).or_default();
        swarm.prune(now, ttl);
        let peer = Peer {
            addr,
            seeder: p.left == 0,
            last_seen: now,
        };
        if let Some(existing) = swarm.peers.get_mut(&p.peer_id) {
            *existing = peer;
        } else if swarm.peers.len() < max_peers {
            swarm.peers.insert(p.peer_id, peer);
        }
        // A full swarm still hands out peers; the newcomer is just not listed to others.
        let counts = swarm.counts();
        let others = swarm.peers.len() - usize::from(swarm.peers.contains_key(&p.peer_id));
        let want = p.numwant.min(others);
        let mut peers = Vec::with_capacity(want);
        if want > 0 {
            let start = swarm.cursor % swarm.peers.len();
            swarm.cursor = swarm.cursor.wrapping_add(want);
            let iter = swarm
                .peers
                .iter()
                .skip(start)
                .chain(swarm.peers.iter().take(start));
            for (id, peer) in iter {
                if peers.len() == want {
                    break;
                }
                if *id != p.peer_id {
                    peers.push(PeerInfo {
                        peer_id: *id,
                        addr: peer.addr,
                    });
                }
            }
        }
        if swarm.peers.is_empty() {
            self.swarms.remove(&p.info_hash);
        }
        Ok(AnnounceReply {
            interval,
            complete: counts.complete,
            incomplete: counts.incomplete,
            peers,
        })
    }

    pub fn scrape(&mut self, now: Instant, hash: &InfoHash) -> ScrapeEntry {
        let ttl = self.ttl();
        match self.swarms.get_mut(hash) {
            Some(swarm) => {
                swarm.prune(now, ttl);
                swarm.counts()
            }
            None => ScrapeEntry::default(),
        }
    }

    /// Drops expired peers and empty swarms everywhere.
    pub fn prune(&mut self, now: Instant) {
        let ttl = self.ttl();
        self.swarms.retain(|_, s| {
            s.prune(now, ttl);
            !s.peers.is_empty()
        });
    }

    /// `(torrents, peers)` currently held.
    pub fn size(&self) -> (usize, usize) {
        let peers = self.swarms.values().map(|s| s.peers.len()).sum();
        (self.swarms.len(), peers)
    }
}

/// Shared state of the HTTP tracker.
#[derive(Clone)]
pub struct TrackerState {
    registry: Arc<Mutex<Registry>>,
}

impl TrackerState {
    pub fn new(config: TrackerConfig) -> Self {
        TrackerState {
            registry: Arc::new(Mutex::new(Registry::new(config))),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Registry) -> T) -> T {
        // A panic while holding the lock cannot leave the registry inconsistent in a way that
        // matters more than refusing service, so recover from poisoning.
        let mut guard = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    pub fn prune(&self) {
        self.with(|r| r.prune(Instant::now()));
    }

    pub fn size(&self) -> (usize, usize) {
        self.with(|r| r.size())
    }
}

pub fn router(state: TrackerState) -> Router {
    Router::new()
        .route("/announce", get(announce_handler))
        .route("/scrape", get(scrape_handler))
        .route("/", get(status_handler))
        .with_state(state)
}

/// Serves the tracker on `listener` until the listener fails.
pub async fn serve(listener: tokio::net::TcpListener, config: TrackerConfig) -> anyhow::Result<()> {
    let interval = config.interval.max(Duration::from_millis(10));
    let state = TrackerState::new(config);
    let sweeper_state = state.clone();
    let sweeper = tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            sweeper_state.prune();
        }
    });
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let result = axum::serve(listener, app).await;
    sweeper.abort();
    Ok(result?)
}

async fn status_handler(State(state): State<TrackerState>) -> String {
    let (torrents, peers) = state.size();
    format!("nordlys tracker: {torrents} torrents, {peers} peers\n")
}

async fn announce_handler(State(state): State<TrackerState>, req: Request) -> Response {
    let Some(ConnectInfo(remote)) = req.extensions().get::<ConnectInfo<SocketAddr>>().copied()
    else {
        return failure("server has no remote address for this connection");
    };
    let params = match parse_announce(req.uri().query().unwrap_or("")) {
        Ok(p) => p,
        Err(reason) => return failure(reason),
    };
    let remote_ip = remote.ip().to_canonical();
    let ip = match params.ip {
        Some(ip) if remote_ip.is_loopback() => ip.to_canonical(),
        _ => remote_ip,
    };
    let addr = SocketAddr::new(ip, params.port);
    match state.with(|r| r.announce(Instant::now(), &params, addr)) {
        Ok(reply) => bencoded(encode_announce(&reply, &params)),
        Err(reason) => failure(reason),
    }
}

async fn scrape_handler(State(state): State<TrackerState>, req: Request) -> Response {
    let query = req.uri().query().unwrap_or("");
    if query.len() > MAX_QUERY_BYTES {
        return failure("query too long");
    }
    let mut hashes = Vec::new();
    for (key, value) in query_pairs(query) {
        if key == b"info_hash" {
            match <[u8; 20]>::try_from(value.as_slice()) {
                Ok(h) => hashes.push(InfoHash(h)),
                Err(_) => return failure("info_hash must be 20 bytes"),
            }
        }
    }
    if hashes.is_empty() {
        return failure("full scrape is not supported; give info_hash");
    }
    if hashes.len() > MAX_SCRAPE_HASHES {
        return failure("too many info_hash values");
    }
    hashes.sort();
    hashes.dedup();
    let now = Instant::now();
    let entries: Vec<_> = state.with(|r| hashes.iter().map(|h| (*h, r.scrape(now, h))).collect());
    let mut enc = Encoder::new();
    let result = enc.emit_dict(|mut d| {
        d.emit_pair_with(b"files", |e| {
            e.emit_dict(|mut files| {
                for (hash, entry) in &entries {
                    files.emit_pair_with(&hash.0, |e| {
                        e.emit_dict(|mut f| {
                            f.emit_pair(b"complete", entry.complete)?;
                            f.emit_pair(b"downloaded", 0)?;
                            f.emit_pair(b"incomplete", entry.incomplete)
                        })
                    })?;
                }
                Ok(())
            })
        })
    });
    bencoded(result.and_then(|_| enc.get_output()))
}

fn bencoded(body: Result<Vec<u8>, bendy::encoding::Error>) -> Response {
    match body {
        Ok(body) => ([(header::CONTENT_TYPE, "text/plain")], body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "encoding a tracker response failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

fn failure(reason: &str) -> Response {
    let mut enc = Encoder::new();
    let result = enc.emit_dict(|mut d| d.emit_pair(b"failure reason", reason));
    bencoded(result.and_then(|_| enc.get_output()))
}

fn encode_announce(
    reply: &AnnounceReply,
    params: &AnnounceParams,
) -> Result<Vec<u8>, bendy::encoding::Error> {
    let interval = reply.interval.as_secs().max(1);
    let mut enc = Encoder::new();
    if params.compact {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for p in &reply.peers {
            match p.addr {
                SocketAddr::V4(a) => {
                    v4.extend_from_slice(&a.ip().octets());
                    v4.extend_from_slice(&a.port().to_be_bytes());
                }
                SocketAddr::V6(a) => {
                    v6.extend_from_slice(&a.ip().octets());
                    v6.extend_from_slice(&a.port().to_be_bytes());
                }
            }
        }
        enc.emit_dict(|mut d| {
            d.emit_pair(b"complete", reply.complete)?;
            d.emit_pair(b"incomplete", reply.incomplete)?;
            d.emit_pair(b"interval", interval)?;
            d.emit_pair_with(b"peers", |e| e.emit_bytes(&v4))?;
            if !v6.is_empty() {
                d.emit_pair_with(b"peers6", |e| e.emit_bytes(&v6))?;
            }
            Ok(())
        })?;
    } else {
        enc.emit_dict(|mut d| {
            d.emit_pair(b"complete", reply.complete)?;
            d.emit_pair(b"incomplete", reply.incomplete)?;
            d.emit_pair(b"interval", interval)?;
            d.emit_pair_with(b"peers", |e| {
                e.emit_list(|l| {
                    for p in &reply.peers {
                        l.emit_dict(|mut pd| {
                            pd.emit_pair(b"ip", p.addr.ip().to_string())?;
                            if !params.no_peer_id {
                                pd.emit_pair_with(b"peer id", |e| e.emit_bytes(&p.peer_id))?;
                            }
                            pd.emit_pair(b"port", p.addr.port())
                        })?;
                    }
                    Ok(())
                })
            })
        })?;
    }
    enc.get_output()
}

/// Parses an announce query string. Binary values are percent-decoded to bytes (never through
/// UTF-8); unknown keys are ignored.
pub fn parse_announce(query: &str) -> Result<AnnounceParams, &'static str> {
    if query.len() > MAX_QUERY_BYTES {
        return Err("query too long");
    }
    let mut info_hash = None;
    let mut peer_id = None;
    let mut port = None;
    let mut left = 0;
    let mut event = None;
    let mut numwant = DEFAULT_NUMWANT;
    let mut compact = false;
    let mut no_peer_id = false;
    let mut ip = None;
    for (key, value) in query_pairs(query) {
        let text = || std::str::from_utf8(&value).ok();
        match key.as_slice() {
            b"info_hash" => {
                info_hash = Some(InfoHash(
                    value
                        .as_slice()
                        .try_into()
                        .map_err(|_| "info_hash must be 20 bytes")?,
                ))
            }
            b"peer_id" => {
                peer_id = Some(
                    <[u8; 20]>::try_from(value.as_slice())
                        .map_err(|_| "peer_id must be 20 bytes")?,
                )
            }
            b"port" => {
                port = Some(
                    text()
                        .and_then(|s| s.parse::<u16>().ok())
                        .filter(|p| *p != 0)
                        .ok_or("invalid port")?,
                )
            }
            b"left" => left = text().and_then(|s| s.parse().ok()).ok_or("invalid left")?,
            b"event" => match text() {
                Some("started" | "stopped" | "completed") => event = text().map(str::to_string),
                Some("" | "empty") => {}
                _ => return Err("invalid event"),
            },
            b"numwant" => {
                numwant = text()
                    .and_then(|s| s.parse::<i64>().ok())
                    .ok_or("invalid numwant")?
                    .clamp(0, MAX_NUMWANT as i64) as usize
            }
            b"compact" => compact = value.as_slice() == b"1",
            b"no_peer_id" => no_peer_id = value.as_slice() == b"1",
            b"ip" => ip = text().and_then(|s| s.parse::<IpAddr>().ok()),
            _ => {}
        }
    }
    Ok(AnnounceParams {
        info_hash: info_hash.ok_or("missing info_hash")?,
        peer_id: peer_id.ok_or("missing peer_id")?,
        port: port.ok_or("missing port")?,
        left,
        event,
        numwant,
        compact,
        no_peer_id,
        ip,
    })
}

/// `key=value` pairs of a query, both percent-decoded to raw bytes (`+` is a space).
fn query_pairs(query: &str) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> + '_ {
    query.split('&').filter(|s| !s.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k), percent_decode(v))
    })
}

fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod encode_tests;
