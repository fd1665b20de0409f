//! `nordlys simulate SCENARIO.toml`: the real core and injector for a whole audience, in
//! virtual time (`nordlys_proto::sim::scenario`), with a JSON report and SVG charts.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;

use crate::sim::Congestion;
use crate::sim::scenario::{Report, Scenario};

#[derive(clap::Args, Debug)]
pub struct SimulateArgs {
    /// Scenario file (TOML; every key is optional, see `scenarios/`).
    pub scenario: PathBuf,
    /// Write report.json and the charts (SVG) into this directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also run the scenario with these audience sizes (receivers), for the chart of origin
    /// copies versus audience size. Comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub sweep: Vec<usize>,
    /// Use this seed instead of the file's.
    #[arg(long, conflicts_with = "seeds")]
    pub seed: Option<u64>,
    /// Run once per seed (comma-separated, two at a time) and summarise across them: one
    /// seed's figures swing by several points. With --out, each run's report goes into
    /// DIR/seed-N.
    #[arg(long, value_delimiter = ',', conflicts_with = "sweep")]
    pub seeds: Vec<u64>,
    /// Push along this many substreams instead of the file's `substreams` (0: pull only).
    #[arg(long)]
    pub substreams: Option<u8>,
    /// Every node's TCP congestion control instead of the file's `congestion`: `cubic`
    /// (loss-based, the kernel's usual default) or `bbr` (what nordlys asks for).
    #[arg(long, value_parser = parse_congestion)]
    pub congestion: Option<Congestion>,
}

fn parse_congestion(s: &str) -> Result<Congestion, String> {
    match s {
        "cubic" => Ok(Congestion::Cubic),
        "bbr" => Ok(Congestion::Bbr),
        _ => Err("cubic or bbr".into()),
    }
}

/// Scenario files larger than this are refused before parsing.
const MAX_SCENARIO_BYTES: u64 = 1 << 20;

pub fn main(args: &SimulateArgs) -> ExitCode {
    match simulate(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nordlys: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn read_scenario(path: &Path) -> anyhow::Result<Scenario> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    anyhow::ensure!(
        len <= MAX_SCENARIO_BYTES,
        "{} is over 1 MiB",
        path.display()
    );
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let sc: Scenario =
        toml::from_str(&text).with_context(|| format!("{} is not a scenario", path.display()))?;
    if let Some((key, expected)) = out_of_range(&sc).into_iter().next() {
        anyhow::bail!("{}: {}", path.display(), where_is(&text, key, expected));
    }
    Ok(sc)
}

/// The first key whose value the simulator cannot run with, and what it accepts. The core
/// checks these too, but its refusal names neither the key nor the line.
fn out_of_range(sc: &Scenario) -> Vec<(&'static str, &'static str)> {
    let share = |x: f64| (0.0..=1.0).contains(&x);
    let positive = |x: f64| x.is_finite() && x > 0.0;
    let [rtt_lo, rtt_hi] = sc.rtt_ms;
    [
        (
            "duration_s",
            positive(sc.duration_s) && sc.duration_s <= 86_400.0,
            "seconds above 0, at most 86400",
        ),
        ("bitrate_kbit", sc.bitrate_kbit > 0, "kbit/s above 0"),
        (
            "piece_bytes",
            (564..=1 << 20).contains(&sc.piece_bytes),
            "bytes from 564 to 1048576",
        ),
        (
            "keyframe_every_s",
            positive(sc.keyframe_every_s),
            "seconds above 0",
        ),
        (
            "receivers",
            (1..=MAX_RECEIVERS).contains(&sc.receivers),
            "a whole number from 1 to 100000",
        ),
        (
            "seedboxes",
            sc.seedboxes <= 1000,
            "a whole number from 0 to 1000",
        ),
        (
            "join_from_s",
            sc.join_from_s.is_finite() && sc.join_from_s >= 0.0,
            "seconds, 0 or more",
        ),
        (
            "join_over_s",
            sc.join_over_s.is_finite() && sc.join_over_s >= 0.0,
            "seconds, 0 or more",
        ),
        (
            "rtt_ms",
            rtt_lo >= 0.0 && rtt_hi >= rtt_lo && rtt_hi <= 10_000.0,
            "[low, high] in milliseconds with 0 <= low <= high <= 10000",
        ),
        (
            "loss",
            (0.0..0.5).contains(&sc.loss),
            "a share from 0 up to (not including) 0.5",
        ),
        (
            "not_dialable",
            share(sc.not_dialable),
            "a share from 0 to 1",
        ),
        ("no_upload", share(sc.no_upload), "a share from 0 to 1"),
        ("churn", share(sc.churn), "a share from 0 to 1"),
        (
            "substreams",
            sc.substreams <= 64,
            "a whole number from 0 (pull only) to 64",
        ),
        (
            "upload_x",
            positive(sc.upload_x),
            "a multiple of the bitrate above 0",
        ),
        (
            "seedbox_upload_x",
            positive(sc.seedbox_upload_x),
            "a multiple of the bitrate above 0",
        ),
        (
            "injector_upload_x",
            positive(sc.injector_upload_x),
            "a multiple of the bitrate above 0",
        ),
        ("tracker_sample", sc.tracker_sample > 0, "peers, at least 1"),
        ("reannounce_s", sc.reannounce_s > 0, "seconds, at least 1"),
    ]
    .into_iter()
    .filter(|(_, ok, _)| !ok)
    .map(|(key, _, expected)| (key, expected))
    .collect()
}

/// The most receivers a scenario (or --sweep) may have.
const MAX_RECEIVERS: usize = 100_000;

/// "line L, column C: `key` = VALUE is out of range; expected ...", from the file's text.
fn where_is(text: &str, key: &str, expected: &str) -> String {
    let found = toml_edit::ImDocument::parse(text).ok().and_then(|doc| {
        let item = doc.get(key)?;
        let value = item.as_value()?;
        let span = value.span()?;
        let shown = text.get(span.clone())?.trim().to_string();
        let (line, column) = crate::appliance::config::line_col(text, span.start);
        Some(format!("line {line}, column {column}: `{key}` = {shown}"))
    });
    // A key left out has its default, which is in range: only a value in the file gets here.
    let at = found.unwrap_or_else(|| format!("`{key}`"));
    format!("{at} is out of range; expected {expected}")
}

/// One run: the report, its wall time in seconds.
fn run(sc: &Scenario) -> anyhow::Result<(Report, f64)> {
    let t0 = Instant::now();
    let mut sim = sc.build()?;
    sim.run_for(sc.run_time());
    Ok((sc.report(&sim), t0.elapsed().as_secs_f64()))
}

fn simulate(args: &SimulateArgs) -> anyhow::Result<()> {
    let mut sc = read_scenario(&args.scenario)?;
    if let Some(&bad) = (args.sweep.iter()).find(|&&n| !(1..=MAX_RECEIVERS).contains(&n)) {
        anyhow::bail!(
            "--sweep {bad} is out of range; expected audience sizes from 1 to {MAX_RECEIVERS}"
        );
    }
    if let Some(c) = args.congestion {
        sc.congestion = c;
    }
    if let Some(k) = args.substreams {
        sc.substreams = k;
    }
    if let Some(seed) = args.seed {
        sc.seed = seed;
    }
    if !args.seeds.is_empty() {
        return over_seeds(&sc, &args.seeds, args.out.as_deref());
    }
    let (report, wall) = run(&sc)?;
    print_summary(&report, wall);
    let mut sweep = Vec::new();
    for &receivers in &args.sweep {
        let (r, wall) = run(&Scenario {
            receivers,
            ..sc.clone()
        })?;
        println!("--- {receivers} receivers");
        print_summary(&r, wall);
        sweep.push(r);
    }
    if let Some(dir) = &args.out {
        write_outputs(dir, &report, &sweep)?;
        println!("wrote {}", dir.display());
    }
    Ok(())
}

/// Runs `sc` once per seed, two at a time, and prints each run's summary and the spread.
fn over_seeds(sc: &Scenario, seeds: &[u64], out: Option<&Path>) -> anyhow::Result<()> {
    let mut runs: Vec<(Report, f64)> = Vec::new();
    for pair in seeds.chunks(2) {
        let results: Vec<anyhow::Result<(Report, f64)>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (pair.iter())
                .map(|&seed| scope.spawn(move || run(&Scenario { seed, ..sc.clone() })))
                .collect();
            (handles.into_iter())
                .map(|h| h.join().expect("a simulation thread panicked"))
                .collect()
        });
        for r in results {
            runs.push(r?);
        }
    }
    for (report, wall) in &runs {
        println!("--- seed {}", report.scenario.seed);
        print_summary(report, *wall);
        if let Some(dir) = out {
            let dir = dir.join(format!("seed-{}", report.scenario.seed));
            write_outputs(&dir, report, &[])?;
        }
    }
    let figure = |f: &dyn Fn(&Report) -> f64| {
        let v: Vec<f64> = runs.iter().map(|(r, _)| f(r)).collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let (lo, hi) = (
            v.iter().cloned().fold(f64::INFINITY, f64::min),
            v.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
        );
        (mean, lo, hi)
    };
    let (share, share_lo, share_hi) = figure(&|r| r.summary.continuity_995 * 100.0);
    let (mean, mean_lo, mean_hi) = figure(&|r| r.summary.continuity_mean);
    let (delay, delay_lo, delay_hi) =
        figure(&|r| r.summary.delay_median_ms.unwrap_or(0) as f64 / 1000.0);
    let (origin, origin_lo, origin_hi) = figure(&|r| r.summary.origin_copies);
    println!("=== over {} seeds: mean (lowest to highest)", runs.len());
    println!(
        "continuity >= 0.995: {share:.1} % ({share_lo:.1} to {share_hi:.1}); mean continuity {mean:.3} ({mean_lo:.3} to {mean_hi:.3})"
    );
    println!(
        "median delay {delay:.2} s ({delay_lo:.2} to {delay_hi:.2}); origin {origin:.2} copies ({origin_lo:.2} to {origin_hi:.2})"
    );
    if let Some(dir) = out {
        println!("wrote {}/seed-N", dir.display());
    }
    Ok(())
}

fn ms(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| format!("{v} ms"))
}

fn print_summary(r: &Report, wall: f64) {
    let s = &r.summary;
    println!(
        "{} receivers, {:.0} s of stream at {} kbit/s (seed {})",
        s.receivers, r.scenario.duration_s, r.scenario.bitrate_kbit, r.scenario.seed
    );
    println!(
        "continuity >= 0.995: {:.1} % of receivers, >= 0.999: {:.1} %, worst {:.3}, mean {:.3}",
        s.continuity_995 * 100.0,
        s.continuity_999 * 100.0,
        s.continuity_min,
        s.continuity_mean
    );
    println!(
        "upload in copies of the stream: origin {:.2}, seedboxes {:.2}, receivers {:.2}",
        s.origin_copies, s.seedbox_copies, s.receiver_copies
    );
    println!(
        "first byte out after joining: median {}, p95 {}; never started: {}",
        ms(s.startup_median_ms),
        ms(s.startup_p95_ms),
        s.never_started
    );
    println!(
        "the start, medians: first announcement heard {}, hook piece chosen {}, first byte {}",
        ms(s.first_told_median_ms),
        ms(s.hooked_median_ms),
        ms(s.startup_median_ms),
    );
    println!(
        "delay behind the injector: median {}, p95 {}",
        ms(s.delay_median_ms),
        ms(s.delay_p95_ms)
    );
    let m = s.missed_since_join;
    println!(
        "pieces skipped by time since joining: 0-5 s {}, 5-10 s {}, 10-15 s {}, later {}; \
         requests timed out before the first output: {:.1} per receiver",
        m[0], m[1], m[2], m[3], s.request_timeouts_at_start_mean
    );
    if r.scenario.substreams > 0 {
        println!(
            "push along {} substreams: {:.1} % of pieces pushed, {:.1} subscriptions per receiver",
            r.scenario.substreams,
            s.pushed_share * 100.0,
            s.parent_changes_mean
        );
    }
    println!(
        "{:.0} s simulated in {wall:.1} s of wall time ({:.1}x real time), {} events, peak memory {}",
        s.sim_seconds,
        s.sim_seconds / wall.max(1e-9),
        s.events,
        peak_memory().map_or("unknown".into(), |kib| format!("{} MiB", kib / 1024)),
    );
}

/// The process's peak resident memory in KiB (VmHWM).
fn peak_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn write_outputs(dir: &Path, report: &Report, sweep: &[Report]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    };
    write("report.json", serde_json::to_string_pretty(report)?)?;
    let receivers: Vec<_> = (report.peers.iter())
        .filter(|p| p.role == crate::swarm::Role::Receiver)
        .collect();
    let cdf = |values: Vec<f64>| {
        let mut v = values;
        v.sort_by(f64::total_cmp);
        let n = v.len().max(1) as f64;
        (v.iter().enumerate())
            .map(|(i, &x)| (x, (i + 1) as f64 / n))
            .collect::<Vec<_>>()
    };
    let continuity = cdf(receivers.iter().map(|p| p.continuity).collect());
    write(
        "continuity.svg",
        chart(
            "Continuity per receiver (share of receivers at or below)",
            "continuity",
            "share of receivers",
            &[("receivers", continuity)],
        ),
    )?;
    let startup = cdf(receivers
        .iter()
        .filter_map(|p| p.startup_ms.map(|v| v as f64))
        .collect());
    write(
        "startup.svg",
        chart(
            "First byte out after joining",
            "ms",
            "share of receivers",
            &[("receivers", startup)],
        ),
    )?;
    let delay = cdf(receivers
        .iter()
        .filter_map(|p| p.delay_ms.map(|v| v as f64))
        .collect());
    write(
        "delay.svg",
        chart(
            "Median delay behind the injector, per receiver",
            "ms",
            "share of receivers",
            &[("receivers", delay)],
        ),
    )?;
    if !sweep.is_empty() {
        let mut all: Vec<&Report> = sweep.iter().chain([report]).collect();
        all.sort_by_key(|r| r.summary.receivers);
        let points = |f: fn(&Report) -> f64| {
            (all.iter())
                .map(|r| (r.summary.receivers as f64, f(r)))
                .collect::<Vec<_>>()
        };
        write(
            "origin-vs-audience.svg",
            chart(
                "Origin upload versus audience size",
                "receivers",
                "copies of the stream",
                &[
                    ("origin", points(|r| r.summary.origin_copies)),
                    ("seedboxes", points(|r| r.summary.seedbox_copies)),
                    ("all receivers", points(|r| r.summary.receiver_copies)),
                ],
            ),
        )?;
    }
    Ok(())
}

/// A plain SVG line chart: axes with min and max marked, one polyline per series.
fn chart(title: &str, x_label: &str, y_label: &str, series: &[(&str, Vec<(f64, f64)>)]) -> String {
    const W: f64 = 640.0;
    const H: f64 = 400.0;
    const M: f64 = 60.0;
    const COLOURS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];
    let pts = series.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, 0.0f64, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y1) = (0.0, 1.0, 1.0);
    }
    if x1 - x0 < 1e-9 {
        x1 = x0 + 1.0;
    }
    if y1 - y0 < 1e-9 {
        y1 = y0 + 1.0;
    }
    let sx = |x: f64| M + (x - x0) / (x1 - x0) * (W - 2.0 * M);
    let sy = |y: f64| H - M - (y - y0) / (y1 - y0) * (H - 2.0 * M);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>
<line x1="{M}" y1="{}" x2="{}" y2="{}" stroke="black"/>
<line x1="{M}" y1="{M}" x2="{M}" y2="{}" stroke="black"/>
<text x="{}" y="{}" text-anchor="middle">{}</text>
<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">{}</text>
"#,
        W / 2.0,
        escape(title),
        H - M,
        W - M,
        H - M,
        H - M,
        W / 2.0,
        H - 16.0,
        escape(x_label),
        H / 2.0,
        H / 2.0,
        escape(y_label),
    );
    // Five ticks on each axis, with light grid lines.
    for k in 0..=4 {
        let f = k as f64 / 4.0;
        let (x, y) = (x0 + f * (x1 - x0), y0 + f * (y1 - y0));
        let _ = writeln!(
            svg,
            r##"<line x1="{0:.1}" y1="{M}" x2="{0:.1}" y2="{1}" stroke="#ddd"/><text x="{0:.1}" y="{2}" text-anchor="middle">{3}</text>"##,
            sx(x),
            H - M,
            H - M + 16.0,
            fmt_num(x)
        );
        let _ = writeln!(
            svg,
            r##"<line x1="{M}" y1="{0:.1}" x2="{1}" y2="{0:.1}" stroke="#ddd"/><text x="{2}" y="{3:.1}" text-anchor="end">{4}</text>"##,
            sy(y),
            W - M,
            M - 6.0,
            sy(y) + 4.0,
            fmt_num(y)
        );
    }
    for (k, (name, points)) in series.iter().enumerate() {
        let colour = COLOURS[k % COLOURS.len()];
        let path: Vec<String> = (points.iter())
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" fill="{colour}">{}</text>"#,
            W - M - 90.0,
            M + 16.0 * k as f64,
            escape(name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn fmt_num(v: f64) -> String {
    if v.abs() >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_is_svg_with_one_polyline_per_series() {
        let svg = chart(
            "a <b>",
            "x",
            "y",
            &[("one", vec![(0.0, 0.0), (1.0, 1.0)]), ("two", vec![])],
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("a &lt;b&gt;"));
    }

    #[test]
    fn scenario_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "receivers = 5\nno_such_knob = 1\n").unwrap();
        let err = format!("{:#}", read_scenario(&bad).unwrap_err());
        assert!(err.contains("no_such_knob"), "{err}");
        let good = dir.path().join("good.toml");
        std::fs::write(&good, "receivers = 5\nloss = 0.01\n").unwrap();
        let sc = read_scenario(&good).unwrap();
        assert_eq!((sc.receivers, sc.loss), (5, 0.01));
    }
}
