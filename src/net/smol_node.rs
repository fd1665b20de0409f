//! The smol driver: the same [`Swarm`] core as [`super::node`], on smol's TCP and timers.
//!
//! Why a second driver: it keeps the core honest about being runtime-free, and it is a small
//! base for embedding a node where tokio is not wanted. Scope is what a swarm needs and no
//! more: static peers only (no tracker client), no HTTP status, no status subscriptions;
//! the final [`SwarmStatus`] comes back when the node ends. The shipped binary uses tokio.
//!
//! Structure and flow control mirror the tokio driver: one task owns the core; each
//! connection has a reader task (bytes in, back-pressure through the bounded event channel)
//! and a writer task (bounded queue, vectored writes), and the writer reports what it wrote
//! as [`Input::Sent`] while the kernel keeps at most `DEFAULT_SEND_BACKLOG` bytes unsent, so
//! the core's `send_backlog` holds a piece back until the one before has left.
//! The settings, the core configuration and the write bookkeeping are shared with it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use smol::channel::{Receiver, Sender, TrySendError, bounded};
use smol::future::FutureExt;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::{TcpListener, TcpStream};
use smol::{Task, Timer};

use super::node::conn::{MAX_QUEUED_BYTES, READ_CHUNK, WRITE_BATCH, WRITE_QUEUE, consume_written};
use super::node::{CONNECT_TIMEOUT, NodeOptions, core_config, wall_clock_us};
use crate::inject::Injector;
use crate::swarm::{Delivery, Direction, Input, Output, PeerId, Swarm, SwarmStatus};

/// The injector's input on this driver: as `node::InjectorInput`, with a smol channel.
pub struct SmolInjectorInput {
    pub key: ed25519_dalek::SigningKey,
    /// MPEG-TS bytes in any alignment; closed at end of input.
    pub chunks: Receiver<Bytes>,
    pub flush_after: Duration,
}

/// What the socket tasks tell the driver.
enum Event {
    Inbound(TcpStream, SocketAddr),
    Connected(SocketAddr, TcpStream),
    ConnectFailed(SocketAddr),
    Data(PeerId, Bytes),
    Sent(PeerId, usize),
    Closed(PeerId),
}

/// What woke the driver.
enum Wake {
    Event(Option<Event>),
    Chunk(Option<Bytes>),
    Timer,
}

/// Runs a node on smol until its stream ended and the linger time passed; returns the core's
/// last status. Deliveries (receivers) go to `deliveries`; one that does not keep up loses
/// deliveries (counted nowhere but the receiver's own continuity), as with tokio.
pub async fn run(
    opts: NodeOptions<TcpListener>,
    injector: Option<SmolInjectorInput>,
    deliveries: Option<Sender<Delivery>>,
) -> anyhow::Result<SwarmStatus> {
    if let Err(why) = super::tcp::congestion_available() {
        tracing::warn!("{why}");
    }
    let listen = opts.listener.local_addr()?;
    let start = opts.started.min(Instant::now());
    let mut swarm = Swarm::new(core_config(&opts, listen), start);
    swarm.handle(start, Input::PeerAddrs(opts.static_peers.clone()));
    let source = injector.map(|i| Source {
        chunks: i.chunks,
        // As the tokio driver: sequence numbers from the wall clock in milliseconds.
        injector: Injector::new(
            i.key,
            opts.torrent.info_hash,
            opts.torrent.piece_length as usize,
            i.flush_after,
            wall_clock_us() / 1000,
        ),
        open: true,
    });
    let (events_tx, events) = bounded(1024);
    let acceptor = smol::spawn(accept_loop(opts.listener, events_tx.clone()));
    let mut driver = Driver {
        swarm,
        conns: HashMap::new(),
        events_tx,
        events,
        source,
        deliveries,
        linger: opts.linger,
        ended_at: None,
    };
    let last = driver.run().await;
    drop(acceptor);
    Ok(last)
}

async fn accept_loop(listener: TcpListener, events: Sender<Event>) {
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                if events.send(Event::Inbound(stream, addr)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                Timer::after(Duration::from_millis(100)).await;
            }
        }
    }
}

struct Source {
    chunks: Receiver<Bytes>,
    injector: Injector,
    open: bool,
}

struct Driver {
    swarm: Swarm,
    conns: HashMap<PeerId, Conn>,
    events_tx: Sender<Event>,
    events: Receiver<Event>,
    source: Option<Source>,
    deliveries: Option<Sender<Delivery>>,
    linger: Duration,
    ended_at: Option<Instant>,
}

impl Driver {
    async fn run(&mut self) -> SwarmStatus {
        loop {
            self.carry_out_outputs();
            if self.swarm.state().1 && self.ended_at.is_none() {
                tracing::info!(linger = ?self.linger, "stream ended; lingering");
                self.ended_at = Some(Instant::now());
            }
            if self
                .ended_at
                .is_some_and(|at| Instant::now() >= at + self.linger)
            {
                break;
            }
            let wake = self.wake_at();
            let events = async { Wake::Event(self.events.recv().await.ok()) };
            let chunk = async {
                match &self.source {
                    Some(s) if s.open => Wake::Chunk(s.chunks.recv().await.ok()),
                    _ => std::future::pending().await,
                }
            };
            let timer = async {
                Timer::at(wake).await;
                Wake::Timer
            };
            // `race` picks a ready branch at random: peer traffic cannot starve the source
            // or the timers (tokio's select is fair the same way).
            let woke = events.race(chunk).race(timer).await;
            match woke {
                Wake::Event(Some(ev)) => self.on_event(ev),
                Wake::Event(None) => break,
                Wake::Chunk(chunk) => self.on_chunk(chunk),
                Wake::Timer => self.on_timer(),
            }
        }
        // Dropping the connections stops their readers; writers flush and close.
        self.conns.clear();
        self.swarm.status(Instant::now())
    }

    fn carry_out_outputs(&mut self) {
        while let Some(out) = self.swarm.poll_output() {
            match out {
                Output::Transmit { peer, data } => self.transmit(peer, data),
                Output::Connect(addr) => self.dial(addr),
                Output::Disconnect { peer, reason } => {
                    tracing::info!(peer, %reason, "closing connection");
                    self.conns.remove(&peer);
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
            self.conns.remove(&peer);
            self.swarm.handle(Instant::now(), Input::Closed(peer));
        }
    }

    fn dial(&self, addr: SocketAddr) {
        let events = self.events_tx.clone();
        smol::spawn(async move {
            let connect = async { TcpStream::connect(addr).await.ok() };
            let give_up = async {
                Timer::after(CONNECT_TIMEOUT).await;
                None
            };
            let ev = match connect.or(give_up).await {
                Some(stream) => Event::Connected(addr, stream),
                None => Event::ConnectFailed(addr),
            };
            let _ = events.send(ev).await;
        })
        .detach();
    }

    fn deliver(&mut self, d: Delivery) {
        super::log_delivery(&d);
        if matches!(d, Delivery::End) {
            self.ended_at.get_or_insert(Instant::now());
        }
        if let Some(tx) = &self.deliveries
            && let Err(TrySendError::Full(_)) = tx.try_send(d)
        {
            tracing::warn!("delivery channel full; a delivery was dropped");
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
                source.injector.finish(wall_clock_us())
            }
        };
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

    /// The earliest of the core's timer, the injector's flush and the end of the linger.
    fn wake_at(&self) -> Instant {
        [
            self.swarm.poll_timeout(),
            self.source.as_ref().and_then(|s| s.injector.poll_timeout()),
            self.ended_at.map(|at| at + self.linger),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(Instant::now() + Duration::from_secs(1))
    }
}

/// One connection: as `node::conn::Conn`, on smol. Dropping it cancels the reader; the
/// writer (detached) then flushes what is queued and closes the socket.
struct Conn {
    tx: Sender<Bytes>,
    queued: Arc<AtomicUsize>,
    _reader: Task<()>,
}

impl Conn {
    fn spawn(id: PeerId, stream: TcpStream, events: Sender<Event>) -> Conn {
        crate::net::tcp::tune(&stream);
        let (tx, rx) = bounded::<Bytes>(WRITE_QUEUE);
        let queued = Arc::new(AtomicUsize::new(0));
        let written = queued.clone();
        let sent = events.clone();
        let mut rd = stream.clone();
        let reader = smol::spawn(async move {
            let mut buf = vec![0u8; READ_CHUNK];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let data = Bytes::copy_from_slice(&buf[..n]);
                        if events.send(Event::Data(id, data)).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = events.send(Event::Closed(id)).await;
        });
        let mut wr = stream;
        smol::spawn(async move {
            let mut batch = Vec::with_capacity(WRITE_BATCH);
            while let Ok(first) = rx.recv().await {
                batch.push(first);
                while batch.len() < WRITE_BATCH {
                    match rx.try_recv() {
                        Ok(more) => batch.push(more),
                        Err(_) => break,
                    }
                }
                let len: usize = batch.iter().map(Bytes::len).sum();
                if write_all_vectored(&mut wr, &mut batch).await.is_err() {
                    break;
                }
                written.fetch_sub(len, Ordering::Relaxed);
                if sent.send(Event::Sent(id, len)).await.is_err() {
                    break;
                }
            }
            let _ = wr.close().await;
        })
        .detach();
        Conn {
            tx,
            queued,
            _reader: reader,
        }
    }

    /// Queues bytes for the socket; false when the peer has too much waiting already.
    fn send(&self, data: Bytes) -> bool {
        let len = data.len();
        if self.queued.load(Ordering::Relaxed) + len > MAX_QUEUED_BYTES {
            return false;
        }
        self.queued.fetch_add(len, Ordering::Relaxed);
        self.tx.try_send(data).is_ok()
    }
}

/// Writes every buffer in `chunks`, in order, and empties it (futures-io's `AsyncWrite`;
/// the bookkeeping is the tokio driver's).
async fn write_all_vectored(wr: &mut TcpStream, chunks: &mut Vec<Bytes>) -> std::io::Result<()> {
    chunks.retain(|c| !c.is_empty());
    let mut first = 0;
    while first < chunks.len() {
        let slices: Vec<std::io::IoSlice> = chunks[first..]
            .iter()
            .map(|c| std::io::IoSlice::new(c))
            .collect();
        let n = wr.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        first = consume_written(chunks, first, n);
    }
    chunks.clear();
    Ok(())
}
