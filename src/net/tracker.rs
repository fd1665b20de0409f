//! BEP 3 HTTP tracker client.
//!
//! `announce` sends one announce (always `compact=1`, BEP 23) and decodes the answer: compact
//! `peers` (6 bytes each), the older dictionary list form, and BEP 7 `peers6` (18 bytes each).
//! The body is read in chunks and abandoned past `MAX_RESPONSE_BYTES`; the whole exchange has a
//! deadline; nothing a tracker sends can panic the process.
//!
//! Responses are decoded with the lenient bounded bencode reader of the protocol crate
//! ([`nordlys_proto::bencode`], which says why not bendy): real trackers send unsorted keys.
//!
//! `run_announcer` is the announce loop of a running peer: `started` to every tracker at once, a
//! quick first re-announce so a new swarm forms fast, then the tracker's interval, exponential
//! backoff on failure, `stopped` on the way out.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::torrent::InfoHash;

pub use nordlys_proto::bencode::Value;

/// Reads the first bencode value of a tracker's body, leniently (unsorted and duplicate keys,
/// the first wins) and bounded (see [`nordlys_proto::bencode`]). Bytes after the value are
/// ignored: some trackers end their body with a newline.
pub fn bdecode(body: &[u8]) -> Result<Value<'_>, nordlys_proto::bencode::Error> {
    nordlys_proto::bencode::decode_prefix(body).map(|(value, _)| value)
}

/// Tracker answers larger than this are abandoned (about 40,000 compact IPv4 peers).
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024;
/// Deadline for one whole announce: connect, request, and reading the body.
pub const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(10);
/// The tracker's interval is clamped to this range.
pub const MIN_INTERVAL: Duration = Duration::from_secs(5);
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// Used when a tracker sends no `interval`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1800);
/// Longest failure reason or warning we keep (trackers' texts are short).
const MAX_MESSAGE_CHARS: usize = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Started,
    Stopped,
    Completed,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Started => "started",
            Event::Stopped => "stopped",
            Event::Completed => "completed",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Announce {
    pub info_hash: InfoHash,
    pub peer_id: [u8; 20],
    pub port: u16,
    pub uploaded: u64,
    pub downloaded: u64,
    pub left: u64,
    pub event: Option<Event>,
    pub numwant: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnounceResponse {
    /// The tracker's `interval`, clamped to [`MIN_INTERVAL`, `MAX_INTERVAL`].
    pub interval: Duration,
    /// The tracker's `min interval`, clamped the same way, if it sent one.
    pub min_interval: Option<Duration>,
    /// IPv4 and IPv6 peers, duplicates and port-0 entries removed, in the tracker's order.
    pub peers: Vec<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    #[error("tracker URL {0:?} is not an http:// URL")]
    BadUrl(String),
    #[error("tracker request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("tracker answered HTTP {0}")]
    Status(u16),
    #[error("tracker did not answer within {} s", .0.as_secs_f64())]
    Timeout(Duration),
    #[error("tracker response is larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
    #[error("malformed tracker response: {0}")]
    Malformed(String),
    #[error("tracker refused the announce: {0}")]
    Failure(String),
}

/// The HTTP client for announces: one connection per announce, none kept idle. Trackers
/// such as opentracker answer HTTP/1.1 without `Connection: close` and then close, so a kept
/// connection can be dead when the next announce takes it: the request meets a reset (2 runs
/// in 60 of `tests/tracker_opentracker.rs` before this). Announces are seconds apart, so a
/// kept connection saves nothing worth that.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap_or_default()
}

/// One announce with the default deadline ([`ANNOUNCE_TIMEOUT`]).
pub async fn announce(
    client: &reqwest::Client,
    url: &str,
    a: &Announce,
) -> Result<AnnounceResponse, TrackerError> {
    announce_with_timeout(client, url, a, ANNOUNCE_TIMEOUT).await
}

/// One announce that gives up after `timeout` (connect, request and body together).
pub async fn announce_with_timeout(
    client: &reqwest::Client,
    url: &str,
    a: &Announce,
    timeout: Duration,
) -> Result<AnnounceResponse, TrackerError> {
    let full = announce_url(url, a)?;
    let body = match tokio::time::timeout(timeout, fetch_bounded(client, &full)).await {
        Ok(result) => result?,
        Err(_) => return Err(TrackerError::Timeout(timeout)),
    };
    parse_response(&body)
}

/// The announce URL: `base` plus the BEP 3 parameters, appended with `&` when `base` already has
/// a query, placed before any `#fragment`.
pub fn announce_url(base: &str, a: &Announce) -> Result<String, TrackerError> {
    if !base.starts_with("http://") && !base.starts_with("https://") {
        return Err(TrackerError::BadUrl(base.to_string()));
    }
    let (base, fragment) = match base.find('#') {
        Some(i) => base.split_at(i),
        None => (base, ""),
    };
    let mut out = String::with_capacity(base.len() + 256);
    out.push_str(base);
    if !base.contains('?') {
        out.push('?');
    } else if !base.ends_with('?') && !base.ends_with('&') {
        out.push('&');
    }
    out.push_str("info_hash=");
    percent_encode_into(&a.info_hash.0, &mut out);
    out.push_str("&peer_id=");
    percent_encode_into(&a.peer_id, &mut out);
    out.push_str(&format!(
        "&port={}&uploaded={}&downloaded={}&left={}&compact=1&no_peer_id=1&numwant={}",
        a.port, a.uploaded, a.downloaded, a.left, a.numwant
    ));
    if let Some(event) = a.event {
        out.push_str("&event=");
        out.push_str(event.as_str());
    }
    out.push_str(fragment);
    Ok(out)
}

/// Percent-encodes every byte outside RFC 3986's unreserved set (`A-Z a-z 0-9 - . _ ~`).
pub fn percent_encode_into(bytes: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
}

async fn fetch_bounded(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, TrackerError> {
    let mut response = client.get(url).send().await?;
    let status = response.status();
    if response
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
    {
        return Err(TrackerError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(TrackerError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        // Some trackers send their bencoded failure reason with a 4xx status.
        if let Err(e @ TrackerError::Failure(_)) = parse_response(&body) {
            return Err(e);
        }
        return Err(TrackerError::Status(status.as_u16()));
    }
    Ok(body)
}

/// Decodes a tracker's announce answer.
pub fn parse_response(body: &[u8]) -> Result<AnnounceResponse, TrackerError> {
    let value = bdecode(body).map_err(|e| TrackerError::Malformed(e.to_string()))?;
    let Value::Dict(_) = value else {
        return Err(TrackerError::Malformed(
            "top level is not a dictionary".into(),
        ));
    };
    if let Some(reason) = value.get(b"failure reason") {
        let text = match reason {
            Value::Bytes(b) => message_text(b),
            _ => "(failure reason is not a string)".into(),
        };
        return Err(TrackerError::Failure(text));
    }
    if let Some(Value::Bytes(warning)) = value.get(b"warning message") {
        tracing::warn!(warning = %message_text(warning), "tracker warning");
    }
    let interval = match value.get(b"interval") {
        Some(Value::Int(secs)) => clamp_interval(*secs),
        Some(_) => return Err(TrackerError::Malformed("interval is not an integer".into())),
        None => DEFAULT_INTERVAL,
    };
    let min_interval = match value.get(b"min interval") {
        Some(Value::Int(secs)) => Some(clamp_interval(*secs)),
        _ => None,
    };
    let mut peers = Vec::new();
    match value.get(b"peers") {
        Some(Value::Bytes(compact)) => {
            if compact.len() % 6 != 0 {
                tracing::debug!(len = compact.len(), "compact peers not a multiple of 6");
            }
            for c in compact.chunks_exact(6) {
                let ip = Ipv4Addr::new(c[0], c[1], c[2], c[3]);
                peers.push(SocketAddr::new(ip.into(), u16::from_be_bytes([c[4], c[5]])));
            }
        }
        Some(Value::List(list)) => {
            for entry in list {
                let ip = match entry.get(b"ip") {
                    Some(Value::Bytes(ip)) => std::str::from_utf8(ip)
                        .ok()
                        .and_then(|s| s.parse::<IpAddr>().ok()),
                    _ => None,
                };
                let port = match entry.get(b"port") {
                    Some(Value::Int(p)) => u16::try_from(*p).ok(),
                    _ => None,
                };
                // Host names in `ip` are legal in BEP 3 but would need a resolver; skip them.
                if let (Some(ip), Some(port)) = (ip, port) {
                    peers.push(SocketAddr::new(ip.to_canonical(), port));
                }
            }
        }
        Some(_) => {
            return Err(TrackerError::Malformed(
                "peers is neither string nor list".into(),
            ));
        }
        None => {}
    }
    if let Some(Value::Bytes(compact6)) = value.get(b"peers6") {
        for c in compact6.chunks_exact(18) {
            let octets: [u8; 16] = c[..16].try_into().expect("chunk of 18");
            let ip = Ipv6Addr::from(octets);
            peers.push(SocketAddr::new(
                IpAddr::V6(ip).to_canonical(),
                u16::from_be_bytes([c[16], c[17]]),
            ));
        }
    }
    let mut seen = HashSet::with_capacity(peers.len());
    peers.retain(|p| p.port() != 0 && seen.insert(*p));
    Ok(AnnounceResponse {
        interval,
        min_interval,
        peers,
    })
}

fn clamp_interval(secs: i64) -> Duration {
    let secs = secs.clamp(MIN_INTERVAL.as_secs() as i64, MAX_INTERVAL.as_secs() as i64);
    Duration::from_secs(secs as u64)
}

fn message_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .take(MAX_MESSAGE_CHARS)
        .collect()
}

/// What each tracker last said, by URL: how many peers it named, or why the announce failed.
/// A tracker not in the map has not answered yet. For the receiver's "why no peers".
pub type Health = Arc<Mutex<BTreeMap<String, Result<usize, String>>>>;

/// A failed announce in a few words (reqwest's own text repeats the URL and its causes).
fn in_brief(e: &TrackerError) -> String {
    match e {
        TrackerError::Http(e) if e.is_connect() => "cannot connect".into(),
        TrackerError::Http(e) if e.is_timeout() => "no answer in time".into(),
        e => e.to_string(),
    }
}

/// Timings of [`run_announcer`]; `Default` is what production uses.
#[derive(Clone, Copy, Debug)]
pub struct AnnouncerTiming {
    /// The first re-announce after a successful `started` comes this soon (ignoring the
    /// tracker's `min interval` once), so peers that joined just after us are found quickly.
    pub first_reannounce: Duration,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Deadline for the best-effort `stopped` announce.
    pub stop_timeout: Duration,
    pub announce_timeout: Duration,
}

impl Default for AnnouncerTiming {
    fn default() -> Self {
        AnnouncerTiming {
            first_reannounce: Duration::from_secs(3),
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            stop_timeout: Duration::from_secs(2),
            announce_timeout: ANNOUNCE_TIMEOUT,
        }
    }
}

/// Announces to every tracker in `urls` concurrently until `stop` turns true (or its sender is
/// dropped, or `peers_out` is closed), forwarding every non-empty peer list to `peers_out`.
/// `stats` is read before each announce for `(uploaded, downloaded)`. Returns after the
/// `stopped` announces are done or timed out.
pub async fn run_announcer(
    urls: Vec<String>,
    base: Announce,
    stats: impl Fn() -> (u64, u64) + Send + Sync + 'static,
    peers_out: mpsc::Sender<Vec<SocketAddr>>,
    stop: watch::Receiver<bool>,
    health: Health,
) {
    run_announcer_with(
        urls,
        base,
        stats,
        peers_out,
        stop,
        AnnouncerTiming::default(),
        health,
    )
    .await
}

/// [`run_announcer`] with explicit timings (tests use short ones).
pub async fn run_announcer_with(
    urls: Vec<String>,
    base: Announce,
    stats: impl Fn() -> (u64, u64) + Send + Sync + 'static,
    peers_out: mpsc::Sender<Vec<SocketAddr>>,
    stop: watch::Receiver<bool>,
    timing: AnnouncerTiming,
    health: Health,
) {
    let client = http_client();
    let stats: Arc<dyn Fn() -> (u64, u64) + Send + Sync> = Arc::new(stats);
    let mut tasks = JoinSet::new();
    for url in urls {
        tasks.spawn(announce_loop(
            client.clone(),
            url,
            base.clone(),
            stats.clone(),
            Reports {
                peers: peers_out.clone(),
                health: health.clone(),
            },
            stop.clone(),
            timing,
        ));
    }
    while tasks.join_next().await.is_some() {}
}

/// Resolves when the announcer should stop.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // `wait_for` errs when the sender is gone, which also means stop.
    let _ = stop.wait_for(|s| *s).await;
}

/// Where one tracker's announce loop reports: the peers it names, and how it answered.
struct Reports {
    peers: mpsc::Sender<Vec<SocketAddr>>,
    health: Health,
}

async fn announce_loop(
    client: reqwest::Client,
    url: String,
    base: Announce,
    stats: Arc<dyn Fn() -> (u64, u64) + Send + Sync>,
    reports: Reports,
    mut stop: watch::Receiver<bool>,
    timing: AnnouncerTiming,
) {
    let mut registered = false;
    let mut first = true;
    let mut backoff = timing.min_backoff;
    loop {
        let (uploaded, downloaded) = stats();
        let a = Announce {
            uploaded,
            downloaded,
            event: if registered {
                None
            } else {
                Some(Event::Started)
            },
            ..base.clone()
        };
        let result = tokio::select! {
            r = announce_with_timeout(&client, &url, &a, timing.announce_timeout) => r,
            _ = stopped(&mut stop) => break,
        };
        let said = match &result {
            Ok(response) => Ok(response.peers.len()),
            Err(e) => Err(in_brief(e)),
        };
        (reports.health.lock().unwrap_or_else(|e| e.into_inner())).insert(url.clone(), said);
        let wait = match result {
            Ok(response) => {
                registered = true;
                backoff = timing.min_backoff;
                tracing::debug!(%url, peers = response.peers.len(), "announced");
                if !response.peers.is_empty() {
                    tokio::select! {
                        sent = reports.peers.send(response.peers) => if sent.is_err() { break },
                        _ = stopped(&mut stop) => break,
                    }
                }
                if std::mem::take(&mut first) {
                    timing.first_reannounce.min(response.interval)
                } else {
                    response.interval
                }
            }
            Err(e) => {
                tracing::warn!(%url, error = %e, retry_in = ?backoff, "announce failed");
                let wait = backoff;
                backoff = (backoff * 2).min(timing.max_backoff);
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stopped(&mut stop) => break,
        }
    }
    if registered {
        let (uploaded, downloaded) = stats();
        let a = Announce {
            uploaded,
            downloaded,
            event: Some(Event::Stopped),
            ..base
        };
        if let Err(e) = announce_with_timeout(&client, &url, &a, timing.stop_timeout).await {
            tracing::debug!(%url, error = %e, "stopped announce failed");
        }
    }
}

#[cfg(test)]
mod tests;
