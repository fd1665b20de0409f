//! Injector inputs (tokio): MPEG-TS bytes from a file (paced by its PCR), stdin, UDP
//! (unicast or multicast, plain or RTP-wrapped) or GStreamer (`test-pattern`, `gst:...`).
//!
//! [`open`] starts a background reader and returns an [`InputStream`]: chunks of bytes on a
//! bounded channel. The channel closing is the end of input; [`InputStream::error`] then
//! says whether it ended because of an error. Readers never panic on bad input; the bytes
//! are passed on unchanged (the packetizer resynchronises on junk).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::gst::{GstInput, is_gst_input, spawn_gst_input};
use super::pacing::PcrPacer;
use super::ts::{PACKET_SIZE, SYNC_BYTE};

/// How a file input is paced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// At the stream's own rate, following its PCR.
    Pcr,
    /// As fast as the consumer takes it.
    None,
}

/// Read size for files and stdin: 348 packets (about 64 KiB).
const READ_CHUNK: usize = 348 * PACKET_SIZE;
/// Largest chunk sent at one release time by the paced reader.
const MAX_BATCH: usize = 64 * PACKET_SIZE;
/// Chunks queued towards the consumer.
const CHANNEL_CAPACITY: usize = 64;
/// UDP datagrams queued towards the consumer.
const UDP_CHANNEL_CAPACITY: usize = 1024;
/// Largest UDP datagram accepted (TS over UDP is normally 7 x 188 bytes).
const MAX_DATAGRAM: usize = 65_536;
/// Socket receive buffer asked for (best effort).
const UDP_RCVBUF: usize = 4 << 20;

type ErrorSlot = Arc<Mutex<Option<String>>>;

fn set_error(slot: &ErrorSlot, msg: String) {
    tracing::warn!("input: {msg}");
    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(msg);
}

/// A running input. Dropping it stops the reader.
pub struct InputStream {
    rx: mpsc::Receiver<Bytes>,
    error: ErrorSlot,
    task: Option<JoinHandle<()>>,
    gst: Option<GstInput>,
    local_addr: Option<SocketAddr>,
    description: String,
}

impl std::fmt::Debug for InputStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputStream")
            .field("description", &self.description)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl InputStream {
    /// The next chunk of TS bytes; `None` at the end of input (then see [`Self::error`]).
    /// Cancel-safe.
    pub async fn recv(&mut self) -> Option<Bytes> {
        self.rx.recv().await
    }

    /// The channel itself, e.g. for `tokio::select!`.
    pub fn receiver(&mut self) -> &mut mpsc::Receiver<Bytes> {
        &mut self.rx
    }

    /// Why the input ended, if it ended because of an error.
    pub fn error(&self) -> Option<String> {
        if let Some(e) = self.error.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Some(e);
        }
        self.gst.as_ref().and_then(|g| g.error())
    }

    /// The bound address of a UDP input.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// What was opened, for logs.
    pub fn description(&self) -> &str {
        &self.description
    }
}

impl Drop for InputStream {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Open an input:
/// * a file path (or `file://PATH`): read in whole packets, paced by PCR unless `Pace::None`;
/// * `-`: stdin, unpaced;
/// * `udp://HOST:PORT` (also `udp://@HOST:PORT`): bind and receive datagrams, joining the
///   group when HOST is multicast; RTP-wrapped TS is unwrapped;
/// * `test-pattern`, `gst:PIPELINE`: GStreamer, see [`crate::source::gst`].
///
/// Live inputs (stdin, UDP, GStreamer) arrive at their own rate; `pace` applies to files.
pub async fn open(spec: &str, pace: Pace) -> Result<InputStream> {
    let error: ErrorSlot = Arc::default();
    if is_gst_input(spec) {
        let (rx, gst) = spawn_gst_input(spec, None)
            .with_context(|| format!("cannot start GStreamer input {spec:?}"))?;
        return Ok(InputStream {
            rx,
            error,
            task: None,
            gst: Some(gst),
            local_addr: None,
            description: spec.to_string(),
        });
    }
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let mut stream = InputStream {
        rx,
        error: error.clone(),
        task: None,
        gst: None,
        local_addr: None,
        description: spec.to_string(),
    };
    if spec == "-" {
        let what = "stdin".to_string();
        stream.task = Some(tokio::spawn(read_unpaced(
            tokio::io::stdin(),
            tx,
            error,
            what,
        )));
        return Ok(stream);
    }
    if let Some(rest) = spec.strip_prefix("udp://") {
        let (socket, local) = bind_udp(rest).await?;
        let (tx, rx) = mpsc::channel(UDP_CHANNEL_CAPACITY);
        stream.rx = rx;
        stream.local_addr = Some(local);
        stream.task = Some(tokio::spawn(read_udp(socket, tx, error)));
        return Ok(stream);
    }
    let path = spec.strip_prefix("file://").unwrap_or(spec);
    if path.is_empty() {
        bail!(
            "empty input: expected a file path, '-', udp://HOST:PORT, test-pattern or gst:PIPELINE"
        );
    }
    if spec.contains("://") && !spec.starts_with("file://") {
        bail!(
            "unsupported input {spec:?}: expected a file path, '-', udp://HOST:PORT, \
             test-pattern or gst:PIPELINE"
        );
    }
    let file = open_file(Path::new(path)).await?;
    let what = path.to_string();
    stream.task = Some(match pace {
        Pace::Pcr => tokio::spawn(read_paced(file, tx, error, what)),
        Pace::None => tokio::spawn(read_unpaced(file, tx, error, what)),
    });
    Ok(stream)
}

async fn open_file(path: &Path) -> Result<tokio::fs::File> {
    let meta = tokio::fs::metadata(path)
        .await
        .with_context(|| format!("cannot open input file {}", path.display()))?;
    if meta.is_dir() {
        bail!("input {} is a directory, not a TS file", path.display());
    }
    tokio::fs::File::open(path)
        .await
        .with_context(|| format!("cannot open input file {}", path.display()))
}

/// Read until EOF, passing on chunks of whole packets (a trailing partial packet at EOF).
async fn read_unpaced<R: AsyncRead + Unpin>(
    mut reader: R,
    tx: mpsc::Sender<Bytes>,
    error: ErrorSlot,
    what: String,
) {
    let mut buf = vec![0u8; READ_CHUNK];
    let mut pending: Vec<u8> = Vec::with_capacity(READ_CHUNK + PACKET_SIZE);
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                set_error(&error, format!("reading {what}: {e}"));
                break;
            }
        };
        pending.extend_from_slice(&buf[..n]);
        let whole = pending.len() / PACKET_SIZE * PACKET_SIZE;
        if whole > 0 {
            if tx
                .send(Bytes::copy_from_slice(&pending[..whole]))
                .await
                .is_err()
            {
                return;
            }
            pending.drain(..whole);
        }
    }
    if !pending.is_empty() {
        let _ = tx.send(Bytes::from(pending)).await;
    }
}

/// Read until EOF, releasing packets at their PCR time (see [`PcrPacer`]). Bytes that are
/// not aligned packets are passed on with the packets around them, unchanged.
async fn read_paced<R: AsyncRead + Unpin>(
    mut reader: R,
    tx: mpsc::Sender<Bytes>,
    error: ErrorSlot,
    what: String,
) {
    let mut pacer = PcrPacer::new();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut pending: Vec<u8> = Vec::with_capacity(READ_CHUNK + PACKET_SIZE);
    let mut batch: Vec<u8> = Vec::with_capacity(MAX_BATCH);
    let mut batch_at: Option<std::time::Instant> = None;
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                set_error(&error, format!("reading {what}: {e}"));
                break;
            }
        };
        pending.extend_from_slice(&buf[..n]);
        let mut i = 0;
        while pending.len() - i >= PACKET_SIZE {
            if pending[i] != SYNC_BYTE {
                let j = pending[i..]
                    .iter()
                    .position(|&b| b == SYNC_BYTE)
                    .map_or(pending.len(), |k| i + k);
                batch.extend_from_slice(&pending[i..j]);
                i = j;
                continue;
            }
            let mut pkt = [0u8; PACKET_SIZE];
            pkt.copy_from_slice(&pending[i..i + PACKET_SIZE]);
            i += PACKET_SIZE;
            let at = pacer.release_at(&pkt, std::time::Instant::now());
            if !batch.is_empty()
                && (batch_at != Some(at) || batch.len() >= MAX_BATCH)
                && !send_at(&tx, &mut batch, batch_at).await
            {
                return;
            }
            if batch.is_empty() {
                batch_at = Some(at);
            }
            batch.extend_from_slice(&pkt);
        }
        pending.drain(..i);
    }
    batch.extend_from_slice(&pending);
    send_at(&tx, &mut batch, batch_at).await;
}

/// Sleep until `at`, then send `batch` (emptied). False when the consumer is gone.
async fn send_at(
    tx: &mpsc::Sender<Bytes>,
    batch: &mut Vec<u8>,
    at: Option<std::time::Instant>,
) -> bool {
    if batch.is_empty() {
        return true;
    }
    if let Some(at) = at {
        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
    }
    let bytes = Bytes::copy_from_slice(batch);
    batch.clear();
    tx.send(bytes).await.is_ok()
}

async fn bind_udp(rest: &str) -> Result<(UdpSocket, SocketAddr)> {
    let spec = format!("udp://{rest}");
    let hostport = rest.strip_prefix('@').unwrap_or(rest);
    if hostport.contains('?') || hostport.contains('/') {
        bail!("unsupported UDP input {spec:?}: expected udp://HOST:PORT (no options)");
    }
    let addr = match hostport.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => tokio::net::lookup_host(hostport)
            .await
            .with_context(|| format!("bad UDP input {spec:?}: expected udp://HOST:PORT"))?
            .next()
            .with_context(|| format!("UDP input {spec:?}: host has no address"))?,
    };
    let socket = if addr.ip().is_multicast() {
        let any: SocketAddr = match addr {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, addr.port()).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, addr.port()).into(),
        };
        let socket = UdpSocket::bind(any)
            .await
            .with_context(|| format!("cannot bind UDP port {} for {spec}", addr.port()))?;
        match addr {
            SocketAddr::V4(a) => socket.join_multicast_v4(*a.ip(), Ipv4Addr::UNSPECIFIED),
            SocketAddr::V6(a) => socket.join_multicast_v6(a.ip(), 0),
        }
        .with_context(|| format!("cannot join multicast group {}", addr.ip()))?;
        socket
    } else {
        UdpSocket::bind(addr)
            .await
            .with_context(|| format!("cannot bind UDP {addr} for {spec}"))?
    };
    // Best effort: a larger buffer rides out scheduling hiccups without losing datagrams.
    let _ = nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::RcvBuf, &UDP_RCVBUF);
    let local = socket.local_addr().context("UDP socket address")?;
    Ok((socket, local))
}

/// The TS bytes of a datagram: as is, or the payload of an RTP packet carrying TS.
fn unwrap_datagram(d: &[u8]) -> &[u8] {
    // TS starts with 0x47 (version bits 01); RTP version 2 has 10.
    if d.len() < 12 || d[0] >> 6 != 2 {
        return d;
    }
    let mut header = 12 + 4 * usize::from(d[0] & 0x0f);
    if d[0] & 0x10 != 0 {
        let Some(ext) = d.get(header + 2..header + 4) else {
            return d;
        };
        header += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    }
    match d.get(header..) {
        Some(ts) if !ts.is_empty() && ts[0] == SYNC_BYTE && ts.len() % PACKET_SIZE == 0 => ts,
        _ => d,
    }
}

async fn read_udp(socket: UdpSocket, tx: mpsc::Sender<Bytes>, error: ErrorSlot) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let n = match socket.recv(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                set_error(&error, format!("receiving UDP: {e}"));
                return;
            }
        };
        let ts = unwrap_datagram(&buf[..n]);
        if ts.is_empty() {
            continue;
        }
        if tx.send(Bytes::copy_from_slice(ts)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_media::small as ts_file;
    use std::pin::Pin;
    use std::task::{Context as TaskContext, Poll};
    use std::time::{Duration, Instant};

    async fn drain(input: &mut InputStream) -> Vec<u8> {
        let mut all = Vec::new();
        while let Some(chunk) = input.recv().await {
            all.extend_from_slice(&chunk);
        }
        all
    }

    #[tokio::test]
    async fn file_paced_takes_its_duration() {
        let path = ts_file("in-h264-2s.ts", 2, "h264");
        let want = std::fs::read(&path).unwrap();
        let start = Instant::now();
        let mut input = open(path.to_str().unwrap(), Pace::Pcr).await.unwrap();
        let mut all = Vec::new();
        let mut chunks = 0;
        while let Some(chunk) = input.recv().await {
            assert_eq!(chunk.len() % 188, 0, "aligned file gives whole packets");
            all.extend_from_slice(&chunk);
            chunks += 1;
        }
        let elapsed = start.elapsed();
        assert_eq!(all, want);
        assert_eq!(input.error(), None);
        assert!(chunks > 20, "paced in many small chunks, got {chunks}");
        assert!(
            elapsed >= Duration::from_millis(1500),
            "paced 2 s file took {elapsed:?}"
        );
    }

    #[tokio::test]
    async fn file_unpaced_is_exact() {
        let path = ts_file("in-h264-2s.ts", 2, "h264");
        let want = std::fs::read(&path).unwrap();
        let spec = format!("file://{}", path.display());
        let mut input = open(&spec, Pace::None).await.unwrap();
        assert_eq!(drain(&mut input).await, want);
        assert_eq!(input.error(), None);
    }

    #[tokio::test]
    async fn paced_reader_keeps_junk_and_partial_tail() {
        let path = ts_file("in-h264-2s.ts", 2, "h264");
        let file = std::fs::read(&path).unwrap();
        // Junk at the start and in the middle, a partial packet at the end.
        let mut data = vec![1, 2, 3];
        data.extend_from_slice(&file[..188 * 100]);
        data.extend_from_slice(&[9; 50]);
        data.extend_from_slice(&file[188 * 100..188 * 130]);
        data.extend_from_slice(&[0x47, 0, 0]);
        let (tx, mut rx) = mpsc::channel(4);
        let error = ErrorSlot::default();
        let task = tokio::spawn(read_paced(
            std::io::Cursor::new(data.clone()),
            tx,
            error.clone(),
            "mem".into(),
        ));
        let mut all = Vec::new();
        while let Some(c) = rx.recv().await {
            all.extend_from_slice(&c);
        }
        task.await.unwrap();
        assert_eq!(all, data);
        assert_eq!(*error.lock().unwrap(), None);
    }

    /// Gives some bytes, then an I/O error.
    struct Failing(usize);
    impl AsyncRead for Failing {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut TaskContext<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            if self.0 == 0 {
                return Poll::Ready(Err(std::io::Error::other("disk on fire")));
            }
            self.0 -= 1;
            buf.put_slice(&[0x47; 188]);
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn read_errors_are_reported() {
        for paced in [false, true] {
            let (tx, mut rx) = mpsc::channel(4);
            let error = ErrorSlot::default();
            let what = "test.ts".to_string();
            let task = if paced {
                tokio::spawn(read_paced(Failing(3), tx, error.clone(), what))
            } else {
                tokio::spawn(read_unpaced(Failing(3), tx, error.clone(), what))
            };
            let mut n = 0;
            while let Some(c) = rx.recv().await {
                n += c.len();
            }
            task.await.unwrap();
            assert_eq!(n, 3 * 188);
            let msg = error.lock().unwrap().clone().unwrap();
            assert!(
                msg.contains("test.ts") && msg.contains("disk on fire"),
                "{msg}"
            );
        }
    }

    #[tokio::test]
    async fn udp_unicast_and_rtp() {
        let mut input = open("udp://127.0.0.1:0", Pace::Pcr).await.unwrap();
        let addr = input.local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let path = ts_file("in-h264-2s.ts", 2, "h264");
        let data = std::fs::read(&path).unwrap();
        // Lockstep: send a datagram, await it, compare.
        for (i, dgram) in data.chunks(7 * 188).take(40).enumerate() {
            if i % 5 == 4 {
                // RTP-wrapped (payload type 33, MP2T).
                let mut rtp = vec![0x80, 33, 0, i as u8, 0, 0, 0, 0, 1, 2, 3, 4];
                rtp.extend_from_slice(dgram);
                sender.send_to(&rtp, addr).await.unwrap();
            } else {
                sender.send_to(dgram, addr).await.unwrap();
            }
            let got = input.recv().await.unwrap();
            assert_eq!(&got[..], dgram, "datagram {i}");
        }
        assert_eq!(input.error(), None);
    }

    #[test]
    fn rtp_unwrap_is_careful() {
        let ts = [0x47u8; 188];
        assert_eq!(unwrap_datagram(&ts), &ts[..]);
        // RTP with a CSRC and an extension header.
        let mut rtp = vec![0x91, 33, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 9, 9, 9];
        rtp.extend_from_slice(&[0xbe, 0xde, 0, 1, 5, 5, 5, 5]);
        rtp.extend_from_slice(&ts);
        assert_eq!(unwrap_datagram(&rtp), &ts[..]);
        // Not TS inside: left as is.
        let odd = [0x80u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2];
        assert_eq!(unwrap_datagram(&odd), &odd[..]);
        assert_eq!(unwrap_datagram(&[0x90, 0]), &[0x90, 0][..]);
        let truncated_ext = [0x90u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xbe];
        assert_eq!(unwrap_datagram(&truncated_ext), &truncated_ext[..]);
    }

    #[tokio::test]
    async fn errors_are_clear() {
        let e = open("/nonexistent/concert.ts", Pace::Pcr)
            .await
            .unwrap_err();
        assert!(
            format!("{e:#}").contains("/nonexistent/concert.ts"),
            "{e:#}"
        );
        let e = open("rtmp://example.com/live", Pace::Pcr)
            .await
            .unwrap_err();
        assert!(format!("{e:#}").contains("unsupported input"), "{e:#}");
        let e = open("udp://no-port-here", Pace::Pcr).await.unwrap_err();
        assert!(format!("{e:#}").contains("udp://no-port-here"), "{e:#}");
        let e = open("udp://127.0.0.1:1234?pkt_size=1316", Pace::Pcr)
            .await
            .unwrap_err();
        assert!(format!("{e:#}").contains("no options"), "{e:#}");
        let dir = tempfile::tempdir().unwrap();
        let e = open(dir.path().to_str().unwrap(), Pace::Pcr)
            .await
            .unwrap_err();
        assert!(format!("{e:#}").contains("directory"), "{e:#}");
        let e = open("", Pace::Pcr).await.unwrap_err();
        assert!(format!("{e:#}").contains("empty input"), "{e:#}");
        // The port is taken: bind fails clearly.
        let taken = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let spec = format!("udp://{}", taken.local_addr().unwrap());
        let e = open(&spec, Pace::Pcr).await.unwrap_err();
        assert!(format!("{e:#}").contains("cannot bind"), "{e:#}");
    }

    #[tokio::test]
    async fn test_pattern_via_gstreamer() {
        let mut input = open("test-pattern", Pace::Pcr).await.unwrap();
        let first = tokio::time::timeout(Duration::from_secs(60), input.recv())
            .await
            .expect("test pattern produced nothing in 60 s")
            .expect("test pattern ended");
        assert!(!first.is_empty() && first.len() % 188 == 0);
        assert_eq!(first[0], 0x47);
        assert_eq!(input.error(), None);
    }
}
