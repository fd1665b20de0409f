//! Checking config text ([`check_str`]): each key deserialized on its own, every problem
//! located by line and column through a span tree of the document.

use std::ops::Range;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::{
    AudioConfig, Config, ConfigError, LedConfig, NetworkConfig, RgbLed, StreamConfig, VideoConfig,
    line_col,
};

// ---------------------------------------------------------------------------------------------
// Span tree: the same document, remembering where every key and value is
// ---------------------------------------------------------------------------------------------

/// A parsed document that remembers where every key and value is (from `toml_edit`, which
/// keeps spans; `toml::Spanned` cannot span implicit tables such as `[a.b]` without `[a]`).
#[derive(Debug)]
struct Node {
    span: Option<Range<usize>>,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// (key, key span, value)
    Table(Vec<(String, Option<Range<usize>>, Node)>),
    Array(Vec<Node>),
    Leaf,
}

impl Node {
    fn from_table(t: &toml_edit::Table) -> Node {
        let entries = t
            .iter()
            .map(|(k, item)| {
                (
                    k.to_string(),
                    t.key(k).and_then(|k| k.span()),
                    Node::from_item(item),
                )
            })
            .collect();
        Node {
            span: t.span(),
            kind: Kind::Table(entries),
        }
    }

    fn from_item(item: &toml_edit::Item) -> Node {
        match item {
            toml_edit::Item::Table(t) => Node::from_table(t),
            toml_edit::Item::Value(v) => Node::from_value(v),
            toml_edit::Item::ArrayOfTables(a) => Node {
                span: a.span(),
                kind: Kind::Array(a.iter().map(Node::from_table).collect()),
            },
            toml_edit::Item::None => Node {
                span: None,
                kind: Kind::Leaf,
            },
        }
    }

    fn from_value(v: &toml_edit::Value) -> Node {
        let kind = match v {
            toml_edit::Value::Array(a) => Kind::Array(a.iter().map(Node::from_value).collect()),
            toml_edit::Value::InlineTable(t) => Kind::Table(
                t.iter()
                    .map(|(k, v)| {
                        (
                            k.to_string(),
                            t.key(k).and_then(|k| k.span()),
                            Node::from_value(v),
                        )
                    })
                    .collect(),
            ),
            _ => Kind::Leaf,
        };
        Node {
            span: v.span(),
            kind,
        }
    }

    fn entry(&self, key: &str) -> Option<&(String, Option<Range<usize>>, Node)> {
        match &self.kind {
            Kind::Table(v) => v.iter().find(|(k, _, _)| k == key),
            _ => None,
        }
    }

    /// The value's span; for an implicit table (no header of its own), its first key's.
    fn value_span(&self) -> Option<Range<usize>> {
        self.span.clone().or_else(|| match &self.kind {
            Kind::Table(v) => v
                .first()
                .and_then(|(_, ks, n)| ks.clone().or_else(|| n.value_span())),
            _ => None,
        })
    }
}

/// Split `a.b[3].c` into segments.
fn path_segments(path: &str) -> Vec<Result<&str, usize>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (name, rest) = part.split_once('[').unwrap_or((part, ""));
        if !name.is_empty() {
            out.push(Ok(name));
        }
        for idx in rest.split('[') {
            if let Ok(i) = idx.trim_end_matches(']').parse() {
                out.push(Err(i));
            }
        }
    }
    out
}

/// Span of the value at `path`, or of the deepest existing ancestor (for missing keys).
fn locate(root: &Node, path: &str) -> Option<Range<usize>> {
    let mut node = root;
    let mut best = None;
    for seg in path_segments(path) {
        let next = match (seg, &node.kind) {
            (Ok(k), _) => node.entry(k).map(|(_, _, v)| v),
            (Err(i), Kind::Array(a)) => a.get(i),
            _ => None,
        };
        match next {
            Some(n) => {
                node = n;
                best = n.value_span().or(best);
            }
            None => return best,
        }
    }
    best
}

// ---------------------------------------------------------------------------------------------
// Checking
// ---------------------------------------------------------------------------------------------

type Checker = fn(toml::Value) -> Result<(), String>;

fn check_as<T: DeserializeOwned>(v: toml::Value) -> Result<(), String> {
    T::deserialize(v)
        .map(|_| ())
        .map_err(|e| e.message().to_string())
}

/// The type that each table path deserializes into.
fn checker_for(path: &str) -> Option<Checker> {
    Some(match path {
        "" => check_as::<Config>,
        "stream" => check_as::<StreamConfig>,
        "network" => check_as::<NetworkConfig>,
        "video" => check_as::<VideoConfig>,
        "audio" => check_as::<AudioConfig>,
        "leds" => check_as::<LedConfig>,
        "leds.rgb" => check_as::<RgbLed>,
        _ => return None,
    })
}

struct Checker2<'a> {
    text: &'a str,
    errors: Vec<ConfigError>,
}

impl Checker2<'_> {
    fn push(&mut self, span: Option<Range<usize>>, key: &str, message: String) {
        let (line, column) = span.map_or((0, 0), |s| line_col(self.text, s.start));
        self.errors.push(ConfigError {
            line,
            column,
            key: key.to_string(),
            message,
        });
    }

    /// Check every key of `table` (at `path`, described by `node`) on its own; remove the bad
    /// ones so the rest can still be used.
    fn walk(&mut self, path: &str, table: &mut toml::Table, node: &Node, check: Checker) {
        let keys: Vec<String> = table.keys().cloned().collect();
        // Does this table type have required keys? Then checking one key alone reports the
        // others as missing; the caller checks the table as a whole afterwards.
        let has_required = check(toml::Value::Table(toml::Table::new())).is_err();
        for key in keys {
            let full = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            let entry = node.entry(&key);
            let mut single = toml::Table::new();
            single.insert(key.clone(), table[&key].clone());
            let Err(msg) = check(toml::Value::Table(single)) else {
                continue;
            };
            if has_required && msg.starts_with("missing field") {
                continue;
            }
            // A known sub-table: descend, so each bad key inside gets its own position.
            if let (Some(sub_check), Some(toml::Value::Table(sub)), Some((_, _, sub_node))) =
                (checker_for(&full), table.get_mut(&key), entry)
            {
                self.walk(&full, sub, sub_node, sub_check);
                let mut single = toml::Table::new();
                single.insert(key.clone(), table[&key].clone());
                match check(toml::Value::Table(single)) {
                    Ok(()) => continue,
                    Err(msg) => {
                        let msg = match msg.strip_prefix("missing field ") {
                            Some(field) => format!("is missing key {field}"),
                            None => format!("is invalid: {msg}"),
                        };
                        self.push(entry.and_then(|(_, _, v)| v.value_span()), &full, msg);
                        table.remove(&key);
                        continue;
                    }
                }
            }
            let unknown = msg.starts_with("unknown field");
            let span = entry.and_then(|(_, ks, v)| {
                if unknown {
                    ks.clone().or_else(|| v.value_span())
                } else {
                    v.value_span()
                }
            });
            let msg = if unknown {
                match msg.split_once(", ") {
                    Some((_, expected)) => format!("is an unknown key; {expected}"),
                    None => "is an unknown key".to_string(),
                }
            } else {
                format!("has the wrong type or value: {msg}")
            };
            self.push(span, &full, msg);
            table.remove(&key);
        }
    }
}

/// The outcome of reading a config: the best-effort config (bad keys dropped, defaults in
/// their place) and every problem found.
#[derive(Debug, Clone)]
pub struct Checked {
    pub config: Config,
    pub errors: Vec<ConfigError>,
}

/// Check config text; never panics, whatever the input.
pub fn check_str(text: &str) -> Checked {
    check_str_with(text, &|_| None)
}

/// [`check_str`], and the target latency against the window of the stream's torrent, when
/// `window_of` can tell it (the torrent is a readable file): the rule the receiver applies
/// once it has the torrent.
pub fn check_str_with(text: &str, window_of: &dyn Fn(&Config) -> Option<u32>) -> Checked {
    let mut c = Checker2 {
        text,
        errors: Vec::new(),
    };
    let mut table = match toml::from_str::<toml::Table>(text) {
        Ok(t) => t,
        Err(e) => {
            let msg = format!("TOML syntax error: {}", e.message().trim());
            c.push(e.span(), "", msg);
            return Checked {
                config: Config::default(),
                errors: c.errors,
            };
        }
    };
    let root = match toml_edit::ImDocument::parse(text) {
        Ok(doc) => Node::from_table(doc.as_table()),
        Err(e) => {
            c.push(
                e.span(),
                "",
                format!("TOML syntax error: {}", e.message().trim()),
            );
            return Checked {
                config: Config::default(),
                errors: c.errors,
            };
        }
    };
    c.walk("", &mut table, &root, check_as::<Config>);
    let config = match Config::deserialize(toml::Value::Table(table)) {
        Ok(cfg) => cfg,
        Err(e) => {
            // Should not happen: every key was checked alone above.
            c.push(Some(0..0), "", e.message().to_string());
            return Checked {
                config: Config::default(),
                errors: c.errors,
            };
        }
    };
    // Keys already reported keep their defaults; don't report those defaults again.
    let reported: Vec<String> = c.errors.iter().map(|e| e.key.clone()).collect();
    for (key, msg) in config.validate() {
        if reported.iter().any(|r| {
            key == *r || key.starts_with(&format!("{r}.")) || key.starts_with(&format!("{r}["))
        }) {
            continue;
        }
        c.push(locate(&root, &key), &key, msg);
    }
    const LATENCY_KEY: &str = "stream.target_latency_ms";
    if !c.errors.iter().any(|e| e.key == LATENCY_KEY)
        && let Some(window) = window_of(&config)
        && let Err(msg) =
            crate::settings::latency(u64::from(config.stream.target_latency_ms), window)
    {
        c.push(locate(&root, LATENCY_KEY), LATENCY_KEY, msg);
    }
    c.errors.sort_by_key(|e| (e.line == 0, e.line, e.column));
    Checked {
        config,
        errors: c.errors,
    }
}
