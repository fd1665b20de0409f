//! Live torrent metainfo (see `docs/PROTOCOL.md`, "Live torrent").
//!
//! A live torrent is an ordinary BEP 3 metainfo whose `info` dictionary has no `pieces` list but
//! a `live` dictionary naming the injector's Ed25519 public key. The infohash is SHA-1 over the
//! raw `info` bytes as they appear in the file, never over a re-encoding.
//!
//! Written canonically (bendy's encoder sorts keys); read with the lenient bounded reader of
//! [`crate::bencode`], so a file whose keys are not sorted is accepted, and its infohash is
//! still over its own bytes. A key that occurs twice in the top level, `info` or `info.live` is
//! refused: which of two public keys a file names must not depend on the reader.

use std::fmt;
use std::path::{Path, PathBuf};

use bendy::encoding::Encoder;
use ed25519_dalek::VerifyingKey;
use sha1::{Digest, Sha1};

use crate::bencode::{self, Dict, Value};

/// Smallest and largest allowed piece payload. The upper bound keeps every peer-wire message
/// (and so every receive buffer) small; the lower bound keeps signature overhead under 5 %.
pub const MIN_PIECE_LENGTH: u32 = 188 * 8;
pub const MAX_PIECE_LENGTH: u32 = 1 << 20;
pub const DEFAULT_PIECE_LENGTH: u32 = 188 * 174; // 32712 bytes, about 32 KiB
pub const DEFAULT_WINDOW_SECS: u32 = 30;
pub const MAX_WINDOW_SECS: u32 = 600;
/// Torrent files larger than this are rejected before parsing.
pub const MAX_TORRENT_BYTES: usize = 1 << 20;

/// Why a torrent could not be read, parsed or made.
#[derive(Debug, thiserror::Error)]
pub enum TorrentError {
    #[error("cannot read {}: {reason}", path.display())]
    Read {
        path: PathBuf,
        reason: std::io::Error,
    },
    #[error("{} is not a live torrent: {reason}", path.display())]
    InFile {
        path: PathBuf,
        reason: Box<TorrentError>,
    },
    #[error("file is {0} bytes, more than a torrent may be")]
    TooLarge(usize),
    #[error("bencode: {0}")]
    Bencode(#[from] bencode::Error),
    #[error("encoding torrent: {0}")]
    Encode(#[from] bendy::encoding::Error),
    /// A field is missing or malformed; the text names it.
    #[error("{0}")]
    Field(&'static str),
    #[error(
        "piece length {0} must be a multiple of 188 between {MIN_PIECE_LENGTH} and {MAX_PIECE_LENGTH}"
    )]
    PieceLength(u32),
    #[error("window {0} s must be between 1 and {MAX_WINDOW_SECS} s")]
    Window(u32),
    #[error("integer {0} out of range")]
    Integer(i64),
    /// A dictionary names a key twice (`key` is lossy UTF-8).
    #[error("{dict} has the key {key:?} twice")]
    DuplicateKey { dict: &'static str, key: String },
}

type Result<T> = std::result::Result<T, TorrentError>;
use TorrentError::Field;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InfoHash(pub [u8; 20]);

impl InfoHash {
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.hex())
    }
}

impl fmt::Display for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.hex())
    }
}

#[derive(Clone, Debug)]
pub struct LiveTorrent {
    pub name: String,
    /// Maximum payload bytes of one piece; a multiple of 188.
    pub piece_length: u32,
    /// How many seconds of pieces peers keep behind the newest one.
    pub window_secs: u32,
    pub public_key: VerifyingKey,
    /// Tracker URLs, first tier first (BEP 12 tiers flattened).
    pub trackers: Vec<String>,
    pub info_hash: InfoHash,
}

impl LiveTorrent {
    /// Encodes a new torrent. Keys are emitted sorted, so the result is canonical bencode.
    pub fn create(
        name: &str,
        public_key: &VerifyingKey,
        piece_length: u32,
        window_secs: u32,
        trackers: &[String],
    ) -> Result<Vec<u8>> {
        check_fields(name, piece_length, window_secs)?;
        let mut enc = Encoder::new();
        enc.emit_dict(|mut d| {
            if let Some(first) = trackers.first() {
                d.emit_pair(b"announce", first.as_str())?;
            }
            if trackers.len() > 1 {
                d.emit_pair_with(b"announce-list", |e| {
                    e.emit_list(|l| {
                        for t in trackers {
                            l.emit_list(|tier| tier.emit_str(t))?;
                        }
                        Ok(())
                    })
                })?;
            }
            d.emit_pair(b"created by", "nordlys")?;
            d.emit_pair_with(b"info", |e| {
                emit_info(e, name, public_key, piece_length, window_secs)
            })
        })?;
        Ok(enc.get_output()?)
    }

    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|reason| TorrentError::Read {
            path: path.into(),
            reason,
        })?;
        Self::parse(&bytes).map_err(|reason| TorrentError::InFile {
            path: path.into(),
            reason: Box::new(reason),
        })
    }

    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_TORRENT_BYTES {
            return Err(TorrentError::TooLarge(bytes.len()));
        }
        // Lenient about whitespace after the dictionary (a file saved by an editor, say);
        // anything else after it is an error.
        let (top, used) = bencode::decode_prefix(bytes)?;
        if !bytes[used..].iter().all(u8::is_ascii_whitespace) {
            return Err(bencode::Error::TrailingBytes {
                offset: used,
                count: bytes.len() - used,
            }
            .into());
        }
        let top = dict(&top, "top level", "top level is not a dictionary")?;
        let mut trackers = Vec::new();
        if let Some(tiers) = top.get(b"announce-list") {
            let tiers = tiers
                .as_list()
                .ok_or(Field("announce-list is not a list"))?;
            for tier in tiers {
                let tier = tier
                    .as_list()
                    .ok_or(Field("announce-list tier is not a list"))?;
                for url in tier {
                    trackers.push(utf8(text(url, "tracker URL is not a string")?)?);
                }
            }
        }
        let announce = match top.get(b"announce") {
            Some(url) => Some(utf8(text(url, "announce is not a string")?)?),
            None => None,
        };
        if trackers.is_empty() {
            trackers.extend(announce);
        }
        let Some(info) = top.get(b"info") else {
            return Err(Field("no info dictionary"));
        };
        let info = dict(info, "info", "info is not a dictionary")?;
        // Over the bytes as they are in the file: sorted or not, canonical or not.
        let info_hash = InfoHash(Sha1::digest(info.raw()).into());
        let (name, piece_length, window_secs, public_key) = parse_info(info)?;
        check_fields(&name, piece_length, window_secs)?;
        Ok(LiveTorrent {
            name,
            piece_length,
            window_secs,
            public_key,
            trackers,
            info_hash,
        })
    }

    /// A BEP 9 magnet link. It carries the infohash, the name and the trackers; a client also
    /// needs the metadata (with the public key) to verify pieces.
    pub fn magnet(&self) -> String {
        let mut link = form_urlencoded::Serializer::new(String::new());
        link.append_pair("dn", &self.name);
        for t in &self.trackers {
            link.append_pair("tr", t);
        }
        format!(
            "magnet:?xt=urn:btih:{}&{}",
            self.info_hash.hex(),
            link.finish()
        )
    }
}

fn check_fields(name: &str, piece_length: u32, window_secs: u32) -> Result<()> {
    if name.is_empty() || name.len() > 200 {
        return Err(Field("name must be 1 to 200 bytes"));
    }
    if !(MIN_PIECE_LENGTH..=MAX_PIECE_LENGTH).contains(&piece_length)
        || !piece_length.is_multiple_of(188)
    {
        return Err(TorrentError::PieceLength(piece_length));
    }
    if !(1..=MAX_WINDOW_SECS).contains(&window_secs) {
        return Err(TorrentError::Window(window_secs));
    }
    Ok(())
}

fn emit_info(
    e: bendy::encoding::SingleItemEncoder,
    name: &str,
    key: &VerifyingKey,
    piece_length: u32,
    window_secs: u32,
) -> std::result::Result<(), bendy::encoding::Error> {
    e.emit_dict(|mut d| {
        d.emit_pair_with(b"live", |e| {
            e.emit_dict(|mut live| {
                live.emit_pair(b"pubkey", bendy::encoding::AsString(key.as_bytes()))?;
                live.emit_pair(b"scheme", "ed25519")?;
                live.emit_pair(b"window", window_secs)
            })
        })?;
        d.emit_pair(b"name", name)?;
        d.emit_pair(b"piece length", piece_length)
    })
}

fn parse_info(info: &Dict<'_>) -> Result<(String, u32, u32, VerifyingKey)> {
    if info.get(b"pieces").is_some() {
        return Err(Field("has a `pieces` list: this is not a live torrent"));
    }
    let Some(name) = info.get(b"name") else {
        return Err(Field("info.name missing"));
    };
    let name = utf8(text(name, "info.name is not a string")?)?;
    let Some(piece_length) = info.get(b"piece length") else {
        return Err(Field("info.piece length missing"));
    };
    let piece_length = int(piece_length, "info.piece length is not an integer")?;
    let Some(live) = info.get(b"live") else {
        return Err(Field("info.live missing: not a live torrent"));
    };
    let live = dict(live, "info.live", "info.live is not a dictionary")?;
    let scheme = match live.get(b"scheme") {
        Some(scheme) => Some(text(scheme, "live.scheme is not a string")?),
        None => None,
    };
    if scheme != Some(b"ed25519".as_slice()) {
        return Err(Field("live.scheme must be `ed25519`"));
    }
    let Some(pubkey) = live.get(b"pubkey") else {
        return Err(Field("live.pubkey missing"));
    };
    let pubkey = text(pubkey, "live.pubkey is not a string")?;
    let Ok(bytes) = <[u8; 32]>::try_from(pubkey) else {
        return Err(Field("live.pubkey must be 32 bytes"));
    };
    let key = VerifyingKey::from_bytes(&bytes)
        .map_err(|_| Field("live.pubkey is not an Ed25519 point"))?;
    let window = match live.get(b"window") {
        Some(window) => int(window, "live.window is not an integer")?,
        None => DEFAULT_WINDOW_SECS,
    };
    Ok((name, piece_length, window, key))
}

/// `value` as a dictionary without duplicate keys; `name` names it in errors.
fn dict<'v, 'a>(
    value: &'v Value<'a>,
    name: &'static str,
    not_dict: &'static str,
) -> Result<&'v Dict<'a>> {
    let dict = value.as_dict().ok_or(Field(not_dict))?;
    if let Some(key) = dict.duplicate_key() {
        return Err(TorrentError::DuplicateKey {
            dict: name,
            key: String::from_utf8_lossy(key).into_owned(),
        });
    }
    Ok(dict)
}

fn text<'a>(value: &Value<'a>, not_string: &'static str) -> Result<&'a [u8]> {
    value.as_bytes().ok_or(Field(not_string))
}

fn utf8(bytes: &[u8]) -> Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| Field("text is not UTF-8"))
}

fn int(value: &Value<'_>, not_int: &'static str) -> Result<u32> {
    let n = value.as_int().ok_or(Field(not_int))?;
    u32::try_from(n).map_err(|_| TorrentError::Integer(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bendy::decoding::{Decoder, Object};

    fn key() -> VerifyingKey {
        ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key()
    }

    #[test]
    fn create_parse_round_trip() {
        let trackers = vec![
            "http://127.0.0.1:6969/announce".to_string(),
            "http://b/a".into(),
        ];
        let bytes = LiveTorrent::create("concert", &key(), 32712, 30, &trackers).unwrap();
        let t = LiveTorrent::parse(&bytes).unwrap();
        assert_eq!(t.name, "concert");
        assert_eq!(t.piece_length, 32712);
        assert_eq!(t.window_secs, 30);
        assert_eq!(t.public_key, key());
        assert_eq!(t.trackers, trackers);
        // The infohash is SHA-1 of the info span exactly as it appears in the file.
        let start = bytes.windows(6).position(|w| w == b"4:info").unwrap() + 6;
        let info = &bytes[start..bytes.len() - 1];
        assert_eq!(t.info_hash.0, <[u8; 20]>::from(Sha1::digest(info)));
        assert!(
            t.magnet()
                .starts_with(&format!("magnet:?xt=urn:btih:{}", t.info_hash.hex()))
        );
    }

    #[test]
    fn rejects_bad_input_without_panicking() {
        let good = LiveTorrent::create("x", &key(), 32712, 30, &[]).unwrap();
        for cut in 0..good.len() {
            assert!(LiveTorrent::parse(&good[..cut]).is_err());
        }
        assert!(LiveTorrent::create("x", &key(), 1000, 30, &[]).is_err());
        assert!(LiveTorrent::create("x", &key(), 32712, 0, &[]).is_err());
        let vod =
            b"d4:infod6:lengthi1e4:name1:x12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee";
        assert!(LiveTorrent::parse(vod).is_err());
    }

    /// `info` keys in an order of our choosing, wrapped into a torrent with one tracker.
    fn torrent_with_info(info: &[u8]) -> Vec<u8> {
        [b"d8:announce10:http://a/a4:info".as_slice(), info, b"e"].concat()
    }

    fn live_dict(pubkey: &[u8]) -> Vec<u8> {
        [
            format!("d6:pubkey{}:", pubkey.len()).as_bytes(),
            pubkey,
            b"6:scheme7:ed255196:windowi30ee",
        ]
        .concat()
    }

    fn info_with(live: &[u8], rest: &[u8]) -> Vec<u8> {
        [b"d4:live".as_slice(), live, rest, b"e"].concat()
    }

    #[test]
    fn canonical_infohash_is_unchanged() {
        // Golden value from before the lenient reader: the hash of a canonical file must not move.
        let trackers = vec![
            "http://127.0.0.1:6969/announce".to_string(),
            "http://b/a".into(),
        ];
        let bytes = LiveTorrent::create("concert", &key(), 32712, 30, &trackers).unwrap();
        let t = LiveTorrent::parse(&bytes).unwrap();
        assert_eq!(
            t.info_hash.hex(),
            "f70a599cfaf0f1ba2cc15f193f760daf13eb13fd"
        );
        // What we write is canonical: bendy's strict decoder reads all of it.
        let mut strict = Decoder::new(&bytes);
        let Some(Object::Dict(top)) = strict.next_object().unwrap() else {
            panic!("not a dictionary");
        };
        assert_eq!(top.into_raw().unwrap(), &bytes[..]);
    }

    #[test]
    fn unsorted_torrent_is_read_and_hashed_over_its_own_bytes() {
        let k = key();
        // `name` before `live`, `window` before `pubkey`, `info` before `announce`.
        let live = [
            b"d6:windowi45e6:scheme7:ed255196:pubkey32:".as_slice(),
            k.as_bytes(),
            b"e",
        ]
        .concat();
        let info = [
            b"d4:name7:concert12:piece lengthi32712e4:live".as_slice(),
            &live,
            b"5:extrald1:zi1e1:ai2eeee",
        ]
        .concat();
        let bytes = [
            b"d4:info".as_slice(),
            &info,
            b"8:announce10:http://a/a7:comment2:hie",
        ]
        .concat();
        let mut strict = Decoder::new(&bytes);
        let strict_result = (|| -> std::result::Result<(), bendy::decoding::Error> {
            if let Some(Object::Dict(mut d)) = strict.next_object()? {
                while d.next_pair()?.is_some() {}
            }
            Ok(())
        })();
        assert!(strict_result.is_err(), "bendy is expected to reject this");
        let t = LiveTorrent::parse(&bytes).unwrap();
        assert_eq!(t.name, "concert");
        assert_eq!(t.window_secs, 45);
        assert_eq!(t.public_key, k);
        assert_eq!(t.trackers, ["http://a/a"]);
        assert_eq!(t.info_hash.0, <[u8; 20]>::from(Sha1::digest(&info)));
        // The same fields written canonically are other bytes, so another infohash.
        let canonical = LiveTorrent::create("concert", &k, 32712, 45, &[]).unwrap();
        assert_ne!(
            LiveTorrent::parse(&canonical).unwrap().info_hash,
            t.info_hash
        );
    }

    #[test]
    fn rejects_what_it_rejected_before() {
        let k = key();
        let live = live_dict(k.as_bytes());
        let good_info = info_with(&live, b"4:name1:x12:piece lengthi32712e");
        assert!(LiveTorrent::parse(&torrent_with_info(&good_info)).is_ok());
        let not_a_point = (0..=255u8)
            .map(|b| [b; 32])
            .find(|b| VerifyingKey::from_bytes(b).is_err())
            .unwrap();
        let info_cases: Vec<Vec<u8>> = vec![
            b"i1e".to_vec(),
            b"le".to_vec(),
            b"de".to_vec(),
            info_with(&live, b"12:piece lengthi32712e"),
            info_with(&live, b"4:name1:x"),
            b"d4:name1:x12:piece lengthi32712ee".to_vec(),
            info_with(
                &live,
                b"4:name1:x12:piece lengthi32712e6:pieces20:aaaaaaaaaaaaaaaaaaaa",
            ),
            info_with(&live, b"4:namei1e12:piece lengthi32712e"),
            info_with(&live, b"4:name2:\xff\xfe12:piece lengthi32712e"),
            info_with(&live, b"4:name0:12:piece lengthi32712e"),
            info_with(
                &live,
                &[
                    b"4:name201:".as_slice(),
                    &[b'n'; 201],
                    b"12:piece lengthi32712e",
                ]
                .concat(),
            ),
            info_with(&live, b"4:name1:x12:piece lengthi32713e"),
            info_with(&live, b"4:name1:x12:piece lengthi188e"),
            info_with(&live, b"4:name1:x12:piece lengthi-188e"),
            info_with(&live, b"4:name1:x12:piece lengthi4294967484e"),
            info_with(&live, b"4:name1:x12:piece length5:32712"),
            info_with(b"i1e", b"4:name1:x12:piece lengthi32712e"),
            info_with(b"d6:scheme7:ed25519e", b"4:name1:x12:piece lengthi32712e"),
            info_with(
                &[
                    b"d6:pubkey32:".as_slice(),
                    k.as_bytes(),
                    b"6:scheme5:ed448e",
                ]
                .concat(),
                b"4:name1:x12:piece lengthi32712e",
            ),
            info_with(
                &[b"d6:pubkey32:".as_slice(), k.as_bytes(), b"e"].concat(),
                b"4:name1:x12:piece lengthi32712e",
            ),
            info_with(
                &live_dict(&k.as_bytes()[..31]),
                b"4:name1:x12:piece lengthi32712e",
            ),
            info_with(&live_dict(&not_a_point), b"4:name1:x12:piece lengthi32712e"),
            info_with(
                &[
                    b"d6:pubkey32:".as_slice(),
                    k.as_bytes(),
                    b"6:scheme7:ed255196:windowi0ee",
                ]
                .concat(),
                b"4:name1:x12:piece lengthi32712e",
            ),
            info_with(
                &[
                    b"d6:pubkey32:".as_slice(),
                    k.as_bytes(),
                    b"6:scheme7:ed255196:windowi601ee",
                ]
                .concat(),
                b"4:name1:x12:piece lengthi32712e",
            ),
            info_with(
                &[
                    b"d6:pubkey32:".as_slice(),
                    k.as_bytes(),
                    b"6:scheme7:ed255196:window2:30e",
                ]
                .concat(),
                b"4:name1:x12:piece lengthi32712e",
            ),
            // Duplicate keys (bendy refused them as unsorted; we refuse them as ambiguous).
            info_with(&live, b"4:name1:x4:name1:y12:piece lengthi32712e"),
            info_with(
                &[live.as_slice(), b"4:live".as_slice(), &live].concat(),
                b"4:name1:x12:piece lengthi32712e",
            ),
            info_with(
                &[
                    b"d6:pubkey32:".as_slice(),
                    k.as_bytes(),
                    b"6:pubkey32:",
                    k.as_bytes(),
                ]
                .concat()
                .into_iter()
                .chain(b"6:scheme7:ed25519e".iter().copied())
                .collect::<Vec<u8>>(),
                b"4:name1:x12:piece lengthi32712e",
            ),
        ];
        for info in &info_cases {
            let bytes = torrent_with_info(info);
            assert!(
                LiveTorrent::parse(&bytes).is_err(),
                "{}",
                String::from_utf8_lossy(&bytes)
            );
        }
        let whole_cases: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"le".to_vec(),
            b"i1e".to_vec(),
            b"de".to_vec(),
            b"d8:announce3:urle".to_vec(),
            b"di1ei2ee".to_vec(),
            [b"d8:announcei1e4:info".as_slice(), &good_info, b"e"].concat(),
            [b"d13:announce-listi1e4:info".as_slice(), &good_info, b"e"].concat(),
            [b"d13:announce-listli1ee4:info".as_slice(), &good_info, b"e"].concat(),
            [
                b"d13:announce-listlli1eee4:info".as_slice(),
                &good_info,
                b"e",
            ]
            .concat(),
            [
                b"d13:announce-listll2:\xff\xfeee4:info".as_slice(),
                &good_info,
                b"e",
            ]
            .concat(),
            [
                b"d4:info".as_slice(),
                &good_info,
                b"4:info",
                &good_info,
                b"e",
            ]
            .concat(),
            // Nested deeper than any reader bound under a key nobody knows.
            [
                b"d1:a".as_slice(),
                &[b'l'; 40],
                &[b'e'; 40],
                b"4:info",
                &good_info,
                b"e",
            ]
            .concat(),
            [b"d4:info".as_slice(), &good_info, b"1:a99999999:e"].concat(),
        ];
        for bytes in &whole_cases {
            assert!(
                LiveTorrent::parse(bytes).is_err(),
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
        let too_big = vec![b' '; MAX_TORRENT_BYTES + 1];
        assert!(matches!(
            LiveTorrent::parse(&too_big),
            Err(TorrentError::TooLarge(_))
        ));
    }

    #[test]
    fn typed_errors_name_the_problem() {
        let k = key();
        let live = live_dict(k.as_bytes());
        let dup = torrent_with_info(&info_with(
            &live,
            b"4:name1:x4:name1:y12:piece lengthi32712e",
        ));
        assert!(matches!(
            LiveTorrent::parse(&dup),
            Err(TorrentError::DuplicateKey { dict: "info", ref key }) if key == "name"
        ));
        let neg = torrent_with_info(&info_with(&live, b"4:name1:x12:piece lengthi-188e"));
        assert!(matches!(
            LiveTorrent::parse(&neg),
            Err(TorrentError::Integer(-188))
        ));
        let good = torrent_with_info(&info_with(&live, b"4:name1:x12:piece lengthi32712e"));
        let newline = [good.as_slice(), b"\r\n"].concat();
        assert!(
            LiveTorrent::parse(&newline).is_ok(),
            "whitespace after it is fine"
        );
        let trailing = [good.as_slice(), b"x"].concat();
        assert!(matches!(
            LiveTorrent::parse(&trailing),
            Err(TorrentError::Bencode(bencode::Error::TrailingBytes {
                count: 1,
                ..
            }))
        ));
        assert!(matches!(
            LiveTorrent::parse(&good[..good.len() - 1]),
            Err(TorrentError::Bencode(bencode::Error::Truncated { .. }))
        ));
    }
}
