//! `GET /`: the status page, rendered on the server from the status value and the history.
//!
//! No script and no external asset: the page reloads itself every few seconds (a meta
//! refresh), so it works on any browser on the hall's network, offline, and cannot hang on
//! a script error. Every string that reaches the page goes through [`escape`]: the status
//! carries what trackers, peers and the config say.

use std::fmt::Write;
use std::time::Instant;

use serde_json::Value;

use super::Settings;
use super::history::{HISTORY_LEN, History, SAMPLE_EVERY, Sample, buffer_pieces};
use super::metrics::STATES;

/// How often the page reloads itself, in seconds.
const REFRESH_SECS: u32 = 2;
/// The longest text shown from any one field: a tracker's failure reason can be anything.
const MAX_TEXT: usize = 400;
const CHART_W: f64 = 600.0;
const CHART_H: f64 = 120.0;

/// `&`, `<`, `>`, `"` and `'` as entities: safe in element text and in quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// At most [`MAX_TEXT`] characters, escaped.
fn text(s: &str) -> String {
    match s.char_indices().nth(MAX_TEXT) {
        Some((at, _)) => escape(&s[..at]) + "…",
        None => escape(s),
    }
}

/// A field for people: strings as they are, numbers and the rest as JSON, null as a dash.
fn field(v: &Value) -> String {
    match v {
        Value::Null => "–".into(),
        Value::String(s) => text(s),
        other => text(&other.to_string()),
    }
}

fn bytes(v: &Value) -> String {
    match v.as_u64() {
        Some(b) if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / f64::from(1 << 20)),
        Some(b) if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        Some(b) => format!("{b} B"),
        None => "–".into(),
    }
}

const STYLE: &str = "body{font:15px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}\
h1{font-size:1.3em;margin:0 0 .4em}h2{font-size:1.05em;margin:1.4em 0 .3em}\
.state{display:inline-block;padding:.2em .7em;border-radius:.3em;font-size:1.6em;font-weight:bold;color:#fff;background:#777}\
.playing{background:#2e7d32}.buffering,.joining{background:#ef8f00}.stalled{background:#c62828}\
.error{background:#b00020}.ended{background:#455a64}\
.err{color:#b00020;font-weight:bold;white-space:pre-wrap}.wait{color:#8a5a00}\
table{border-collapse:collapse}td,th{padding:.15em .8em .15em 0;text-align:left;vertical-align:top}\
th{font-weight:normal;color:#555}td{font-variant-numeric:tabular-nums;word-break:break-all}\
svg{background:#fff;border:1px solid #ccc}.none{color:#888}footer{margin-top:2em;color:#666}";

/// The whole page.
pub fn render(status: &Value, history: &History, settings: &Settings, now: Instant) -> String {
    let state = status["state"].as_str().unwrap_or("unknown");
    // The class only from the known names: nothing from the status lands in an attribute.
    let class = STATES.iter().find(|s| **s == state).copied().unwrap_or("");
    let role = status["role"].as_str().unwrap_or("node");
    let mut p = String::with_capacity(16 * 1024);
    let _ = write!(
        p,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>nordlys {role}: {state}</title><style>{STYLE}</style></head><body>\
         <h1>nordlys {role}</h1><p><span id=\"state\" class=\"state {class}\">{state}</span></p>",
        role = text(role),
        state = text(state),
    );
    if let Some(e) = status["last_error"].as_str() {
        let _ = write!(p, "<p id=\"last-error\" class=\"err\">{}</p>", text(e));
    }
    if let Some(w) = status["waiting_for"].as_str() {
        let _ = write!(p, "<p class=\"wait\">Waiting for: {}</p>", text(w));
    }

    p.push_str("<table id=\"figures\">");
    let mut row = |id: &str, name: &str, value: String| {
        let _ = write!(p, "<tr><th>{name}</th><td id=\"{id}\">{value}</td></tr>");
    };
    row("peers", "Peers", field(&status["peers"]));
    row(
        "bytes-down",
        "Received from peers",
        bytes(&status["bytes_down"]),
    );
    row(
        "bytes-down-injector",
        "… of them from the injector",
        bytes(&status["bytes_down_injector"]),
    );
    row("bytes-up", "Sent to peers", bytes(&status["bytes_up"]));
    row(
        "delay",
        "Delay behind the injector",
        status["lag_ms"]
            .as_u64()
            .map_or("–".into(), |ms| format!("{:.1} s", ms as f64 / 1000.0)),
    );
    row(
        "buffer",
        "Buffer",
        buffer_pieces(status).map_or("–".into(), |n| format!("{n} pieces")),
    );
    for (key, name) in [
        ("pieces_received", "Pieces received"),
        ("pieces_missed", "Pieces missed"),
        ("pieces_late", "Pieces late"),
        ("request_timeouts", "Request timeouts"),
        ("continuity", "Continuity"),
        ("showing", "Screen shows"),
        ("slate", "Slate"),
        ("decoder", "Decoder"),
        ("frames_rendered", "Frames rendered"),
    ] {
        if let Some(v) = status.get(key) {
            row(&key.replace('_', "-"), name, field(v));
        }
    }
    p.push_str("</table>");

    let minutes = HISTORY_LEN as u64 * SAMPLE_EVERY.as_secs() / 60;
    let _ = write!(
        p,
        "<h2>Delay behind the injector (s), last {minutes} minutes</h2>{}\
         <h2>Buffer (pieces), last {minutes} minutes</h2>{}",
        chart("delay-chart", history, now, |s| {
            s.delay_ms.map(|ms| ms as f64 / 1000.0)
        }),
        chart("buffer-chart", history, now, |s| {
            s.buffer_pieces.map(|n| n as f64)
        }),
    );

    p.push_str("<h2>Settings in effect</h2><table id=\"settings\">");
    for (name, value) in settings.iter() {
        let _ = write!(
            p,
            "<tr><th>{}</th><td>{}</td></tr>",
            text(name),
            text(value)
        );
    }
    p.push_str(
        "</table><p class=\"none\">No snapshot of the screen: the receiver keeps none in \
         memory (see <code>--snapshot</code>).</p>\
         <footer><a href=\"/status\">/status</a> (JSON) · <a href=\"/metrics\">/metrics</a> \
         (Prometheus)</footer></body></html>",
    );
    p
}

/// A line chart of one value over the history window, newest at the right; a gap where the
/// value was unknown. Scaled to the window's largest value.
fn chart(
    id: &str,
    history: &History,
    now: Instant,
    value: impl Fn(&Sample) -> Option<f64>,
) -> String {
    let window = SAMPLE_EVERY.as_secs_f64() * HISTORY_LEN as f64;
    let points: Vec<Option<(f64, f64)>> = history
        .samples()
        .map(|s| {
            let age = now.saturating_duration_since(s.at).as_secs_f64();
            value(s)
                .filter(|v| v.is_finite() && *v >= 0.0 && age <= window)
                .map(|v| (CHART_W * (1.0 - age / window), v))
        })
        .collect();
    let max = points.iter().flatten().map(|p| p.1).fold(0.0, f64::max);
    let top = if max > 0.0 { max * 1.1 } else { 1.0 };
    let mut svg = format!(
        "<svg id=\"{id}\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{CHART_W}\" \
         height=\"{h}\" viewBox=\"0 0 {CHART_W} {h}\" role=\"img\">\
         <text x=\"4\" y=\"14\" font-size=\"12\" fill=\"#666\">{top:.1}</text>\
         <text x=\"4\" y=\"{base}\" font-size=\"12\" fill=\"#666\">0</text>\
         <text x=\"{right}\" y=\"{base}\" font-size=\"12\" fill=\"#666\" \
         text-anchor=\"end\">now</text>",
        h = CHART_H + 2.0,
        base = CHART_H - 2.0,
        right = CHART_W - 4.0,
    );
    // One polyline per run of known values.
    for run in points.split(Option::is_none).filter(|r| !r.is_empty()) {
        svg.push_str("<polyline fill=\"none\" stroke=\"#1565c0\" stroke-width=\"2\" points=\"");
        for (x, v) in run.iter().flatten() {
            let y = 1.0 + CHART_H * (1.0 - v / top);
            let _ = write!(svg, "{x:.1},{y:.1} ");
        }
        svg.push_str("\"/>");
    }
    if points.iter().all(Option::is_none) {
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" font-size=\"13\" fill=\"#888\" text-anchor=\"middle\">no \
             samples yet</text>",
            CHART_W / 2.0,
            CHART_H / 2.0
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn escape_leaves_no_markup() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(escape("plain äö"), "plain äö");
        // Long text is cut on a character boundary, then escaped.
        let long = "é<".repeat(MAX_TEXT);
        let t = text(&long);
        assert!(t.ends_with('…') && !t.contains('<'));
        assert_eq!(t.matches("&lt;").count(), MAX_TEXT / 2);
    }

    #[test]
    fn hostile_status_and_settings_are_shown_as_text() {
        let st = serde_json::json!({
            "role": "receiver<i>", "state": "\"><script>x()</script>",
            "last_error": "<img src=x onerror=alert(1)>", "waiting_for": "a & <b>",
            "peers": "<q>", "decoder": {"<k>": "</td>"},
        });
        let settings = vec![("venue".to_string(), "<iframe src=//evil>".to_string())];
        let page = render(&st, &History::default(), &settings, Instant::now());
        for bad in [
            "<script", "<img", "<b>", "<iframe", "<q>", "<k>", "</td>\"", "<i>",
        ] {
            assert!(!page.contains(bad), "{bad} in {page}");
        }
        assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;"));
        assert!(page.contains("&lt;iframe src=//evil&gt;"));
        // An unknown state gets no class of its own.
        assert!(page.contains("class=\"state \""), "{page}");
    }

    #[test]
    fn the_page_shows_state_figures_and_a_chart_of_the_samples() {
        let now = Instant::now();
        let mut h = History::default();
        let st = serde_json::json!({"role": "receiver", "state": "playing", "peers": 4,
            "lag_ms": 1500, "newest_seq": 130, "output_seq": 100, "bytes_down": 3 << 20});
        let page = render(&st, &h, &vec![], now);
        assert!(page.contains("id=\"state\" class=\"state playing\">playing<"));
        assert!(page.contains("<td id=\"peers\">4</td>"));
        assert!(page.contains("3.0 MiB"));
        assert!(page.contains("no samples yet") && !page.contains("<polyline"));
        for i in (0..5u64).rev() {
            h.push(Sample::of(now - Duration::from_secs(i), &st));
        }
        // A gap (unknown delay) splits the line.
        h.push(Sample {
            at: now,
            delay_ms: None,
            buffer_pieces: None,
        });
        h.push(Sample::of(now, &st));
        let page = render(&st, &h, &vec![], now);
        let delay = &page[page.find("id=\"delay-chart\"").unwrap()..];
        let delay = &delay[..delay.find("</svg>").unwrap()];
        assert_eq!(delay.matches("<polyline").count(), 2, "{delay}");
        assert!(
            delay.contains(&format!("{:.1},", CHART_W)),
            "newest at the right: {delay}"
        );
        // Samples older than the window are not drawn.
        let mut old = History::default();
        old.push(Sample::of(now - Duration::from_secs(3600), &st));
        assert!(!render(&st, &old, &vec![], now).contains("<polyline"));
    }
}
