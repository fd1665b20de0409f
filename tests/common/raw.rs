//! A raw-wire peer, for tests that speak docs/PROTOCOL.md themselves.

use bytes::BytesMut;
use nordlys::swarm::wire::{self, ExtHandshake, Handshake, Message, Role};
use nordlys::torrent::InfoHash;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Both handshakes as `role` with peer id `[id; 20]`, then INTERESTED and UNCHOKE; reads the
/// other side's handshake. Returns what came after it, `None` if the connection ended.
pub async fn greet(s: &mut TcpStream, ih: &InfoHash, id: u8, role: Role) -> Option<BytesMut> {
    let hs = Handshake {
        extensions: true,
        info_hash: ih.0,
        peer_id: [id; 20],
    };
    let mut out = BytesMut::from(&hs.encode()[..]);
    let ext = ExtHandshake {
        live_id: Some(wire::OUR_LIVE_ID),
        listen_port: None,
        role: Some(role),
        client: None,
        pex_id: None,
    };
    wire::encode(&Message::ExtHandshake(ext), 0, &mut out);
    wire::encode(&Message::Interested, 0, &mut out);
    wire::encode(&Message::Unchoke, 0, &mut out);
    s.write_all(&out).await.ok()?;
    let mut buf = BytesMut::new();
    while buf.len() < wire::HANDSHAKE_LEN {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let _ = buf.split_to(wire::HANDSHAKE_LEN);
    Some(buf)
}

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
