//! BEP 3 HTTP tracker client.
//!
//! `announce` sends one announce (always `compact=1`, BEP 23) and decodes the answer: compact
//! `peers` (6 bytes each), the older dictionary list form, and BEP 7 `peers6` (18 bytes each).
//! The body is read in chunks and abandoned past `MAX_RESPONSE_BYTES`; the whole exchange has a
//! deadline; nothing a tracker sends can panic the process.
//!
//! Responses are decoded with a small lenient bencode reader (`bdecode`) rather than bendy:
//! bendy's decoder rejects dictionaries whose keys are not sorted, and real trackers (hand-written
//! PHP and Node trackers in particular) emit `interval` before `complete` and so on. The reader
//! accepts unsorted and duplicate keys (the first wins) and ignores bytes after the top-level
//! value, but still bounds nesting depth and the number of values it builds.
//!
//! `run_announcer` is the announce loop of a running peer: `started` to every tracker at once, a
//! quick first re-announce so a new swarm forms fast, then the tracker's interval, exponential
//! backoff on failure, `stopped` on the way out.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::torrent::InfoHash;

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
/// Nesting and size bounds of the lenient bencode reader.
const MAX_BENCODE_DEPTH: usize = 16;
const MAX_BENCODE_VALUES: usize = 100_000;

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
    #[error("tracker did not answer within {0:?}")]
    Timeout(Duration),
    #[error("tracker response is larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
    #[error("malformed tracker response: {0}")]
    Malformed(String),
    #[error("tracker refused the announce: {0}")]
    Failure(String),
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
    let value = bdecode(body).map_err(TrackerError::Malformed)?;
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

/// A decoded bencode value borrowing from the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    Int(i64),
    Bytes(&'a [u8]),
    List(Vec<Value<'a>>),
    /// Pairs in the order received; keys need not be sorted or unique.
    Dict(Vec<(&'a [u8], Value<'a>)>),
}

impl<'a> Value<'a> {
    /// The first value under `key` when `self` is a dictionary.
    pub fn get(&self, key: &[u8]) -> Option<&Value<'a>> {
        match self {
            Value::Dict(pairs) => pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Lenient bounded bencode reader (see the module docs for why not bendy). Decodes the first
/// value in `buf` and ignores whatever follows it.
pub fn bdecode(buf: &[u8]) -> Result<Value<'_>, String> {
    let mut reader = Reader {
        buf,
        pos: 0,
        values: 0,
    };
    reader.value(0)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    values: usize,
}

impl<'a> Reader<'a> {
    fn value(&mut self, depth: usize) -> Result<Value<'a>, String> {
        if depth > MAX_BENCODE_DEPTH {
            return Err(format!("nested deeper than {MAX_BENCODE_DEPTH}"));
        }
        self.values += 1;
        if self.values > MAX_BENCODE_VALUES {
            return Err(format!("more than {MAX_BENCODE_VALUES} values"));
        }
        match self.peek()? {
            b'i' => {
                self.pos += 1;
                let digits = self.until(b'e')?;
                let text = std::str::from_utf8(digits).map_err(|_| "bad integer".to_string())?;
                let n = text
                    .parse::<i64>()
                    .map_err(|_| format!("bad integer {text:?}"))?;
                Ok(Value::Int(n))
            }
            b'l' => {
                self.pos += 1;
                let mut items = Vec::new();
                while self.peek()? != b'e' {
                    items.push(self.value(depth + 1)?);
                }
                self.pos += 1;
                Ok(Value::List(items))
            }
            b'd' => {
                self.pos += 1;
                let mut pairs = Vec::new();
                while self.peek()? != b'e' {
                    let key = match self.value(depth + 1)? {
                        Value::Bytes(k) => k,
                        _ => return Err("dictionary key is not a string".into()),
                    };
                    let value = self.value(depth + 1)?;
                    pairs.push((key, value));
                }
                self.pos += 1;
                Ok(Value::Dict(pairs))
            }
            b'0'..=b'9' => {
                let digits = self.until(b':')?;
                let len = std::str::from_utf8(digits)
                    .ok()
                    .and_then(|s| s.parse::<usize>().ok())
                    .ok_or_else(|| "bad string length".to_string())?;
                if len > self.buf.len() - self.pos {
                    return Err("string runs past the end".into());
                }
                let bytes = &self.buf[self.pos..self.pos + len];
                self.pos += len;
                Ok(Value::Bytes(bytes))
            }
            other => Err(format!(
                "unexpected byte 0x{other:02x} at offset {}",
                self.pos
            )),
        }
    }

    fn peek(&self) -> Result<u8, String> {
        self.buf
            .get(self.pos)
            .copied()
            .ok_or_else(|| "truncated (unexpected end of input)".to_string())
    }

    /// The bytes before the next `end`, consuming them and `end`.
    fn until(&mut self, end: u8) -> Result<&'a [u8], String> {
        let rest = &self.buf[self.pos..];
        // Integers and lengths are short; do not scan megabytes for a terminator.
        let window = &rest[..rest.len().min(24)];
        let i = window
            .iter()
            .position(|&b| b == end)
            .ok_or_else(|| "truncated or overlong number".to_string())?;
        self.pos += i + 1;
        Ok(&rest[..i])
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
) {
    run_announcer_with(
        urls,
        base,
        stats,
        peers_out,
        stop,
        AnnouncerTiming::default(),
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
) {
    let client = reqwest::Client::new();
    let stats: Arc<dyn Fn() -> (u64, u64) + Send + Sync> = Arc::new(stats);
    let mut tasks = JoinSet::new();
    for url in urls {
        tasks.spawn(announce_loop(
            client.clone(),
            url,
            base.clone(),
            stats.clone(),
            peers_out.clone(),
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

async fn announce_loop(
    client: reqwest::Client,
    url: String,
    base: Announce,
    stats: Arc<dyn Fn() -> (u64, u64) + Send + Sync>,
    peers_out: mpsc::Sender<Vec<SocketAddr>>,
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
        let wait = match result {
            Ok(response) => {
                registered = true;
                backoff = timing.min_backoff;
                tracing::debug!(%url, peers = response.peers.len(), "announced");
                if !response.peers.is_empty() {
                    tokio::select! {
                        sent = peers_out.send(response.peers) => if sent.is_err() { break },
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
mod tests {
    use super::*;
    use crate::net::tracker_server::{self, TrackerConfig};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const HASH: InfoHash = InfoHash([0xab; 20]);

    fn peer(n: u8, port: u16) -> Announce {
        let mut peer_id = *b"-NL0001-000000000000";
        peer_id[19] = n;
        Announce {
            info_hash: HASH,
            peer_id,
            port,
            uploaded: 0,
            downloaded: 0,
            left: 0,
            event: Some(Event::Started),
            numwant: 50,
        }
    }

    fn local(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    async fn spawn_tracker(config: TrackerConfig) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(tracker_server::serve(listener, config));
        format!("http://{addr}/announce")
    }

    /// A one-shot-per-connection HTTP server that answers every request with `response`
    /// (`None`: read the request and never answer).
    async fn canned_server(response: Option<Vec<u8>>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let response = response.clone();
                tokio::spawn(async move {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    match response {
                        Some(r) => {
                            let _ = sock.write_all(&r).await;
                            let _ = sock.shutdown().await;
                        }
                        None => {
                            // Hold the connection open without answering.
                            let _ = sock.read(&mut buf).await;
                        }
                    }
                });
            }
        });
        format!("http://{addr}/announce")
    }

    fn http_ok(body: &[u8]) -> Vec<u8> {
        let mut r = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    }

    #[test]
    fn percent_encoding_escapes_everything_but_unreserved() {
        let all: Vec<u8> = (0..=255).collect();
        let mut out = String::new();
        percent_encode_into(&all, &mut out);
        let decoded = url::form_urlencoded::parse(format!("x={out}").as_bytes())
            .next()
            .unwrap()
            .1
            .into_owned();
        // Lossy UTF-8 round trip is only exact for ASCII; check the ASCII half that way and
        // the raw form for the rest.
        assert_eq!(decoded.as_bytes()[..128], all[..128]);
        for b in 0..=255u8 {
            let mut one = String::new();
            percent_encode_into(&[b], &mut one);
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                assert_eq!(one, (b as char).to_string());
            } else {
                assert_eq!(one, format!("%{b:02X}"));
            }
        }
    }

    #[test]
    fn announce_url_appends_to_existing_query_and_keeps_fragment() {
        let mut a = peer(1, 6881);
        a.info_hash = InfoHash(*b"\x00\x01 +&=%~abcXYZ09-._\xff");
        let u = announce_url("http://t.example/announce?passkey=abc#frag", &a).unwrap();
        assert!(
            u.starts_with(
                "http://t.example/announce?passkey=abc&info_hash=%00%01%20%2B%26%3D%25~abcXYZ09-._%FF&peer_id="
            ),
            "{u}"
        );
        assert!(u.ends_with("&event=started#frag"), "{u}");
        assert!(
            u.contains("&port=6881&") && u.contains("&compact=1&"),
            "{u}"
        );
        let u = announce_url("http://t.example/a", &Announce { event: None, ..a }).unwrap();
        assert!(u.starts_with("http://t.example/a?info_hash="), "{u}");
        assert!(!u.contains("event="), "{u}");
        assert!(matches!(
            announce_url("udp://t.example:6969", &peer(1, 1)),
            Err(TrackerError::BadUrl(_))
        ));
    }

    #[test]
    fn parses_compact_dict_and_peers6() {
        let mut body = b"d8:intervali900e12:min intervali60e5:peers12:".to_vec();
        body.extend_from_slice(&[10, 0, 0, 1, 0x1a, 0xe1, 10, 0, 0, 2, 0, 80]);
        body.extend_from_slice(b"6:peers618:");
        body.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x1a, 0xe2]);
        body.push(b'e');
        let r = parse_response(&body).unwrap();
        assert_eq!(r.interval, Duration::from_secs(900));
        assert_eq!(r.min_interval, Some(Duration::from_secs(60)));
        assert_eq!(
            r.peers,
            vec![
                "10.0.0.1:6881".parse().unwrap(),
                "10.0.0.2:80".parse().unwrap(),
                "[::1]:6882".parse().unwrap()
            ]
        );

        let body = b"d8:intervali10e5:peersld2:ip8:10.0.0.74:porti7000eed2:ip3:::17:peer id20:aaaaaaaaaaaaaaaaaaaa4:porti7001eed2:ip11:example.org4:porti1eed2:ip8:10.0.0.94:porti0eeee";
        let r = parse_response(body).unwrap();
        assert_eq!(
            r.peers,
            vec![
                "10.0.0.7:7000".parse().unwrap(),
                "[::1]:7001".parse().unwrap()
            ]
        );
    }

    #[test]
    fn unsorted_keys_decode_though_bendy_rejects_them() {
        // `peers` before `interval`, as some trackers send it.
        let body = b"d5:peers6:\x7f\x00\x00\x01\x1a\xe18:intervali120e8:completei1ee";
        let mut strict = bendy::decoding::Decoder::new(body);
        let strict_result = (|| -> Result<(), bendy::decoding::Error> {
            if let Some(bendy::decoding::Object::Dict(mut d)) = strict.next_object()? {
                while d.next_pair()?.is_some() {}
            }
            Ok(())
        })();
        assert!(strict_result.is_err(), "bendy is expected to reject this");
        let r = parse_response(body).unwrap();
        assert_eq!(r.interval, Duration::from_secs(120));
        assert_eq!(r.peers, vec![local(6881)]);
    }

    #[test]
    fn failure_reason_and_clamping() {
        let e = parse_response(b"d14:failure reason9:not todaye").unwrap_err();
        assert!(
            matches!(&e, TrackerError::Failure(t) if t == "not today"),
            "{e}"
        );
        let r = parse_response(b"d8:intervali1e5:peers0:e").unwrap();
        assert_eq!(r.interval, MIN_INTERVAL);
        let r = parse_response(b"d8:intervali-5e5:peers0:e").unwrap();
        assert_eq!(r.interval, MIN_INTERVAL);
        let r = parse_response(b"d8:intervali99999999999e5:peers0:e").unwrap();
        assert_eq!(r.interval, MAX_INTERVAL);
        let r = parse_response(b"d5:peers0:e").unwrap();
        assert_eq!(r.interval, DEFAULT_INTERVAL);
    }

    #[test]
    fn malformed_bodies_are_errors() {
        let cases: &[&[u8]] = &[
            b"",
            b"<html>502 Bad Gateway</html>",
            b"d8:intervali60e",
            b"d8:intervali60e5:peers99:abce",
            b"d8:intervali6x0e5:peers0:e",
            b"le",
            b"i42e",
            b"di1ei2ee",
            b"d8:interval5:sixtye",
            b"d5:peersi3ee",
            b"d8:intervali60e5:peers99999999999999999999999999:e",
        ];
        for case in cases {
            match parse_response(case) {
                Err(TrackerError::Malformed(_)) => {}
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(case)),
            }
        }
        let deep = [vec![b'l'; 10_000], vec![b'e'; 10_000]].concat();
        assert!(bdecode(&deep).unwrap_err().contains("deeper"));
        let many = [b"l".to_vec(), b"i0e".repeat(200_000), b"e".to_vec()].concat();
        assert!(bdecode(&many).unwrap_err().contains("values"));
    }

    #[test]
    fn random_and_mutated_input_never_panics() {
        let valid = b"d8:completei1e10:incompletei0e8:intervali30e5:peers12:\x7f\x00\x00\x01\x1a\xe1\x7f\x00\x00\x02\x1a\xe26:peers618:\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x1a\xe2e";
        let mut state = 0x9e3779b97f4a7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let mut body = valid.to_vec();
            for _ in 0..(next() % 4 + 1) {
                let i = (next() as usize) % body.len();
                match next() % 3 {
                    0 => body[i] = next() as u8,
                    1 => body.truncate(i),
                    _ => body.insert(i, b"dlie:0123456789"[(next() % 15) as usize]),
                }
                if body.is_empty() {
                    break;
                }
            }
            let _ = parse_response(&body);
            let len = (next() % 64) as usize;
            let random: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let _ = parse_response(&random);
        }
    }

    #[tokio::test]
    async fn hostile_http_answers_are_errors() {
        let client = reqwest::Client::new();
        let a = peer(1, 1000);

        let url = canned_server(Some(http_ok(b"this is not bencode"))).await;
        let e = announce(&client, &url, &a).await.unwrap_err();
        assert!(matches!(e, TrackerError::Malformed(_)), "{e}");

        // Declared oversized body.
        let big = vec![b'x'; MAX_RESPONSE_BYTES + 1];
        let url = canned_server(Some(http_ok(&big))).await;
        let e = announce(&client, &url, &a).await.unwrap_err();
        assert!(matches!(e, TrackerError::TooLarge), "{e}");

        // Oversized body without a length: read until the bound, then give up.
        let mut r = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
        r.extend_from_slice(&vec![b'x'; 2 * MAX_RESPONSE_BYTES]);
        let url = canned_server(Some(r)).await;
        let e = announce(&client, &url, &a).await.unwrap_err();
        assert!(matches!(e, TrackerError::TooLarge), "{e}");

        let url = canned_server(Some(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
        ))
        .await;
        let e = announce(&client, &url, &a).await.unwrap_err();
        assert!(matches!(e, TrackerError::Status(404)), "{e}");

        let body = b"d14:failure reason12:unregisterede";
        let mut r = format!(
            "HTTP/1.1 400 Bad Request\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        let url = canned_server(Some(r)).await;
        let e = announce(&client, &url, &a).await.unwrap_err();
        assert!(
            matches!(&e, TrackerError::Failure(t) if t == "unregistered"),
            "{e}"
        );

        let url = canned_server(Some(b"garbage\r\n\r\n".to_vec())).await;
        let e = announce(&client, &url, &a).await.unwrap_err();
        assert!(matches!(e, TrackerError::Http(_)), "{e}");

        let url = canned_server(None).await;
        let e = announce_with_timeout(&client, &url, &a, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(e, TrackerError::Timeout(_)), "{e}");

        // Unsorted keys over HTTP.
        let url = canned_server(Some(http_ok(
            b"d5:peers6:\x7f\x00\x00\x01\x1a\xe18:intervali60ee",
        )))
        .await;
        let r = announce(&client, &url, &a).await.unwrap();
        assert_eq!(r.peers, vec![local(6881)]);
    }

    #[tokio::test]
    async fn two_peers_see_each_other_and_stopped_removes() {
        let url = spawn_tracker(TrackerConfig::default()).await;
        let client = reqwest::Client::new();
        let (a, b) = (peer(1, 7001), peer(2, 7002));

        let r = announce(&client, &url, &a).await.unwrap();
        assert_eq!(r.peers, vec![], "a tracker does not list a peer to itself");
        assert_eq!(r.interval, Duration::from_secs(30));
        let r = announce(&client, &url, &b).await.unwrap();
        assert_eq!(r.peers, vec![local(7001)]);
        let r = announce(
            &client,
            &url,
            &Announce {
                event: None,
                ..a.clone()
            },
        )
        .await
        .unwrap();
        assert_eq!(r.peers, vec![local(7002)]);

        let stop = Announce {
            event: Some(Event::Stopped),
            ..b.clone()
        };
        announce(&client, &url, &stop).await.unwrap();
        let r = announce(&client, &url, &Announce { event: None, ..a })
            .await
            .unwrap();
        assert_eq!(r.peers, vec![]);
    }

    #[tokio::test]
    async fn silent_peers_expire() {
        let url = spawn_tracker(TrackerConfig {
            interval: Duration::from_millis(50),
            ..TrackerConfig::default()
        })
        .await;
        let client = reqwest::Client::new();
        let (a, b) = (peer(1, 7001), peer(2, 7002));
        announce(&client, &url, &a).await.unwrap();
        let r = announce(&client, &url, &b).await.unwrap();
        assert_eq!(r.peers, vec![local(7001)]);
        // Keep announcing b; a must disappear once 2 x 50 ms passed without its announce.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let r = announce(&client, &url, &b).await.unwrap();
            if r.peers.is_empty() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "peer a never expired"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn announcers_find_each_other_and_stop_deregisters() {
        let url = spawn_tracker(TrackerConfig::default()).await;
        // A dead tracker beside the live one must not hold anything up.
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}/announce", l.local_addr().unwrap())
        };
        let timing = AnnouncerTiming {
            first_reannounce: Duration::from_millis(100),
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
            ..AnnouncerTiming::default()
        };
        let start = |n: u8, port: u16| {
            let (tx, rx) = mpsc::channel(16);
            let (stop_tx, stop_rx) = watch::channel(false);
            let task = tokio::spawn(run_announcer_with(
                vec![dead.clone(), url.clone()],
                Announce {
                    event: None,
                    ..peer(n, port)
                },
                || (0, 0),
                tx,
                stop_rx,
                timing,
            ));
            (rx, stop_tx, task)
        };
        let (mut rx_a, stop_a, task_a) = start(1, 7001);
        let (mut rx_b, stop_b, task_b) = start(2, 7002);
        async fn wait_for(rx: &mut mpsc::Receiver<Vec<SocketAddr>>, want: SocketAddr) {
            let fut = async move {
                while let Some(peers) = rx.recv().await {
                    if peers.contains(&want) {
                        return;
                    }
                }
                panic!("announcer ended");
            };
            tokio::time::timeout(Duration::from_secs(10), fut)
                .await
                .unwrap_or_else(|_| panic!("never saw {want}"))
        }
        wait_for(&mut rx_a, local(7002)).await;
        wait_for(&mut rx_b, local(7001)).await;

        stop_a.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task_a)
            .await
            .expect("announcer a returns after stop")
            .unwrap();
        let client = reqwest::Client::new();
        let r = announce(&client, &url, &peer(3, 7003)).await.unwrap();
        assert_eq!(r.peers, vec![local(7002)], "a sent stopped");

        drop(stop_b);
        tokio::time::timeout(Duration::from_secs(5), task_b)
            .await
            .expect("dropping the stop sender stops too")
            .unwrap();
        let r = announce(&client, &url, &peer(3, 7003)).await.unwrap();
        assert_eq!(r.peers, vec![]);
    }
}
