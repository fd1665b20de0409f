//! The lenient bounded bencode reader used to decode tracker responses (`Value`, `bdecode`).
//!
//! Why not bendy: bendy's decoder rejects dictionaries whose keys are not sorted, and real
//! trackers (hand-written PHP and Node trackers in particular) emit `interval` before `complete`
//! and so on. The reader accepts unsorted and duplicate keys (the first wins) and ignores bytes
//! after the top-level value, but still bounds nesting depth and the number of values it builds.

/// Nesting and size bounds of the lenient bencode reader.
const MAX_BENCODE_DEPTH: usize = 16;
const MAX_BENCODE_VALUES: usize = 100_000;

/// A decoded bencode value borrowing from the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    Int(i64),
    Bytes(&'a [u8]),
    List(Vec<Value<'a>>),
    /// Pairs in the order received; keys need not be sorted or unique.
    Dict(Vec<(&'a [u8], Value<'a>)>),
}

impl<'a> Value<'a> {
    /// The first value under `key` when `self` is a dictionary.
    pub fn get(&self, key: &[u8]) -> Option<&Value<'a>> {
        match self {
            Value::Dict(pairs) => pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Lenient bounded bencode reader (see the module docs for why not bendy). Decodes the first
/// value in `buf` and ignores whatever follows it.
pub fn bdecode(buf: &[u8]) -> Result<Value<'_>, String> {
    let mut reader = Reader {
        buf,
        pos: 0,
        values: 0,
    };
    reader.value(0)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    values: usize,
}

impl<'a> Reader<'a> {
    fn value(&mut self, depth: usize) -> Result<Value<'a>, String> {
        if depth > MAX_BENCODE_DEPTH {
            return Err(format!("nested deeper than {MAX_BENCODE_DEPTH}"));
        }
        self.values += 1;
        if self.values > MAX_BENCODE_VALUES {
            return Err(format!("more than {MAX_BENCODE_VALUES} values"));
        }
        match self.peek()? {
            b'i' => {
                self.pos += 1;
                let digits = self.until(b'e')?;
                let text = std::str::from_utf8(digits).map_err(|_| "bad integer".to_string())?;
                let n = text
                    .parse::<i64>()
                    .map_err(|_| format!("bad integer {text:?}"))?;
                Ok(Value::Int(n))
            }
            b'l' => {
                self.pos += 1;
                let mut items = Vec::new();
                while self.peek()? != b'e' {
                    items.push(self.value(depth + 1)?);
                }
                self.pos += 1;
                Ok(Value::List(items))
            }
            b'd' => {
                self.pos += 1;
                let mut pairs = Vec::new();
                while self.peek()? != b'e' {
                    let key = match self.value(depth + 1)? {
                        Value::Bytes(k) => k,
                        _ => return Err("dictionary key is not a string".into()),
                    };
                    let value = self.value(depth + 1)?;
                    pairs.push((key, value));
                }
                self.pos += 1;
                Ok(Value::Dict(pairs))
            }
            b'0'..=b'9' => {
                let digits = self.until(b':')?;
                let len = std::str::from_utf8(digits)
                    .ok()
                    .and_then(|s| s.parse::<usize>().ok())
                    .ok_or_else(|| "bad string length".to_string())?;
                if len > self.buf.len() - self.pos {
                    return Err("string runs past the end".into());
                }
                let bytes = &self.buf[self.pos..self.pos + len];
                self.pos += len;
                Ok(Value::Bytes(bytes))
            }
            other => Err(format!(
                "unexpected byte 0x{other:02x} at offset {}",
                self.pos
            )),
        }
    }

    fn peek(&self) -> Result<u8, String> {
        self.buf
            .get(self.pos)
            .copied()
            .ok_or_else(|| "truncated (unexpected end of input)".to_string())
    }

    /// The bytes before the next `end`, consuming them and `end`.
    fn until(&mut self, end: u8) -> Result<&'a [u8], String> {
        let rest = &self.buf[self.pos..];
        // Integers and lengths are short; do not scan megabytes for a terminator.
        let window = &rest[..rest.len().min(24)];
        let i = window
            .iter()
            .position(|&b| b == end)
            .ok_or_else(|| "truncated or overlong number".to_string())?;
        self.pos += i + 1;
        Ok(&rest[..i])
    }
}
