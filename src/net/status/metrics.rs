//! `GET /metrics`: the status in the Prometheus text format.
//!
//! Built from the same JSON value `/status` serves, on each scrape: one source of truth, so
//! the two cannot disagree, and the error state (no node) has metrics too.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use serde_json::Value;

use super::history::buffer_pieces;

pub use prometheus_text::CONTENT_TYPE;

/// Every value `state` can take: the state gauge set has one series for each, one of them 1.
pub const STATES: [&str; 6] = [
    "joining",
    "buffering",
    "playing",
    "stalled",
    "ended",
    "error",
];

/// Counters: (status field, metric name before `_total`, help).
const COUNTERS: [(&str, &str, &str); 9] = [
    (
        "pieces_received",
        "pieces_received",
        "Verified pieces received from peers",
    ),
    (
        "pieces_missed",
        "pieces_missed",
        "Pieces skipped because they were due and nobody had them",
    ),
    (
        "pieces_late",
        "pieces_late",
        "Pieces output after they were due",
    ),
    (
        "pieces_rejected",
        "pieces_rejected",
        "Pieces that failed their signature check",
    ),
    (
        "request_timeouts",
        "request_timeouts",
        "Requests a peer did not answer in time",
    ),
    (
        "peers_banned",
        "peers_banned",
        "Peers disconnected for a protocol violation or a bad piece",
    ),
    (
        "output_dropped",
        "output_dropped_pieces",
        "Pieces the output could not take in time",
    ),
    (
        "frames_rendered",
        "frames_rendered",
        "Video frames handed to the display",
    ),
    (
        "pipeline_restarts",
        "pipeline_restarts",
        "Rebuilds of the decode or display pipeline",
    ),
];

/// The metrics of one status value. Fields the value lacks (not known yet, not this role's)
/// are left out rather than reported as 0.
pub fn render(status: &Value) -> String {
    let mut reg = Registry::with_prefix("nordlys");

    let state = status["state"].as_str().unwrap_or("");
    let states = Family::<Vec<(String, String)>, Gauge>::default();
    for s in STATES {
        states
            .get_or_create(&vec![("state".to_string(), s.to_string())])
            .set(i64::from(s == state));
    }
    reg.register("state", "The node's state: 1 for the current one", states);

    if let Some(peers) = status["peers"].as_u64() {
        let g = Gauge::<i64>::default();
        g.set(clamp_i64(peers));
        reg.register("peers", "Peers connected now", g);
    }
    for (field, name, help) in COUNTERS {
        if let Some(v) = status[field].as_u64() {
            let c = Counter::<u64>::default();
            c.inc_by(v);
            reg.register(name, help, c);
        }
    }
    // Bytes from peers, and of them from the injector: how much of the stream the swarm,
    // not the origin, carried to this node.
    for (field, name, help) in [
        (
            "bytes_down",
            "received",
            "Piece payload received from peers",
        ),
        (
            "bytes_down_injector",
            "received_from_injector",
            "Piece payload received from the injector (included in nordlys_received_bytes_total)",
        ),
        ("bytes_up", "sent", "Piece payload sent to peers"),
    ] {
        if let Some(v) = status[field].as_u64() {
            let c = Counter::<u64>::default();
            c.inc_by(v);
            reg.register_with_unit(name, help, Unit::Bytes, c);
        }
    }
    if let Some(ms) = status["lag_ms"].as_u64() {
        let g = Gauge::<f64, AtomicU64>::default();
        g.set(ms as f64 / 1000.0);
        reg.register_with_unit(
            "delay",
            "Wall clock minus the injector's timestamp of the newest piece output",
            Unit::Seconds,
            g,
        );
    }
    if let Some(n) = buffer_pieces(status) {
        let g = Gauge::<i64>::default();
        g.set(clamp_i64(n));
        reg.register(
            "buffer_pieces",
            "Verified pieces held ahead of the output",
            g,
        );
    }
    if let Some(c) = status["continuity"].as_f64().filter(|c| c.is_finite()) {
        let g = Gauge::<f64, AtomicU64>::default();
        g.set(c);
        reg.register(
            "continuity_ratio",
            "Pieces output on time / pieces due since the start",
            g,
        );
    }

    let mut out = String::new();
    // Writing to a String cannot fail; an encoder error would only cut the answer short.
    if prometheus_text::encode(&mut out, &reg).is_err() {
        tracing::warn!("cannot encode the metrics");
    }
    out
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `name{labels} value` lines by name and labels, checking each line's shape.
    fn parse(text: &str) -> std::collections::HashMap<String, f64> {
        let mut out = std::collections::HashMap::new();
        for line in text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (series, value) = line.rsplit_once(' ').expect("name value");
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("value in {line:?}"));
            assert!(series.starts_with("nordlys_"), "{line}");
            out.insert(series.to_string(), value);
        }
        out
    }

    #[test]
    fn the_status_becomes_metrics_with_units_in_their_names() {
        let st = serde_json::json!({
            "state": "playing", "peers": 7, "bytes_down": 123456, "bytes_up": 42,
            "bytes_down_injector": 1000, "pieces_missed": 2, "pieces_late": 1, "request_timeouts": 3, "lag_ms": 1530,
            "newest_seq": 1040, "output_seq": 1000, "continuity": 0.75,
        });
        let text = render(&st);
        let m = parse(&text);
        assert_eq!(m["nordlys_state{state=\"playing\"}"], 1.0, "{text}");
        assert_eq!(m["nordlys_state{state=\"stalled\"}"], 0.0, "{text}");
        assert_eq!(m["nordlys_peers"], 7.0);
        assert_eq!(m["nordlys_received_bytes_total"], 123456.0, "{text}");
        assert_eq!(m["nordlys_sent_bytes_total"], 42.0);
        assert_eq!(m["nordlys_received_from_injector_bytes_total"], 1000.0);
        assert_eq!(m["nordlys_pieces_missed_total"], 2.0);
        assert_eq!(m["nordlys_pieces_late_total"], 1.0);
        assert_eq!(m["nordlys_request_timeouts_total"], 3.0);
        assert_eq!(m["nordlys_delay_seconds"], 1.53, "{text}");
        assert_eq!(m["nordlys_buffer_pieces"], 40.0);
        assert_eq!(m["nordlys_continuity_ratio"], 0.75);
        assert!(
            text.contains("# TYPE nordlys_received_bytes_total counter"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE nordlys_delay_seconds gauge"),
            "{text}"
        );
        // Not known: left out, not 0.
        assert!(!m.contains_key("nordlys_frames_rendered_total"));
    }

    #[test]
    fn the_error_state_and_hostile_values_still_give_metrics() {
        let st = serde_json::json!({"state": "error\"} 1\n<x>", "peers": -1, "lag_ms": "x",
            "bytes_down": 1e300, "continuity": null});
        let text = render(&st);
        let m = parse(&text);
        assert!(
            STATES
                .iter()
                .all(|s| m[&format!("nordlys_state{{state=\"{s}\"}}")] == 0.0)
        );
        assert!(!m.contains_key("nordlys_peers"), "{text}");
        let st = serde_json::json!({"state": "error", "last_error": "bad config"});
        assert_eq!(parse(&render(&st))["nordlys_state{state=\"error\"}"], 1.0);
    }
}
