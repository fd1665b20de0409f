//! The appliance's one configuration file, `nordlys.toml`.
//!
//! The venue technician edits it on the SD card's FAT partition (`/boot/nordlys.toml`); the
//! image also carries a documented example at `/etc/nordlys/nordlys.toml`, which is the
//! fallback when the boot partition has none.
//!
//! Checking collects *every* problem it can find, each with line and column:
//! 1. TOML syntax (the parser stops at the first syntax error, so that one is reported alone);
//! 2. schema: every key is deserialized on its own into its section's type
//!    (`#[serde(deny_unknown_fields)]`), so one unknown key or wrong type does not hide the
//!    next; bad keys are dropped and the rest is kept;
//! 3. meaning: ranges, addresses, URLs, LED pins (see [`Config::validate`]).
//!
//! Positions come from `toml::Spanned` (byte ranges) mapped to line:column.
//!
//! Steps 2 and 3 live beside this file: `config/check.rs` ([`check_str`]) and
//! `config/validate.rs` ([`Config::validate`]).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};

mod check;
mod validate;

pub use check::{Checked, check_str, check_str_with};

/// Where the receiver looks for its configuration, in order.
pub const BOOT_CONFIG_PATH: &str = "/boot/nordlys.toml";
/// Fallback inside the (read-only) root filesystem.
pub const ETC_CONFIG_PATH: &str = "/etc/nordlys/nordlys.toml";

/// Latency bounds (milliseconds) accepted for `stream.target_latency_ms`.
pub const LATENCY_RANGE_MS: std::ops::RangeInclusive<u32> = 200..=60_000;
/// Largest BCM GPIO number on the 40-pin header (rppal backend).
pub const MAX_HEADER_GPIO: u32 = 27;
/// Refuse to even read files bigger than this: a config file is a few KiB.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// The configuration search path: `/boot/nordlys.toml`, then `/etc/nordlys/nordlys.toml`.
pub fn default_paths() -> Vec<PathBuf> {
    vec![
        PathBuf::from(BOOT_CONFIG_PATH),
        PathBuf::from(ETC_CONFIG_PATH),
    ]
}

/// The file to read: `override_path` if given, else the first of [`default_paths`] that
/// exists, else `None`.
pub fn resolve_path(override_path: Option<&Path>) -> Option<PathBuf> {
    match override_path {
        Some(p) => Some(p.to_path_buf()),
        None => default_paths().into_iter().find(|p| p.exists()),
    }
}

// ---------------------------------------------------------------------------------------------
// The schema
// ---------------------------------------------------------------------------------------------

/// The whole `nordlys.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Venue name shown on the on-screen slate.
    pub venue: String,
    /// Log filter: a level (`error`..`trace`) or an `EnvFilter` directive list.
    pub log_level: String,
    /// Address of the local status HTTP endpoint; `None` disables it.
    pub status_address: Option<SocketAddr>,
    pub stream: StreamConfig,
    pub network: NetworkConfig,
    pub video: VideoConfig,
    pub audio: AudioConfig,
    pub leds: LedConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            venue: String::new(),
            log_level: "info".into(),
            status_address: None,
            stream: StreamConfig::default(),
            network: NetworkConfig::default(),
            video: VideoConfig::default(),
            audio: AudioConfig::default(),
            leds: LedConfig::default(),
        }
    }
}

/// `[stream]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// A `.torrent` path or an `http://` URL of one. Required.
    pub source: Option<String>,
    /// How far behind the live edge playback runs.
    pub target_latency_ms: u32,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            source: None,
            target_latency_ms: 2000,
        }
    }
}

/// What `stream.source` (or `receive --torrent`) names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamSource {
    TorrentFile(PathBuf),
    TorrentUrl(url::Url),
}

/// What a stream source may be, for messages.
pub const SOURCE_EXPECTED: &str = "expected a .torrent file path or an http:// URL of one";

impl StreamSource {
    /// Classify and check a stream source. The message starts with "is" so that the caller
    /// can put the flag or key in front of it; it names the value and what is accepted.
    /// Magnet links and https are refused here, not later: the receiver cannot fetch a
    /// torrent's metadata from peers, and is built without TLS.
    pub fn parse(s: &str) -> Result<StreamSource, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err(format!("is empty; {SOURCE_EXPECTED}"));
        }
        if s.starts_with("magnet:") {
            return Err(format!(
                "is `{s}`: magnet links are not supported yet; {SOURCE_EXPECTED}"
            ));
        }
        if s.contains("://") {
            let u = url::Url::parse(s)
                .map_err(|e| format!("is `{s}`, not a valid URL ({e}); {SOURCE_EXPECTED}"))?;
            return match u.scheme() {
                "http" => Ok(StreamSource::TorrentUrl(u)),
                "https" => Err(format!(
                    "is `{s}`: https is not supported yet (this build has no TLS); {SOURCE_EXPECTED}"
                )),
                other => Err(format!(
                    "is `{s}`: the URL scheme `{other}` is not supported; {SOURCE_EXPECTED}"
                )),
            };
        }
        Ok(StreamSource::TorrentFile(PathBuf::from(s)))
    }
}

/// `[network]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// TCP port for incoming peer connections.
    pub listen_port: u16,
    /// Upload limit in kbit/s; 0 means unlimited.
    pub upload_limit_kbps: u32,
    /// Peers to always connect to, `host:port`.
    pub static_peers: Vec<String>,
    /// Extra tracker announce URLs (http:// only, see [`crate::settings::tracker_url`]).
    pub trackers: Vec<String>,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            listen_port: 6881,
            upload_limit_kbps: 0,
            static_peers: vec![],
            trackers: vec![],
        }
    }
}

/// `video.sink`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VideoSink {
    #[default]
    Auto,
    Kms,
    Window,
    Fake,
}

/// `video.decoder`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecoderChoice {
    #[default]
    Auto,
    Hardware,
    Software,
}

/// `[video]`
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VideoConfig {
    pub sink: VideoSink,
    /// DRM connector name such as `HDMI-A-1`; `None` = first connected.
    pub connector: Option<String>,
    pub decoder: DecoderChoice,
}

/// `audio.device`: `auto`, `alsa`, `alsa:DEVICE`, `fake` or `none`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AudioDevice {
    #[default]
    Auto,
    /// ALSA; `None` = ALSA's default device.
    Alsa(Option<String>),
    Fake,
    None,
}

impl std::str::FromStr for AudioDevice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(AudioDevice::Auto),
            "alsa" => Ok(AudioDevice::Alsa(None)),
            "fake" => Ok(AudioDevice::Fake),
            "none" => Ok(AudioDevice::None),
            _ => match s.strip_prefix("alsa:") {
                Some(dev) if !dev.trim().is_empty() => Ok(AudioDevice::Alsa(Some(dev.to_string()))),
                _ => Err(format!(
                    "invalid audio device `{s}`, expected `auto`, `alsa`, `alsa:DEVICE` (e.g. `alsa:hdmi:CARD=vc4hdmi0,DEV=0`), `fake` or `none`"
                )),
            },
        }
    }
}

impl<'de> Deserialize<'de> for AudioDevice {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// `[audio]`
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudioConfig {
    pub device: AudioDevice,
}

/// `leds.backend`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LedBackendKind {
    #[default]
    Auto,
    Rppal,
    Gpiocdev,
    Sysfs,
    None,
}

/// One LED: a GPIO number (rppal: BCM number; gpiocdev: offset on the header chip) or a
/// name (gpiocdev: GPIO line name; sysfs: `/sys/class/leds/<name>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedLine {
    Pin(u32),
    Name(String),
}

impl fmt::Display for LedLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedLine::Pin(p) => write!(f, "GPIO{p}"),
            LedLine::Name(n) => write!(f, "{n}"),
        }
    }
}

impl<'de> Deserialize<'de> for LedLine {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LedLine;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a GPIO number or a GPIO line / LED name")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<LedLine, E> {
                u32::try_from(v)
                    .map(LedLine::Pin)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<LedLine, E> {
                u32::try_from(v)
                    .map(LedLine::Pin)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<LedLine, E> {
                Ok(LedLine::Name(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `[leds.rgb]`: one RGB LED instead of three single LEDs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RgbLed {
    pub red: LedLine,
    pub green: LedLine,
    pub blue: LedLine,
}

/// `[leds]`
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedConfig {
    pub backend: LedBackendKind,
    /// The LEDs light when the line is driven low.
    pub active_low: bool,
    /// gpiocdev only: label of the GPIO chip for numeric lines (default: the Pi header chip,
    /// found by label `pinctrl-bcm2711`, `pinctrl-bcm2835` or `pinctrl-rp1`).
    pub chip: Option<String>,
    pub power: Option<LedLine>,
    pub network: Option<LedLine>,
    pub stream: Option<LedLine>,
    pub rgb: Option<RgbLed>,
}

impl LedConfig {
    /// All configured lines with their dotted key path.
    pub fn lines(&self) -> Vec<(String, &LedLine)> {
        let mut v = Vec::new();
        for (k, l) in [
            ("power", &self.power),
            ("network", &self.network),
            ("stream", &self.stream),
        ] {
            if let Some(l) = l {
                v.push((format!("leds.{k}"), l));
            }
        }
        if let Some(rgb) = &self.rgb {
            for (k, l) in [
                ("red", &rgb.red),
                ("green", &rgb.green),
                ("blue", &rgb.blue),
            ] {
                v.push((format!("leds.rgb.{k}"), l));
            }
        }
        v
    }
}

impl Config {
    /// The player's sinks and decoder preference as this file sets them.
    pub fn player_settings(
        &self,
    ) -> (
        crate::player::VideoSink,
        crate::player::AudioSink,
        crate::player::DecoderPref,
    ) {
        use crate::player::{AudioSink as Audio, DecoderPref, VideoSink as Video};
        let video = match self.video.sink {
            VideoSink::Auto => Video::Auto,
            VideoSink::Kms => Video::Kms { connector: None },
            VideoSink::Window => Video::Window,
            VideoSink::Fake => Video::Fake,
        };
        let decoder = match self.video.decoder {
            DecoderChoice::Auto => DecoderPref::Auto,
            DecoderChoice::Hardware => DecoderPref::Hardware,
            DecoderChoice::Software => DecoderPref::Software,
        };
        let audio = match &self.audio.device {
            AudioDevice::Auto => Audio::Auto,
            AudioDevice::Alsa(d) => Audio::Alsa(d.clone()),
            AudioDevice::Fake => Audio::Fake,
            AudioDevice::None => Audio::None,
        };
        (video, audio, decoder)
    }

    /// The classified stream source, if present and valid.
    pub fn stream_source(&self) -> Option<StreamSource> {
        self.stream
            .source
            .as_deref()
            .and_then(|s| StreamSource::parse(s).ok())
    }
}

// ---------------------------------------------------------------------------------------------
// Errors with positions
// ---------------------------------------------------------------------------------------------

/// One problem in a config file. `line`/`column` are 1-based; 0 means "not in the file"
/// (e.g. the file could not be read, or a required key is absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub line: usize,
    pub column: usize,
    /// Dotted key path (`network.trackers[1]`), empty for syntax / file errors.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "line {}, column {}: ", self.line, self.column)?;
        }
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "`{}` {}", self.key, self.message)
        }
    }
}

/// Every problem found in one config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    pub path: PathBuf,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(
            f,
            "{}: {n} problem{}",
            self.path.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.errors {
            write!(f, "\n  {}: {e}", self.path.display())?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut off = offset.min(text.len());
    while !text.is_char_boundary(off) {
        off -= 1;
    }
    let before = &text[..off];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, text[line_start..off].chars().count() + 1)
}

// ---------------------------------------------------------------------------------------------
// Reading and loading
// ---------------------------------------------------------------------------------------------

fn read_text(path: &Path) -> Result<String, ConfigErrors> {
    let fail = |message: String| ConfigErrors {
        path: path.to_path_buf(),
        errors: vec![ConfigError {
            line: 0,
            column: 0,
            key: String::new(),
            message,
        }],
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    if !meta.is_file() {
        return Err(fail("is not a regular file".into()));
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(fail(format!(
            "is {} bytes; a config file may be at most {MAX_CONFIG_BYTES}",
            meta.len()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    String::from_utf8(bytes).map_err(|e| {
        let (line, column) = line_col(
            &String::from_utf8_lossy(&e.as_bytes()[..e.utf8_error().valid_up_to()]),
            usize::MAX,
        );
        ConfigErrors {
            path: path.to_path_buf(),
            errors: vec![ConfigError {
                line,
                column,
                key: String::new(),
                message: "is not valid UTF-8 text".into(),
            }],
        }
    })
}

/// Parse config text. `origin` only names the source in errors.
pub fn parse_str(text: &str, origin: &Path) -> Result<Config, ConfigErrors> {
    let checked = check_str(text);
    if checked.errors.is_empty() {
        Ok(checked.config)
    } else {
        Err(ConfigErrors {
            path: origin.to_path_buf(),
            errors: checked.errors,
        })
    }
}

/// Read and fully check a config file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    parse_str(&read_text(path)?, path)
}

/// What the receiver starts with. A bad config never stops the receiver (which would make
/// systemd restart it in a loop): it starts in the error state instead and shows the errors
/// on the slate and LEDs, with the best-effort config (bad keys replaced by defaults) so the
/// LEDs and video output still work where they can.
#[derive(Debug, Clone)]
pub enum Startup {
    Ready {
        path: PathBuf,
        config: Config,
    },
    Error {
        config: Config,
        errors: ConfigErrors,
    },
}

impl Startup {
    pub fn config(&self) -> &Config {
        match self {
            Startup::Ready { config, .. } | Startup::Error { config, .. } => config,
        }
    }
}

/// Find, read and check the config for the receiver; never fails.
pub fn load_for_receiver(override_path: Option<&Path>) -> Startup {
    let Some(path) = resolve_path(override_path) else {
        return Startup::Error {
            config: Config::default(),
            errors: ConfigErrors {
                path: PathBuf::from(BOOT_CONFIG_PATH),
                errors: vec![ConfigError {
                    line: 0,
                    column: 0,
                    key: String::new(),
                    message: format!(
                        "no config file found (looked for {BOOT_CONFIG_PATH} and {ETC_CONFIG_PATH})"
                    ),
                }],
            },
        };
    };
    let text = match read_text(&path) {
        Ok(t) => t,
        Err(errors) => {
            return Startup::Error {
                config: Config::default(),
                errors,
            };
        }
    };
    let checked = check_str(&text);
    if checked.errors.is_empty() {
        Startup::Ready {
            path,
            config: checked.config,
        }
    } else {
        Startup::Error {
            config: checked.config,
            errors: ConfigErrors {
                path,
                errors: checked.errors,
            },
        }
    }
}

/// The window of the torrent a config names, if it is a file that can be read: what
/// `check-config` checks the target latency against.
fn torrent_file_window(c: &Config) -> Option<u32> {
    match c.stream_source()? {
        StreamSource::TorrentFile(p) => crate::torrent::LiveTorrent::read(&p)
            .ok()
            .map(|t| t.window_secs),
        StreamSource::TorrentUrl(_) => None,
    }
}

/// `nordlys check-config PATH`: returns whether the file is valid and a human report
/// listing every problem with line and column. The rules are the receiver's at start; the
/// one rule that needs the torrent (latency below its window) is checked when the torrent is
/// a readable file, and otherwise left to the receiver, which says so.
pub fn check_config(path: &Path) -> (bool, String) {
    let checked = match read_text(path) {
        Ok(text) => check_str_with(&text, &torrent_file_window),
        Err(errs) => return (false, format!("{errs}\n")),
    };
    if !checked.errors.is_empty() {
        let errs = ConfigErrors {
            path: path.to_path_buf(),
            errors: checked.errors,
        };
        return (false, format!("{errs}\n"));
    }
    let cfg = checked.config;
    let (source, window) = match cfg.stream_source() {
        Some(StreamSource::TorrentFile(p)) => (
            format!("torrent file {}", p.display()),
            match torrent_file_window(&cfg) {
                Some(w) => format!("below the torrent's window of {w} s"),
                None => "not checked against the torrent's window: the torrent cannot be read here"
                    .into(),
            },
        ),
        Some(StreamSource::TorrentUrl(u)) => (
            format!("torrent URL {u}"),
            "checked against the torrent's window when the receiver fetches it".into(),
        ),
        None => ("-".into(), String::new()),
    };
    (
        true,
        format!(
            "{}: OK (stream: {source}; target latency {} ms, {window}; LEDs: {})\n",
            path.display(),
            cfg.stream.target_latency_ms,
            format!("{:?}", cfg.leds.backend).to_lowercase()
        ),
    )
}

#[cfg(test)]
mod tests;
