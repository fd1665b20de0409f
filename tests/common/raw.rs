//! A raw-wire peer's reading side, for tests that speak docs/PROTOCOL.md themselves.

use bytes::BytesMut;
use nordlys::swarm::wire::{self, Message};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Reads the next message after the handshake into `buf`; `None` when the connection ends
/// or sends something that is not a message.
pub async fn read_msg(s: &mut TcpStream, buf: &mut BytesMut) -> Option<Message> {
    loop {
        match wire::frame_len(buf, 1 << 22) {
            Ok(n) => return wire::decode_frame(&buf.split_to(n).freeze()).ok(),
            Err(wire::DecodeError::NeedMore) => {}
            Err(_) => return None,
        }
        let mut chunk = [0u8; 65536];
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
