//! Peer-wire codec (see `docs/PROTOCOL.md`, "Peer wire").
//!
//! Pure functions: `decode` takes the bytes received so far and returns one message and the
//! bytes it used, [`DecodeError::NeedMore`], or another [`DecodeError`] saying why the bytes are
//! not protocol. Every length is checked against a bound before any allocation, so no input can
//! panic the process or make it buffer without limit. The BEP 10 extended handshake is read with
//! the lenient bounded reader of [`crate::bencode`] (unsorted and unknown keys are fine) and
//! written canonically with bendy's encoder.

use std::net::{IpAddr, SocketAddr};

use bytes::{BufMut, Bytes, BytesMut};

pub const PROTOCOL: &[u8; 19] = b"BitTorrent protocol";
pub const HANDSHAKE_LEN: usize = 68;
/// BEP 10: reserved byte 5, bit 0x10.
const EXTENSION_BIT: (usize, u8) = (5, 0x10);
/// Our name for the live extension in the BEP 10 `m` dictionary.
pub const LIVE_EXTENSION: &str = "nordlys_live";
/// The message id we ask peers to use for live messages (announced in our BEP 10 handshake).
pub const OUR_LIVE_ID: u8 = 1;
/// BEP 11 peer exchange: its name in the BEP 10 `m` dictionary, and the id we ask for.
pub const PEX_EXTENSION: &str = "ut_pex";
pub const OUR_PEX_ID: u8 = 2;
/// A PEX message (bencode) larger than this is hostile: 100 IPv6 peers added and 100 dropped,
/// with their flags and keys, take about 3.8 KiB.
pub const MAX_PEX_LEN: usize = 8192;
/// At most this many peers added, and this many dropped, in one PEX message (libtorrent sends
/// at most 50 and refuses more than 100).
pub const MAX_PEX_PEERS: usize = 100;
/// BEP 11 `added.f`: the sender made an outgoing connection to the peer, so it can be dialled.
pub const PEX_REACHABLE: u8 = 0x10;
/// At most this many piece announcements in one HAVE message.
pub const MAX_HAVE_ENTRIES: usize = 8192;
/// Extended handshakes are small dictionaries; anything larger is hostile.
pub const MAX_EXT_HANDSHAKE: usize = 4096;

const MSG_CHOKE: u8 = 0;
const MSG_UNCHOKE: u8 = 1;
const MSG_INTERESTED: u8 = 2;
const MSG_NOT_INTERESTED: u8 = 3;
const MSG_EXTENDED: u8 = 20;

const LIVE_HAVE: u8 = 0;
const LIVE_REQUEST: u8 = 1;
const LIVE_PIECE: u8 = 2;
const LIVE_REJECT: u8 = 3;
const LIVE_CANCEL: u8 = 4;
const LIVE_SUBSCRIBE: u8 = 5;
const LIVE_UNSUBSCRIBE: u8 = 6;

/// Most substreams a stream may be split into (see [`LiveMessage::Subscribe`]).
pub const MAX_SUBSTREAMS: u8 = 64;

const HAVE_ENTRY_LEN: usize = 8 + 8 + 1;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handshake {
    pub extensions: bool,
    pub info_hash: [u8; 20],
    pub peer_id: [u8; 20],
}

impl Handshake {
    pub fn encode(&self) -> [u8; HANDSHAKE_LEN] {
        let mut out = [0u8; HANDSHAKE_LEN];
        out[0] = 19;
        out[1..20].copy_from_slice(PROTOCOL);
        if self.extensions {
            out[20 + EXTENSION_BIT.0] |= EXTENSION_BIT.1;
        }
        out[28..48].copy_from_slice(&self.info_hash);
        out[48..68].copy_from_slice(&self.peer_id);
        out
    }

    pub fn decode(buf: &[u8]) -> Result<Handshake, DecodeError> {
        if buf.is_empty() {
            return Err(DecodeError::NeedMore);
        }
        if buf[0] != 19 || !PROTOCOL.starts_with(&buf[1..buf.len().min(20)]) {
            return Err(DecodeError::BadHandshake);
        }
        if buf.len() < HANDSHAKE_LEN {
            return Err(DecodeError::NeedMore);
        }
        Ok(Handshake {
            extensions: buf[20 + EXTENSION_BIT.0] & EXTENSION_BIT.1 != 0,
            info_hash: buf[28..48].try_into().unwrap(),
            peer_id: buf[48..68].try_into().unwrap(),
        })
    }
}

/// What a node is in the swarm, told in the extended handshake (`nordlys_role`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Injector,
    Seed,
    Receiver,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Injector => "injector",
            Role::Seed => "seed",
            Role::Receiver => "receiver",
        }
    }

    pub fn from_name(name: &[u8]) -> Option<Role> {
        match name {
            b"injector" => Some(Role::Injector),
            b"seed" => Some(Role::Seed),
            b"receiver" => Some(Role::Receiver),
            _ => None,
        }
    }
}

/// Our BEP 10 handshake fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtHandshake {
    /// The id the sender wants live messages sent with; `None` when it lacks the extension.
    pub live_id: Option<u8>,
    /// The sender's listening port (`p`), so inbound peers can be passed on and banned by it.
    pub listen_port: Option<u16>,
    /// The sender's role (`nordlys_role`); `None` when absent or unknown.
    pub role: Option<Role>,
    pub client: Option<String>,
    /// The id the sender wants PEX messages sent with; `None` when it does not take them.
    pub pex_id: Option<u8>,
}

impl ExtHandshake {
    fn encode(&self) -> Vec<u8> {
        let mut enc = bendy::encoding::Encoder::new();
        let res = enc.emit_dict(|mut d| {
            d.emit_pair_with(b"m", |e| {
                e.emit_dict(|mut m| {
                    if let Some(id) = self.live_id {
                        m.emit_pair(LIVE_EXTENSION.as_bytes(), id)?;
                    }
                    if let Some(id) = self.pex_id {
                        m.emit_pair(PEX_EXTENSION.as_bytes(), id)?;
                    }
                    Ok(())
                })
            })?;
            if let Some(role) = &self.role {
                d.emit_pair(b"nordlys_role", role.name())?;
            }
            if let Some(p) = self.listen_port {
                d.emit_pair(b"p", p)?;
            }
            if let Some(v) = &self.client {
                d.emit_pair(b"v", v.as_str())?;
            }
            Ok(())
        });
        res.and_then(|_| enc.get_output())
            .expect("static structure encodes")
    }

    /// Lenient (see [`crate::bencode`]): other clients send keys we do not know, of any type,
    /// and may not sort them; a known key whose value has the wrong type is ignored like an
    /// unknown one. Still bounded: at most [`MAX_EXT_HANDSHAKE`] bytes (checked by the caller),
    /// the reader's depth and value limits, and exactly one dictionary with nothing after it.
    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        use crate::bencode::Value;
        let Value::Dict(dict) = crate::bencode::decode(buf)? else {
            return Err(DecodeError::ExtHandshakeNotDict);
        };
        let ext_id = |name: &str| {
            dict.get(b"m")
                .and_then(|m| m.get(name.as_bytes()))
                .and_then(Value::as_int)
                .and_then(|id| u8::try_from(id).ok())
                .filter(|&id| id != 0)
        };
        let live_id = ext_id(LIVE_EXTENSION);
        let pex_id = ext_id(PEX_EXTENSION);
        let listen_port = dict
            .get(b"p")
            .and_then(Value::as_int)
            .and_then(|p| u16::try_from(p).ok());
        let role = dict
            .get(b"nordlys_role")
            .and_then(Value::as_bytes)
            .and_then(Role::from_name);
        let client = dict
            .get(b"v")
            .and_then(Value::as_bytes)
            .map(|v| String::from_utf8_lossy(&v[..v.len().min(64)]).into_owned());
        Ok(ExtHandshake {
            live_id,
            listen_port,
            role,
            client,
            pex_id,
        })
    }
}

/// A BEP 11 peer exchange message: peers the sender connected to since its last message, and
/// peers it is no longer connected to. Only hints: an address is dialled like one from a
/// tracker, and proves nothing until its peer's handshake.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pex {
    /// With their BEP 11 flags ([`PEX_REACHABLE`], ...); 0 where the sender gave none.
    pub added: Vec<(SocketAddr, u8)>,
    pub dropped: Vec<SocketAddr>,
}

impl Pex {
    fn encode(&self) -> Vec<u8> {
        let (v4, v6): (Vec<_>, Vec<_>) = self.added.iter().partition(|(a, _)| a.is_ipv4());
        let flags = |l: &[&(SocketAddr, u8)]| l.iter().map(|(_, f)| *f).collect::<Vec<u8>>();
        let addrs = |l: &[&(SocketAddr, u8)]| compact(l.iter().map(|(a, _)| a));
        let (d4, d6): (Vec<&SocketAddr>, Vec<&SocketAddr>) =
            self.dropped.iter().partition(|a| a.is_ipv4());
        let mut enc = bendy::encoding::Encoder::new();
        let res = enc.emit_dict(|mut d| {
            // Keys in bencode's sorted order.
            d.emit_pair(b"added", bendy::encoding::AsString(addrs(&v4)))?;
            d.emit_pair(b"added.f", bendy::encoding::AsString(flags(&v4)))?;
            d.emit_pair(b"added6", bendy::encoding::AsString(addrs(&v6)))?;
            d.emit_pair(b"added6.f", bendy::encoding::AsString(flags(&v6)))?;
            d.emit_pair(b"dropped", bendy::encoding::AsString(compact(d4)))?;
            d.emit_pair(b"dropped6", bendy::encoding::AsString(compact(d6)))
        });
        res.and_then(|_| enc.get_output())
            .expect("static structure encodes")
    }

    /// Lenient about what it does not need (unknown keys, flags of the wrong length: no
    /// flags), strict about size: at most [`MAX_PEX_LEN`] bytes (checked by the caller) and
    /// [`MAX_PEX_PEERS`] peers added and dropped, and whole compact entries.
    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        use crate::bencode::Value;
        let Value::Dict(dict) = crate::bencode::decode(buf)? else {
            return Err(DecodeError::PexNotDict);
        };
        let field = |key: &'static str, entry: usize| -> Result<Vec<SocketAddr>, DecodeError> {
            let Some(bytes) = dict.get(key.as_bytes()).and_then(Value::as_bytes) else {
                return Ok(Vec::new());
            };
            if bytes.len() % entry != 0 {
                return Err(DecodeError::BadCompactPeers {
                    key,
                    len: bytes.len(),
                });
            }
            Ok(bytes.chunks_exact(entry).map(uncompact).collect())
        };
        let flags = |key: &str, n: usize| {
            dict.get(key.as_bytes())
                .and_then(Value::as_bytes)
                .filter(|f| f.len() == n)
                .map_or_else(|| vec![0; n], <[u8]>::to_vec)
        };
        let (a4, a6) = (field("added", 6)?, field("added6", 18)?);
        let dropped = [field("dropped", 6)?, field("dropped6", 18)?].concat();
        for (what, count) in [("added", a4.len() + a6.len()), ("dropped", dropped.len())] {
            if count > MAX_PEX_PEERS {
                return Err(DecodeError::TooManyPexPeers {
                    what,
                    count,
                    max: MAX_PEX_PEERS,
                });
            }
        }
        let (f4, f6) = (flags("added.f", a4.len()), flags("added6.f", a6.len()));
        let added = (a4.into_iter().zip(f4))
            .chain(a6.into_iter().zip(f6))
            .collect();
        Ok(Pex { added, dropped })
    }
}

/// BEP 23 compact peers: 4 (or 16) address bytes, then the port, big-endian.
fn compact<'a>(addrs: impl IntoIterator<Item = &'a SocketAddr>) -> Vec<u8> {
    let mut out = Vec::new();
    for a in addrs {
        match a.ip() {
            IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
            IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
        }
        out.extend_from_slice(&a.port().to_be_bytes());
    }
    out
}

/// One compact entry of 6 or 18 bytes (the caller cuts them).
fn uncompact(e: &[u8]) -> SocketAddr {
    let (ip, port) = e.split_at(e.len() - 2);
    let ip: IpAddr = match ip.len() {
        4 => <[u8; 4]>::try_from(ip).unwrap().into(),
        _ => <[u8; 16]>::try_from(ip).unwrap().into(),
    };
    SocketAddr::new(ip, u16::from_be_bytes([port[0], port[1]]))
}

/// One piece announcement: enough for hook-in to choose a start without fetching anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HaveEntry {
    pub seq: u64,
    pub timestamp_us: u64,
    pub flags: u8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LiveMessage {
    /// "I hold these pieces, and nothing below `window_start`."
    Have {
        window_start: u64,
        entries: Vec<HaveEntry>,
    },
    Request {
        seq: u64,
    },
    /// A signed piece in its wire form; checked by `piece::SignedPiece::verify`.
    Piece(Bytes),
    /// "I will not send you `seq`": not held, choked, or my upload queue is too long.
    Reject {
        seq: u64,
    },
    Cancel {
        seq: u64,
    },
    /// "Push me every piece of `substream` as soon as you have verified it, unasked": the
    /// pieces whose `seq % substreams == substream`.
    Subscribe(Substream),
    /// From a child: "stop pushing this substream". From a parent: "I do not (any longer)
    /// push it to you" (a refused or dropped subscription).
    Unsubscribe(Substream),
}

/// One substream of a stream split into `of` (pieces `seq % of == index`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Substream {
    pub index: u8,
    pub of: u8,
}

impl Substream {
    pub fn of_seq(seq: u64, of: u8) -> Substream {
        Substream {
            index: (seq % of as u64) as u8,
            of,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    KeepAlive,
    Choke,
    Unchoke,
    Interested,
    NotInterested,
    ExtHandshake(ExtHandshake),
    Live(LiveMessage),
    Pex(Pex),
}

/// Why [`decode`] (or [`Handshake::decode`], [`frame_len`], [`decode_frame`]) gave no message.
///
/// [`DecodeError::NeedMore`] means "wait for more bytes"; every other variant means the peer
/// does not speak the protocol, and the connection is closed with the Display text as reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("need more bytes")]
    NeedMore,
    /// The first bytes are not `19 | "BitTorrent protocol"`.
    #[error("not a BitTorrent handshake")]
    BadHandshake,
    /// A length prefix larger than the largest message of this torrent.
    #[error("message of {len} bytes exceeds {max}")]
    TooLong { len: usize, max: usize },
    /// A frame shorter than its fixed part (given to [`decode_frame`] by hand, or an extended
    /// or live message cut before its header ends).
    #[error("{what} is truncated")]
    Truncated { what: &'static str },
    /// A BEP 3 message id we do not speak (`have`, `bitfield`, `request`, `piece`, ...).
    #[error("unsupported message id {0}")]
    UnknownMessage(u8),
    /// `choke`, `unchoke`, `interested` or `not interested` with a payload.
    #[error("message id {id} carries {len} unexpected payload bytes")]
    UnexpectedPayload { id: u8, len: usize },
    /// A BEP 10 message under an extended id we did not announce.
    #[error("unknown extended message id {0}")]
    UnknownExtension(u8),
    #[error("extended handshake of {len} bytes exceeds {max}")]
    ExtHandshakeTooLong { len: usize, max: usize },
    /// The extended handshake is bencode, but not a dictionary.
    #[error("extended handshake is not a dictionary")]
    ExtHandshakeNotDict,
    /// The extended handshake is not (bounded) bencode.
    #[error("extended handshake: {0}")]
    Bencode(#[from] crate::bencode::Error),
    #[error("unknown live message kind {0}")]
    UnknownLiveMessage(u8),
    /// A fixed-size live message (REQUEST, REJECT, CANCEL) whose body has the wrong size.
    #[error("{what} body is {len} bytes, not {expected}")]
    WrongLength {
        what: &'static str,
        len: usize,
        expected: usize,
    },
    #[error("HAVE lists {count} entries, more than {max}")]
    TooManyHaveEntries { count: usize, max: usize },
    /// A HAVE whose entry count disagrees with its length.
    #[error("HAVE count {count} does not match its {len} bytes of entries")]
    HaveCountMismatch { count: usize, len: usize },
    /// A SUBSCRIBE or UNSUBSCRIBE naming no substream: index past the count, a count of 0 or
    /// above [`MAX_SUBSTREAMS`].
    #[error("substream {index} of {of} does not exist")]
    BadSubstream { index: u8, of: u8 },
    #[error("PEX message of {len} bytes exceeds {max}")]
    PexTooLong { len: usize, max: usize },
    /// The PEX message is bencode, but not a dictionary.
    #[error("PEX message is not a dictionary")]
    PexNotDict,
    /// A compact peer list whose length is not a whole number of entries.
    #[error("PEX {key} is {len} bytes, not whole peers")]
    BadCompactPeers { key: &'static str, len: usize },
    #[error("PEX lists {count} peers {what}, more than {max}")]
    TooManyPexPeers {
        what: &'static str,
        count: usize,
        max: usize,
    },
}

/// Largest message we accept for a torrent whose pieces carry at most `max_payload` bytes.
pub fn max_message_len(max_payload: u32) -> usize {
    let piece = max_payload as usize + crate::piece::OVERHEAD + 3;
    let have = 3 + 8 + 2 + MAX_HAVE_ENTRIES * HAVE_ENTRY_LEN;
    piece.max(have)
}

/// Decodes one length-prefixed message. Returns the message and the bytes it used.
pub fn decode(buf: &[u8], max_len: usize) -> Result<(Message, usize), DecodeError> {
    let used = frame_len(buf, max_len)?;
    let frame = Bytes::copy_from_slice(&buf[..used]);
    Ok((decode_frame(&frame)?, used))
}

/// The length (prefix included) of the first message in `buf`, once all of it is there.
pub fn frame_len(buf: &[u8], max_len: usize) -> Result<usize, DecodeError> {
    let len = frame_size(buf, max_len)?;
    if buf.len() < len {
        return Err(DecodeError::NeedMore);
    }
    Ok(len)
}

/// The length of the message `buf` starts with, prefix included, read from its first four
/// bytes alone (the rest may not have arrived yet).
pub fn frame_size(buf: &[u8], max_len: usize) -> Result<usize, DecodeError> {
    let Some(prefix) = buf.first_chunk::<4>() else {
        return Err(DecodeError::NeedMore);
    };
    let len = u32::from_be_bytes(*prefix) as usize;
    if len > max_len {
        return Err(DecodeError::TooLong { len, max: max_len });
    }
    Ok(4 + len)
}

/// Length of a live PIECE frame's header: length prefix, extended id, our live id, type.
pub const PIECE_HEAD_LEN: usize = 7;

/// When `buffered` is exactly the header of a live PIECE frame, the length of the piece that
/// follows it. The reader then takes the piece straight from the next bytes it receives,
/// without copying it to join the two (see [`encode_piece_head`]).
pub fn pending_piece(buffered: &[u8], max_len: usize) -> Option<usize> {
    let [l0, l1, l2, l3, MSG_EXTENDED, OUR_LIVE_ID, LIVE_PIECE] = *buffered else {
        return None;
    };
    let len = u32::from_be_bytes([l0, l1, l2, l3]) as usize;
    (len > 3 && len <= max_len).then(|| len - 3)
}

/// Writes the header of a live PIECE frame whose `piece_len` bytes the caller sends next, as
/// its own buffer: a stored piece is sent as it is, never copied into a message.
pub fn encode_piece_head(peer_live_id: u8, piece_len: usize, out: &mut BytesMut) {
    out.put_u32((piece_len + 3) as u32);
    out.put_u8(MSG_EXTENDED);
    out.put_u8(peer_live_id);
    out.put_u8(LIVE_PIECE);
}

/// Decodes one whole message as measured by [`frame_len`] (the length prefix is not checked
/// again). A piece is a slice of `frame`, not a copy.
pub fn decode_frame(frame: &Bytes) -> Result<Message, DecodeError> {
    if frame.len() == 4 {
        return Ok(Message::KeepAlive);
    }
    let Some(&id) = frame.get(4) else {
        return Err(DecodeError::Truncated { what: "message" });
    };
    let body = &frame[5..];
    let no_body = |m: Message| {
        if body.is_empty() {
            Ok(m)
        } else {
            Err(DecodeError::UnexpectedPayload {
                id,
                len: body.len(),
            })
        }
    };
    match id {
        MSG_CHOKE => no_body(Message::Choke),
        MSG_UNCHOKE => no_body(Message::Unchoke),
        MSG_INTERESTED => no_body(Message::Interested),
        MSG_NOT_INTERESTED => no_body(Message::NotInterested),
        MSG_EXTENDED => decode_extended(frame),
        other => Err(DecodeError::UnknownMessage(other)),
    }
}

fn decode_extended(frame: &Bytes) -> Result<Message, DecodeError> {
    let Some((&ext_id, rest)) = frame[5..].split_first() else {
        return Err(DecodeError::Truncated {
            what: "extended message",
        });
    };
    match ext_id {
        0 if rest.len() > MAX_EXT_HANDSHAKE => Err(DecodeError::ExtHandshakeTooLong {
            len: rest.len(),
            max: MAX_EXT_HANDSHAKE,
        }),
        0 => ExtHandshake::decode(rest).map(Message::ExtHandshake),
        OUR_LIVE_ID => decode_live(frame).map(Message::Live),
        OUR_PEX_ID if rest.len() > MAX_PEX_LEN => Err(DecodeError::PexTooLong {
            len: rest.len(),
            max: MAX_PEX_LEN,
        }),
        OUR_PEX_ID => Pex::decode(rest).map(Message::Pex),
        other => Err(DecodeError::UnknownExtension(other)),
    }
}

/// A live message: `frame` is length, id 20, extension id, kind, body.
fn decode_live(frame: &Bytes) -> Result<LiveMessage, DecodeError> {
    const BODY: usize = PIECE_HEAD_LEN;
    let Some(&kind) = frame.get(BODY - 1) else {
        return Err(DecodeError::Truncated {
            what: "live message",
        });
    };
    let rest = &frame[BODY..];
    let seq_only = |what: &'static str, rest: &[u8]| -> Result<u64, DecodeError> {
        let arr: [u8; 8] = rest.try_into().map_err(|_| DecodeError::WrongLength {
            what,
            len: rest.len(),
            expected: 8,
        })?;
        Ok(u64::from_be_bytes(arr))
    };
    match kind {
        LIVE_HAVE => {
            if rest.len() < 10 {
                return Err(DecodeError::Truncated { what: "HAVE" });
            }
            let window_start = u64::from_be_bytes(rest[..8].try_into().unwrap());
            let count = u16::from_be_bytes(rest[8..10].try_into().unwrap()) as usize;
            let list = &rest[10..];
            if count > MAX_HAVE_ENTRIES {
                return Err(DecodeError::TooManyHaveEntries {
                    count,
                    max: MAX_HAVE_ENTRIES,
                });
            }
            if list.len() != count * HAVE_ENTRY_LEN {
                return Err(DecodeError::HaveCountMismatch {
                    count,
                    len: list.len(),
                });
            }
            let entries = list
                .chunks_exact(HAVE_ENTRY_LEN)
                .map(|e| HaveEntry {
                    seq: u64::from_be_bytes(e[..8].try_into().unwrap()),
                    timestamp_us: u64::from_be_bytes(e[8..16].try_into().unwrap()),
                    flags: e[16],
                })
                .collect();
            Ok(LiveMessage::Have {
                window_start,
                entries,
            })
        }
        LIVE_REQUEST => seq_only("REQUEST", rest).map(|seq| LiveMessage::Request { seq }),
        LIVE_PIECE => Ok(LiveMessage::Piece(frame.slice(BODY..))),
        LIVE_REJECT => seq_only("REJECT", rest).map(|seq| LiveMessage::Reject { seq }),
        LIVE_CANCEL => seq_only("CANCEL", rest).map(|seq| LiveMessage::Cancel { seq }),
        LIVE_SUBSCRIBE => substream("SUBSCRIBE", rest).map(LiveMessage::Subscribe),
        LIVE_UNSUBSCRIBE => substream("UNSUBSCRIBE", rest).map(LiveMessage::Unsubscribe),
        other => Err(DecodeError::UnknownLiveMessage(other)),
    }
}

/// The body of a SUBSCRIBE or UNSUBSCRIBE: `index u8, of u8`.
fn substream(what: &'static str, rest: &[u8]) -> Result<Substream, DecodeError> {
    let [index, of] = *rest else {
        return Err(DecodeError::WrongLength {
            what,
            len: rest.len(),
            expected: 2,
        });
    };
    if of == 0 || of > MAX_SUBSTREAMS || index >= of {
        return Err(DecodeError::BadSubstream { index, of });
    }
    Ok(Substream { index, of })
}

/// Encodes a message. `ext_id` is the id the receiving peer asked for, in its extended
/// handshake, for this kind of extended message: live messages or PEX.
pub fn encode(msg: &Message, ext_id: u8, out: &mut BytesMut) {
    let start = out.len();
    out.put_u32(0); // length, patched below
    match msg {
        Message::KeepAlive => {}
        Message::Choke => out.put_u8(MSG_CHOKE),
        Message::Unchoke => out.put_u8(MSG_UNCHOKE),
        Message::Interested => out.put_u8(MSG_INTERESTED),
        Message::NotInterested => out.put_u8(MSG_NOT_INTERESTED),
        Message::ExtHandshake(h) => {
            out.put_u8(MSG_EXTENDED);
            out.put_u8(0);
            out.put_slice(&h.encode());
        }
        Message::Live(live) => {
            out.put_u8(MSG_EXTENDED);
            out.put_u8(ext_id);
            encode_live(live, out);
        }
        Message::Pex(pex) => {
            out.put_u8(MSG_EXTENDED);
            out.put_u8(ext_id);
            out.put_slice(&pex.encode());
        }
    }
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

fn encode_live(msg: &LiveMessage, out: &mut BytesMut) {
    match msg {
        LiveMessage::Have {
            window_start,
            entries,
        } => {
            debug_assert!(entries.len() <= MAX_HAVE_ENTRIES);
            out.put_u8(LIVE_HAVE);
            out.put_u64(*window_start);
            out.put_u16(entries.len() as u16);
            for e in entries {
                out.put_u64(e.seq);
                out.put_u64(e.timestamp_us);
                out.put_u8(e.flags);
            }
        }
        LiveMessage::Request { seq } => {
            out.put_u8(LIVE_REQUEST);
            out.put_u64(*seq);
        }
        LiveMessage::Piece(wire) => {
            out.put_u8(LIVE_PIECE);
            out.put_slice(wire);
        }
        LiveMessage::Reject { seq } => {
            out.put_u8(LIVE_REJECT);
            out.put_u64(*seq);
        }
        LiveMessage::Cancel { seq } => {
            out.put_u8(LIVE_CANCEL);
            out.put_u64(*seq);
        }
        LiveMessage::Subscribe(s) => {
            out.put_u8(LIVE_SUBSCRIBE);
            out.put_slice(&[s.index, s.of]);
        }
        LiveMessage::Unsubscribe(s) => {
            out.put_u8(LIVE_UNSUBSCRIBE);
            out.put_slice(&[s.index, s.of]);
        }
    }
}

#[cfg(test)]
mod tests;
