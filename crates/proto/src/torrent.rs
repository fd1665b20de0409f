//! Live torrent metainfo (see `docs/PROTOCOL.md`, "Live torrent").
//!
//! A live torrent is an ordinary BEP 3 metainfo whose `info` dictionary has no `pieces` list but
//! a `live` dictionary naming the injector's Ed25519 public key. The infohash is SHA-1 over the
//! raw `info` bytes as they appear in the file, never over a re-encoding.

use std::fmt;
use std::path::{Path, PathBuf};

use bendy::decoding::{Decoder, Object};
use bendy::encoding::Encoder;
use ed25519_dalek::VerifyingKey;
use sha1::{Digest, Sha1};

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
    Bencode(#[from] bendy::decoding::Error),
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
    Integer(String),
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
        let err = TorrentError::Bencode;
        let mut decoder = Decoder::new(bytes).with_max_depth(8);
        let Some(Object::Dict(mut top)) = decoder.next_object().map_err(err)? else {
            return Err(Field("top level is not a dictionary"));
        };
        let mut trackers = Vec::new();
        let mut announce = None;
        let mut info = None;
        while let Some((key, value)) = top.next_pair().map_err(err)? {
            match key {
                b"announce" => announce = Some(utf8(value.try_into_bytes().map_err(err)?)?),
                b"announce-list" => {
                    let mut tiers = value.try_into_list().map_err(err)?;
                    while let Some(tier) = tiers.next_object().map_err(err)? {
                        let mut tier = tier.try_into_list().map_err(err)?;
                        while let Some(url) = tier.next_object().map_err(err)? {
                            trackers.push(utf8(url.try_into_bytes().map_err(err)?)?);
                        }
                    }
                }
                b"info" => {
                    let raw = value
                        .try_into_dictionary()
                        .map_err(err)?
                        .into_raw()
                        .map_err(err)?;
                    info = Some(raw);
                }
                _ => {}
            }
        }
        let Some(info_raw) = info else {
            return Err(Field("no info dictionary"));
        };
        if trackers.is_empty() {
            trackers.extend(announce);
        }
        let info_hash = InfoHash(Sha1::digest(info_raw).into());
        let (name, piece_length, window_secs, public_key) = parse_info(info_raw)?;
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

fn parse_info(raw: &[u8]) -> Result<(String, u32, u32, VerifyingKey)> {
    let err = TorrentError::Bencode;
    let mut decoder = Decoder::new(raw).with_max_depth(4);
    let Some(Object::Dict(mut info)) = decoder.next_object().map_err(err)? else {
        return Err(Field("info is not a dictionary"));
    };
    let (mut name, mut piece_length, mut live) = (None, None, None);
    while let Some((key, value)) = info.next_pair().map_err(err)? {
        match key {
            b"name" => name = Some(utf8(value.try_into_bytes().map_err(err)?)?),
            b"piece length" => piece_length = Some(int(value.try_into_integer().map_err(err)?)?),
            b"pieces" => return Err(Field("has a `pieces` list: this is not a live torrent")),
            b"live" => {
                let mut dict = value.try_into_dictionary().map_err(err)?;
                let (mut pubkey, mut window, mut scheme) = (None, None, None);
                while let Some((k, v)) = dict.next_pair().map_err(err)? {
                    match k {
                        b"pubkey" => pubkey = Some(v.try_into_bytes().map_err(err)?.to_vec()),
                        b"window" => window = Some(int(v.try_into_integer().map_err(err)?)?),
                        b"scheme" => scheme = Some(v.try_into_bytes().map_err(err)?.to_vec()),
                        _ => {}
                    }
                }
                if scheme.as_deref() != Some(b"ed25519".as_slice()) {
                    return Err(Field("live.scheme must be `ed25519`"));
                }
                let Some(pubkey) = pubkey else {
                    return Err(Field("live.pubkey missing"));
                };
                let Ok(bytes) = <[u8; 32]>::try_from(pubkey.as_slice()) else {
                    return Err(Field("live.pubkey must be 32 bytes"));
                };
                let key = VerifyingKey::from_bytes(&bytes)
                    .map_err(|_| Field("live.pubkey is not an Ed25519 point"))?;
                live = Some((key, window.unwrap_or(DEFAULT_WINDOW_SECS)));
            }
            _ => {}
        }
    }
    let Some(name) = name else {
        return Err(Field("info.name missing"));
    };
    let Some(piece_length) = piece_length else {
        return Err(Field("info.piece length missing"));
    };
    let Some((key, window)) = live else {
        return Err(Field("info.live missing: not a live torrent"));
    };
    Ok((name, piece_length, window, key))
}

fn utf8(bytes: &[u8]) -> Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| Field("text is not UTF-8"))
}

fn int(text: &str) -> Result<u32> {
    text.parse()
        .map_err(|_| TorrentError::Integer(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
