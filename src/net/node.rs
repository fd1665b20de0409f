//! The tokio driver: runs one [`Swarm`] core on real TCP.
//!
//! One task owns the core; nothing else touches it, so there are no locks. Each connection
//! has a reader and a writer task (see [`conn`]). The [`Driver`] feeds the core `(now, input)`,
//! carries out its outputs, and sleeps until `poll_timeout`. Its select is fair (no branch
//! is polled first every time), so peer traffic cannot starve the source input or timers.

pub(super) mod conn;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ed25519_dalek::SigningKey;
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

use crate::inject::Injector;
use crate::piece::SignedPiece;
use crate::swarm::{
    Config, DEFAULT_SEND_BACKLOG, Delivery, Direction, Input, Output, PeerId, Role, State, Swarm,
    SwarmStatus,
};
use crate::torrent::LiveTorrent;
use conn::Conn;

pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often subscribers (LEDs, slate) get a fresh status.
const STATUS_EVERY: Duration = Duration::from_millis(250);

/// The injector's input side.
pub struct InjectorInput {
    pub key: SigningKey,
    /// MPEG-TS bytes in any alignment; closed at end of input.
    pub chunks: mpsc::Receiver<Bytes>,
    pub flush_after: Duration,
}

/// A node's settings; `L` is the listening socket's type, so that the smol driver
/// (`net::smol_node`) shares this struct and [`core_config`] with this one.
pub struct NodeOptions<L = TcpListener> {
    pub role: Role,
    pub torrent: LiveTorrent,
    pub listener: L,
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
    pub substreams: u8,
    pub peer_id: [u8; 20],
}

/// What a node reports: the core's status plus what only the driver knows.
#[derive(Clone, Debug, Serialize)]
pub struct NodeStatus {
    #[serde(flatten)]
    pub swarm: SwarmStatus,
    /// Now minus the injector timestamp of the newest piece output (receivers); once the
    /// stream has ended, the last value published while it played (not the time since).
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

/// What the socket tasks tell the driver.
enum Event {
    Inbound(TcpStream, SocketAddr),
    Connected(SocketAddr, TcpStream),
    ConnectFailed(SocketAddr),
    Data(PeerId, Bytes),
    /// Bytes written to the connection's socket (see [`Input::Sent`]).
    Sent(PeerId, usize),
    Closed(PeerId),
}

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
pub(super) fn own_addrs(listen: SocketAddr) -> Vec<SocketAddr> {
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

/// The core's configuration for a node listening on `listen` (both drivers).
pub(super) fn core_config<L>(opts: &NodeOptions<L>, listen: SocketAddr) -> Config {
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
    config.substreams = opts.substreams;
    // The connections report what they wrote, and the kernel holds little unsent (see
    // `conn`): a piece waits in the core until its connection drained the one before.
    config.send_backlog = Some(DEFAULT_SEND_BACKLOG);
    config.rng_seed = u64::from_le_bytes(config.peer_id[12..20].try_into().unwrap());
    config
}

/// Runs a node until its stream ended and the linger time passed. Deliveries (receivers)
/// go to `deliveries`; peer lists from trackers arrive on `discovered`.
pub async fn run(
    opts: NodeOptions,
    injector: Option<InjectorInput>,
    deliveries: Option<mpsc::Sender<Delivery>>,
    discovered: mpsc::Receiver<Vec<SocketAddr>>,
    ready: oneshot::Sender<NodeHandles>,
) -> anyhow::Result<NodeStatus> {
    if let Err(why) = super::tcp::congestion_available() {
        tracing::warn!("{why}");
    }
    let (mut driver, listener) = Driver::new(opts, injector, deliveries)?;
    let (status_req_tx, status_requests) = mpsc::channel(16);
    let _ = ready.send(NodeHandles {
        status_requests: status_req_tx,
        status: driver.status_tx.subscribe(),
    });
    let acceptor = tokio::spawn(accept_loop(listener, driver.events_tx.clone()));
    let last = driver.run(discovered, status_requests).await;
    acceptor.abort();
    Ok(last)
}

async fn accept_loop(listener: TcpListener, events: mpsc::Sender<Event>) {
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                if events.send(Event::Inbound(stream, addr)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The injector's side of the driver: the input channel and the sans-IO injector.
struct Source {
    chunks: mpsc::Receiver<Bytes>,
    injector: Injector,
    open: bool,
}

struct Driver {
    swarm: Swarm,
    conns: HashMap<PeerId, Conn>,
    events_tx: mpsc::Sender<Event>,
    events: mpsc::Receiver<Event>,
    source: Option<Source>,
    deliveries: Option<mpsc::Sender<Delivery>>,
    output_dropped: u64,
    listen: SocketAddr,
    linger: Duration,
    ended_at: Option<Instant>,
    /// `lag_ms` as last published while the stream played: after the end it keeps its meaning
    /// (how far behind the injector the output ran) instead of growing with the linger time.
    lag_playing: Option<u64>,
    status_tx: watch::Sender<Option<NodeStatus>>,
    next_status: Instant,
    last_state: Option<State>,
}

impl Driver {
    fn new(
        opts: NodeOptions,
        injector: Option<InjectorInput>,
        deliveries: Option<mpsc::Sender<Delivery>>,
    ) -> anyhow::Result<(Driver, TcpListener)> {
        let listen = opts.listener.local_addr()?;
        // `startup_ms` counts from the process start the caller passes in.
        let start = opts.started.min(Instant::now());
        let mut swarm = Swarm::new(core_config(&opts, listen), start);
        swarm.handle(start, Input::PeerAddrs(opts.static_peers.clone()));
        let source = injector.map(|i| Source {
            chunks: i.chunks,
            // Sequence numbers start at the wall clock in milliseconds, so a restarted
            // injector continues above its earlier run (at fewer than 1000 pieces a second).
            injector: Injector::new(
                i.key,
                opts.torrent.info_hash,
                opts.torrent.piece_length as usize,
                i.flush_after,
                wall_clock_us() / 1000,
            ),
            open: true,
        });
        let (events_tx, events) = mpsc::channel(1024);
        let driver = Driver {
            swarm,
            conns: HashMap::new(),
            events_tx,
            events,
            source,
            deliveries,
            output_dropped: 0,
            listen,
            linger: opts.linger,
            ended_at: None,
            lag_playing: None,
            status_tx: watch::channel(None).0,
            next_status: start,
            last_state: None,
        };
        Ok((driver, opts.listener))
    }

    async fn run(
        &mut self,
        mut discovered: mpsc::Receiver<Vec<SocketAddr>>,
        mut status_requests: mpsc::Receiver<oneshot::Sender<NodeStatus>>,
    ) -> NodeStatus {
        loop {
            self.carry_out_outputs();
            self.publish_status();
            if self
                .ended_at
                .is_some_and(|at| Instant::now() >= at + self.linger)
            {
                break;
            }
            let wake = self.wake_at();
            let source_open = self.source.as_ref().is_some_and(|s| s.open);
            tokio::select! {
                ev = self.events.recv() => match ev {
                    Some(ev) => self.on_event(ev),
                    None => break,
                },
                chunk = recv_chunk(&mut self.source), if source_open => self.on_chunk(chunk),
                Some(addrs) = discovered.recv() => {
                    self.swarm.handle(Instant::now(), Input::PeerAddrs(addrs));
                }
                Some(reply) = status_requests.recv() => {
                    let _ = reply.send(self.status());
                }
                _ = tokio::time::sleep_until(wake.into()) => self.on_timer(),
            }
        }
        let last = self.status();
        self.status_tx.send_replace(Some(last.clone()));
        for (_, c) in self.conns.drain() {
            c.close();
        }
        last
    }

    fn carry_out_outputs(&mut self) {
        while let Some(out) = self.swarm.poll_output() {
            match out {
                Output::Transmit { peer, data } => self.transmit(peer, data),
                Output::Connect(addr) => self.dial(addr),
                Output::Disconnect { peer, reason } => {
                    tracing::info!(peer, %reason, "closing connection");
                    if let Some(c) = self.conns.remove(&peer) {
                        c.close();
                    }
                }
                Output::Deliver(d) => self.deliver(d),
            }
        }
    }

    fn transmit(&mut self, peer: PeerId, data: Bytes) {
        let Some(conn) = self.conns.get(&peer) else {
            return;
        };
        if !conn.send(data) {
            tracing::info!(peer, "peer cannot keep up with what we send; closing");
            if let Some(c) = self.conns.remove(&peer) {
                c.close();
            }
            self.swarm.handle(Instant::now(), Input::Closed(peer));
        }
    }

    fn dial(&self, addr: SocketAddr) {
        let events = self.events_tx.clone();
        tokio::spawn(async move {
            let ev = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => Event::Connected(addr, stream),
                _ => Event::ConnectFailed(addr),
            };
            let _ = events.send(ev).await;
        });
    }

    fn deliver(&mut self, d: Delivery) {
        super::log_delivery(&d);
        if matches!(d, Delivery::End) {
            self.ended_at.get_or_insert(Instant::now());
        }
        if let Some(tx) = &self.deliveries
            && tx.try_send(d).is_err()
        {
            self.output_dropped += 1;
        }
    }

    fn on_event(&mut self, ev: Event) {
        let now = Instant::now();
        match ev {
            Event::Inbound(stream, addr) => self.take(now, stream, addr, Direction::Inbound),
            Event::Connected(addr, stream) => self.take(now, stream, addr, Direction::Outbound),
            Event::ConnectFailed(addr) => self.swarm.handle(now, Input::ConnectFailed(addr)),
            Event::Data(id, data) => {
                if self.conns.contains_key(&id) {
                    self.swarm.handle(now, Input::Data(id, data));
                }
            }
            Event::Sent(id, len) => {
                if self.conns.contains_key(&id) {
                    self.swarm.handle(now, Input::Sent(id, len));
                }
            }
            Event::Closed(id) => {
                if self.conns.remove(&id).is_some() {
                    self.swarm.handle(now, Input::Closed(id));
                }
            }
        }
    }

    /// Offers a new connection to the core; a refused one is dropped, which closes it.
    fn take(&mut self, now: Instant, stream: TcpStream, addr: SocketAddr, dir: Direction) {
        match self.swarm.accept(now, addr, dir) {
            Ok(id) => {
                let conn = Conn::spawn(id, stream, self.events_tx.clone());
                self.conns.insert(id, conn);
            }
            Err(why) => tracing::debug!(%addr, %why, "refused a connection"),
        }
    }

    fn on_chunk(&mut self, chunk: Option<Bytes>) {
        let now = Instant::now();
        let Some(source) = self.source.as_mut() else {
            return;
        };
        let pieces = match chunk {
            Some(bytes) => source.injector.push(now, wall_clock_us(), &bytes),
            None => {
                source.open = false;
                let pieces = source.injector.finish(wall_clock_us());
                // Data pieces: all but the end-of-stream piece.
                tracing::info!(
                    pieces = source.injector.pieces_made() - 1,
                    "input ended; stream closed"
                );
                pieces
            }
        };
        self.add_pieces(now, pieces);
    }

    fn add_pieces(&mut self, now: Instant, pieces: Vec<SignedPiece>) {
        for piece in pieces {
            self.swarm.handle(now, Input::LocalPiece(piece));
        }
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        if let Some(source) = self.source.as_mut()
            && source.injector.poll_timeout().is_some_and(|t| now >= t)
            && let Some(piece) = source.injector.handle_timeout(now)
        {
            self.swarm.handle(now, Input::LocalPiece(piece));
        }
        self.swarm.handle(now, Input::Timeout);
    }

    /// The earliest of the core's timer, the injector's flush, the end of the linger time and
    /// the next status publication.
    fn wake_at(&self) -> Instant {
        let now = Instant::now();
        [
            self.swarm.poll_timeout(),
            self.source.as_ref().and_then(|s| s.injector.poll_timeout()),
            self.ended_at.map(|at| at + self.linger),
            Some(self.next_status),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now + Duration::from_secs(1))
    }

    /// Publishes status every STATUS_EVERY and on every state change.
    fn publish_status(&mut self) {
        let now = Instant::now();
        let (state, ended) = self.swarm.state();
        if now >= self.next_status || Some(state) != self.last_state {
            self.last_state = Some(state);
            self.next_status = now + STATUS_EVERY;
            let status = self.status();
            if !ended {
                self.lag_playing = status.lag_ms;
            }
            self.status_tx.send_replace(Some(status));
        }
        if ended {
            self.ended_at.get_or_insert(now);
        }
    }

    fn status(&self) -> NodeStatus {
        let s = self.swarm.status(Instant::now());
        let lag_ms = if s.ended {
            self.lag_playing
        } else {
            s.output_timestamp_us
                .map(|ts| wall_clock_us().saturating_sub(ts) / 1000)
        };
        let injector = self.source.as_ref().map(|s| &s.injector);
        NodeStatus {
            lag_ms,
            bytes_in: injector.map(|i| i.bytes_in()),
            bytes_dropped: injector.map(|i| i.bytes_dropped()),
            output_dropped: self.output_dropped,
            listen: self.listen.to_string(),
            swarm: s,
        }
    }
}

/// The next input chunk (`None`: the input ended). Only polled while the source is open.
async fn recv_chunk(source: &mut Option<Source>) -> Option<Bytes> {
    match source {
        Some(s) => s.chunks.recv().await,
        None => std::future::pending().await,
    }
}
