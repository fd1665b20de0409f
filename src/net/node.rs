//! The tokio driver: runs one [`Swarm`] core on real TCP.
//!
//! One task owns the core; nothing else touches it, so there are no locks. Each connection
//! has a reader task (bytes in, with back-pressure through a bounded channel) and a writer
//! task (bytes out through a bounded queue; a peer that cannot keep up is disconnected rather
//! than buffered without limit). The loop feeds the core `(now, event)`, carries out its
//! outputs, and sleeps until `poll_timeout`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ed25519_dalek::SigningKey;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

use crate::piece::{FLAG_END_OF_STREAM, FLAG_RANDOM_ACCESS, PieceHeader, SignedPiece};
use crate::source::packetizer::{Packetizer, RawPiece};
use crate::swarm::{Config, Delivery, Direction, Input, Output, PeerId, Role, Swarm, SwarmStatus};
use crate::torrent::LiveTorrent;

/// Writes queued for one peer's socket at most (each a flush of the core's outbox, so a few
/// pieces at most: requests per peer are bounded); beyond it the peer is too slow and is
/// disconnected.
const WRITE_QUEUE: usize = 128;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const READ_CHUNK: usize = 64 * 1024;
/// How often subscribers (LEDs, slate) get a fresh status.
const STATUS_EVERY: Duration = Duration::from_millis(250);

/// The injector's input side.
pub struct InjectorInput {
    pub key: SigningKey,
    /// MPEG-TS bytes in any alignment; closed at end of input.
    pub chunks: mpsc::Receiver<Bytes>,
    pub flush_after: Duration,
}

pub struct NodeOptions {
    pub role: Role,
    pub torrent: LiveTorrent,
    pub listener: TcpListener,
    pub static_peers: Vec<SocketAddr>,
    pub upload_limit_bytes: Option<u64>,
    pub latency: Duration,
    pub trusted: Vec<SocketAddr>,
    /// How long to keep serving after the stream ended.
    pub linger: Duration,
    /// When the process started: `startup_ms` counts from here.
    pub started: Instant,
    pub max_peers: usize,
    pub upload_slots: usize,
    pub peer_id: [u8; 20],
}

/// What a node reports: the core's status plus what only the driver knows.
#[derive(Clone, Debug, Serialize)]
pub struct NodeStatus {
    #[serde(flatten)]
    pub swarm: SwarmStatus,
    /// Now minus the injector timestamp of the newest piece output (receivers).
    pub lag_ms: Option<u64>,
    /// Injector: MPEG-TS bytes read from the input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_in: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_dropped: Option<u64>,
    pub output_dropped: u64,
    pub listen: String,
}

/// Handles to a running node.
pub struct NodeHandles {
    /// Fresh status on request.
    pub status_requests: mpsc::Sender<oneshot::Sender<NodeStatus>>,
    /// Status published every 250 ms and on every state change.
    pub status: watch::Receiver<Option<NodeStatus>>,
}

enum Event {
    Inbound(TcpStream, SocketAddr),
    Connected(SocketAddr, TcpStream),
    ConnectFailed(SocketAddr),
    Data(PeerId, Bytes),
    Closed(PeerId),
}

struct Conn {
    tx: mpsc::Sender<Bytes>,
    /// Bytes handed to the writer and not yet written.
    queued: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    reader: tokio::task::JoinHandle<()>,
}

/// Bytes queued for one peer's socket at most; a peer that does not read is disconnected
/// before it can make us hold more.
const MAX_QUEUED_BYTES: usize = 4 << 20;

pub fn wall_clock_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A random peer id: client prefix and 12 random characters.
pub fn new_peer_id() -> [u8; 20] {
    let mut id = *b"-NL0100-000000000000";
    let mut random = [0u8; 12];
    let _ = getrandom::fill(&mut random);
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    for (slot, r) in id[8..].iter_mut().zip(random) {
        *slot = ALPHABET[r as usize % ALPHABET.len()];
    }
    id
}

/// Addresses this node can be reached at, so it never dials itself.
fn own_addrs(listen: SocketAddr) -> Vec<SocketAddr> {
    let mut out = vec![listen];
    if listen.ip().is_unspecified() || listen.ip().is_loopback() {
        out.push(SocketAddr::new([127, 0, 0, 1].into(), listen.port()));
        if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
            for ifa in addrs {
                if let Some(ip) = ifa.address.as_ref().and_then(|a| {
                    a.as_sockaddr_in()
                        .map(|s| std::net::IpAddr::V4(s.ip()))
                        .or_else(|| a.as_sockaddr_in6().map(|s| std::net::IpAddr::V6(s.ip())))
                }) {
                    out.push(SocketAddr::new(ip, listen.port()));
                }
            }
        }
    }
    out
}

/// Runs a node until its stream ended and the linger time passed. Deliveries (receivers)
/// go to `deliveries`; peer lists from trackers arrive on `discovered`.
pub async fn run(
    opts: NodeOptions,
    mut injector: Option<InjectorInput>,
    deliveries: Option<mpsc::Sender<Delivery>>,
    mut discovered: mpsc::Receiver<Vec<SocketAddr>>,
    ready: oneshot::Sender<NodeHandles>,
) -> anyhow::Result<NodeStatus> {
    let listen = opts.listener.local_addr()?;
    let mut config = Config::new(opts.role, opts.torrent.info_hash, opts.torrent.public_key);
    config.max_payload = opts.torrent.piece_length;
    config.window = Duration::from_secs(opts.torrent.window_secs as u64);
    config.latency = opts.latency;
    config.peer_id = opts.peer_id;
    config.listen_port = Some(listen.port());
    config.self_addrs = own_addrs(listen);
    config.upload_limit = opts.upload_limit_bytes;
    config.trusted = opts.trusted.clone();
    config.max_peers = opts.max_peers;
    config.upload_slots = opts.upload_slots;
    config.rng_seed = u64::from_le_bytes(config.peer_id[12..20].try_into().unwrap());
    // `startup_ms` counts from the process start the caller passes in.
    let start = opts.started.min(Instant::now());
    let mut swarm = Swarm::new(config, start);
    swarm.handle(start, Input::PeerAddrs(opts.static_peers.clone()));

    let (ev_tx, mut ev_rx) = mpsc::channel::<Event>(1024);
    let (status_req_tx, mut status_req_rx) = mpsc::channel::<oneshot::Sender<NodeStatus>>(16);
    let (status_tx, status_rx) = watch::channel(None);
    let _ = ready.send(NodeHandles {
        status_requests: status_req_tx,
        status: status_rx,
    });

    // Accept loop.
    let accept_tx = ev_tx.clone();
    let listener = opts.listener;
    let acceptor = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, addr)) => {
                    if accept_tx.send(Event::Inbound(stream, addr)).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });

    let mut conns: HashMap<PeerId, Conn> = HashMap::new();
    let info_hash = opts.torrent.info_hash;
    let max_payload = opts.torrent.piece_length as usize;
    let mut packetizer = injector
        .as_ref()
        .map(|i| Packetizer::new(max_payload, i.flush_after));
    // Sequence numbers start at the wall clock in milliseconds, so a restarted injector
    // continues above its earlier run (at fewer than 1000 pieces a second).
    let epoch = wall_clock_us() / 1000;
    let mut next_seq = epoch;
    let mut input_open = injector.is_some();
    let mut ended_at: Option<Instant> = None;
    let mut output_dropped = 0u64;
    let mut next_status = start;
    let mut last_state = None;

    let sign = |key: &SigningKey, seq: u64, raw: RawPiece| {
        let mut flags = 0;
        if raw.random_access {
            flags |= FLAG_RANDOM_ACCESS;
        }
        let header = PieceHeader {
            seq,
            epoch,
            timestamp_us: raw.timestamp_us,
            flags,
            payload_len: 0,
        };
        SignedPiece::sign(key, &info_hash, header, &raw.payload)
    };

    loop {
        let now = Instant::now();
        // Carry out what the core asked for.
        while let Some(out) = swarm.poll_output() {
            match out {
                Output::Transmit { peer, data } => {
                    if let Some(conn) = conns.get(&peer)
                        && !conn.send(data)
                    {
                        tracing::info!(peer, "peer cannot keep up with what we send; closing");
                        if let Some(c) = conns.remove(&peer) {
                            c.reader.abort();
                        }
                        swarm.handle(now, Input::Closed(peer));
                    }
                }
                Output::Connect(addr) => {
                    let tx = ev_tx.clone();
                    tokio::spawn(async move {
                        let ev =
                            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
                                .await
                            {
                                Ok(Ok(stream)) => Event::Connected(addr, stream),
                                _ => Event::ConnectFailed(addr),
                            };
                        let _ = tx.send(ev).await;
                    });
                }
                Output::Disconnect { peer, reason } => {
                    tracing::info!(peer, %reason, "closing connection");
                    if let Some(c) = conns.remove(&peer) {
                        c.reader.abort();
                        // Dropping the sender lets the writer flush what is queued, then close.
                    }
                }
                Output::Deliver(d) => {
                    if matches!(d, Delivery::End) {
                        ended_at.get_or_insert(now);
                    }
                    if let Some(tx) = &deliveries
                        && tx.try_send(d).is_err()
                    {
                        output_dropped += 1;
                    }
                }
            }
        }
        let status_now = |swarm: &Swarm, packetizer: &Option<Packetizer>| {
            node_status(swarm, packetizer.as_ref(), output_dropped, listen)
        };
        // Publish status periodically and on state changes.
        {
            let (state, ended) = swarm.state();
            if now >= next_status || Some(state) != last_state {
                last_state = Some(state);
                next_status = now + STATUS_EVERY;
                status_tx.send_replace(Some(status_now(&swarm, &packetizer)));
            }
            if ended {
                ended_at.get_or_insert(now);
            }
        }
        if let Some(at) = ended_at
            && now >= at + opts.linger
        {
            break;
        }

        let mut wake = swarm.poll_timeout().unwrap_or(now + Duration::from_secs(1));
        if let Some(t) = packetizer.as_ref().and_then(|p| p.poll_timeout()) {
            wake = wake.min(t);
        }
        if let Some(at) = ended_at {
            wake = wake.min(at + opts.linger);
        }
        wake = wake.min(next_status);

        tokio::select! {
            biased;
            ev = ev_rx.recv() => {
                let Some(ev) = ev else { break };
                let now = Instant::now();
                match ev {
                    Event::Inbound(stream, addr) => match swarm.accept(now, addr, Direction::Inbound) {
                        Ok(id) => {
                            conns.insert(id, spawn_conn(id, stream, ev_tx.clone()));
                        }
                        Err(why) => tracing::debug!(%addr, %why, "refused a connection"),
                    },
                    Event::Connected(addr, stream) => {
                        if let Ok(id) = swarm.accept(now, addr, Direction::Outbound) {
                            conns.insert(id, spawn_conn(id, stream, ev_tx.clone()));
                        }
                    }
                    Event::ConnectFailed(addr) => swarm.handle(now, Input::ConnectFailed(addr)),
                    Event::Data(id, data) => {
                        if conns.contains_key(&id) {
                            swarm.handle(now, Input::Data(id, &data));
                        }
                    }
                    Event::Closed(id) => {
                        if conns.remove(&id).is_some() {
                            swarm.handle(now, Input::Closed(id));
                        }
                    }
                }
            }
            chunk = async { injector.as_mut().unwrap().chunks.recv().await }, if input_open => {
                let now = Instant::now();
                let inj = injector.as_ref().unwrap();
                let p = packetizer.as_mut().unwrap();
                match chunk {
                    Some(bytes) => {
                        for raw in p.push(now, wall_clock_us(), &bytes) {
                            swarm.handle(now, Input::LocalPiece(sign(&inj.key, next_seq, raw)));
                            next_seq += 1;
                        }
                    }
                    None => {
                        input_open = false;
                        for raw in p.finish() {
                            swarm.handle(now, Input::LocalPiece(sign(&inj.key, next_seq, raw)));
                            next_seq += 1;
                        }
                        let eos = PieceHeader {
                            seq: next_seq,
                            epoch,
                            timestamp_us: wall_clock_us(),
                            flags: FLAG_END_OF_STREAM,
                            payload_len: 0,
                        };
                        swarm.handle(now, Input::LocalPiece(SignedPiece::sign(&inj.key, &info_hash, eos, &[])));
                        tracing::info!(pieces = next_seq - epoch, "input ended; stream closed");
                    }
                }
            }
            found = discovered.recv() => {
                if let Some(addrs) = found {
                    swarm.handle(Instant::now(), Input::PeerAddrs(addrs));
                }
            }
            req = status_req_rx.recv() => {
                if let Some(reply) = req {
                    let _ = reply.send(status_now(&swarm, &packetizer));
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                if let (Some(p), Some(inj)) = (packetizer.as_mut(), injector.as_ref())
                    && p.poll_timeout().is_some_and(|t| now >= t)
                    && let Some(raw) = p.handle_timeout(now)
                {
                    swarm.handle(now, Input::LocalPiece(sign(&inj.key, next_seq, raw)));
                    next_seq += 1;
                }
                swarm.handle(now, Input::Timeout);
            }
        }
    }
    acceptor.abort();
    let last = node_status(&swarm, packetizer.as_ref(), output_dropped, listen);
    status_tx.send_replace(Some(last.clone()));
    for (_, c) in conns.drain() {
        c.reader.abort();
    }
    Ok(last)
}

fn node_status(
    swarm: &Swarm,
    packetizer: Option<&Packetizer>,
    output_dropped: u64,
    listen: SocketAddr,
) -> NodeStatus {
    let s = swarm.status(Instant::now());
    let lag_ms = s
        .output_timestamp_us
        .map(|ts| wall_clock_us().saturating_sub(ts) / 1000);
    NodeStatus {
        lag_ms,
        bytes_in: packetizer.map(|p| p.bytes_in()),
        bytes_dropped: packetizer.map(|p| p.bytes_dropped()),
        output_dropped,
        listen: listen.to_string(),
        swarm: s,
    }
}

fn spawn_conn(id: PeerId, stream: TcpStream, events: mpsc::Sender<Event>) -> Conn {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Bytes>(WRITE_QUEUE);
    let queued = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let written = queued.clone();
    let closed = events.clone();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if events
                        .send(Event::Data(id, Bytes::copy_from_slice(&buf[..n])))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = closed.send(Event::Closed(id)).await;
    });
    tokio::spawn(async move {
        while let Some(data) = rx.recv().await {
            if wr.write_all(&data).await.is_err() {
                break;
            }
            written.fetch_sub(data.len(), std::sync::atomic::Ordering::Relaxed);
        }
        let _ = wr.shutdown().await;
    });
    Conn { tx, queued, reader }
}

impl Conn {
    /// Queues bytes for the socket; false when the peer has too much waiting already.
    fn send(&self, data: Bytes) -> bool {
        use std::sync::atomic::Ordering;
        let len = data.len();
        if self.queued.load(Ordering::Relaxed) + len > MAX_QUEUED_BYTES {
            return false;
        }
        self.queued.fetch_add(len, Ordering::Relaxed);
        self.tx.try_send(data).is_ok()
    }
}
