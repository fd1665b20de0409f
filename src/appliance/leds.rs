//! Status LEDs: the receiver's status model, the LED pattern of each status, and backends
//! that drive real LEDs (Raspberry Pi GPIO via rppal, the GPIO character device via
//! gpiocdev, kernel LEDs in `/sys/class/leds`), a recording backend for tests, and none.
//!
//! Up to three single LEDs (power, network, stream) or one RGB LED. The meaning table is in
//! `docs/APPLIANCE.md` and is exactly [`three_led_patterns`] / [`rgb_pattern`].
//!
//! Timing is pure: [`level_at`] says whether a pattern is lit at time `t` since the driver
//! started; [`run`] only sleeps until the next change, so tests use tokio's paused clock.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::config::{LedBackendKind, LedConfig, LedLine};

/// What the receiver is doing, as shown on the LEDs (and the slate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Starting up, config read, nothing on the network yet.
    Booting,
    /// No usable network (no address / no route / no peers or trackers reachable).
    NoNetwork,
    /// Fetching the torrent, contacting trackers/DHT/peers.
    Joining,
    /// Connected, filling the buffer up to the target latency.
    Buffering,
    /// Playing the stream.
    Playing,
    /// Was playing, the buffer ran dry; the slate is shown.
    Stalled,
    /// Configuration or fatal error; details on the slate and in the journal.
    Error,
}

impl Status {
    pub const ALL: [Status; 7] = [
        Status::Booting,
        Status::NoNetwork,
        Status::Joining,
        Status::Buffering,
        Status::Playing,
        Status::Stalled,
        Status::Error,
    ];
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Booting => "booting",
            Status::NoNetwork => "no network",
            Status::Joining => "joining",
            Status::Buffering => "buffering",
            Status::Playing => "playing",
            Status::Stalled => "stalled",
            Status::Error => "error",
        })
    }
}

/// How one LED (or the RGB LED) is driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pattern {
    Off,
    Solid,
    /// 1 Hz: 500 ms on, 500 ms off.
    SlowBlink,
    /// 4 Hz: 125 ms on, 125 ms off.
    FastBlink,
}

/// Half period of [`Pattern::SlowBlink`].
pub const SLOW_HALF_PERIOD: Duration = Duration::from_millis(500);
/// Half period of [`Pattern::FastBlink`].
pub const FAST_HALF_PERIOD: Duration = Duration::from_millis(125);

impl Pattern {
    fn half_period(self) -> Option<Duration> {
        match self {
            Pattern::SlowBlink => Some(SLOW_HALF_PERIOD),
            Pattern::FastBlink => Some(FAST_HALF_PERIOD),
            Pattern::Off | Pattern::Solid => None,
        }
    }
}

/// Whether `pattern` is lit at time `t` (since the driver started). Blinks start lit.
pub fn level_at(pattern: Pattern, t: Duration) -> bool {
    match pattern {
        Pattern::Off => false,
        Pattern::Solid => true,
        p => {
            let half = p.half_period().expect("blink").as_millis();
            (t.as_millis() / half).is_multiple_of(2)
        }
    }
}

/// The next time after `t` at which `pattern` changes level, if it ever does.
pub fn next_change(pattern: Pattern, t: Duration) -> Option<Duration> {
    let half = pattern.half_period()?.as_millis();
    let next = (t.as_millis() / half + 1) * half;
    Some(Duration::from_millis(next as u64))
}

/// Patterns of the power, network and stream LEDs for a status.
pub fn three_led_patterns(status: Status) -> [Pattern; 3] {
    use Pattern::*;
    match status {
        Status::Booting => [SlowBlink, Off, Off],
        Status::NoNetwork => [Solid, FastBlink, Off],
        Status::Joining => [Solid, SlowBlink, Off],
        Status::Buffering => [Solid, Solid, SlowBlink],
        Status::Playing => [Solid, Solid, Solid],
        Status::Stalled => [Solid, Solid, FastBlink],
        Status::Error => [FastBlink, FastBlink, FastBlink],
    }
}

/// Colours of the RGB LED.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Colour {
    White,
    Yellow,
    Blue,
    Cyan,
    Green,
    Magenta,
    Red,
}

impl Colour {
    /// Which of red, green, blue are on.
    pub fn rgb(self) -> [bool; 3] {
        match self {
            Colour::White => [true, true, true],
            Colour::Yellow => [true, true, false],
            Colour::Blue => [false, false, true],
            Colour::Cyan => [false, true, true],
            Colour::Green => [false, true, false],
            Colour::Magenta => [true, false, true],
            Colour::Red => [true, false, false],
        }
    }
}

/// Colour and pattern of the single RGB LED for a status.
pub fn rgb_pattern(status: Status) -> (Colour, Pattern) {
    match status {
        Status::Booting => (Colour::White, Pattern::SlowBlink),
        Status::NoNetwork => (Colour::Yellow, Pattern::FastBlink),
        Status::Joining => (Colour::Blue, Pattern::SlowBlink),
        Status::Buffering => (Colour::Cyan, Pattern::SlowBlink),
        Status::Playing => (Colour::Green, Pattern::Solid),
        Status::Stalled => (Colour::Magenta, Pattern::FastBlink),
        Status::Error => (Colour::Red, Pattern::FastBlink),
    }
}

/// Three single LEDs or one RGB LED; channels are (power, network, stream) or (r, g, b).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedMode {
    Three,
    Rgb,
}

/// Levels of the three channels for `status` at time `t`.
pub fn levels(mode: LedMode, status: Status, t: Duration) -> [bool; 3] {
    match mode {
        LedMode::Three => three_led_patterns(status).map(|p| level_at(p, t)),
        LedMode::Rgb => {
            let (colour, pattern) = rgb_pattern(status);
            let lit = level_at(pattern, t);
            colour.rgb().map(|c| c && lit)
        }
    }
}

/// The earliest time after `t` when any channel may change.
pub fn next_wake(mode: LedMode, status: Status, t: Duration) -> Option<Duration> {
    let patterns: Vec<Pattern> = match mode {
        LedMode::Three => three_led_patterns(status).to_vec(),
        LedMode::Rgb => vec![rgb_pattern(status).1],
    };
    patterns.into_iter().filter_map(|p| next_change(p, t)).min()
}

// ---------------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------------

/// Drives up to three LED channels. Channels without an LED are ignored by the backend.
pub trait LedBackend: Send {
    /// Short name for logs ("rppal", "gpiocdev", "sysfs", "recording", "none").
    fn name(&self) -> &'static str;
    /// Light (`true`) or darken channel 0..3. Polarity (active-low) is the backend's job.
    fn set(&mut self, channel: usize, on: bool) -> io::Result<()>;
}

/// No LEDs.
#[derive(Debug, Default)]
pub struct NoLeds;

impl LedBackend for NoLeds {
    fn name(&self) -> &'static str {
        "none"
    }
    fn set(&mut self, _: usize, _: bool) -> io::Result<()> {
        Ok(())
    }
}

/// One recorded change: (time since the driver started, channel, lit).
pub type LedEvent = (Duration, usize, bool);

/// Records every change, with the (tokio) time it happened; for tests.
#[derive(Debug, Clone, Default)]
pub struct RecordingLeds {
    pub events: Arc<Mutex<Vec<LedEvent>>>,
    start: Option<tokio::time::Instant>,
}

impl RecordingLeds {
    pub fn new() -> Self {
        RecordingLeds {
            events: Arc::default(),
            start: Some(tokio::time::Instant::now()),
        }
    }
    /// Everything recorded so far.
    pub fn take(&self) -> Vec<LedEvent> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl LedBackend for RecordingLeds {
    fn name(&self) -> &'static str {
        "recording"
    }
    fn set(&mut self, channel: usize, on: bool) -> io::Result<()> {
        let t = self.start.map_or(Duration::ZERO, |s| s.elapsed());
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((t, channel, on));
        Ok(())
    }
}

/// Kernel LEDs: `/sys/class/leds/<name>/{trigger,brightness,max_brightness}`.
#[derive(Debug)]
pub struct SysfsLeds {
    /// Per channel: the LED directory and the brightness value that means "on".
    leds: [Option<(PathBuf, String)>; 3],
    active_low: bool,
}

/// Where kernel LEDs live.
pub const SYSFS_LEDS_DIR: &str = "/sys/class/leds";

impl SysfsLeds {
    /// Open the named LEDs under `root` (normally [`SYSFS_LEDS_DIR`]) and set their
    /// triggers to `none` so the kernel stops driving them.
    pub fn open(root: &Path, names: [Option<&str>; 3], active_low: bool) -> io::Result<Self> {
        let mut leds: [Option<(PathBuf, String)>; 3] = [None, None, None];
        for (slot, name) in leds.iter_mut().zip(names) {
            let Some(name) = name else { continue };
            if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("bad LED name `{name}`"),
                ));
            }
            let dir = root.join(name);
            if !dir.join("brightness").exists() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "no LED `{name}` ({} missing)",
                        dir.join("brightness").display()
                    ),
                ));
            }
            if dir.join("trigger").exists() {
                std::fs::write(dir.join("trigger"), "none")
                    .map_err(|e| with_path(e, &dir.join("trigger")))?;
            }
            let max = std::fs::read_to_string(dir.join("max_brightness"))
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| s.parse::<u32>().is_ok_and(|v| v > 0))
                .unwrap_or_else(|| "1".into());
            *slot = Some((dir, max));
        }
        Ok(SysfsLeds { leds, active_low })
    }
}

fn with_path(e: io::Error, p: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", p.display()))
}

impl LedBackend for SysfsLeds {
    fn name(&self) -> &'static str {
        "sysfs"
    }
    fn set(&mut self, channel: usize, on: bool) -> io::Result<()> {
        let Some(Some((dir, max))) = self.leds.get(channel) else {
            return Ok(());
        };
        let value = if on != self.active_low {
            max.as_str()
        } else {
            "0"
        };
        let p = dir.join("brightness");
        std::fs::write(&p, value).map_err(|e| with_path(e, &p))
    }
}

/// GPIO lines through the Linux GPIO character device (`/dev/gpiochipN`), found by line
/// name or by chip label, never by chip number.
pub struct GpiocdevLeds {
    lines: [Option<gpiocdev::Request>; 3],
}

/// Labels of the Raspberry Pi header GPIO chip (Pi 3/4 and Pi 5).
pub const PI_HEADER_CHIP_LABELS: [&str; 3] = ["pinctrl-bcm2711", "pinctrl-bcm2835", "pinctrl-rp1"];

fn chip_by_label(labels: &[&str]) -> io::Result<PathBuf> {
    let chips = gpiocdev::chip::chips().map_err(io::Error::other)?;
    for p in chips {
        if let Ok(info) = gpiocdev::chip::Chip::from_path(&p).and_then(|c| c.info())
            && labels.contains(&info.label.as_str())
        {
            return Ok(p);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("no GPIO chip labelled {}", labels.join(" or ")),
    ))
}

impl GpiocdevLeds {
    pub fn open(
        lines: [Option<&LedLine>; 3],
        chip_label: Option<&str>,
        active_low: bool,
    ) -> io::Result<Self> {
        let mut out: [Option<gpiocdev::Request>; 3] = [None, None, None];
        let mut chip: Option<PathBuf> = None;
        for (slot, line) in out.iter_mut().zip(lines) {
            let Some(line) = line else { continue };
            let mut b = gpiocdev::Request::builder();
            b.with_consumer("nordlys-led");
            match line {
                LedLine::Name(n) => {
                    let found = gpiocdev::find_named_line(n).ok_or_else(|| {
                        io::Error::new(io::ErrorKind::NotFound, format!("no GPIO line named `{n}`"))
                    })?;
                    b.with_found_line(&found);
                }
                LedLine::Pin(p) => {
                    if chip.is_none() {
                        chip = Some(match chip_label {
                            Some(l) => chip_by_label(&[l])?,
                            None => chip_by_label(&PI_HEADER_CHIP_LABELS)?,
                        });
                    }
                    b.on_chip(chip.clone().expect("set above")).with_line(*p);
                }
            }
            b.as_output(gpiocdev::line::Value::Inactive);
            if active_low {
                b.as_active_low();
            }
            *slot = Some(
                b.request()
                    .map_err(|e| io::Error::other(format!("{line}: {e}")))?,
            );
        }
        Ok(GpiocdevLeds { lines: out })
    }
}

impl LedBackend for GpiocdevLeds {
    fn name(&self) -> &'static str {
        "gpiocdev"
    }
    fn set(&mut self, channel: usize, on: bool) -> io::Result<()> {
        let Some(Some(req)) = self.lines.get(channel) else {
            return Ok(());
        };
        let v = if on {
            gpiocdev::line::Value::Active
        } else {
            gpiocdev::line::Value::Inactive
        };
        req.set_lone_value(v).map_err(io::Error::other)
    }
}

/// Raspberry Pi GPIO through rppal (BCM numbers). `Gpio::new()` fails cleanly off a Pi.
pub struct RppalLeds {
    pins: [Option<rppal::gpio::OutputPin>; 3],
    active_low: bool,
}

impl RppalLeds {
    pub fn open(pins: [Option<u8>; 3], active_low: bool) -> Result<Self, rppal::gpio::Error> {
        let gpio = rppal::gpio::Gpio::new()?;
        let mut out: [Option<rppal::gpio::OutputPin>; 3] = [None, None, None];
        for (slot, pin) in out.iter_mut().zip(pins) {
            if let Some(pin) = pin {
                let p = gpio.get(pin)?;
                let mut o = if active_low {
                    p.into_output_high()
                } else {
                    p.into_output_low()
                };
                o.set_reset_on_drop(true);
                *slot = Some(o);
            }
        }
        Ok(RppalLeds {
            pins: out,
            active_low,
        })
    }
}

impl LedBackend for RppalLeds {
    fn name(&self) -> &'static str {
        "rppal"
    }
    fn set(&mut self, channel: usize, on: bool) -> io::Result<()> {
        if let Some(Some(pin)) = self.pins.get_mut(channel) {
            if on != self.active_low {
                pin.set_high();
            } else {
                pin.set_low();
            }
        }
        Ok(())
    }
}

/// Whether this is a Raspberry Pi, from the device tree model (`root` is `/` normally).
pub fn is_raspberry_pi(root: &Path) -> bool {
    [
        "proc/device-tree/model",
        "sys/firmware/devicetree/base/model",
    ]
    .iter()
    .filter_map(|p| std::fs::read(root.join(p)).ok())
    .any(|m| String::from_utf8_lossy(&m).contains("Raspberry Pi"))
}

/// Failure to open the configured LED backend.
#[derive(Debug, thiserror::Error)]
pub enum LedError {
    #[error("LED backend {backend}: {message}")]
    Open {
        backend: &'static str,
        message: String,
    },
}

fn channels(cfg: &LedConfig) -> (LedMode, [Option<&LedLine>; 3]) {
    match &cfg.rgb {
        Some(rgb) => (
            LedMode::Rgb,
            [Some(&rgb.red), Some(&rgb.green), Some(&rgb.blue)],
        ),
        None => (
            LedMode::Three,
            [
                cfg.power.as_ref(),
                cfg.network.as_ref(),
                cfg.stream.as_ref(),
            ],
        ),
    }
}

fn open_rppal(
    lines: [Option<&LedLine>; 3],
    active_low: bool,
) -> Result<Box<dyn LedBackend>, LedError> {
    let err = |message: String| LedError::Open {
        backend: "rppal",
        message,
    };
    let mut pins = [None; 3];
    for (slot, l) in pins.iter_mut().zip(lines) {
        *slot = match l {
            None => None,
            Some(LedLine::Pin(p)) => {
                Some(u8::try_from(*p).map_err(|_| err(format!("GPIO {p} out of range")))?)
            }
            Some(LedLine::Name(n)) => return Err(err(format!("`{n}` is not a BCM GPIO number"))),
        };
    }
    Ok(Box::new(
        RppalLeds::open(pins, active_low).map_err(|e| err(e.to_string()))?,
    ))
}

fn open_sysfs(
    root: &Path,
    lines: [Option<&LedLine>; 3],
    active_low: bool,
) -> Result<Box<dyn LedBackend>, LedError> {
    let err = |message: String| LedError::Open {
        backend: "sysfs",
        message,
    };
    let mut names = [None; 3];
    for (slot, l) in names.iter_mut().zip(lines) {
        *slot = match l {
            None => None,
            Some(LedLine::Name(n)) => Some(n.as_str()),
            Some(LedLine::Pin(p)) => return Err(err(format!("{p} is not an LED name"))),
        };
    }
    Ok(Box::new(
        SysfsLeds::open(root, names, active_low).map_err(|e| err(e.to_string()))?,
    ))
}

/// Open the backend the config asks for. `auto` never fails: rppal if this is a Raspberry
/// Pi, else sysfs if the named LEDs exist, else none (the reason is in the description).
/// Returns the backend, the channel layout, and a one-line description for the log.
pub fn open_backend(cfg: &LedConfig) -> Result<(Box<dyn LedBackend>, LedMode, String), LedError> {
    open_backend_at(cfg, Path::new("/"), Path::new(SYSFS_LEDS_DIR))
}

/// [`open_backend`] with the filesystem root (for Pi detection) and sysfs LED directory
/// given, for tests.
pub fn open_backend_at(
    cfg: &LedConfig,
    root: &Path,
    sysfs_dir: &Path,
) -> Result<(Box<dyn LedBackend>, LedMode, String), LedError> {
    let (mode, lines) = channels(cfg);
    let none =
        |why: String| -> (Box<dyn LedBackend>, LedMode, String) { (Box::new(NoLeds), mode, why) };
    if lines.iter().all(Option::is_none) {
        return Ok(none("no LEDs configured".into()));
    }
    let describe = |b: &dyn LedBackend| {
        format!(
            "{} LEDs via {}",
            if mode == LedMode::Rgb {
                "RGB"
            } else {
                "status"
            },
            b.name()
        )
    };
    let ok = |b: Box<dyn LedBackend>| {
        let d = describe(b.as_ref());
        Ok((b, mode, d))
    };
    match cfg.backend {
        LedBackendKind::None => Ok(none("LEDs disabled".into())),
        LedBackendKind::Rppal => ok(open_rppal(lines, cfg.active_low)?),
        LedBackendKind::Sysfs => ok(open_sysfs(sysfs_dir, lines, cfg.active_low)?),
        LedBackendKind::Gpiocdev => ok(Box::new(
            GpiocdevLeds::open(lines, cfg.chip.as_deref(), cfg.active_low).map_err(|e| {
                LedError::Open {
                    backend: "gpiocdev",
                    message: e.to_string(),
                }
            })?,
        )),
        LedBackendKind::Auto => {
            let all_pins = lines.iter().flatten().all(|l| matches!(l, LedLine::Pin(_)));
            let all_names = lines
                .iter()
                .flatten()
                .all(|l| matches!(l, LedLine::Name(_)));
            let mut why = Vec::new();
            if is_raspberry_pi(root) && all_pins {
                match open_rppal(lines, cfg.active_low) {
                    Ok(b) => return ok(b),
                    Err(e) => why.push(e.to_string()),
                }
            } else {
                why.push("rppal: not a Raspberry Pi or LEDs not given as GPIO numbers".into());
            }
            if all_names {
                match open_sysfs(sysfs_dir, lines, cfg.active_low) {
                    Ok(b) => return ok(b),
                    Err(e) => why.push(e.to_string()),
                }
            } else {
                why.push("sysfs: LEDs not given as names".into());
            }
            Ok(none(format!("no LED backend usable ({})", why.join("; "))))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Driver
// ---------------------------------------------------------------------------------------------

/// Animate the LEDs from `status` until its sender is dropped; then turn them all off.
/// Writes only changes. An LED write error is logged once and otherwise ignored: LEDs are
/// never worth stopping the receiver for.
pub async fn run(
    mut backend: Box<dyn LedBackend>,
    mode: LedMode,
    mut status: watch::Receiver<Status>,
) {
    let start = tokio::time::Instant::now();
    let mut current: [Option<bool>; 3] = [None; 3];
    let mut warned = false;
    let mut apply = |backend: &mut Box<dyn LedBackend>, want: [bool; 3]| {
        for (ch, (cur, w)) in current.iter_mut().zip(want).enumerate() {
            if *cur != Some(w) {
                if let Err(e) = backend.set(ch, w)
                    && !warned
                {
                    tracing::warn!(backend = backend.name(), "cannot set LED: {e}");
                    warned = true;
                }
                *cur = Some(w);
            }
        }
    };
    loop {
        let s = *status.borrow_and_update();
        let t = start.elapsed();
        apply(&mut backend, levels(mode, s, t));
        let wake = next_wake(mode, s, t);
        tokio::select! {
            changed = status.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            _ = async {
                match wake {
                    Some(w) => tokio::time::sleep_until(start + w).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
    }
    apply(&mut backend, [false; 3]);
}

#[cfg(test)]
mod tests;
