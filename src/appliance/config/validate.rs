//! Semantic checks of a parsed config ([`Config::validate`]): ranges, addresses, URLs, LED
//! pins; everything the schema alone cannot say.

use std::net::SocketAddr;

use super::{Config, LATENCY_RANGE_MS, LedBackendKind, LedLine, MAX_HEADER_GPIO, StreamSource};

impl Config {
    /// Semantic checks. Each problem is `(dotted key path, message)`.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        let mut err = |k: &str, m: String| errs.push((k.to_string(), m));

        if self.venue.chars().count() > 80 {
            err("venue", "is longer than 80 characters".into());
        }
        if self.venue.chars().any(char::is_control) {
            err("venue", "contains control characters".into());
        }
        if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&self.log_level) {
            err(
                "log_level",
                format!(
                    "`{}` is not a valid log filter ({e}); expected error, warn, info, debug or trace",
                    self.log_level
                ),
            );
        }
        match &self.stream.source {
            None => err(
                "stream.source",
                format!("is missing; {}", super::SOURCE_EXPECTED),
            ),
            Some(s) => {
                if let Err(e) = StreamSource::parse(s) {
                    err("stream.source", e);
                }
            }
        }
        if !LATENCY_RANGE_MS.contains(&self.stream.target_latency_ms) {
            err(
                "stream.target_latency_ms",
                format!(
                    "{} is out of range; expected {}..={} milliseconds",
                    self.stream.target_latency_ms,
                    LATENCY_RANGE_MS.start(),
                    LATENCY_RANGE_MS.end()
                ),
            );
        }
        if self.network.listen_port == 0 {
            err(
                "network.listen_port",
                "0 is not allowed; expected a port 1..=65535".into(),
            );
        }
        for (i, p) in self.network.static_peers.iter().enumerate() {
            if let Err(e) = check_host_port(p) {
                err(&format!("network.static_peers[{i}]"), e);
            }
        }
        for (i, t) in self.network.trackers.iter().enumerate() {
            if let Err(e) = crate::settings::tracker_url(t) {
                err(&format!("network.trackers[{i}]"), e);
            }
        }
        if let Some(c) = &self.video.connector {
            let ok = !c.is_empty()
                && c.len() <= 32
                && c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-');
            if !ok {
                err(
                    "video.connector",
                    format!("`{c}` is not a DRM connector name; expected e.g. HDMI-A-1"),
                );
            }
        }
        let leds = &self.leds;
        if leds.rgb.is_some()
            && (leds.power.is_some() || leds.network.is_some() || leds.stream.is_some())
        {
            err("leds.rgb", "cannot be combined with leds.power/network/stream; configure either one RGB LED or up to three LEDs".into());
        }
        let lines = leds.lines();
        for (key, line) in &lines {
            match (leds.backend, line) {
                (LedBackendKind::Rppal | LedBackendKind::Auto, LedLine::Pin(p))
                    if *p > MAX_HEADER_GPIO =>
                {
                    err(
                        key,
                        format!(
                            "GPIO {p} is out of range; expected a BCM GPIO number 0..={MAX_HEADER_GPIO}"
                        ),
                    )
                }
                (LedBackendKind::Rppal, LedLine::Name(n)) => err(
                    key,
                    format!(
                        "`{n}` is a name, but the rppal backend needs a BCM GPIO number 0..={MAX_HEADER_GPIO}"
                    ),
                ),
                (LedBackendKind::Sysfs, LedLine::Pin(p)) => err(
                    key,
                    format!(
                        "{p} is a number, but the sysfs backend needs an LED name from /sys/class/leds"
                    ),
                ),
                (LedBackendKind::Gpiocdev, LedLine::Pin(p)) if *p > 1023 => err(
                    key,
                    format!("line offset {p} is out of range; expected 0..=1023"),
                ),
                (_, LedLine::Name(n))
                    if n.is_empty() || n.contains('/') || n == "." || n == ".." =>
                {
                    err(key, format!("`{n}` is not a valid line/LED name"))
                }
                _ => {}
            }
        }
        for (i, (ka, a)) in lines.iter().enumerate() {
            if lines[..i].iter().any(|(_, b)| b == a) {
                err(ka, format!("{a} is used for two LEDs"));
            }
        }
        if leds.backend == LedBackendKind::Sysfs && leds.chip.is_some() {
            err("leds.chip", "only applies to the gpiocdev backend".into());
        }
        errs
    }
}

fn check_host_port(s: &str) -> Result<(), String> {
    if s.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let bad = || {
        format!("`{s}` is not `host:port`; expected e.g. `192.0.2.10:6881` or `[2001:db8::1]:6881`")
    };
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if port == 0 || !host_ok {
        return Err(bad());
    }
    Ok(())
}
