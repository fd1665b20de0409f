//! The simulator's hostile nodes: what each kind does to the bytes its own core sends, and
//! what it adds to them.

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::swarm::wire::{self, HaveEntry, LiveMessage, Message};

/// What a hostile node does, besides running the protocol as an honest node would.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Hostile {
    /// Every piece it sends has one payload byte flipped.
    Forger,
    /// Whenever it sends anything, it also asks for every piece of the last few seconds.
    Greedy,
    /// Claims what it holds and takes requests, but never sends a piece.
    Staller,
    /// A staller that also claims the 30 pieces after the newest, as keyframes, before they
    /// are made, and once per connection a maximum-size HAVE of pieces a million ahead.
    Liar,
    /// Takes the stream and uploads nothing, as an honest peer without upload does (a
    /// control: what the others cost beyond the pieces they take).
    Leech,
}

impl Hostile {
    /// The adversaries (the leech, a control, is not one).
    pub const ALL: [Hostile; 4] = [
        Hostile::Forger,
        Hostile::Greedy,
        Hostile::Staller,
        Hostile::Liar,
    ];

    /// What it does to the pieces it sends.
    pub(super) fn pieces(self) -> PieceAction {
        match self {
            Hostile::Forger => PieceAction::Flip,
            Hostile::Greedy => PieceAction::Keep,
            Hostile::Staller | Hostile::Liar => PieceAction::Drop,
            Hostile::Leech => PieceAction::Keep,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PieceAction {
    Keep,
    /// Flip a payload byte (in a copy: the shared piece stays as it is).
    Flip,
    /// Leave the piece out.
    Drop,
}

/// Future pieces a liar claims, and how far ahead its far-future claims start.
const LIAR_AHEAD: u64 = 30;
const LIAR_FAR: u64 = 1_000_000;

/// Pieces a greedy node asks for each time it sends.
pub(super) const GREEDY_ASKS: usize = 20;

/// Where a hostile node is in one connection's outgoing bytes, which the core hands over in
/// chunks: a piece goes as its own chunk after a chunk that ends with its message header.
#[derive(Default)]
pub(super) struct Forging {
    pub handshake_sent: bool,
    pub piece_next: bool,
    /// A liar: the far-future HAVE went on this connection; the newest future claim made.
    pub told_far: bool,
    pub claimed_upto: u64,
}

/// Follows a chunk of outgoing wire bytes message by message, and does `action` to every
/// piece in it.
pub(super) fn walk_frames(data: Bytes, state: &mut Forging, action: PieceAction) -> Bytes {
    if std::mem::take(&mut state.piece_next) {
        // The whole chunk is a piece, whose message header ended the chunk before.
        return match action {
            PieceAction::Keep => data,
            PieceAction::Flip => flip(data, &[crate::piece::HEADER_LEN]),
            PieceAction::Drop => Bytes::new(),
        };
    }
    // Each piece message in the chunk: where it starts and ends, and its first payload byte.
    let mut pieces = Vec::new();
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
            }
            pieces.push((pos, (pos + 4 + len).min(data.len()), at));
        }
        pos += 4 + len;
    }
    match action {
        _ if pieces.is_empty() => data,
        PieceAction::Keep => data,
        PieceAction::Flip => {
            let ats: Vec<usize> = (pieces.iter())
                .filter(|(_, end, at)| at < end)
                .map(|p| p.2)
                .collect();
            flip(data, &ats)
        }
        PieceAction::Drop => {
            let mut kept = BytesMut::with_capacity(data.len());
            let mut from = 0;
            for (start, end, _) in pieces {
                kept.extend_from_slice(&data[from..start]);
                from = end;
            }
            kept.extend_from_slice(&data[from..]);
            kept.freeze()
        }
    }
}

/// A copy of `data` with the bytes at `at` flipped.
fn flip(data: Bytes, at: &[usize]) -> Bytes {
    let mut buf = BytesMut::from(&data[..]);
    for &i in at {
        if let Some(b) = buf.get_mut(i) {
            *b ^= 0xff;
        }
    }
    buf.freeze()
}

/// What a liar adds on one connection, the newest piece made being `newest`: claims of the
/// pieces after it not claimed there yet, as keyframes stamped `now_us`; and the first time, a
/// maximum-size HAVE of pieces a million numbers ahead. Empty when there is nothing new.
pub(super) fn liar_haves(state: &mut Forging, newest: u64, now_us: u64) -> Bytes {
    let claim = |seq| HaveEntry {
        seq,
        timestamp_us: now_us,
        flags: crate::piece::FLAG_RANDOM_ACCESS,
    };
    let mut entries: Vec<HaveEntry> = (newest + 1..=newest + LIAR_AHEAD)
        .filter(|&seq| seq > state.claimed_upto)
        .map(claim)
        .collect();
    if !std::mem::replace(&mut state.told_far, true) {
        let far = newest + LIAR_FAR;
        entries.extend((far..far + wire::MAX_HAVE_ENTRIES as u64).map(claim));
    }
    state.claimed_upto = state.claimed_upto.max(newest + LIAR_AHEAD);
    let mut lies = BytesMut::new();
    for chunk in entries.chunks(wire::MAX_HAVE_ENTRIES) {
        let have = LiveMessage::Have {
            window_start: 0,
            entries: chunk.to_vec(),
        };
        wire::encode(&Message::Live(have), wire::OUR_LIVE_ID, &mut lies);
    }
    lies.freeze()
}
