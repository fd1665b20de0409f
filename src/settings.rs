//! Rules every role applies to its settings, whether they come from a flag or from the
//! config file, so that `check-config`, `create` and the roles at run time accept and refuse
//! the same values with the same words. Each check returns what is wrong and what would be
//! accepted; the caller adds the flag or key (`--latency`, `stream.target_latency_ms`).

use std::fmt;

/// Where a setting came from, for messages: `--latency 500` or `stream.target_latency_ms = 500`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Flag(&'static str),
    Key(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(name) => write!(f, "{name}"),
            Origin::Key(key) => write!(f, "config key `{key}`"),
        }
    }
}

/// The lowest target latency accepted (milliseconds): below it a single late piece stalls.
pub const MIN_LATENCY_MS: u64 = 200;

/// A tracker any role can announce to: the client speaks plain HTTP (no TLS, no BEP 15 UDP).
pub fn tracker_url(url: &str) -> Result<(), String> {
    const EXPECTED: &str = "expected an http:// announce URL such as \
        http://tracker.example:6969/announce (udp:// and https:// trackers are not supported yet)";
    match url::Url::parse(url) {
        Ok(u) if u.scheme() == "http" && u.host().is_some() => Ok(()),
        Ok(u) => Err(format!(
            "`{url}` is a {}:// URL{}; {EXPECTED}",
            u.scheme(),
            if u.host().is_none() {
                " without a host"
            } else {
                ""
            }
        )),
        Err(e) => Err(format!("`{url}` is not a URL ({e}); {EXPECTED}")),
    }
}

/// The playout latency must leave the hook-in point inside what peers keep (the torrent's
/// window), or a receiver could never find its first piece.
pub fn latency(ms: u64, window_secs: u32) -> Result<(), String> {
    let window_ms = u64::from(window_secs) * 1000;
    if (MIN_LATENCY_MS..window_ms).contains(&ms) {
        return Ok(());
    }
    Err(format!(
        "{ms} ms is outside {MIN_LATENCY_MS}..={} ms: the latency must be at least \
         {MIN_LATENCY_MS} ms and below the torrent's window of {window_secs} s (peers keep no older stream)",
        window_ms.saturating_sub(1)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trackers() {
        assert!(tracker_url("http://t.example:6969/announce").is_ok());
        let e = tracker_url("udp://t.example:1337/announce").unwrap_err();
        assert!(
            e.starts_with("`udp://t.example:1337/announce` is a udp:// URL;"),
            "{e}"
        );
        let e = tracker_url("notaurl").unwrap_err();
        assert!(e.starts_with("`notaurl` is not a URL"), "{e}");
        assert!(tracker_url("https://t.example/announce").is_err());
    }

    #[test]
    fn latencies() {
        assert!(latency(2000, 30).is_ok());
        assert!(latency(29_999, 30).is_ok());
        let e = latency(30_000, 30).unwrap_err();
        assert_eq!(
            e,
            "30000 ms is outside 200..=29999 ms: the latency must be at least 200 ms and below \
             the torrent's window of 30 s (peers keep no older stream)"
        );
        assert!(latency(199, 30).is_err());
        assert!(latency(u64::MAX, u32::MAX).is_err());
    }
}
