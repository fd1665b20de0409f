//! Bencode: canonical for what we write and hash, lenient for what we read.
//!
//! Everything nordlys *writes* (torrent files, extended handshakes, tracker answers) is emitted
//! with bendy's encoder, which sorts dictionary keys: the output is canonical BEP 3 bencode.
//! Everything nordlys *hashes* is hashed over the bytes exactly as they were received (the
//! infohash is SHA-1 over the raw `info` span, see [`Dict::raw`]), never over a re-encoding,
//! so leniency in reading cannot change a hash.
//!
//! Everything nordlys *reads* from others goes through [`decode`] or [`decode_prefix`] here,
//! which are lenient where real peers and trackers deviate from BEP 3 and strict where it
//! matters for safety:
//!
//! - dictionary keys may come in any order and may repeat ([`Dict::get`] returns the first);
//! - integers and string lengths may have leading zeros, and `-0` is read as 0;
//! - values of any type under keys the caller does not know are read and ignored by it;
//! - but nesting is bounded by [`MAX_DEPTH`], the number of values (keys included) by
//!   [`MAX_VALUES`], integers must fit an `i64`, a string length must fit the bytes that are
//!   left, and numbers are at most 20 characters long: no input can exhaust memory or the
//!   stack, scan without bound, or panic. Callers bound the input size itself (a 4 KiB
//!   extended handshake, a 256 KiB tracker answer, a 1 MiB torrent file).
//!
//! Why not bendy's decoder: bendy 0.6 has no lenient mode. Its decoder (and its `tokens()`
//! stream, which shares the same state tracker) fails with `UnsortedKeys` on any dictionary whose
//! keys are not strictly ascending, and real clients and trackers send unsorted keys. The
//! serde-based crates (`serde_bencode`, `bt_bencode`) map dictionaries into serde types and give
//! no access to a dictionary's raw bytes, which the infohash needs.

/// Deepest nesting of lists and dictionaries read. BEP 3, BEP 10 and tracker answers nest at
/// most four deep; this leaves room for extensions we do not know.
pub const MAX_DEPTH: usize = 16;
/// Most values (integers, strings, lists, dictionaries, and dictionary keys) one input may hold.
pub const MAX_VALUES: usize = 100_000;
/// Longest integer or string length, in characters: `-9223372036854775808` has 20.
const MAX_NUMBER_CHARS: usize = 20;

/// Why bytes are not (bounded, well-formed) bencode. Offsets count from the start of the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("input ends inside a value (at byte {offset})")]
    Truncated { offset: usize },
    #[error("nested deeper than {max} lists and dictionaries (at byte {offset})")]
    TooDeep { max: usize, offset: usize },
    #[error("more than {max} values (at byte {offset})")]
    TooManyValues { max: usize, offset: usize },
    #[error("malformed integer at byte {offset}")]
    BadInteger { offset: usize },
    #[error("malformed string length at byte {offset}")]
    BadLength { offset: usize },
    #[error("string of {len} bytes at byte {offset} runs past the end ({available} bytes left)")]
    StringPastEnd {
        offset: usize,
        len: u64,
        available: usize,
    },
    #[error("dictionary key at byte {offset} is not a string")]
    KeyNotString { offset: usize },
    #[error("unexpected byte 0x{byte:02x} at byte {offset}")]
    UnexpectedByte { byte: u8, offset: usize },
    #[error("{count} bytes follow the value (from byte {offset})")]
    TrailingBytes { offset: usize, count: usize },
}

/// A decoded value borrowing from the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    Int(i64),
    Bytes(&'a [u8]),
    List(Vec<Value<'a>>),
    Dict(Dict<'a>),
}

/// A dictionary: its pairs in the order received, and the bytes it was read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dict<'a> {
    pairs: Vec<(&'a [u8], Value<'a>)>,
    raw: &'a [u8],
}

impl<'a> Dict<'a> {
    /// The first value under `key`.
    pub fn get(&self, key: &[u8]) -> Option<&Value<'a>> {
        self.pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The pairs in the order received; keys need not be sorted or unique.
    pub fn pairs(&self) -> &[(&'a [u8], Value<'a>)] {
        &self.pairs
    }

    /// The bytes of this dictionary exactly as they appear in the input, `d` to `e`.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// A key that occurs more than once, if any.
    pub fn duplicate_key(&self) -> Option<&'a [u8]> {
        let mut keys: Vec<&[u8]> = self.pairs.iter().map(|(k, _)| *k).collect();
        keys.sort_unstable();
        keys.windows(2).find(|w| w[0] == w[1]).map(|w| w[0])
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

impl<'a> Value<'a> {
    /// The first value under `key` when `self` is a dictionary.
    pub fn get(&self, key: &[u8]) -> Option<&Value<'a>> {
        self.as_dict().and_then(|d| d.get(key))
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            _ => None,
        }
    }

    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_list(&self) -> Option<&[Value<'a>]> {
        match self {
            Value::List(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_dict(&self) -> Option<&Dict<'a>> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }
}

/// Decodes `buf`, which must hold exactly one value: bytes after it are an error.
pub fn decode(buf: &[u8]) -> Result<Value<'_>, Error> {
    let (value, used) = decode_prefix(buf)?;
    if used < buf.len() {
        return Err(Error::TrailingBytes {
            offset: used,
            count: buf.len() - used,
        });
    }
    Ok(value)
}

/// Decodes the first value in `buf`; returns it and the number of bytes it used. Whatever
/// follows is not looked at.
pub fn decode_prefix(buf: &[u8]) -> Result<(Value<'_>, usize), Error> {
    let mut reader = Reader {
        buf,
        pos: 0,
        values: 0,
    };
    let value = reader.value(0)?;
    Ok((value, reader.pos))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    values: usize,
}

impl<'a> Reader<'a> {
    /// One value; `depth` lists and dictionaries are open around it.
    fn value(&mut self, depth: usize) -> Result<Value<'a>, Error> {
        self.count()?;
        let start = self.pos;
        match self.peek()? {
            b'i' => {
                self.pos += 1;
                Ok(Value::Int(self.integer(start)?))
            }
            b'0'..=b'9' => Ok(Value::Bytes(self.string()?)),
            b'l' => {
                self.open(depth)?;
                let mut items = Vec::new();
                while self.peek()? != b'e' {
                    items.push(self.value(depth + 1)?);
                }
                self.pos += 1;
                Ok(Value::List(items))
            }
            b'd' => {
                self.open(depth)?;
                let mut pairs = Vec::new();
                loop {
                    match self.peek()? {
                        b'e' => break,
                        b'0'..=b'9' => {}
                        _ => return Err(Error::KeyNotString { offset: self.pos }),
                    }
                    self.count()?;
                    let key = self.string()?;
                    let value = self.value(depth + 1)?;
                    pairs.push((key, value));
                }
                self.pos += 1;
                Ok(Value::Dict(Dict {
                    pairs,
                    raw: &self.buf[start..self.pos],
                }))
            }
            byte => Err(Error::UnexpectedByte {
                byte,
                offset: self.pos,
            }),
        }
    }

    fn count(&mut self) -> Result<(), Error> {
        self.values += 1;
        if self.values > MAX_VALUES {
            return Err(Error::TooManyValues {
                max: MAX_VALUES,
                offset: self.pos,
            });
        }
        Ok(())
    }

    /// Consumes the `l` or `d` of a container opened inside `depth` others.
    fn open(&mut self, depth: usize) -> Result<(), Error> {
        if depth >= MAX_DEPTH {
            return Err(Error::TooDeep {
                max: MAX_DEPTH,
                offset: self.pos,
            });
        }
        self.pos += 1;
        Ok(())
    }

    fn peek(&self) -> Result<u8, Error> {
        self.buf
            .get(self.pos)
            .copied()
            .ok_or(Error::Truncated { offset: self.pos })
    }

    /// `-?[0-9]+e` after the `i` at `start`.
    fn integer(&mut self, start: usize) -> Result<i64, Error> {
        let bad = Error::BadInteger { offset: start };
        let negative = self.buf.get(self.pos) == Some(&b'-');
        let digits_at = self.pos + usize::from(negative);
        let digits = self.digits(digits_at, b'e', bad)?;
        // Accumulate negatively so that i64::MIN fits.
        let mut n: i64 = 0;
        for &d in digits {
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_sub(i64::from(d - b'0')))
                .ok_or(bad)?;
        }
        if !negative {
            n = n.checked_neg().ok_or(bad)?;
        }
        Ok(n)
    }

    /// `[0-9]+:` then that many bytes.
    fn string(&mut self) -> Result<&'a [u8], Error> {
        let offset = self.pos;
        let bad = Error::BadLength { offset };
        let digits = self.digits(self.pos, b':', bad)?;
        let mut len: u64 = 0;
        for &d in digits {
            len = len
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(d - b'0')))
                .ok_or(bad)?;
        }
        let available = self.buf.len() - self.pos;
        if len > available as u64 {
            return Err(Error::StringPastEnd {
                offset,
                len,
                available,
            });
        }
        let bytes = &self.buf[self.pos..self.pos + len as usize];
        self.pos += len as usize;
        Ok(bytes)
    }

    /// One or more ASCII digits from `from`, then `end`; consumes them and `end`. Looks at no
    /// more than [`MAX_NUMBER_CHARS`] digits.
    fn digits(&mut self, from: usize, end: u8, bad: Error) -> Result<&'a [u8], Error> {
        let rest = self.buf.get(from..).unwrap_or_default();
        let n = rest
            .iter()
            .take(MAX_NUMBER_CHARS + 1)
            .take_while(|b| b.is_ascii_digit())
            .count();
        if n > MAX_NUMBER_CHARS {
            return Err(bad);
        }
        match rest.get(n) {
            None => Err(Error::Truncated {
                offset: self.buf.len(),
            }),
            Some(&b) if b == end && n > 0 => {
                self.pos = from + n + 1;
                Ok(&rest[..n])
            }
            Some(_) => Err(bad),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_type() {
        let v = decode(b"d3:inti-42e4:listli1e0:lee3:strd1:a1:bee").unwrap();
        assert_eq!(v.get(b"int"), Some(&Value::Int(-42)));
        let list = v.get(b"list").and_then(Value::as_list).unwrap();
        assert_eq!(list[0], Value::Int(1));
        assert_eq!(list[1], Value::Bytes(b""));
        assert_eq!(list[2], Value::List(vec![]));
        let inner = v.get(b"str").and_then(Value::as_dict).unwrap();
        assert_eq!(inner.get(b"a"), Some(&Value::Bytes(b"b")));
        assert_eq!(inner.raw(), b"d1:a1:be");
        assert_eq!(v.as_dict().unwrap().len(), 3);
        assert_eq!(
            decode(b"de").unwrap().as_dict().map(Dict::is_empty),
            Some(true)
        );
        assert_eq!(
            decode(b"i-9223372036854775808e").unwrap(),
            Value::Int(i64::MIN)
        );
        assert_eq!(
            decode(b"i9223372036854775807e").unwrap(),
            Value::Int(i64::MAX)
        );
    }

    #[test]
    fn unsorted_and_duplicate_keys_are_read_first_wins() {
        let body = b"d1:v4:xxxx1:md12:nordlys_livei1e6:ut_pexi2ee1:pi6881e1:pi1ee";
        let v = decode(body).unwrap();
        let d = v.as_dict().unwrap();
        let keys: Vec<&[u8]> = d.pairs().iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, [&b"v"[..], b"m", b"p", b"p"]);
        assert_eq!(v.get(b"p"), Some(&Value::Int(6881)));
        assert_eq!(d.duplicate_key(), Some(&b"p"[..]));
        assert_eq!(
            v.get(b"m").and_then(|m| m.get(b"nordlys_live")),
            Some(&Value::Int(1))
        );
        assert_eq!(d.raw(), body);
        assert_eq!(
            v.get(b"m").unwrap().as_dict().unwrap().duplicate_key(),
            None
        );
    }

    #[test]
    fn non_canonical_numbers_are_read() {
        assert_eq!(decode(b"i007e").unwrap(), Value::Int(7));
        assert_eq!(decode(b"i-0e").unwrap(), Value::Int(0));
        assert_eq!(decode(b"03:abc").unwrap(), Value::Bytes(b"abc"));
    }

    #[test]
    fn raw_span_is_the_input_bytes() {
        let body = b"d4:infod2:zzi1e2:aa0:e1:xi2ee";
        let v = decode(body).unwrap();
        assert_eq!(
            v.get(b"info").unwrap().as_dict().unwrap().raw(),
            b"d2:zzi1e2:aa0:e"
        );
        assert_eq!(v.as_dict().unwrap().raw(), &body[..]);
    }

    #[test]
    fn prefix_reports_what_it_used() {
        assert_eq!(decode_prefix(b"i1eXYZ").unwrap(), (Value::Int(1), 3));
        assert_eq!(
            decode(b"i1eXYZ"),
            Err(Error::TrailingBytes {
                offset: 3,
                count: 3
            })
        );
        assert_eq!(
            decode(b"dei1e"),
            Err(Error::TrailingBytes {
                offset: 2,
                count: 3
            })
        );
    }

    #[test]
    fn malformed_input_gives_typed_errors() {
        use Error::*;
        let cases: &[(&[u8], Error)] = &[
            (b"", Truncated { offset: 0 }),
            (b"d", Truncated { offset: 1 }),
            (b"l", Truncated { offset: 1 }),
            (b"i12", Truncated { offset: 3 }),
            (b"12", Truncated { offset: 2 }),
            (b"d1:a", Truncated { offset: 4 }),
            (b"ie", BadInteger { offset: 0 }),
            (b"i-e", BadInteger { offset: 0 }),
            (b"i+5e", BadInteger { offset: 0 }),
            (b"i1.5e", BadInteger { offset: 0 }),
            (b"i--1e", BadInteger { offset: 0 }),
            (b"i9223372036854775808e", BadInteger { offset: 0 }),
            (b"i-9223372036854775809e", BadInteger { offset: 0 }),
            (b"i000000000000000000001e", BadInteger { offset: 0 }),
            (b"l1x", BadLength { offset: 1 }),
            (b"99999999999999999999:", BadLength { offset: 0 }),
            (b"123456789012345678901:", BadLength { offset: 0 }),
            (
                b"5:abc",
                StringPastEnd {
                    offset: 0,
                    len: 5,
                    available: 3,
                },
            ),
            (
                b"18446744073709551615:",
                StringPastEnd {
                    offset: 0,
                    len: u64::MAX,
                    available: 0,
                },
            ),
            (b"di1ei2ee", KeyNotString { offset: 1 }),
            (b"dlee", KeyNotString { offset: 1 }),
            (
                b"d1:ax",
                UnexpectedByte {
                    byte: b'x',
                    offset: 4,
                },
            ),
            (
                b"<html>",
                UnexpectedByte {
                    byte: b'<',
                    offset: 0,
                },
            ),
            (
                b"e",
                UnexpectedByte {
                    byte: b'e',
                    offset: 0,
                },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                decode(input),
                Err(*want),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn nesting_and_value_count_are_bounded() {
        let ok = [vec![b'l'; MAX_DEPTH], vec![b'e'; MAX_DEPTH]].concat();
        assert!(decode(&ok).is_ok());
        let deep = [vec![b'l'; MAX_DEPTH + 1], vec![b'e'; MAX_DEPTH + 1]].concat();
        assert_eq!(
            decode(&deep),
            Err(Error::TooDeep {
                max: MAX_DEPTH,
                offset: MAX_DEPTH
            })
        );
        // Far deeper than any stack would take: refused at the bound, not by overflowing.
        let hostile = [b"d1:a".repeat(1_000_000), b"e".repeat(1_000_000)].concat();
        assert!(matches!(decode(&hostile), Err(Error::TooDeep { .. })));
        let many = [b"l".to_vec(), b"i0e".repeat(MAX_VALUES), b"e".to_vec()].concat();
        assert!(matches!(decode(&many), Err(Error::TooManyValues { .. })));
        let just = [b"l".to_vec(), b"i0e".repeat(MAX_VALUES - 1), b"e".to_vec()].concat();
        assert!(decode(&just).is_ok());
        // Keys count too: a dictionary of empty keys and values is bounded alike.
        let keys = [b"d".to_vec(), b"0:0:".repeat(MAX_VALUES / 2), b"e".to_vec()].concat();
        assert!(matches!(decode(&keys), Err(Error::TooManyValues { .. })));
    }

    #[test]
    fn every_prefix_of_valid_input_is_an_error_and_random_input_never_panics() {
        let valid = b"d1:ad1:bli1ei-2e3:xyzee1:cde1:d0:e";
        assert!(decode(valid).is_ok());
        for cut in 0..valid.len() {
            assert!(
                matches!(
                    decode(&valid[..cut]),
                    Err(Error::Truncated { .. } | Error::StringPastEnd { .. })
                ),
                "{cut}"
            );
        }
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        const ALPHABET: &[u8] = b"dlie:-0123456789x";
        for _ in 0..50_000 {
            let mut buf = valid.to_vec();
            for _ in 0..rng.random_range(1..5) {
                let i = rng.random_range(0..buf.len());
                match rng.random_range(0..3) {
                    0 => buf[i] = ALPHABET[rng.random_range(0..ALPHABET.len())],
                    1 => buf.truncate(i.max(1)),
                    _ => buf.insert(i, ALPHABET[rng.random_range(0..ALPHABET.len())]),
                }
            }
            if let Ok((v, used)) = decode_prefix(&buf) {
                assert!(used <= buf.len());
                if let Value::Dict(d) = v {
                    assert_eq!(d.raw(), &buf[..used]);
                }
            }
            let random: Vec<u8> = (0..rng.random_range(0..48))
                .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())])
                .collect();
            let _ = decode(&random);
        }
    }
}
