//! `nordlys doctor`: what this machine has and lacks for a role, one line a check, with the
//! fix. The GStreamer checks come from the same [`Need`] lists the pipelines are built from
//! (see [`crate::gst_elements`]); devices are read from the kernel (see [`devices`]).

pub mod devices;

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::appliance::config::{self, Config};
use crate::gst_elements::{self as elements, Need};
use crate::player::{AudioSink, DecoderPref, VideoCodec, VideoSink};

/// How a check came out. Only `Missing` fails the doctor: it is something the role needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Missing,
    Warn,
    Info,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Missing => "MISSING",
            Status::Warn => "WARN",
            Status::Info => "INFO",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    pub area: &'static str,
    pub name: String,
    pub status: Status,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// The role the machine is checked for.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DoctorRole {
    Receive,
    Inject,
    Seed,
    Tracker,
}

/// What to check.
#[derive(Debug, Clone)]
pub struct Settings {
    pub role: DoctorRole,
    /// The receiver's config file (its sinks, decoder, LEDs, trackers and peers win over
    /// the options below).
    pub config: Option<PathBuf>,
    /// The injector's `--input`.
    pub input: Option<String>,
    pub video_sink: VideoSink,
    pub audio_sink: AudioSink,
    pub decoder: DecoderPref,
    /// A torrent whose trackers are probed.
    pub torrent: Option<PathBuf>,
    /// Probe trackers and peers over the network.
    pub network: bool,
    /// Open the configured LED backend (not while a receiver drives the LEDs).
    pub leds: bool,
    /// Where devices are looked up (`/` on a real machine).
    pub root: PathBuf,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub role: DoctorRole,
    pub ok: bool,
    pub checks: Vec<Check>,
}

impl Report {
    /// One line a check: `STATUS  area  name: detail (fix: ...)`.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            let _ = write!(
                out,
                "{:<8} {:<8} {}: {}",
                c.status.label(),
                c.area,
                c.name,
                c.detail
            );
            if let Some(fix) = &c.fix {
                let _ = write!(out, " (fix: {fix})");
            }
            out.push('\n');
        }
        let missing = self.missing().count();
        let _ = writeln!(
            out,
            "{}",
            if missing == 0 {
                format!("doctor: everything the {:?} role needs is here", self.role).to_lowercase()
            } else {
                format!("doctor: {missing} thing(s) the role needs are missing")
            }
        );
        out
    }

    pub fn missing(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.status == Status::Missing)
    }
}

fn check(
    area: &'static str,
    name: impl Into<String>,
    status: Status,
    detail: impl Into<String>,
) -> Check {
    Check {
        area,
        name: name.into(),
        status,
        detail: detail.into(),
        fix: None,
    }
}

/// One line per element of `needs` (each element once, with every use that makes it), and
/// one per `any` group. `required`: a lack is `Missing`, else `Warn`.
pub fn element_checks(needs: &[Need], available: &[&str], required: bool) -> Vec<Check> {
    let lack = if required {
        Status::Missing
    } else {
        Status::Warn
    };
    let mut out: Vec<Check> = Vec::new();
    for need in needs {
        for e in need.all {
            if let Some(c) = out
                .iter_mut()
                .find(|c| c.area == "element" && c.name == e.factory)
            {
                if !c.detail.contains(need.what) {
                    c.detail.push_str(", ");
                    c.detail.push_str(need.what);
                }
                continue;
            }
            let present = available.contains(&e.factory);
            out.push(Check {
                area: "element",
                name: e.factory.to_string(),
                status: if present { Status::Ok } else { lack },
                detail: format!("plugin {}, for {}", e.plugin.name, need.what),
                fix: (!present).then(|| e.fix()),
            });
        }
        for (what, group) in need.any {
            let found = group.iter().find(|e| available.contains(&e.factory));
            let names: Vec<_> = group.iter().map(|e| e.factory).collect();
            out.push(Check {
                area: "element",
                name: what.to_string(),
                status: if found.is_some() { Status::Ok } else { lack },
                detail: match found {
                    Some(e) => {
                        format!("{} (of {}), for {}", e.factory, names.join(", "), need.what)
                    }
                    None => format!("none of {}, for {}", names.join(", "), need.what),
                },
                fix: found
                    .is_none()
                    .then(|| elements::Missing::OneOf(what, group).fix()),
            });
        }
    }
    out
}

/// The video decoder the player would take for each codec. H.264 is what nordlys streams
/// by default, so it is required; H.265 only warns.
pub fn decoder_checks(pref: DecoderPref, available: &[&str]) -> Vec<Check> {
    let none = std::collections::HashSet::new();
    [(VideoCodec::H264, true), (VideoCodec::H265, false)]
        .into_iter()
        .map(|(codec, required)| {
            let name = format!("{} decoder", codec.name());
            match crate::player::choose_decoder(codec, available, pref, &none) {
                Some(c) => check(
                    "decoder",
                    name,
                    Status::Ok,
                    format!(
                        "{} ({})",
                        c.element,
                        if c.hardware { "hardware" } else { "software" }
                    ),
                ),
                None => {
                    let status = if required { Status::Missing } else { Status::Warn };
                    let mut c = check(
                        "decoder",
                        name,
                        status,
                        format!("no usable decoder with preference {pref:?}"),
                    );
                    c.fix = Some(match pref {
                        DecoderPref::Hardware => "set the decoder to auto or software, or use hardware with a V4L2 decoder".into(),
                        _ => elements::Missing::OneOf("decoder", codec.software()).fix(),
                    });
                    c
                }
            }
        })
        .collect()
}

fn device_checks(s: &Settings, video_sink: &VideoSink, audio_sink: &AudioSink) -> Vec<Check> {
    let mut out = Vec::new();
    let dev = s.root.join("dev");
    let v4l2 = devices::v4l2_decoders(&dev);
    if v4l2.is_empty() {
        let pi = crate::appliance::leds::is_raspberry_pi(&s.root);
        out.push(check(
            "v4l2",
            "hardware decoder",
            if pi { Status::Warn } else { Status::Info },
            "no V4L2 M2M decoder device: video is decoded in software",
        ));
    }
    for d in &v4l2 {
        out.push(check(
            "v4l2",
            d.path.clone(),
            Status::Ok,
            format!(
                "{} ({}): {} {}",
                d.card,
                d.driver,
                d.codecs.join(", "),
                if d.stateless { "stateless" } else { "stateful" }
            ),
        ));
    }
    for (path, driver, model) in devices::media_devices(&dev) {
        out.push(check(
            "v4l2",
            path,
            Status::Info,
            format!("media controller {driver} ({model})"),
        ));
    }
    let cards = devices::drm_cards(&s.root.join("sys/class/drm"));
    let kms = matches!(video_sink, VideoSink::Kms { .. });
    let lack = if kms { Status::Missing } else { Status::Info };
    if cards.is_empty() {
        let mut c = check("drm", "display", lack, "no DRM/KMS card in /sys/class/drm");
        if kms {
            c.fix = Some("enable the KMS driver (config.txt: dtoverlay=vc4-kms-v3d)".into());
        }
        out.push(c);
    }
    for card in &cards {
        let connected: Vec<_> = card
            .connectors
            .iter()
            .filter(|(_, on)| *on)
            .map(|(n, _)| n.as_str())
            .collect();
        let status = if !connected.is_empty() {
            Status::Ok
        } else if kms {
            Status::Warn
        } else {
            Status::Info
        };
        let detail = if connected.is_empty() {
            format!("no connected connector (of {})", card.connectors.len())
        } else {
            format!("connected: {}", connected.join(", "))
        };
        out.push(check("drm", card.card.clone(), status, detail));
    }
    let alsa = std::fs::read_to_string(s.root.join("proc/asound/cards"))
        .map(|t| devices::parse_asound_cards(&t))
        .unwrap_or_default();
    let alsa_needed = matches!(audio_sink, AudioSink::Alsa(_));
    if alsa.is_empty() {
        out.push(check(
            "alsa",
            "sound",
            if alsa_needed {
                Status::Missing
            } else {
                Status::Info
            },
            "no ALSA card in /proc/asound/cards",
        ));
    }
    for (index, id, name) in alsa {
        out.push(check(
            "alsa",
            format!("card {index}"),
            Status::Ok,
            format!("{id}: {name}"),
        ));
    }
    out
}

fn config_checks(path: &Path, cfg: &Result<Config, config::ConfigErrors>) -> Check {
    match cfg {
        Ok(_) => check("config", path.display().to_string(), Status::Ok, "valid"),
        Err(e) => {
            let mut c = check(
                "config",
                path.display().to_string(),
                Status::Missing,
                e.to_string().replace('\n', "; "),
            );
            c.fix = Some(format!("nordlys check-config {}", path.display()));
            c
        }
    }
}

fn led_check(cfg: &Config) -> Check {
    match crate::appliance::leds::open_backend(&cfg.leds) {
        Ok((_, _, desc)) if desc.starts_with("no LED backend usable") => {
            check("leds", "backend", Status::Warn, desc)
        }
        Ok((_, _, desc)) => check("leds", "backend", Status::Ok, desc),
        Err(e) => {
            let mut c = check("leds", "backend", Status::Missing, e.to_string());
            c.fix = Some(
                "check [leds] in the config and the gpio group's access to the GPIO chip".into(),
            );
            c
        }
    }
}

/// Host and port of a tracker URL we can probe (http and https).
fn tracker_endpoint(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    let port = u.port_or_known_default()?;
    match u.scheme() {
        "http" | "https" => Some(format!("{}:{port}", u.host_str()?)),
        _ => None,
    }
}

/// Does something accept TCP connections at `endpoint` (`host:port`)?
fn answers(endpoint: &str) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = endpoint
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve: {e}"))?
        .collect();
    let mut last = "no address".to_string();
    for a in addrs.into_iter().take(2) {
        match TcpStream::connect_timeout(&a, Duration::from_secs(2)) {
            Ok(_) => return Ok(a),
            Err(e) => last = format!("{a}: {e}"),
        }
    }
    Err(last)
}

fn network_checks(trackers: &[String], peers: &[String], probe: bool) -> Vec<Check> {
    let mut out = vec![congestion_check(crate::net::tcp::congestion_available())];
    let addrs = crate::player::local_addresses();
    out.push(if addrs.is_empty() {
        let mut c = check(
            "network",
            "addresses",
            Status::Warn,
            "no address but loopback",
        );
        c.fix = Some("connect the network cable; check DHCP".into());
        c
    } else {
        let list: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
        check("network", "addresses", Status::Ok, list.join(", "))
    });
    // Bounded: a config with hundreds of entries must not keep the doctor busy for minutes.
    for (kind, list) in [("tracker", trackers), ("peer", peers)] {
        for target in list.iter().take(8) {
            let endpoint = if kind == "tracker" {
                match tracker_endpoint(target) {
                    Some(e) => e,
                    None => {
                        out.push(check(
                            "network",
                            target.clone(),
                            Status::Info,
                            "not probed (only http and https trackers are)",
                        ));
                        continue;
                    }
                }
            } else {
                target.clone()
            };
            if !probe {
                out.push(check(
                    "network",
                    target.clone(),
                    Status::Info,
                    "not probed (--no-network)",
                ));
                continue;
            }
            out.push(match answers(&endpoint) {
                Ok(a) => check(
                    "network",
                    target.clone(),
                    Status::Ok,
                    format!("{kind} answers at {a}"),
                ),
                Err(e) => {
                    let mut c = check(
                        "network",
                        target.clone(),
                        Status::Warn,
                        format!("{kind} does not answer ({e})"),
                    );
                    c.fix = Some("check the address, the network and the firewall".into());
                    c
                }
            });
        }
    }
    out
}

/// Whether peer connections send with BBR (see `net::tcp`): a warning, since a node works
/// without it, but under packet loss each connection then carries a fraction of the stream.
fn congestion_check(available: Result<(), String>) -> Check {
    use crate::net::tcp::{ALLOW_CONGESTION, CONGESTION};
    match available {
        Ok(()) => check(
            "network",
            "tcp congestion",
            Status::Ok,
            format!("{CONGESTION}: packet loss does not slow the peer connections"),
        ),
        Err(why) => {
            let mut c = check("network", "tcp congestion", Status::Warn, why);
            c.fix = Some(ALLOW_CONGESTION.into());
            c
        }
    }
}

/// Run every check for `s`.
pub fn run(s: &Settings) -> Report {
    let mut checks = Vec::new();
    let cfg_path = match s.role {
        DoctorRole::Receive => config::resolve_path(s.config.as_deref()),
        _ => s.config.clone(),
    };
    let cfg = cfg_path.as_ref().map(|p| (p.clone(), config::load(p)));
    let (mut video_sink, mut audio_sink, mut decoder) =
        (s.video_sink.clone(), s.audio_sink.clone(), s.decoder);
    let mut trackers = Vec::new();
    let mut peers = Vec::new();
    match &cfg {
        Some((path, result)) => {
            checks.push(config_checks(path, result));
            if let Ok(c) = result {
                (video_sink, audio_sink, decoder) = c.player_settings();
                trackers.extend(c.network.trackers.iter().cloned());
                peers.extend(c.network.static_peers.iter().cloned());
                if let Some(config::StreamSource::TorrentFile(t)) = c.stream_source()
                    && s.torrent.is_none()
                {
                    trackers.extend(torrent_trackers(&t, &mut checks));
                }
                if s.leds {
                    checks.push(led_check(c));
                }
            }
        }
        None if s.role == DoctorRole::Receive => checks.push(check(
            "config",
            "nordlys.toml",
            Status::Info,
            "no config file (looked in /boot and /etc/nordlys): the options given apply",
        )),
        None => {}
    }
    if let Some(t) = &s.torrent {
        trackers.extend(torrent_trackers(t, &mut checks));
    }
    if matches!(video_sink, VideoSink::Auto) {
        video_sink = crate::player::resolve_auto_video_sink();
    }

    let gst_needed = match s.role {
        DoctorRole::Receive => true,
        DoctorRole::Inject => s
            .input
            .as_deref()
            .is_none_or(crate::source::gst::is_gst_input),
        DoctorRole::Seed | DoctorRole::Tracker => false,
    };
    if gst_needed {
        match gstreamer::init() {
            Err(e) => {
                let mut c = check("gstreamer", "library", Status::Missing, e.to_string());
                c.fix = Some("install the Debian package libgstreamer1.0-0".into());
                checks.push(c);
            }
            Ok(()) => {
                checks.push(check(
                    "gstreamer",
                    "library",
                    Status::Ok,
                    gstreamer::version_string().to_string(),
                ));
                let available = elements::available();
                let names: Vec<&str> = available.iter().map(String::as_str).collect();
                match s.role {
                    DoctorRole::Receive => {
                        checks.extend(element_checks(
                            &crate::player::needs(&video_sink, &audio_sink),
                            &names,
                            true,
                        ));
                        checks.extend(decoder_checks(decoder, &names));
                    }
                    _ => {
                        // Without --input, what the GStreamer inputs need only warns.
                        let spec = s.input.as_deref().unwrap_or("test-pattern");
                        checks.extend(element_checks(
                            &crate::source::gst::needs(spec),
                            &names,
                            s.input.is_some(),
                        ));
                    }
                }
            }
        }
    }
    if s.role == DoctorRole::Receive {
        checks.extend(device_checks(s, &video_sink, &audio_sink));
    }
    checks.extend(network_checks(&trackers, &peers, s.network));
    let ok = !checks.iter().any(|c| c.status == Status::Missing);
    Report {
        role: s.role,
        ok,
        checks,
    }
}

fn torrent_trackers(path: &Path, checks: &mut Vec<Check>) -> Vec<String> {
    match crate::torrent::LiveTorrent::read(path) {
        Ok(t) => {
            checks.push(check(
                "torrent",
                path.display().to_string(),
                Status::Ok,
                format!("{} ({})", t.name, t.info_hash),
            ));
            t.trackers
        }
        Err(e) => {
            checks.push(check(
                "torrent",
                path.display().to_string(),
                Status::Missing,
                format!("{e:#}"),
            ));
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn everything() -> Vec<&'static str> {
        elements::ALL.iter().map(|e| e.factory).collect()
    }

    #[test]
    fn a_missing_plugin_is_named_with_its_package() {
        let without: Vec<&str> = everything()
            .into_iter()
            .filter(|n| *n != "textoverlay")
            .collect();
        let needs = crate::player::needs(&VideoSink::Fake, &AudioSink::Fake);
        let checks = element_checks(&needs, &without, true);
        let bad: Vec<_> = checks.iter().filter(|c| c.status != Status::Ok).collect();
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert_eq!(bad[0].name, "textoverlay");
        assert!(bad[0].detail.contains("pango"));
        assert!(bad[0].fix.as_deref().unwrap().contains("gstreamer1.0-x"));
        let all = element_checks(&needs, &everything(), true);
        assert!(all.iter().all(|c| c.status == Status::Ok));
        // Each element once, even when several uses make it.
        assert_eq!(all.iter().filter(|c| c.name == "queue").count(), 1);
    }

    #[test]
    fn optional_needs_only_warn() {
        let checks = element_checks(&[elements::TEST_PATTERN], &[], false);
        assert!(checks.iter().all(|c| c.status == Status::Warn));
    }

    #[test]
    fn decoders_follow_the_preference() {
        let sw = ["avdec_h264", "avdec_h265"];
        let c = decoder_checks(DecoderPref::Auto, &sw);
        assert!(c.iter().all(|c| c.status == Status::Ok), "{c:?}");
        let c = decoder_checks(DecoderPref::Hardware, &sw);
        assert_eq!(c[0].status, Status::Missing);
        assert_eq!(c[1].status, Status::Warn);
        let c = decoder_checks(DecoderPref::Auto, &[]);
        assert!(c[0].fix.as_deref().unwrap().contains("gstreamer1.0-libav"));
    }

    #[test]
    fn report_fails_only_on_missing() {
        let mut r = Report {
            role: DoctorRole::Receive,
            ok: true,
            checks: vec![check("a", "b", Status::Warn, "c")],
        };
        assert_eq!(r.missing().count(), 0);
        assert!(r.text().contains("WARN"));
        r.checks.push(check("a", "d", Status::Missing, "e"));
        assert_eq!(r.missing().count(), 1);
        assert!(r.text().contains("1 thing(s)"));
    }

    #[test]
    fn tracker_endpoints() {
        assert_eq!(
            tracker_endpoint("http://t.example/announce").as_deref(),
            Some("t.example:80")
        );
        assert_eq!(
            tracker_endpoint("https://t.example:8443/a").as_deref(),
            Some("t.example:8443")
        );
        assert_eq!(tracker_endpoint("udp://t.example:6969"), None);
    }

    #[test]
    fn a_listening_peer_answers_and_a_closed_one_does_not() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = l.local_addr().unwrap().to_string();
        let closed = {
            let l2 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l2.local_addr().unwrap().to_string()
        };
        let checks = network_checks(&[], &[open, closed], true);
        assert_eq!(checks[0].name, "tcp congestion");
        assert_eq!(checks[2].status, Status::Ok);
        assert_eq!(checks[3].status, Status::Warn);
    }

    #[test]
    fn a_kernel_that_refuses_bbr_is_a_warning_with_its_fix() {
        let c = congestion_check(Err("the kernel refuses TCP bbr (No such file)".into()));
        assert_eq!(c.status, Status::Warn);
        assert!(
            c.fix
                .as_deref()
                .unwrap()
                .contains("tcp_congestion_control=bbr")
        );
        assert_eq!(congestion_check(Ok(())).status, Status::Ok);
    }
}
