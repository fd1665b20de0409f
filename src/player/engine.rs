//! The player thread: feeds the decode pipeline, watches both pipelines, switches between
//! picture and slate, rebuilds what breaks, writes snapshots.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use gstreamer as gst;
use gstreamer::prelude::*;

use super::options::{AudioSink, PlayerOptions, VideoSink, resolve_auto_video_sink};
use super::pipeline::{Decode, DecodeConfig, Display, build_decode, build_display};
use super::slate::{SlateInfo, SlateState, local_addresses, slate_text};
use super::{PlayerInput, Shared, lock};

/// No new frame for this long: the slate replaces the frozen picture.
const STALE: Duration = Duration::from_millis(1000);
/// Data that arrives after the picture has been stale this long (the slate shows) starts a
/// fresh decode pipeline: the stream may have restarted with new timestamps, and after a
/// stall the old pipeline's clock has run ahead of the stream.
const RESTART_AFTER: Duration = STALE;
/// A decode pipeline fed data but without a frame for this long is stuck.
const STUCK: Duration = Duration::from_secs(10);
const TICK: Duration = Duration::from_millis(40);

pub(crate) struct Engine {
    opts: PlayerOptions,
    video_sink: VideoSink,
    shared: Arc<Shared>,
    available: Arc<Vec<String>>,
    failed: HashSet<String>,
    display: Option<Display>,
    display_retry: Instant,
    display_failures: u32,
    display_builds: u64,
    decode: Option<Decode>,
    decode_retry: Instant,
    decode_failures: u32,
    decode_builds: u64,
    slate: SlateInfo,
    controller_state: bool,
    got_data: bool,
    ended: bool,
    decode_error: bool,
    discont: bool,
    ips: Vec<IpAddr>,
    ips_at: Option<Instant>,
    last_text: String,
    next_snapshot: Option<Instant>,
}

fn backoff(failures: u32) -> Duration {
    Duration::from_millis(250u64 << failures.min(5)).min(Duration::from_secs(8))
}

impl Engine {
    pub fn new(opts: PlayerOptions, shared: Arc<Shared>) -> Result<Self> {
        let video_sink = match &opts.video_sink {
            VideoSink::Auto => resolve_auto_video_sink(),
            other => other.clone(),
        };
        let available = crate::gst_elements::available();
        let names: Vec<&str> = available.iter().map(String::as_str).collect();
        crate::gst_elements::require(&super::needs(&video_sink, &opts.audio_sink), &names)?;
        tracing::info!(video_sink = ?video_sink, audio_sink = ?opts.audio_sink, decoder = ?opts.decoder, "player starting");
        let next_snapshot = opts.snapshot.as_ref().map(|_| Instant::now());
        let now = Instant::now();
        Ok(Self {
            opts,
            video_sink,
            shared,
            available: Arc::new(available),
            failed: HashSet::new(),
            display: None,
            display_retry: now,
            display_failures: 0,
            display_builds: 0,
            decode: None,
            decode_retry: now,
            decode_failures: 0,
            decode_builds: 0,
            slate: SlateInfo::default(),
            controller_state: false,
            got_data: false,
            ended: false,
            decode_error: false,
            discont: false,
            ips: Vec::new(),
            ips_at: None,
            last_text: String::new(),
            next_snapshot,
        })
    }

    pub fn run(
        mut self,
        mut rx: tokio::sync::mpsc::Receiver<PlayerInput>,
        stop: Arc<tokio::sync::Notify>,
    ) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                self.shared.set_error(format!("player runtime: {e}"));
                return;
            }
        };
        rt.block_on(async {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut rx_open = true;
            loop {
                tokio::select! {
                    biased;
                    _ = stop.notified() => break,
                    _ = tick.tick() => self.tick(),
                    m = rx.recv(), if rx_open && self.can_accept() => match m {
                        Some(m) => self.handle(m),
                        None => rx_open = false,
                    },
                }
            }
        });
        self.decode = None;
        *lock(&self.shared.display) = None;
        self.display = None;
    }

    /// Take input now? Not while the queue is full, nor while backing off after a decode
    /// failure (the producer's `try_send` then drops and counts).
    fn can_accept(&self) -> bool {
        match &self.decode {
            Some(d) => d.appsrc.current_level_bytes() < self.opts.max_buffered_bytes,
            None => Instant::now() >= self.decode_retry,
        }
    }

    fn handle(&mut self, input: PlayerInput) {
        match input {
            PlayerInput::Data(bytes) => self.on_data(bytes),
            PlayerInput::Gap => {
                self.discont = true;
                if let Some(d) = &self.decode {
                    d.wait_key.store(true, Ordering::Relaxed);
                }
            }
            PlayerInput::Slate(info) => {
                self.controller_state = true;
                self.slate = info;
            }
            PlayerInput::End => {
                if let Some(d) = &self.decode {
                    let _ = d.appsrc.end_of_stream();
                } else {
                    self.ended = true;
                }
            }
        }
    }

    fn on_data(&mut self, bytes: bytes::Bytes) {
        if bytes.is_empty() {
            return;
        }
        self.got_data = true;
        lock(&self.shared.stats).input_bytes += bytes.len() as u64;
        if self.shared.lost.swap(false, Ordering::Relaxed) {
            self.discont = true;
        }
        let last_frame = *lock(&self.shared.last_frame);
        if let Some(d) = &self.decode {
            let stalled = d.frames.load(Ordering::Relaxed) > 0
                && last_frame.is_none_or(|t| t.elapsed() > RESTART_AFTER);
            if d.eos || stalled {
                let why = if d.eos {
                    "data after end of stream"
                } else {
                    "data after a stall"
                };
                self.drop_decode(why);
            }
        }
        if self.decode.is_none() {
            if Instant::now() < self.decode_retry {
                return; // backing off after a failure; the next keyframe will do
            }
            self.build_decode();
        }
        let Some(d) = self.decode.as_mut() else {
            return;
        };
        let len = bytes.len() as u64;
        let mut buffer = gst::Buffer::from_slice(bytes);
        if std::mem::take(&mut self.discont)
            && let Some(b) = buffer.get_mut()
        {
            b.set_flags(gst::BufferFlags::DISCONT);
            d.wait_key.store(true, Ordering::Relaxed);
        }
        d.bytes_in += len;
        self.ended = false;
        if let Err(e) = d.appsrc.push_buffer(buffer) {
            tracing::debug!("decode appsrc refused data: {e:?}");
        }
    }

    fn drop_decode(&mut self, why: &str) {
        if self.decode.take().is_some() {
            tracing::info!("restarting the decode pipeline: {why}");
        }
    }

    fn build_decode(&mut self) {
        let cfg = DecodeConfig {
            audio_sink: self.opts.audio_sink.clone(),
            decoder: self.opts.decoder,
            available: self.available.clone(),
            failed: self.failed.clone(),
            max_bytes: self.opts.max_buffered_bytes,
        };
        match build_decode(cfg, self.shared.clone()) {
            Ok(d) => {
                if self.decode_builds > 0 {
                    lock(&self.shared.stats).pipeline_restarts += 1;
                }
                self.decode_builds += 1;
                self.decode = Some(d);
            }
            Err(e) => self.decode_failed(format!("decode pipeline: {e:#}")),
        }
    }

    fn decode_failed(&mut self, err: String) {
        tracing::warn!("{err}");
        self.shared.set_error(err);
        self.decode = None;
        self.decode_error = true;
        self.decode_retry = Instant::now() + backoff(self.decode_failures);
        self.decode_failures += 1;
    }

    fn tick(&mut self) {
        let now = Instant::now();
        self.tick_display(now);
        self.tick_decode(now);
        self.update_output(now);
        self.snapshot(now);
    }

    fn tick_display(&mut self, now: Instant) {
        if self.display.is_none() && now >= self.display_retry {
            match build_display(&self.video_sink, self.opts.slate_size) {
                Ok((display, ctl)) => {
                    if self.display_builds > 0 {
                        lock(&self.shared.stats).pipeline_restarts += 1;
                    }
                    self.display_builds += 1;
                    *lock(&self.shared.display) = Some(ctl);
                    self.display = Some(display);
                    self.last_text.clear();
                }
                Err(e) => self.display_failed(format!("display pipeline: {e:#}")),
            }
        }
        let Some(bus) = self.display.as_ref().and_then(|d| d.pipeline.bus()) else {
            return;
        };
        while let Some(msg) = bus.pop() {
            match msg.view() {
                gst::MessageView::Error(e) => {
                    let src = msg.src().map(|s| s.path_string().to_string());
                    self.display_failed(format!(
                        "display: {} ({})",
                        e.error(),
                        src.unwrap_or_default()
                    ));
                    return;
                }
                gst::MessageView::Warning(w) => {
                    tracing::warn!("display warning: {}", w.error());
                }
                _ => {}
            }
        }
        if self.display_builds > 0 && self.display.is_some() {
            self.display_failures = 0;
        }
    }

    fn display_failed(&mut self, err: String) {
        tracing::warn!("{err}");
        self.shared.set_error(err);
        *lock(&self.shared.display) = None;
        self.display = None;
        self.display_retry = Instant::now() + backoff(self.display_failures + 2);
        self.display_failures += 1;
    }

    fn tick_decode(&mut self, now: Instant) {
        let Some(d) = self.decode.as_mut() else {
            return;
        };
        let Some(bus) = d.pipeline.bus() else { return };
        let mut failure = None;
        while let Some(msg) = bus.pop() {
            match msg.view() {
                gst::MessageView::Error(e) => {
                    let src = msg
                        .src()
                        .map(|s| s.path_string().to_string())
                        .unwrap_or_default();
                    failure = Some((
                        src,
                        format!("{}", e.error()),
                        e.debug().map(|s| s.to_string()),
                    ));
                    break;
                }
                gst::MessageView::Eos(_) => {
                    d.eos = true;
                    self.ended = true;
                }
                gst::MessageView::Warning(w) => {
                    tracing::warn!("decode warning: {}", w.error());
                }
                _ => {}
            }
        }
        let frames = d.frames.load(Ordering::Relaxed);
        if frames > 0 {
            self.decode_failures = 0;
            self.decode_error = false;
        }
        let chosen = lock(&d.chosen).clone();
        if let Some((src, err, detail)) = failure {
            tracing::debug!(?detail, "decode error detail");
            if (src.contains("audiosink") || src.contains("adec"))
                && !matches!(self.opts.audio_sink, AudioSink::Fake | AudioSink::None)
            {
                // A broken audio output must not keep the picture away: go on without sound.
                tracing::warn!("audio output failed; continuing without sound");
                self.opts.audio_sink = AudioSink::Fake;
            }
            let mut hw_failed = false;
            if src.contains("vdec")
                && let Some(c) = chosen.filter(|c| c.hardware)
            {
                tracing::warn!(decoder = %c.element, "hardware decoder failed; trying the next one");
                self.failed.insert(c.element);
                hw_failed = true;
            }
            let audio_only = src.contains("audiosink") || src.contains("adec");
            self.decode_failed(format!("decode: {err} ({src})"));
            if hw_failed || audio_only {
                // Another decoder is to be tried: no reason to wait.
                self.decode_retry = now;
            }
        } else if frames == 0
            && d.bytes_in > 0
            && !d.eos
            && now.duration_since(d.built) > STUCK
            && d.appsrc.current_level_bytes() == 0
        {
            let hardware = chosen.filter(|c| c.hardware);
            self.decode_failed("decode: no picture from the data received".to_string());
            if let Some(c) = hardware {
                tracing::warn!(decoder = %c.element, "hardware decoder gives no frames; trying the next one");
                self.failed.insert(c.element);
                self.decode_retry = now;
            }
        }
    }

    fn state(&self, fresh: bool, had_frames: bool) -> SlateState {
        if self.controller_state {
            self.slate.state
        } else if fresh {
            SlateState::Playing
        } else if self.ended {
            SlateState::Ended
        } else if self.decode_error {
            SlateState::Error
        } else if had_frames {
            SlateState::Stalled
        } else if self.got_data {
            SlateState::Buffering
        } else {
            SlateState::Joining
        }
    }

    fn update_output(&mut self, now: Instant) {
        let last_frame = *lock(&self.shared.last_frame);
        let fresh = last_frame.is_some_and(|t| now.duration_since(t) < STALE);
        let state = self.state(fresh, last_frame.is_some());
        // The controller's "stalled" means its clock says the next piece is overdue, not that
        // the picture stopped: frames still coming from what the player holds keep showing
        // (at the live edge the swarm's state can flip to stalled and back on every piece,
        // and a slate flashed over a moving picture is worse than either). Joining,
        // buffering and errors show the slate.
        let allowed =
            !self.controller_state || matches!(state, SlateState::Playing | SlateState::Stalled);
        self.shared
            .picture_allowed
            .store(allowed, Ordering::Relaxed);
        let want_picture = allowed && fresh;
        let showing = match lock(&self.shared.display).as_mut() {
            Some(ctl) => {
                if ctl.picture && !want_picture {
                    tracing::info!(?state, "showing the slate");
                    ctl.show_picture(false);
                }
                if ctl.picture { "picture" } else { "slate" }
            }
            None => "slate",
        };
        {
            let mut st = lock(&self.shared.stats);
            st.showing = showing;
            st.state = state;
        }
        if self
            .ips_at
            .is_none_or(|t| now.duration_since(t) > Duration::from_secs(10))
        {
            self.ips = local_addresses();
            self.ips_at = Some(now);
        }
        let mut info = self.slate.clone();
        info.state = state;
        if !self.controller_state && state == SlateState::Error {
            info.error = lock(&self.shared.stats).last_error.clone();
        }
        let text = slate_text(&self.opts.event_name, &self.opts.venue, &info, &self.ips);
        if text != self.last_text
            && let Some(d) = &self.display
        {
            d.text.set_property("text", &text);
            self.last_text = text;
        }
    }

    fn snapshot(&mut self, now: Instant) {
        let (Some((path, every)), Some(due)) = (self.opts.snapshot.clone(), self.next_snapshot)
        else {
            return;
        };
        if now < due {
            return;
        }
        self.next_snapshot = Some(now + every.max(Duration::from_millis(100)));
        let Some(d) = &self.display else { return };
        match write_snapshot(&d.snap, &path) {
            Ok(true) => lock(&self.shared.stats).snapshots_written += 1,
            Ok(false) => {}
            Err(e) => tracing::warn!("snapshot {}: {e:#}", path.display()),
        }
    }
}

/// Write what the display shows as a PNG (atomically). False if nothing was shown yet.
pub(crate) fn write_snapshot(snap: &gst::Element, path: &Path) -> Result<bool> {
    let Some(sample) = snap.property::<Option<gst::Sample>>("last-sample") else {
        return Ok(false);
    };
    let png = gstreamer_video::convert_sample(
        &sample,
        &gst::Caps::builder("image/png").build(),
        gst::ClockTime::from_seconds(3),
    )
    .map_err(|e| anyhow!("PNG conversion failed: {e}"))?;
    let buffer = png.buffer().context("PNG conversion gave no buffer")?;
    let map = buffer.map_readable().context("cannot read PNG buffer")?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, map.as_slice()).with_context(|| format!("writing {tmp:?}"))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(true)
}
