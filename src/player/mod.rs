//! Playback: verified, in-order MPEG-TS bytes in; picture and sound out, or the status
//! slate whenever there is no picture.
//!
//! ```text
//! swarm --PlayerSender (bounded, never blocks)--> player thread
//!   decode pipeline: appsrc ! tsdemux ! h26Xparse ! capsfilter ! decoder ! appsink(sync)
//!                                     ! aacparse/mpegaudioparse ! decoder ! audio sink
//!   display pipeline: [slate: videotestsrc ! textoverlay] ┐
//!                     [picture: appsrc <- decoded frames] ┴ input-selector ! videoconvert
//!                       ! tee ! video sink (kms/window/fake), tee ! fakesink (snapshot)
//! ```
//!
//! See [`pipeline`] for why there are two pipelines. Start with [`Player::start`], feed
//! [`PlayerInput`]s through [`PlayerHandle::sender`], read [`PlayerHandle::stats`].

mod engine;
pub mod options;
mod pipeline;
pub mod select;
pub mod slate;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::Result;
use gstreamer as gst;

use crate::gst_elements::{self as elements, Element, Need};

pub use options::{
    AudioSink, DecoderPref, ParseOptionError, PlayerOptions, VideoSink, resolve_auto_video_sink,
};
pub use select::{DecoderChoice, VideoCodec, choose_decoder, decoder_candidates};
pub use slate::{SlateInfo, SlateState, local_addresses};

/// What the swarm side sends to the player.
#[derive(Debug, Clone)]
pub enum PlayerInput {
    /// Verified, in-order TS bytes (whole 188-byte packets).
    Data(bytes::Bytes),
    /// Pieces were skipped before the next `Data`: the demuxer resyncs.
    Gap,
    /// New facts for the slate. Once one has been sent, the slate's state is the sender's;
    /// before that the player derives it (joining / playing / stalled / ended).
    Slate(SlateInfo),
    /// The stream ended (the slate says so once the buffered picture has played out).
    End,
}

/// Video facts from the decoder output.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct VideoStats {
    pub codec: String,
    pub width: u32,
    pub height: u32,
    /// Frames per second (0 if unknown).
    pub framerate: f64,
}

/// Audio facts from the decoder output.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct AudioStats {
    pub codec: String,
    pub channels: u32,
    pub rate: u32,
    /// Decoded audio buffers so far.
    pub buffers: u64,
}

/// A snapshot of the player's counters, for the status API and tests.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PlayerStats {
    /// Video frames handed to the video sink while the picture was showing.
    pub frames_rendered: u64,
    /// From `PlayerOptions::started` to the first rendered video frame.
    pub first_frame_ms: Option<u64>,
    /// Video decoder element in use (e.g. `v4l2h264dec`, `avdec_h264`).
    pub decoder: Option<String>,
    pub decoder_hardware: bool,
    pub video: Option<VideoStats>,
    pub audio: Option<AudioStats>,
    /// "picture" or "slate".
    pub showing: &'static str,
    /// Slate state currently in force.
    pub state: SlateState,
    /// Rebuilds of the decode or display pipeline after the first build.
    pub pipeline_restarts: u64,
    pub last_error: Option<String>,
    /// Input messages dropped because the player's channel was full.
    pub input_dropped: u64,
    pub input_bytes: u64,
    pub snapshots_written: u64,
}

/// State shared between the player thread, GStreamer's streaming threads and the handle.
pub(crate) struct Shared {
    started: Instant,
    stats: Mutex<PlayerStats>,
    display: Mutex<Option<pipeline::DisplayCtl>>,
    last_frame: Mutex<Option<Instant>>,
    /// The engine allows the picture (state is playing); frames switch to it at once.
    picture_allowed: AtomicBool,
    dropped: AtomicU64,
    /// Input was dropped: the next data is a discontinuity.
    lost: AtomicBool,
    max_display_bytes: u64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn on_frame(&self, sample: &gst::Sample, caps_changed: bool) {
        let now = Instant::now();
        *lock(&self.last_frame) = Some(now);
        let mut rendered = false;
        if let Some(d) = lock(&self.display).as_mut() {
            if self.picture_allowed.load(Ordering::Relaxed) {
                d.show_picture(true);
            }
            if d.picture
                && let Some(buffer) = sample.buffer_owned()
            {
                if caps_changed || d.caps.is_none() {
                    d.caps = sample.caps_owned();
                    d.appsrc.set_caps(d.caps.as_ref());
                }
                // The display stamps frames on arrival; drop rather than queue without bound.
                if d.appsrc.current_level_bytes() < self.max_display_bytes {
                    let mut buffer = buffer;
                    {
                        let b = buffer.make_mut();
                        b.set_pts(gst::ClockTime::NONE);
                        b.set_dts(gst::ClockTime::NONE);
                    }
                    rendered = d.appsrc.push_buffer(buffer).is_ok();
                }
            }
        }
        let mut st = lock(&self.stats);
        if rendered {
            st.frames_rendered += 1;
            st.showing = "picture";
            if st.first_frame_ms.is_none() {
                st.first_frame_ms = Some(now.duration_since(self.started).as_millis() as u64);
                tracing::info!(ms = st.first_frame_ms, "first video frame rendered");
            }
        }
        if caps_changed
            && let Some(info) = sample
                .caps()
                .and_then(|c| gstreamer_video::VideoInfo::from_caps(c).ok())
        {
            let fps = info.fps();
            let v = st.video.get_or_insert_with(VideoStats::default);
            v.width = info.width();
            v.height = info.height();
            v.framerate = if fps.denom() != 0 {
                fps.numer() as f64 / fps.denom() as f64
            } else {
                0.0
            };
        }
    }

    fn set_decoder(&self, choice: &DecoderChoice, codec: VideoCodec) {
        let mut st = lock(&self.stats);
        st.decoder = Some(choice.element.clone());
        st.decoder_hardware = choice.hardware;
        st.video.get_or_insert_with(VideoStats::default).codec = codec.name().to_string();
    }

    fn set_audio(&self, a: AudioStats) {
        let mut st = lock(&self.stats);
        let buffers = st.audio.as_ref().map_or(0, |x| x.buffers);
        st.audio = Some(AudioStats { buffers, ..a });
    }

    fn on_audio_buffer(&self) {
        if let Some(a) = lock(&self.stats).audio.as_mut() {
            a.buffers += 1;
        }
    }

    fn set_error(&self, e: String) {
        lock(&self.stats).last_error = Some(e);
    }
}

/// The sending side of the player's input; cheap to clone. Never blocks in `try_send`.
#[derive(Clone)]
pub struct PlayerSender {
    tx: tokio::sync::mpsc::Sender<PlayerInput>,
    shared: Arc<Shared>,
}

/// The player has stopped.
#[derive(Debug, thiserror::Error)]
#[error("the player has stopped")]
pub struct PlayerClosed;

impl PlayerSender {
    /// Hand input over without ever blocking. Returns false if it was dropped (the player is
    /// behind or gone); dropped data is counted and the next data is marked a discontinuity.
    pub fn try_send(&self, input: PlayerInput) -> bool {
        match self.tx.try_send(input) {
            Ok(()) => true,
            Err(e) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                if matches!(e.into_inner(), PlayerInput::Data(_) | PlayerInput::Gap) {
                    self.shared.lost.store(true, Ordering::Relaxed);
                }
                false
            }
        }
    }

    /// Hand input over, waiting while the player's queue is full (paces a file or a test
    /// feed to real time).
    pub async fn send(&self, input: PlayerInput) -> Result<(), PlayerClosed> {
        self.tx.send(input).await.map_err(|_| PlayerClosed)
    }
}

/// The running player. Dropping it stops playback and releases the display.
pub struct PlayerHandle {
    sender: PlayerSender,
    shared: Arc<Shared>,
    stop: Arc<tokio::sync::Notify>,
    thread: Option<JoinHandle<()>>,
}

impl PlayerHandle {
    pub fn sender(&self) -> PlayerSender {
        self.sender.clone()
    }

    pub fn stats(&self) -> PlayerStats {
        let mut st = lock(&self.shared.stats).clone();
        st.input_dropped = self.shared.dropped.load(Ordering::Relaxed);
        st
    }

    /// Stop playback and wait for the player thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for PlayerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The video sink element the options ask for (`Auto` is resolved before; as a last
/// resort it means `fakesink`).
pub(crate) fn video_sink_element(sink: &VideoSink) -> &'static Element {
    match sink {
        VideoSink::Kms { .. } => &elements::KMSSINK,
        VideoSink::Window => &elements::AUTOVIDEOSINK,
        VideoSink::Fake | VideoSink::Auto => &elements::FAKESINK,
    }
}

/// The audio sink element the options ask for.
pub(crate) fn audio_sink_element(sink: &AudioSink) -> &'static Element {
    match sink {
        AudioSink::Auto => &elements::AUTOAUDIOSINK,
        AudioSink::Alsa(_) => &elements::ALSASINK,
        AudioSink::Fake | AudioSink::None => &elements::FAKESINK,
    }
}

/// The GStreamer elements the player needs with these sinks (`Auto` video resolved first),
/// besides a video decoder, which is chosen per stream (see [`select`]).
pub fn needs(video_sink: &VideoSink, audio_sink: &AudioSink) -> Vec<Need> {
    vec![
        elements::DISPLAY,
        elements::DECODE,
        Need {
            what: "the video sink",
            all: std::slice::from_ref(video_sink_element(video_sink)),
            any: &[],
        },
        Need {
            what: "the audio sink",
            all: std::slice::from_ref(audio_sink_element(audio_sink)),
            any: &[],
        },
    ]
}

/// Entry point of the playback layer.
pub struct Player;

impl Player {
    /// Start the player on its own thread. Fails only if GStreamer itself cannot start or a
    /// mandatory element is missing; later failures are retried and reported in the stats.
    pub fn start(opts: PlayerOptions) -> Result<PlayerHandle> {
        gst::init()?;
        let shared = Arc::new(Shared {
            started: opts.started,
            stats: Mutex::new(PlayerStats {
                showing: "slate",
                ..Default::default()
            }),
            display: Mutex::new(None),
            last_frame: Mutex::new(None),
            picture_allowed: AtomicBool::new(true),
            dropped: AtomicU64::new(0),
            lost: AtomicBool::new(false),
            max_display_bytes: 16 * 1024 * 1024,
        });
        let (tx, rx) = tokio::sync::mpsc::channel(opts.channel_capacity.max(1));
        let stop = Arc::new(tokio::sync::Notify::new());
        let engine = engine::Engine::new(opts, shared.clone())?;
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("nordlys-player".into())
            .spawn(move || engine.run(rx, stop2))?;
        Ok(PlayerHandle {
            sender: PlayerSender {
                tx,
                shared: shared.clone(),
            },
            shared,
            stop,
            thread: Some(thread),
        })
    }
}
