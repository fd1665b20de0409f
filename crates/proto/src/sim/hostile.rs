//! The simulator's hostile nodes: what a forger or a greedy node does to the bytes its own
//! core sends.

use bytes::{Bytes, BytesMut};

use crate::swarm::wire;

/// Pieces a greedy node asks for each time it sends.
pub(super) const GREEDY_ASKS: usize = 20;

/// Where a hostile node is in one connection's outgoing bytes, which the core hands over in
/// chunks: a piece goes as its own chunk after a chunk that ends with its message header.
#[derive(Default)]
pub(super) struct Forging {
    pub handshake_sent: bool,
    pub piece_next: bool,
}

/// Follows a chunk of outgoing wire bytes message by message; with `flip`, flips a payload
/// byte of every piece in it (in a copy: the shared piece stays as it is).
pub(super) fn walk_frames(data: Bytes, state: &mut Forging, flip: bool) -> Bytes {
    let mut payload_bytes = Vec::new();
    if std::mem::take(&mut state.piece_next) {
        payload_bytes.push(crate::piece::HEADER_LEN);
    } else {
        let mut pos = if std::mem::replace(&mut state.handshake_sent, true) {
            0
        } else {
            wire::HANDSHAKE_LEN
        };
        while pos + wire::PIECE_HEAD_LEN <= data.len() {
            let len = u32::from_be_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
            let head = &data[pos..pos + wire::PIECE_HEAD_LEN];
            if wire::pending_piece(head, usize::MAX).is_some() {
                let at = pos + wire::PIECE_HEAD_LEN + crate::piece::HEADER_LEN;
                if pos + wire::PIECE_HEAD_LEN == data.len() {
                    state.piece_next = true; // the piece is the next chunk
                } else if at < pos + 4 + len {
                    payload_bytes.push(at);
                }
            }
            pos += 4 + len;
        }
    }
    if !flip || payload_bytes.is_empty() {
        return data;
    }
    let mut buf = BytesMut::from(&data[..]);
    for at in payload_bytes {
        if let Some(b) = buf.get_mut(at) {
            *b ^= 0xff;
        }
    }
    buf.freeze()
}
