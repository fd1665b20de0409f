//! GStreamer-based injector inputs: a test pattern, or any GStreamer source description,
//! encoded to H.264 + AAC and muxed to MPEG-TS in real time.
//!
//! * `test-pattern`: a moving `videotestsrc` with the wall clock and the running time burnt
//!   in, and a 440 Hz tone.
//! * `gst:DESCRIPTION`: any `gst-launch-1.0`-style description whose unlinked source pads
//!   give raw video (required) and raw audio (optional), e.g.
//!   `gst:v4l2src device=/dev/video0 ! videoconvert` or
//!   `gst:v4l2src ! videoconvert  alsasrc device=hw:1 ! audioconvert`.
//!   Compressed outputs (e.g. MJPEG from a webcam) need a decoder in the description.
//!   Elements with "sometimes" pads (decodebin) are not ghosted by GStreamer; put a
//!   `videoconvert`/`audioconvert` after them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use crate::gst_elements::{self as elements, Element};

const TS_PACKET: usize = 188;
/// Buffers of 7 TS packets queued towards the async side (about 5 s at 2 Mbit/s).
const CHANNEL_CAPACITY: usize = 1024;

/// A running GStreamer input. Dropping it stops the pipeline.
pub struct GstInput {
    pipeline: gst::Pipeline,
    stop: Arc<AtomicBool>,
    watcher: Option<JoinHandle<()>>,
    error: Arc<Mutex<Option<String>>>,
    dropped: Arc<AtomicU64>,
}

impl GstInput {
    /// The error that stopped the pipeline, if any.
    pub fn error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    /// TS buffers dropped because the receiver did not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for GstInput {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.pipeline.set_state(gst::State::Null);
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
    }
}

/// Is `spec` one of this module's inputs (`test-pattern` or `gst:...`)?
pub fn is_gst_input(spec: &str) -> bool {
    spec == "test-pattern" || spec.starts_with("gst:")
}

fn make(element: Element) -> Result<gst::Element> {
    Ok(elements::make(element, None)?)
}

/// The first element of `group` that can be made.
fn first_of(group: &'static [Element]) -> Result<gst::Element> {
    group
        .iter()
        .find_map(|e| elements::make(*e, None).ok())
        .ok_or_else(|| anyhow!("{}", elements::Missing::OneOf("AAC audio encoder", group)))
}

/// What an input needs, checked before anything is built so that every missing element is
/// named at once, with its plugin and package.
pub fn needs(spec: &str) -> Vec<elements::Need> {
    if spec == "test-pattern" {
        vec![elements::ENCODE, elements::TEST_PATTERN]
    } else {
        vec![elements::ENCODE]
    }
}

/// GStreamer's own ghosting finds only one unlinked source pad; a capture description has
/// two (video and audio), so ghost every unlinked always-pad.
fn ghost_unlinked_src_pads(bin: &gst::Bin) -> Result<()> {
    let mut unlinked = Vec::new();
    for element in bin.iterate_recurse().into_iter().flatten() {
        if element.is::<gst::Bin>() {
            continue;
        }
        for pad in element.src_pads() {
            if !pad.is_linked() {
                unlinked.push(pad);
            }
        }
    }
    for (i, pad) in unlinked.into_iter().enumerate() {
        let ghost = gst::GhostPad::builder_with_target(&pad)?
            .name(format!("src_{i}"))
            .build();
        bin.add_pad(&ghost)?;
    }
    Ok(())
}

/// Make `mpegtsmux` write PAT and PMT directly before every video keyframe, as ffmpeg's
/// muxer does (on its own it repeats them only every ~100 ms): the packetizer then puts
/// them at the start of the keyframe's piece, and a receiver joining there demuxes at once.
///
/// mpegtsmux (1.14 and later) takes a downstream force-key-unit event with `all-headers`
/// on a sink pad as a request to resend PAT/PMT/SI before the next video keyframe
/// (non-delta buffer) it muxes. So, on `parser`'s src pad, every keyframe buffer is
/// preceded by such an event. The event carries no running time: the muxer then does not
/// compare times and takes the very next keyframe, which is the buffer that follows.
fn resend_psi_at_keyframes(parser: &gst::Element) -> Result<()> {
    let pad = parser
        .static_pad("src")
        .context("the video parser has no src pad")?;
    pad.add_probe(gst::PadProbeType::BUFFER, |pad, info| {
        if let Some(gst::PadProbeData::Buffer(buffer)) = &info.data
            && !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT)
        {
            let event = gstreamer_video::DownstreamForceKeyUnitEvent::builder()
                .all_headers(true)
                .build();
            if !pad.push_event(event) {
                tracing::debug!("the force-key-unit event before a keyframe was not handled");
            }
        }
        gst::PadProbeReturn::Ok
    })
    .context("adding the keyframe probe")?;
    Ok(())
}

/// Start a TS-producing input. TS bytes (whole 188-byte packets) arrive on the receiver in
/// real time; the channel closes when the pipeline ends or fails (see [`GstInput::error`]).
/// `size` scales the video (default: the source's own size, 1280x720 for the test pattern).
pub fn spawn_gst_input(
    spec: &str,
    size: Option<(u32, u32)>,
) -> Result<(tokio::sync::mpsc::Receiver<Bytes>, GstInput)> {
    gst::init()?;
    if !is_gst_input(spec) {
        bail!("unknown GStreamer input {spec:?} (expected test-pattern or gst:DESCRIPTION)");
    }
    let available = elements::available();
    let names: Vec<&str> = available.iter().map(String::as_str).collect();
    elements::require(&needs(spec), &names)?;
    if let Some((w, h)) = size
        && (!(16..=7680).contains(&w) || !(16..=4320).contains(&h))
    {
        bail!("video size {w}x{h} out of range");
    }
    let pipeline = gst::Pipeline::with_name("nordlys-input");
    let mux = make(elements::MPEGTSMUX)?;
    mux.set_property("alignment", 7i32);
    let (tx, rx) = tokio::sync::mpsc::channel(CHANNEL_CAPACITY);
    let tx = Arc::new(Mutex::new(Some(tx)));
    let dropped = Arc::new(AtomicU64::new(0));
    let sink = {
        let tx = tx.clone();
        let dropped = dropped.clone();
        let mut pending: Vec<u8> = Vec::new();
        gst_app::AppSink::builder()
            .sync(true)
            .max_buffers(64)
            .callbacks(
                gst_app::AppSinkCallbacks::builder()
                    .new_sample(move |sink| {
                        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                        let buffer = sample.buffer().ok_or(gst::FlowError::Error)?;
                        let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
                        pending.extend_from_slice(map.as_slice());
                        let whole = pending.len() / TS_PACKET * TS_PACKET;
                        if whole == 0 {
                            return Ok(gst::FlowSuccess::Ok);
                        }
                        let bytes = Bytes::copy_from_slice(&pending[..whole]);
                        pending.drain(..whole);
                        let guard = tx.lock().unwrap_or_else(|e| e.into_inner());
                        let Some(tx) = guard.as_ref() else {
                            return Err(gst::FlowError::Eos);
                        };
                        match tx.try_send(bytes) {
                            Ok(()) => Ok(gst::FlowSuccess::Ok),
                            Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                                if dropped.fetch_add(1, Ordering::Relaxed).is_multiple_of(100) {
                                    tracing::warn!("TS consumer is behind; dropping input");
                                }
                                Ok(gst::FlowSuccess::Ok)
                            }
                            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {
                                Err(gst::FlowError::Eos)
                            }
                        }
                    })
                    .build(),
            )
            .build()
    };
    pipeline.add_many([&mux, sink.upcast_ref()])?;
    mux.link(&sink)?;

    let (bin, desc) = if spec == "test-pattern" {
        let (w, h) = size.unwrap_or((1280, 720));
        let desc = format!(
            "{} is-live=true pattern=smpte horizontal-speed=4 \
             ! video/x-raw,width={w},height={h},framerate=30/1 \
             ! {} time-format=\"%H:%M:%S\" font-desc=\"Sans 28\" \
             ! {} valignment=bottom font-desc=\"Sans 28\" \
             {} is-live=true wave=sine freq=440 volume=0.3",
            elements::VIDEOTESTSRC.factory,
            elements::CLOCKOVERLAY.factory,
            elements::TIMEOVERLAY.factory,
            elements::AUDIOTESTSRC.factory,
        );
        let bin = gst::parse::bin_from_description(&desc, false)
            .map_err(|e| anyhow!("building the test pattern: {e}"))?;
        (bin, desc)
    } else if let Some(desc) = spec.strip_prefix("gst:") {
        let bin = gst::parse::bin_from_description(desc, false)
            .map_err(|e| anyhow!("invalid GStreamer description {desc:?}: {e}"))?;
        (bin, desc.to_string())
    } else {
        bail!("unknown GStreamer input {spec:?} (expected test-pattern or gst:DESCRIPTION)");
    };
    ghost_unlinked_src_pads(&bin)?;
    pipeline.add(&bin)?;
    let mut video_src = None;
    let mut audio_src = None;
    for pad in bin.src_pads() {
        let caps = pad.query_caps(None);
        let name = caps
            .structure(0)
            .map(|s| s.name().to_string())
            .unwrap_or_default();
        if name.starts_with("video/") && video_src.is_none() {
            video_src = Some(pad);
        } else if name.starts_with("audio/") && audio_src.is_none() {
            audio_src = Some(pad);
        } else {
            tracing::warn!(caps = %caps, "ignoring an output of the input description");
        }
    }
    let video_src = video_src.ok_or_else(|| {
        anyhow!("the GStreamer description {desc:?} has no unlinked video output")
    })?;

    // Video: scale, encode H.264 with a keyframe every second, parse, mux.
    let vq = make(elements::QUEUE)?;
    let vconv = make(elements::VIDEOCONVERT)?;
    let vscale = make(elements::VIDEOSCALE)?;
    let vrate = make(elements::VIDEORATE)?;
    let mut vcaps = gst::Caps::builder("video/x-raw").field("format", "I420");
    if let Some((w, h)) = size {
        vcaps = vcaps.field("width", w as i32).field("height", h as i32);
    }
    let vfilter = make(elements::CAPSFILTER)?;
    vfilter.set_property("caps", vcaps.build());
    let enc = make(elements::X264ENC)?;
    enc.set_property_from_str("tune", "zerolatency");
    enc.set_property_from_str("speed-preset", "veryfast");
    enc.set_property("key-int-max", 30u32);
    enc.set_property("bitrate", 2500u32);
    let parse = make(elements::H264PARSE)?;
    parse.set_property("config-interval", -1i32);
    let vchain = [vq, vconv, vscale, vrate, vfilter, enc, parse];
    pipeline.add_many(&vchain)?;
    gst::Element::link_many(&vchain)?;
    video_src
        .link(
            &vchain[0]
                .static_pad("sink")
                .context("queue has no sink pad")?,
        )
        .context("linking the video source")?;
    vchain[6].link(&mux).context("linking video to mpegtsmux")?;
    resend_psi_at_keyframes(&vchain[6])?;

    if let Some(audio_src) = audio_src {
        let aq = make(elements::QUEUE)?;
        let aconv = make(elements::AUDIOCONVERT)?;
        let ares = make(elements::AUDIORESAMPLE)?;
        let afilter = make(elements::CAPSFILTER)?;
        afilter.set_property(
            "caps",
            gst::Caps::builder("audio/x-raw")
                .field("rate", 48000i32)
                .field("channels", 2i32)
                .build(),
        );
        let aenc = first_of(elements::AAC_ENCODERS)?;
        aenc.set_property("bitrate", 128_000i32);
        let aparse = make(elements::AACPARSE)?;
        let achain = [aq, aconv, ares, afilter, aenc, aparse];
        pipeline.add_many(&achain)?;
        gst::Element::link_many(&achain)?;
        audio_src
            .link(
                &achain[0]
                    .static_pad("sink")
                    .context("queue has no sink pad")?,
            )
            .context("linking the audio source")?;
        achain[5].link(&mux).context("linking audio to mpegtsmux")?;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let error = Arc::new(Mutex::new(None));
    let bus = pipeline.bus().context("pipeline has no bus")?;
    if let Err(e) = pipeline.set_state(gst::State::Playing) {
        let _ = pipeline.set_state(gst::State::Null);
        let detail = bus
            .pop_filtered(&[gst::MessageType::Error])
            .and_then(|m| match m.view() {
                gst::MessageView::Error(e) => Some(e.error().to_string()),
                _ => None,
            })
            .unwrap_or_else(|| e.to_string());
        bail!("the input pipeline did not start: {detail}");
    }
    let watcher = {
        let stop = stop.clone();
        let error = error.clone();
        std::thread::Builder::new()
            .name("nordlys-gst-input".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(100)) else {
                        continue;
                    };
                    match msg.view() {
                        gst::MessageView::Error(e) => {
                            let text = format!(
                                "{} ({})",
                                e.error(),
                                msg.src()
                                    .map(|s| s.path_string().to_string())
                                    .unwrap_or_default()
                            );
                            tracing::warn!("input pipeline failed: {text}");
                            *error.lock().unwrap_or_else(|e| e.into_inner()) = Some(text);
                            break;
                        }
                        gst::MessageView::Eos(_) => break,
                        _ => {}
                    }
                }
                // Close the channel: the consumer sees the end.
                tx.lock().unwrap_or_else(|e| e.into_inner()).take();
            })?
    };
    Ok((
        rx,
        GstInput {
            pipeline,
            stop,
            watcher: Some(watcher),
            error,
            dropped,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_specs_are_clear_errors() {
        let e = spawn_gst_input("nonsense", None).err().unwrap().to_string();
        assert!(e.contains("unknown GStreamer input"), "{e}");
        let e = spawn_gst_input("gst:nosuchelement ! fakesink", None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("invalid GStreamer description"), "{e}");
        let e = spawn_gst_input("gst:audiotestsrc", None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("no unlinked video output"), "{e}");
        assert!(spawn_gst_input("test-pattern", Some((0, 5))).is_err());
    }

    /// The test pattern is built only from what its `Need` lists name, so the doctor and
    /// the start-up check see every element it makes.
    #[test]
    fn test_pattern_makes_only_what_its_needs_name() {
        let (_rx, input) = spawn_gst_input("test-pattern", Some((160, 120))).unwrap();
        let made = elements::factories_in(input.pipeline.upcast_ref());
        assert!(made.len() > 15, "{made:?}");
        let needs = needs("test-pattern");
        for f in made {
            assert!(
                f == "bin" || needs.iter().any(|n| n.names(&f)),
                "{f} is made but no Need names it"
            );
        }
    }
}
