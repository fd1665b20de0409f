//! One TCP connection's tasks: a reader (bytes in, with back-pressure through the driver's
//! bounded event channel) and a writer (bytes out through a bounded queue; a peer that cannot
//! keep up is disconnected rather than buffered without limit).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::Event;
use crate::swarm::PeerId;

/// Writes queued for one peer's socket at most (each a flush of the core's outbox, so a few
/// pieces at most: requests per peer are bounded).
const WRITE_QUEUE: usize = 128;
const READ_CHUNK: usize = 64 * 1024;
/// Bytes queued for one peer's socket at most; a peer that does not read is disconnected
/// before it can make us hold more.
const MAX_QUEUED_BYTES: usize = 4 << 20;

pub(super) struct Conn {
    tx: mpsc::Sender<Bytes>,
    /// Bytes handed to the writer and not yet written.
    queued: Arc<AtomicUsize>,
    reader: tokio::task::JoinHandle<()>,
}

impl Conn {
    pub fn spawn(id: PeerId, stream: TcpStream, events: mpsc::Sender<Event>) -> Conn {
        let _ = stream.set_nodelay(true);
        let (mut rd, mut wr) = stream.into_split();
        let (tx, mut rx) = mpsc::channel::<Bytes>(WRITE_QUEUE);
        let queued = Arc::new(AtomicUsize::new(0));
        let written = queued.clone();
        let reader = tokio::spawn(async move {
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
        tokio::spawn(async move {
            while let Some(data) = rx.recv().await {
                if wr.write_all(&data).await.is_err() {
                    break;
                }
                written.fetch_sub(data.len(), Ordering::Relaxed);
            }
            let _ = wr.shutdown().await;
        });
        Conn { tx, queued, reader }
    }

    /// Queues bytes for the socket; false when the peer has too much waiting already.
    pub fn send(&self, data: Bytes) -> bool {
        let len = data.len();
        if self.queued.load(Ordering::Relaxed) + len > MAX_QUEUED_BYTES {
            return false;
        }
        self.queued.fetch_add(len, Ordering::Relaxed);
        self.tx.try_send(data).is_ok()
    }

    /// Stops reading. Dropping the `Conn` then lets the writer flush what is queued and
    /// close the socket.
    pub fn close(self) {
        self.reader.abort();
    }
}
