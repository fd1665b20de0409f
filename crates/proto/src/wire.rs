//! Peer-wire codec (see `docs/PROTOCOL.md`, "Peer wire").
//!
//! Pure functions: `decode` takes the bytes received so far and returns one message and the
//! bytes it used, [`DecodeError::NeedMore`], or another [`DecodeError`] saying why the bytes are
//! not protocol. Every length is checked against a bound before any allocation, so no input can
//! panic the process or make it buffer without limit. The BEP 10 extended handshake is read with
//! the lenient bounded reader of [`crate::bencode`] (unsorted and unknown keys are fine) and
//! written canonically with bendy's encoder.

use bytes::{BufMut, Bytes, BytesMut};

pub const PROTOCOL: &[u8; 19] = b"BitTorrent protocol";
pub const HANDSHAKE_LEN: usize = 68;
/// BEP 10: reserved byte 5, bit 0x10.
const EXTENSION_BIT: (usize, u8) = (5, 0x10);
/// Our name for the live extension in the BEP 10 `m` dictionary.
pub const LIVE_EXTENSION: &str = "nordlys_live";
/// The message id we ask peers to use for live messages (announced in our BEP 10 handshake).
pub const OUR_LIVE_ID: u8 = 1;
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
        let live_id = dict
            .get(b"m")
            .and_then(|m| m.get(LIVE_EXTENSION.as_bytes()))
            .and_then(Value::as_int)
            .and_then(|id| u8::try_from(id).ok())
            .filter(|&id| id != 0);
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
        })
    }
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
    if buf.len() < 4 {
        return Err(DecodeError::NeedMore);
    }
    let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
    if len > max_len {
        return Err(DecodeError::TooLong { len, max: max_len });
    }
    if buf.len() < 4 + len {
        return Err(DecodeError::NeedMore);
    }
    Ok(4 + len)
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
        other => Err(DecodeError::UnknownExtension(other)),
    }
}

/// A live message: `frame` is length, id 20, extension id, kind, body.
fn decode_live(frame: &Bytes) -> Result<LiveMessage, DecodeError> {
    const BODY: usize = 7;
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
        other => Err(DecodeError::UnknownLiveMessage(other)),
    }
}

/// Encodes a message. `peer_live_id` is the id the receiving peer asked for in its handshake.
pub fn encode(msg: &Message, peer_live_id: u8, out: &mut BytesMut) {
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
            out.put_u8(peer_live_id);
            encode_live(live, out);
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(msg: Message) {
        let mut buf = BytesMut::new();
        encode(&msg, OUR_LIVE_ID, &mut buf);
        let (back, used) = decode(&buf, max_message_len(32712)).unwrap();
        assert_eq!(back, msg);
        assert_eq!(used, buf.len());
        for cut in 0..buf.len() {
            assert_eq!(decode(&buf[..cut], 1 << 20), Err(DecodeError::NeedMore));
        }
    }

    #[test]
    fn messages_round_trip() {
        round_trip(Message::KeepAlive);
        round_trip(Message::Choke);
        round_trip(Message::Unchoke);
        round_trip(Message::Interested);
        round_trip(Message::NotInterested);
        round_trip(Message::ExtHandshake(ExtHandshake {
            live_id: Some(OUR_LIVE_ID),
            listen_port: Some(6881),
            role: Some(Role::Seed),
            client: Some("nordlys 0.1".into()),
        }));
        round_trip(Message::Live(LiveMessage::Have {
            window_start: 3,
            entries: vec![
                HaveEntry {
                    seq: 3,
                    timestamp_us: 10,
                    flags: 1,
                },
                HaveEntry {
                    seq: 4,
                    timestamp_us: 20,
                    flags: 0,
                },
            ],
        }));
        round_trip(Message::Live(LiveMessage::Request { seq: u64::MAX }));
        round_trip(Message::Live(LiveMessage::Reject { seq: 7 }));
        round_trip(Message::Live(LiveMessage::Cancel { seq: 8 }));
        round_trip(Message::Live(LiveMessage::Piece(Bytes::from_static(
            b"abc",
        ))));
    }

    #[test]
    fn handshake_round_trip_and_garbage() {
        let hs = Handshake {
            extensions: true,
            info_hash: [1; 20],
            peer_id: [2; 20],
        };
        let bytes = hs.encode();
        assert_eq!(Handshake::decode(&bytes).unwrap(), hs);
        assert_eq!(Handshake::decode(&bytes[..30]), Err(DecodeError::NeedMore));
        assert_eq!(
            Handshake::decode(b"GET / HTTP/1.1\r\n"),
            Err(DecodeError::BadHandshake)
        );
        // A prefix of the protocol string is not yet wrong.
        assert_eq!(Handshake::decode(&bytes[..10]), Err(DecodeError::NeedMore));
        assert_eq!(
            Handshake::decode(&[19, b'B', b'X']),
            Err(DecodeError::BadHandshake)
        );
    }

    #[test]
    fn hostile_lengths_are_refused_before_buffering() {
        let huge = [0xff, 0xff, 0xff, 0xff, 20];
        assert_eq!(
            decode(&huge, 1 << 20),
            Err(DecodeError::TooLong {
                len: u32::MAX as usize,
                max: 1 << 20
            })
        );
        // A BEP 3 `have` (id 4) is not part of the live protocol.
        assert_eq!(
            decode(&[0, 0, 0, 5, 4, 0, 0, 0, 1], 100),
            Err(DecodeError::UnknownMessage(4))
        );
        // HAVE whose count disagrees with its length.
        let mut buf = BytesMut::new();
        encode(
            &Message::Live(LiveMessage::Have {
                window_start: 0,
                entries: vec![],
            }),
            OUR_LIVE_ID,
            &mut buf,
        );
        buf[4 + 2 + 1 + 8 + 1] = 5; // count = 5, no entries follow
        assert_eq!(
            decode(&buf, 1 << 20),
            Err(DecodeError::HaveCountMismatch { count: 5, len: 0 })
        );
    }

    #[test]
    fn decode_never_panics_on_random_input() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for _ in 0..20_000 {
            let len = rng.random_range(0..64);
            let mut buf: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            if buf.len() >= 5 && rng.random_bool(0.7) {
                let body = (buf.len() - 4) as u32;
                buf[..4].copy_from_slice(&body.to_be_bytes());
                buf[4] = if rng.random_bool(0.5) { 20 } else { buf[4] % 8 };
            }
            let _ = decode(&buf, 1 << 16);
            let _ = Handshake::decode(&buf);
        }
    }

    /// `buf` framed as an extended handshake (id 20, extended id 0).
    fn ext_frame(body: &[u8]) -> Vec<u8> {
        let mut frame = ((body.len() + 2) as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&[MSG_EXTENDED, 0]);
        frame.extend_from_slice(body);
        frame
    }

    fn decode_ext(body: &[u8]) -> Result<ExtHandshake, DecodeError> {
        match decode(&ext_frame(body), 1 << 20)? {
            (Message::ExtHandshake(h), _) => Ok(h),
            (other, _) => panic!("not a handshake: {other:?}"),
        }
    }

    #[test]
    fn unsorted_ext_handshake_is_accepted() {
        let body = b"d1:v4:xxxx1:md12:nordlys_livei1ee1:pi6881ee";
        // bendy 0.6, which decoded this before, refuses it: its keys are not sorted.
        let mut strict = bendy::decoding::Decoder::new(body);
        let strict_result = (|| -> Result<(), bendy::decoding::Error> {
            if let Some(bendy::decoding::Object::Dict(mut d)) = strict.next_object()? {
                while d.next_pair()?.is_some() {}
            }
            Ok(())
        })();
        assert!(strict_result.is_err(), "bendy is expected to reject this");
        assert_eq!(
            decode_ext(body).unwrap(),
            ExtHandshake {
                live_id: Some(1),
                listen_port: Some(6881),
                role: None,
                client: Some("xxxx".into()),
            }
        );
        // Nested `m` unsorted too, among other clients' extensions.
        let nested = b"d1:md6:ut_pexi2e12:nordlys_livei3e11:ut_metadatai1eee";
        assert_eq!(decode_ext(nested).unwrap().live_id, Some(3));
    }

    #[test]
    fn ext_handshake_ignores_unknown_keys_of_every_type() {
        // What libtorrent-like clients send, unsorted, with every bencode type under unknown
        // keys, nested lists and dictionaries, and known keys of the wrong type ignored.
        let body: &[u8] = b"d\
            12:complete_agoi-1e\
            1:md11:ut_metadatai3e12:nordlys_livei7e6:ut_pexi1e5:extrald1:xli1eleeeee\
            4:reqqi250e\
            6:yourip4:\x7f\x00\x00\x01\
            12:nordlys_role8:receiver\
            1:pi51413e\
            13:metadata_sizei31235e\
            4:listl4:spami42ed1:kd1:kleeee\
            1:v13:qBittorrent/4\
            4:dictd3:zzzi1e3:aaa0:e\
            4:ipv616:\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\
            e";
        assert_eq!(
            decode_ext(body).unwrap(),
            ExtHandshake {
                live_id: Some(7),
                listen_port: Some(51413),
                role: Some(Role::Receiver),
                client: Some("qBittorrent/4".into()),
            }
        );
        // Known keys with values of the wrong type or out of range are ignored, not fatal.
        let odd = b"d1:v1:x1:pi70000e12:nordlys_rolei1e1:md12:nordlys_live3:abcee";
        assert_eq!(
            decode_ext(odd).unwrap(),
            ExtHandshake {
                live_id: None,
                listen_port: None,
                role: None,
                client: Some("x".into()),
            }
        );
        assert_eq!(
            decode_ext(b"d1:mi1e1:pd1:p1:pee").unwrap(),
            ExtHandshake::default()
        );
        // Live id 0 means "disabled" (BEP 10); ids above 255 do not fit.
        assert_eq!(
            decode_ext(b"d1:md12:nordlys_livei0eee").unwrap().live_id,
            None
        );
        assert_eq!(
            decode_ext(b"d1:md12:nordlys_livei256eee").unwrap().live_id,
            None
        );
        // Duplicate keys: the first wins.
        let dup = b"d1:pi1e1:pi2ee";
        assert_eq!(decode_ext(dup).unwrap().listen_port, Some(1));
    }

    #[test]
    fn hostile_ext_handshakes_are_errors() {
        use crate::bencode::{Error as B, MAX_DEPTH};
        let deep = [b"d1:x".repeat(MAX_DEPTH + 1), b"e".repeat(MAX_DEPTH + 1)].concat();
        assert!(matches!(
            decode_ext(&deep),
            Err(DecodeError::Bencode(B::TooDeep { .. }))
        ));
        let deep_list = [b"d1:x".to_vec(), vec![b'l'; 2000], vec![b'e'; 2001]].concat();
        assert!(matches!(
            decode_ext(&deep_list),
            Err(DecodeError::Bencode(B::TooDeep { .. }))
        ));
        assert!(matches!(
            decode_ext(b"d1:v99999999999999:xe"),
            Err(DecodeError::Bencode(B::StringPastEnd { .. }))
        ));
        assert!(matches!(
            decode_ext(b"d1:v999999999999999999999999:xe"),
            Err(DecodeError::Bencode(B::BadLength { .. }))
        ));
        assert!(matches!(
            decode_ext(b"d1:pi99999999999999999999ee"),
            Err(DecodeError::Bencode(B::BadInteger { .. }))
        ));
        let good = b"d1:md12:nordlys_livei1eee";
        for cut in 0..good.len() {
            assert!(
                matches!(decode_ext(&good[..cut]), Err(DecodeError::Bencode(_))),
                "{cut}"
            );
        }
        assert_eq!(
            decode_ext(b"d1:pi1eeGARBAGE"),
            Err(DecodeError::Bencode(B::TrailingBytes {
                offset: 8,
                count: 7
            }))
        );
        assert_eq!(
            decode_ext(b"d1:pi1eede"),
            Err(DecodeError::Bencode(B::TrailingBytes {
                offset: 8,
                count: 2
            }))
        );
        assert_eq!(decode_ext(b"li1ee"), Err(DecodeError::ExtHandshakeNotDict));
        assert_eq!(decode_ext(b"4:spam"), Err(DecodeError::ExtHandshakeNotDict));
        let big = [
            b"d1:v".to_vec(),
            format!("{}:", MAX_EXT_HANDSHAKE).into_bytes(),
        ]
        .concat();
        let big = [big, vec![b'x'; MAX_EXT_HANDSHAKE], b"e".to_vec()].concat();
        assert_eq!(
            decode_ext(&big),
            Err(DecodeError::ExtHandshakeTooLong {
                len: big.len(),
                max: MAX_EXT_HANDSHAKE
            })
        );
    }

    /// The name of a variant; the match is exhaustive, so a new variant must be added here
    /// and to [`every_decode_error_is_reachable`].
    fn variant(e: &DecodeError) -> &'static str {
        match e {
            DecodeError::NeedMore => "NeedMore",
            DecodeError::BadHandshake => "BadHandshake",
            DecodeError::TooLong { .. } => "TooLong",
            DecodeError::Truncated { .. } => "Truncated",
            DecodeError::UnknownMessage(_) => "UnknownMessage",
            DecodeError::UnexpectedPayload { .. } => "UnexpectedPayload",
            DecodeError::UnknownExtension(_) => "UnknownExtension",
            DecodeError::ExtHandshakeTooLong { .. } => "ExtHandshakeTooLong",
            DecodeError::ExtHandshakeNotDict => "ExtHandshakeNotDict",
            DecodeError::Bencode(_) => "Bencode",
            DecodeError::UnknownLiveMessage(_) => "UnknownLiveMessage",
            DecodeError::WrongLength { .. } => "WrongLength",
            DecodeError::TooManyHaveEntries { .. } => "TooManyHaveEntries",
            DecodeError::HaveCountMismatch { .. } => "HaveCountMismatch",
        }
    }

    #[test]
    fn every_decode_error_is_reachable() {
        /// A frame: length prefix, then `body`.
        fn framed(body: &[u8]) -> Vec<u8> {
            [(body.len() as u32).to_be_bytes().as_slice(), body].concat()
        }
        let live =
            |kind: u8, rest: &[u8]| framed(&[&[MSG_EXTENDED, OUR_LIVE_ID, kind], rest].concat());
        let mut have_9000 = vec![LIVE_HAVE];
        have_9000.extend_from_slice(&0u64.to_be_bytes());
        have_9000.extend_from_slice(&9000u16.to_be_bytes());
        let have_9000 = framed(&[&[MSG_EXTENDED, OUR_LIVE_ID], have_9000.as_slice()].concat());
        let cases: Vec<(Result<Message, DecodeError>, DecodeError)> = vec![
            (
                decode(&[0, 0, 0, 1], 100).map(|m| m.0),
                DecodeError::NeedMore,
            ),
            (
                decode(&[0, 0, 0, 200, 0], 100).map(|m| m.0),
                DecodeError::TooLong { len: 200, max: 100 },
            ),
            (
                decode_frame(&Bytes::from_static(&[0, 0])),
                DecodeError::Truncated { what: "message" },
            ),
            (
                decode(&framed(&[MSG_EXTENDED]), 100).map(|m| m.0),
                DecodeError::Truncated {
                    what: "extended message",
                },
            ),
            (
                decode(&framed(&[MSG_EXTENDED, OUR_LIVE_ID]), 100).map(|m| m.0),
                DecodeError::Truncated {
                    what: "live message",
                },
            ),
            (
                decode(&live(LIVE_HAVE, &[0; 9]), 100).map(|m| m.0),
                DecodeError::Truncated { what: "HAVE" },
            ),
            (
                decode(&framed(&[6, 0, 0, 0, 0]), 100).map(|m| m.0),
                DecodeError::UnknownMessage(6),
            ),
            (
                decode(&framed(&[MSG_UNCHOKE, 9]), 100).map(|m| m.0),
                DecodeError::UnexpectedPayload { id: 1, len: 1 },
            ),
            (
                decode(&framed(&[MSG_EXTENDED, 9, 0]), 100).map(|m| m.0),
                DecodeError::UnknownExtension(9),
            ),
            (
                decode(&ext_frame(&[b' '; MAX_EXT_HANDSHAKE + 1]), 1 << 20).map(|m| m.0),
                DecodeError::ExtHandshakeTooLong {
                    len: MAX_EXT_HANDSHAKE + 1,
                    max: MAX_EXT_HANDSHAKE,
                },
            ),
            (
                decode(&ext_frame(b"i1e"), 100).map(|m| m.0),
                DecodeError::ExtHandshakeNotDict,
            ),
            (
                decode(&ext_frame(b"d1:x"), 100).map(|m| m.0),
                DecodeError::Bencode(crate::bencode::Error::Truncated { offset: 4 }),
            ),
            (
                decode(&live(9, &[]), 100).map(|m| m.0),
                DecodeError::UnknownLiveMessage(9),
            ),
            (
                decode(&live(LIVE_REQUEST, &[0; 7]), 100).map(|m| m.0),
                DecodeError::WrongLength {
                    what: "REQUEST",
                    len: 7,
                    expected: 8,
                },
            ),
            (
                decode(&live(LIVE_CANCEL, &[0; 9]), 100).map(|m| m.0),
                DecodeError::WrongLength {
                    what: "CANCEL",
                    len: 9,
                    expected: 8,
                },
            ),
            (
                decode(&have_9000, 100).map(|m| m.0),
                DecodeError::TooManyHaveEntries {
                    count: 9000,
                    max: MAX_HAVE_ENTRIES,
                },
            ),
            (
                decode(&live(LIVE_HAVE, &[0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 7]), 100).map(|m| m.0),
                DecodeError::HaveCountMismatch { count: 1, len: 1 },
            ),
            (
                Handshake::decode(b"\x13BitTorrent protocoX").map(|_| Message::KeepAlive),
                DecodeError::BadHandshake,
            ),
        ];
        let mut seen = std::collections::BTreeSet::new();
        for (got, want) in cases {
            assert_eq!(got, Err(want.clone()));
            // Every reason a connection is closed with reads as a sentence, not a debug dump.
            let text = want.to_string();
            assert!(!text.is_empty() && !text.contains('{'), "{text}");
            seen.insert(variant(&want));
        }
        let all = [
            "NeedMore",
            "BadHandshake",
            "TooLong",
            "Truncated",
            "UnknownMessage",
            "UnexpectedPayload",
            "UnknownExtension",
            "ExtHandshakeTooLong",
            "ExtHandshakeNotDict",
            "Bencode",
            "UnknownLiveMessage",
            "WrongLength",
            "TooManyHaveEntries",
            "HaveCountMismatch",
        ];
        assert_eq!(seen, all.into_iter().collect());
        assert_eq!(
            DecodeError::TooLong { len: 9, max: 8 }.to_string(),
            "message of 9 bytes exceeds 8"
        );
        assert_eq!(
            DecodeError::Bencode(crate::bencode::Error::TooDeep {
                max: 16,
                offset: 20
            })
            .to_string(),
            "extended handshake: nested deeper than 16 lists and dictionaries (at byte 20)"
        );
    }
}
