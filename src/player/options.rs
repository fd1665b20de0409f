//! Player options and their command-line spellings.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// Where the picture goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum VideoSink {
    /// KMS if `/dev/dri/card*` exists and no display server is running, else a window if a
    /// display exists, else fake.
    #[default]
    Auto,
    /// `kmssink` straight to HDMI (no X/Wayland). `connector` is the DRM connector id.
    Kms { connector: Option<u32> },
    /// A desktop window (`autovideosink`).
    Window,
    /// `fakesink`: headless, frames are counted and can be snapshot.
    Fake,
}

/// Where the sound goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AudioSink {
    /// `autoaudiosink`.
    #[default]
    Auto,
    /// `alsasink`, optionally with a device such as `hdmi:CARD=vc4hdmi0,DEV=0`.
    Alsa(Option<String>),
    /// Audio is decoded and synchronised but discarded.
    Fake,
    /// Audio is not decoded at all.
    None,
}

/// Which video decoders may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecoderPref {
    /// Hardware (V4L2) first, software as fallback.
    #[default]
    Auto,
    /// Hardware only.
    Hardware,
    /// Software only.
    Software,
}

/// Error for an option string that is not understood.
#[derive(Debug, thiserror::Error)]
#[error("invalid {what} {value:?}: expected {expected}")]
pub struct ParseOptionError {
    what: &'static str,
    value: String,
    expected: &'static str,
}

impl FromStr for VideoSink {
    type Err = ParseOptionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseOptionError {
            what: "video sink",
            value: s.to_string(),
            expected: "auto|kms[:CONNECTOR_ID]|window|fake",
        };
        match s {
            "auto" => Ok(Self::Auto),
            "kms" => Ok(Self::Kms { connector: None }),
            "window" => Ok(Self::Window),
            "fake" => Ok(Self::Fake),
            _ => match s.strip_prefix("kms:") {
                Some(id) => id
                    .parse()
                    .map(|c| Self::Kms { connector: Some(c) })
                    .map_err(|_| err()),
                None => Err(err()),
            },
        }
    }
}

impl FromStr for AudioSink {
    type Err = ParseOptionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "alsa" => Ok(Self::Alsa(None)),
            "fake" => Ok(Self::Fake),
            "none" => Ok(Self::None),
            _ => match s.strip_prefix("alsa:") {
                Some(dev) if !dev.is_empty() && !dev.chars().any(char::is_control) => {
                    Ok(Self::Alsa(Some(dev.to_string())))
                }
                _ => Err(ParseOptionError {
                    what: "audio sink",
                    value: s.to_string(),
                    expected: "auto|alsa[:DEVICE]|fake|none",
                }),
            },
        }
    }
}

impl FromStr for DecoderPref {
    type Err = ParseOptionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "hardware" | "hw" => Ok(Self::Hardware),
            "software" | "sw" => Ok(Self::Software),
            _ => Err(ParseOptionError {
                what: "decoder preference",
                value: s.to_string(),
                expected: "auto|hardware|software",
            }),
        }
    }
}

/// Everything the player needs to know at start.
#[derive(Debug, Clone)]
pub struct PlayerOptions {
    pub video_sink: VideoSink,
    pub audio_sink: AudioSink,
    pub decoder: DecoderPref,
    /// Write a PNG of what the screen shows to this path every so often.
    pub snapshot: Option<(PathBuf, Duration)>,
    /// Shown on the slate.
    pub event_name: String,
    /// Shown on the slate.
    pub venue: String,
    /// `first_frame_ms` in the stats counts from this instant (normally process start).
    pub started: Instant,
    /// Size of the slate picture (also used until the first decoded frame is seen).
    pub slate_size: (u32, u32),
    /// Capacity of the input channel, in messages.
    pub channel_capacity: usize,
    /// Most TS bytes held in the player's own input queue (bounds memory and latency).
    pub max_buffered_bytes: u64,
}

impl Default for PlayerOptions {
    fn default() -> Self {
        Self {
            video_sink: VideoSink::Auto,
            audio_sink: AudioSink::Auto,
            decoder: DecoderPref::Auto,
            snapshot: None,
            event_name: String::new(),
            venue: String::new(),
            started: Instant::now(),
            slate_size: (1280, 720),
            channel_capacity: 256,
            max_buffered_bytes: 8 * 1024 * 1024,
        }
    }
}

/// The video sink `Auto` resolves to on this machine.
pub fn resolve_auto_video_sink() -> VideoSink {
    let has_display = ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
    let has_drm = std::fs::read_dir("/dev/dri")
        .map(|rd| {
            rd.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("card"))
        })
        .unwrap_or(false);
    auto_video_sink(has_drm, has_display)
}

/// Pure rule behind [`resolve_auto_video_sink`].
pub fn auto_video_sink(has_drm: bool, has_display: bool) -> VideoSink {
    if has_display {
        VideoSink::Window
    } else if has_drm {
        VideoSink::Kms { connector: None }
    } else {
        VideoSink::Fake
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_sinks() {
        assert_eq!("auto".parse::<VideoSink>().unwrap(), VideoSink::Auto);
        assert_eq!(
            "kms".parse::<VideoSink>().unwrap(),
            VideoSink::Kms { connector: None }
        );
        assert_eq!(
            "kms:42".parse::<VideoSink>().unwrap(),
            VideoSink::Kms {
                connector: Some(42)
            }
        );
        assert!("kms:x".parse::<VideoSink>().is_err());
        assert!("tv".parse::<VideoSink>().is_err());
        assert_eq!(
            "alsa:hdmi:CARD=vc4hdmi0,DEV=0"
                .parse::<AudioSink>()
                .unwrap(),
            AudioSink::Alsa(Some("hdmi:CARD=vc4hdmi0,DEV=0".into()))
        );
        assert_eq!("alsa".parse::<AudioSink>().unwrap(), AudioSink::Alsa(None));
        assert_eq!("none".parse::<AudioSink>().unwrap(), AudioSink::None);
        assert!("alsa:".parse::<AudioSink>().is_err());
        assert!("pulse".parse::<AudioSink>().is_err());
        assert_eq!(
            "software".parse::<DecoderPref>().unwrap(),
            DecoderPref::Software
        );
        assert!("gpu".parse::<DecoderPref>().is_err());
    }

    #[test]
    fn auto_sink_rule() {
        assert_eq!(
            auto_video_sink(true, false),
            VideoSink::Kms { connector: None }
        );
        assert_eq!(auto_video_sink(true, true), VideoSink::Window);
        assert_eq!(auto_video_sink(false, true), VideoSink::Window);
        assert_eq!(auto_video_sink(false, false), VideoSink::Fake);
    }
}
