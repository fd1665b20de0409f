//! The status page (`GET /`) and `GET /metrics` of a receiver that plays: they say what
//! `/status` says, the page charts the samples it took, the metrics parse as Prometheus
//! text, and headless Chromium renders the page (non-blank, the state in its DOM).

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{http_get, http_status, make_event, nordlys, wait_printed_addr, wait_status};

/// Killed when dropped, so a failing assertion leaves no process behind.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(args: &[&str], stdout: &Path) -> Proc {
    Proc(
        Command::new(nordlys())
            .args(args)
            .stdout(std::fs::File::create(stdout).unwrap())
            .stderr(std::fs::File::create(stdout.with_extension("log")).unwrap())
            .spawn()
            .expect("start nordlys"),
    )
}

/// Series (`name{labels}`) to value, checking every line is Prometheus text format 0.0.4:
/// `# HELP`/`# TYPE` comments, then `name{label="value",...} value` samples of a declared
/// metric. Panics on anything else.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let is_name = |n: &str| {
        !n.is_empty()
            && !n.starts_with(|c: char| c.is_ascii_digit())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut typed = HashMap::new();
    let mut series = HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert!(is_name(name), "{line}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            typed.insert(name.to_string(), kind.to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            assert!(is_name(rest.split(' ').next().unwrap()), "{line}");
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment: {line}");
        let (key, value) = line.rsplit_once(' ').expect("a sample: name value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
        let name = match key.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').expect("labels close");
                for l in labels.split(',') {
                    let (k, v) = l.split_once('=').expect("label=value");
                    assert!(is_name(k), "{line}");
                    assert!(
                        v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                        "{line}"
                    );
                }
                name
            }
            None => key,
        };
        assert!(is_name(name), "{line}");
        assert!(typed.contains_key(name), "sample before its # TYPE: {line}");
        assert!(
            series.insert(key.to_string(), value).is_none(),
            "twice: {line}"
        );
    }
    series
}

/// The points of the first polyline in the chart `id` of the page.
fn chart_points(page: &str, id: &str) -> usize {
    let Some(at) = page.find(&format!("<svg id=\"{id}\"")) else {
        return 0;
    };
    let svg = &page[at..];
    let svg = &svg[..svg.find("</svg>").unwrap_or(svg.len())];
    svg.split("points=\"")
        .skip(1)
        .map(|p| p[..p.find('"').unwrap()].split_whitespace().count())
        .sum()
}

#[test]
fn the_page_and_metrics_say_what_status_says() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = nordlys::test_media::ts_file(nordlys::test_media::Spec::new("h264", 320, 180, 20));
    let (key, torrent) = make_event(d, None);
    let (key, torrent, input) = (
        key.to_str().unwrap(),
        torrent.to_str().unwrap(),
        input.to_str().unwrap(),
    );
    let inj_out = d.join("inject.out");
    let mut inj = start(
        &[
            "inject",
            "--torrent",
            torrent,
            "--key",
            key,
            "--input",
            input,
            "--listen",
            "127.0.0.1:0",
            "--linger",
            "2",
        ],
        &inj_out,
    );
    let inj_addr = wait_printed_addr(
        &mut inj.0,
        &inj_out,
        "injecting on ",
        "",
        Duration::from_secs(15),
    )
    .to_string();
    let rx_out = d.join("rx.out");
    let out_ts = d.join("out.ts");
    let mut rx = start(
        &[
            "receive",
            "--torrent",
            torrent,
            "--peer",
            &inj_addr,
            "--listen",
            "127.0.0.1:0",
            "--output",
            out_ts.to_str().unwrap(),
            "--latency",
            "1000",
            "--status-addr",
            "127.0.0.1:0",
            "--venue",
            "<b>Hall</b> & 'Co'",
        ],
        &rx_out,
    );
    let port = wait_printed_addr(
        &mut rx.0,
        &rx_out,
        "status on http://",
        "/status",
        Duration::from_secs(15),
    )
    .port();
    wait_status(port, Duration::from_secs(15), "playing", |s| {
        s["state"] == "playing" && s["lag_ms"].is_u64()
    });
    // Samples are taken once a second: wait for a line of a few of them.
    let deadline = Instant::now() + Duration::from_secs(6);
    let page = loop {
        let (_, page) = http_get(port, "/").expect("GET /");
        if chart_points(&page, "delay-chart") >= 3 && chart_points(&page, "buffer-chart") >= 3 {
            break page;
        }
        assert!(Instant::now() < deadline, "no chart of 3 samples: {page}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(page.starts_with("<!doctype html>"), "{page}");
    assert!(page.contains("<polyline"), "{page}");
    // The venue, from the command line, is shown as text, not markup.
    assert!(
        page.contains("&lt;b&gt;Hall&lt;/b&gt; &amp; &#39;Co&#39;") && !page.contains("<b>Hall"),
        "{page}"
    );

    // /status before and after /, /metrics: compared where the two agree (peers and
    // counters move while it plays).
    let mut compared = false;
    for _ in 0..20 {
        let before = http_status(port).expect("/status");
        let (head, page) = http_get(port, "/").expect("GET /");
        let (mhead, metrics) = http_get(port, "/metrics").expect("GET /metrics");
        let after = http_status(port).expect("/status");
        if before["state"] != after["state"] || before["peers"] != after["peers"] {
            continue;
        }
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/html"),
            "{head}"
        );
        assert!(
            (mhead.to_ascii_lowercase()).contains("content-type: text/plain; version=0.0.4"),
            "{mhead}"
        );
        let state = before["state"].as_str().unwrap();
        let peers = before["peers"].as_u64().unwrap();
        assert!(
            page.contains(&format!(
                "id=\"state\" class=\"state {state}\">{state}</span>"
            )),
            "state {state} not on the page: {page}"
        );
        assert!(
            page.contains(&format!("<td id=\"peers\">{peers}</td>")),
            "{peers} peers not on the page: {page}"
        );
        let m = parse_prometheus(&metrics);
        let states: Vec<(&String, &f64)> = m
            .iter()
            .filter(|(k, _)| k.starts_with("nordlys_state{"))
            .collect();
        assert_eq!(states.len(), 6, "{metrics}");
        assert_eq!(
            states.iter().filter(|(_, v)| **v == 1.0).count(),
            1,
            "{metrics}"
        );
        assert_eq!(
            m[&format!("nordlys_state{{state=\"{state}\"}}")],
            1.0,
            "{metrics}"
        );
        assert_eq!(m["nordlys_peers"], peers as f64, "{metrics}");
        let between = |metric: &str, field: &str| {
            let (lo, hi) = (
                before[field].as_u64().unwrap(),
                after[field].as_u64().unwrap(),
            );
            let v = m[metric];
            assert!(
                lo as f64 <= v && v <= hi as f64,
                "{metric} {v} not within /status's {field} {lo}..={hi}"
            );
        };
        between("nordlys_received_bytes_total", "bytes_down");
        // The receiver's only peer is the injector: all it received came from there.
        between(
            "nordlys_received_from_injector_bytes_total",
            "bytes_down_injector",
        );
        assert_eq!(after["bytes_down_injector"], after["bytes_down"], "{after}");
        between("nordlys_sent_bytes_total", "bytes_up");
        between("nordlys_pieces_received_total", "pieces_received");
        between("nordlys_pieces_missed_total", "pieces_missed");
        between("nordlys_pieces_late_total", "pieces_late");
        between("nordlys_request_timeouts_total", "request_timeouts");
        assert!(m["nordlys_received_bytes_total"] > 0.0, "{metrics}");
        let delay = m["nordlys_delay_seconds"];
        assert!((0.0..30.0).contains(&delay), "{metrics}");
        assert!(m.contains_key("nordlys_buffer_pieces"), "{metrics}");
        let c = m["nordlys_continuity_ratio"];
        assert!((0.0..=1.0).contains(&c), "{metrics}");
        compared = true;
        break;
    }
    assert!(compared, "/status never held still for one comparison");
    eprintln!("page and metrics checked after {:?}", t0.elapsed());

    chromium_renders(port, d);
    eprintln!("test took {:?}", t0.elapsed());
}

/// Headless Chromium loads the page: its DOM holds the state, its screenshot is not blank.
fn chromium_renders(port: u16, dir: &Path) {
    let t = Instant::now();
    let url = format!("http://127.0.0.1:{port}/");
    let chromium = |args: &[&str]| {
        let out = Command::new("chromium")
            // As root, Chromium needs --no-sandbox; no GPU on CI machines.
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
            ])
            .arg(format!(
                "--user-data-dir={}",
                dir.join("chromium").display()
            ))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("chromium runs (scripts/setup installs it)");
        assert!(
            out.status.success(),
            "chromium {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dom = chromium(&["--dump-dom", &url]);
    let state = http_status(port).unwrap()["state"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        dom.contains("id=\"state\"") && dom.contains("<svg id=\"delay-chart\""),
        "{dom}"
    );
    // The state may have moved on between the two requests: any known state, shown.
    assert!(
        ["playing", "stalled", "ended", "buffering"]
            .iter()
            .any(|s| dom.contains(&format!("\">{s}</span>"))),
        "no state in the DOM (status says {state}): {dom}"
    );
    let shot = dir.join("page.png");
    chromium(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=800,900",
        "--hide-scrollbars",
        &url,
    ]);
    // For a look by eye, as the player's tests do: NORDLYS_KEEP_SNAPSHOTS=DIR keeps a copy.
    if let Some(keep) = std::env::var_os("NORDLYS_KEEP_SNAPSHOTS") {
        let _ = std::fs::copy(&shot, Path::new(&keep).join("status-page.png"));
        let _ = std::fs::write(Path::new(&keep).join("status-page.html"), &dom);
    }
    let (mean, spread, colour) = png_stats(&shot);
    eprintln!(
        "chromium: {:?}; screenshot mean luma {mean:.0}, spread {spread:.0}, colour {colour:.4}",
        t.elapsed()
    );
    assert!(
        spread > 20.0,
        "the screenshot is blank: luma {mean:.0} ± {spread:.0}"
    );
    // The state's coloured badge and the chart's blue line.
    assert!(
        colour > 0.001,
        "nothing coloured in the screenshot: {colour}"
    );
}

/// Mean and standard deviation of the luma, and the share of coloured pixels, of a PNG
/// (decoded by ffmpeg, which the suite has).
fn png_stats(path: &Path) -> (f64, f64, f64) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .expect("ffmpeg");
    assert!(
        out.status.success() && !out.stdout.is_empty(),
        "cannot decode {}",
        path.display()
    );
    let px: Vec<&[u8]> = out.stdout.chunks_exact(3).collect();
    let n = px.len() as f64;
    let luma: Vec<f64> = (px.iter())
        .map(|p| 0.299 * p[0] as f64 + 0.587 * p[1] as f64 + 0.114 * p[2] as f64)
        .collect();
    let mean = luma.iter().sum::<f64>() / n;
    let var = luma.iter().map(|y| (y - mean).powi(2)).sum::<f64>() / n;
    let colour = (px.iter())
        .filter(|p| p.iter().max().unwrap() - p.iter().min().unwrap() > 60)
        .count() as f64
        / n;
    (mean, var.sqrt(), colour)
}
