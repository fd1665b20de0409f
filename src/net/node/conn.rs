//! One TCP connection's tasks: a reader (bytes in, with back-pressure through the driver's
//! bounded event channel) and a writer (bytes out through a bounded queue; a peer that cannot
//! keep up is disconnected rather than buffered without limit). The writer reports what it
//! wrote, and the kernel keeps at most `DEFAULT_SEND_BACKLOG` bytes unsent
//! (`TCP_NOTSENT_LOWAT`, set with the rest of the socket's set-up in `net::tcp`), so "written" means "about to leave": the core's flow control
//! (`Config::send_backlog`) then holds a piece back until the connection drained the one
//! before, instead of piling seconds of stream into a slow connection's socket buffer.

use std::io::IoSlice;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::Event;
use crate::swarm::PeerId;

/// Writes queued for one peer's socket at most (each a run of small messages or one piece, so
/// a few pieces at most: requests per peer are bounded).
pub(crate) const WRITE_QUEUE: usize = 256;
/// Queued writes handed to the kernel in one vectored write at most.
pub(crate) const WRITE_BATCH: usize = 32;
pub(crate) const READ_CHUNK: usize = 64 * 1024;
/// Bytes queued for one peer's socket at most; a peer that does not read is disconnected
/// before it can make us hold more.
pub(crate) const MAX_QUEUED_BYTES: usize = 4 << 20;

pub(super) struct Conn {
    tx: mpsc::Sender<Bytes>,
    /// Bytes handed to the writer and not yet written.
    queued: Arc<AtomicUsize>,
    reader: tokio::task::JoinHandle<()>,
}

impl Conn {
    pub fn spawn(id: PeerId, stream: TcpStream, events: mpsc::Sender<Event>) -> Conn {
        crate::net::tcp::tune(&stream);
        let (mut rd, mut wr) = stream.into_split();
        let (tx, mut rx) = mpsc::channel::<Bytes>(WRITE_QUEUE);
        let queued = Arc::new(AtomicUsize::new(0));
        let written = queued.clone();
        let sent = events.clone();
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
            // A piece comes as its own buffer after its header: writing what is queued in one
            // vectored call keeps header and piece in one segment, and saves system calls.
            let mut batch = Vec::with_capacity(WRITE_BATCH);
            while rx.recv_many(&mut batch, WRITE_BATCH).await > 0 {
                let len: usize = batch.iter().map(Bytes::len).sum();
                if write_all_vectored(&mut wr, &mut batch).await.is_err() {
                    break;
                }
                written.fetch_sub(len, Ordering::Relaxed);
                if sent.send(Event::Sent(id, len)).await.is_err() {
                    break;
                }
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

/// Writes every buffer in `chunks`, in order, and empties it.
async fn write_all_vectored(
    wr: &mut (impl AsyncWrite + Unpin),
    chunks: &mut Vec<Bytes>,
) -> std::io::Result<()> {
    chunks.retain(|c| !c.is_empty());
    let mut first = 0;
    while first < chunks.len() {
        let slices: Vec<IoSlice> = chunks[first..].iter().map(|c| IoSlice::new(c)).collect();
        let n = wr.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        first = consume_written(chunks, first, n);
    }
    chunks.clear();
    Ok(())
}

/// Drops `n` written bytes from the front of `chunks[first..]`; returns the index of the
/// first buffer not yet wholly written. Runtime-free, so the smol driver shares it.
pub(crate) fn consume_written(chunks: &mut [Bytes], mut first: usize, mut n: usize) -> usize {
    while n > 0 {
        let chunk = &mut chunks[first];
        let step = n.min(chunk.len());
        chunk.advance(step);
        n -= step;
        if chunk.is_empty() {
            first += 1;
        }
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swarm::DEFAULT_SEND_BACKLOG;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A socket that takes at most 5 bytes per write, across buffers.
    struct Trickle(Vec<u8>);

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let n = buf.len().min(5);
            self.0.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(5 - n);
                self.0.extend_from_slice(&b[..take]);
                n += take;
            }
            Poll::Ready(Ok(n))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn the_writer_reports_what_it_wrote_and_the_kernel_holds_little_unsent() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (ours, theirs) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (ours, (mut theirs, _)) = (ours.unwrap(), theirs.unwrap());
        crate::net::tcp::tune(&ours);
        let lowat = socket2::SockRef::from(&ours).tcp_notsent_lowat().unwrap();
        assert_eq!(lowat, DEFAULT_SEND_BACKLOG as u32);
        let (events_tx, mut events) = mpsc::channel(16);
        let conn = Conn::spawn(7, ours, events_tx);
        assert!(conn.send(Bytes::from_static(b"piece one")));
        assert!(conn.send(Bytes::from_static(b"two")));
        let mut reported = 0;
        while reported < 12 {
            let event = tokio::time::timeout(std::time::Duration::from_secs(10), events.recv());
            match event.await.expect("a report of what was written") {
                Some(Event::Sent(7, len)) => reported += len,
                other => panic!("{:?}", other.map(|_| "another event")),
            }
        }
        assert_eq!(reported, 12);
        let mut got = [0u8; 12];
        theirs.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"piece onetwo");
    }

    #[tokio::test]
    async fn vectored_writes_keep_order_across_partial_writes() {
        let mut chunks = vec![
            Bytes::from_static(b"abc"),
            Bytes::new(),
            Bytes::from_static(b"defghijk"),
            Bytes::from_static(b"l"),
        ];
        let mut sink = Trickle(Vec::new());
        write_all_vectored(&mut sink, &mut chunks).await.unwrap();
        assert_eq!(sink.0, b"abcdefghijkl");
        assert!(chunks.is_empty());
    }
}
