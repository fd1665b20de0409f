//! The two GStreamer pipelines of the player.
//!
//! * The **display** pipeline lives as long as the player and owns the one video sink (on a
//!   Pi: the one DRM master). An `input-selector` switches between the slate branch
//!   (`videotestsrc pattern=black ! textoverlay`) and the picture branch (an `appsrc` fed
//!   with decoded frames). A `tee` feeds a `fakesink` whose last sample is the snapshot.
//! * The **decode** pipeline (`appsrc ! tsdemux ! parse ! decode ! appsink`, plus the audio
//!   branch to the audio sink) is cheap to throw away and rebuild: on errors, on a stream that
//!   restarts with new timestamps, after a long stall, or to move to the next decoder. It is a
//!   non-live pipeline clocked by the stream's own timestamps, so its video `appsink`
//!   (sync=true) hands frames over at the moment they are due and the display sink renders
//!   them at once (sync=false); audio plays in the same pipeline and so stays in sync.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::options::{AudioSink, DecoderPref, VideoSink};
use super::select::{DecoderChoice, VideoCodec, choose_decoder, first_available};
use super::{AudioStats, Shared};
use crate::gst_elements::{self as elements, Element};

fn make(element: Element, name: Option<&str>) -> Result<gst::Element> {
    Ok(elements::make(element, name)?)
}

/// A decoder chosen at run time by name (hardware ones are found by name pattern).
fn make_named(factory: &str, name: &str) -> Result<gst::Element> {
    match Element::by_name(factory) {
        Some(e) => make(e, Some(name)),
        None => gst::ElementFactory::make(factory)
            .name(name)
            .build()
            .with_context(|| format!("GStreamer element {factory:?} could not be made")),
    }
}

/// Control handles into the display pipeline, shared with the decode pipeline's threads.
pub(crate) struct DisplayCtl {
    pub appsrc: gst_app::AppSrc,
    selector: gst::Element,
    pic_pad: gst::Pad,
    slate_pad: gst::Pad,
    pub picture: bool,
    pub caps: Option<gst::Caps>,
}

impl DisplayCtl {
    pub fn show_picture(&mut self, picture: bool) {
        if self.picture != picture {
            let pad = if picture {
                &self.pic_pad
            } else {
                &self.slate_pad
            };
            self.selector.set_property("active-pad", pad);
            self.picture = picture;
        }
    }
}

pub(crate) struct Display {
    pub pipeline: gst::Pipeline,
    pub text: gst::Element,
    pub snap: gst::Element,
}

impl Drop for Display {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn video_sink(sink: &VideoSink) -> Result<gst::Element> {
    let e = make(*super::video_sink_element(sink), Some("videosink"))?;
    if let VideoSink::Kms { connector } = sink {
        if let Some(c) = connector {
            e.set_property("connector-id", i32::try_from(*c).unwrap_or(-1));
        }
        // Keep the mode the console already set: the plane scales the picture, and a
        // slate/picture switch never makes the projector resync. kmssink sets a mode
        // itself when the CRTC has none.
        e.set_property("force-modesetting", false);
    }
    if e.find_property("sync").is_some() {
        // Frames arrive from the decode pipeline exactly when due.
        e.set_property("sync", false);
    }
    Ok(e)
}

/// Build and start the display pipeline.
pub(crate) fn build_display(
    sink: &VideoSink,
    slate_size: (u32, u32),
) -> Result<(Display, DisplayCtl)> {
    let pipeline = gst::Pipeline::with_name("nordlys-display");
    let slate_src = make(elements::VIDEOTESTSRC, Some("slatesrc"))?;
    slate_src.set_property("is-live", true);
    slate_src.set_property_from_str("pattern", "black");
    let (w, h) = (
        slate_size.0.clamp(64, 7680) as i32,
        slate_size.1.clamp(64, 4320) as i32,
    );
    let slate_caps = make(elements::CAPSFILTER, None)?;
    slate_caps.set_property(
        "caps",
        gst::Caps::builder("video/x-raw")
            .field("format", "I420")
            .field("width", w)
            .field("height", h)
            .field("framerate", gst::Fraction::new(5, 1))
            .build(),
    );
    let text = make(elements::TEXTOVERLAY, Some("slatetext"))?;
    text.set_property_from_str("valignment", "center");
    text.set_property_from_str("halignment", "center");
    text.set_property_from_str("line-alignment", "center");
    text.set_property("font-desc", format!("Sans {}", (h / 30).max(8)));
    text.set_property("text", "nordlys");

    let appsrc = gst_app::AppSrc::builder()
        .name("picture")
        .is_live(true)
        .format(gst::Format::Time)
        .do_timestamp(true)
        .build();
    let pic_queue = make(elements::QUEUE, Some("picqueue"))?;
    pic_queue.set_property("max-size-buffers", 3u32);
    pic_queue.set_property("max-size-bytes", 0u32);
    pic_queue.set_property("max-size-time", 0u64);
    pic_queue.set_property_from_str("leaky", "downstream");

    let selector = make(elements::INPUT_SELECTOR, Some("selector"))?;
    selector.set_property("sync-streams", false);
    let convert = make(elements::VIDEOCONVERT, None)?;
    let tee = make(elements::TEE, None)?;
    let sink_queue = make(elements::QUEUE, None)?;
    sink_queue.set_property("max-size-buffers", 2u32);
    sink_queue.set_property_from_str("leaky", "downstream");
    let vsink = video_sink(sink)?;
    let snap_queue = make(elements::QUEUE, None)?;
    snap_queue.set_property("max-size-buffers", 1u32);
    snap_queue.set_property_from_str("leaky", "downstream");
    let snap = make(elements::FAKESINK, Some("snapshot"))?;
    snap.set_property("sync", false);
    snap.set_property("async", false);
    snap.set_property("enable-last-sample", true);

    pipeline.add_many([
        &slate_src,
        &slate_caps,
        &text,
        appsrc.upcast_ref(),
        &pic_queue,
        &selector,
        &convert,
        &tee,
        &sink_queue,
        &vsink,
        &snap_queue,
        &snap,
    ])?;
    gst::Element::link_many([&slate_src, &slate_caps, &text])?;
    gst::Element::link_many([appsrc.upcast_ref(), &pic_queue])?;
    let slate_pad = selector
        .request_pad_simple("sink_%u")
        .ok_or_else(|| anyhow!("input-selector gave no pad"))?;
    let pic_pad = selector
        .request_pad_simple("sink_%u")
        .ok_or_else(|| anyhow!("input-selector gave no pad"))?;
    text.static_pad("src")
        .ok_or_else(|| anyhow!("textoverlay has no src pad"))?
        .link(&slate_pad)?;
    pic_queue
        .static_pad("src")
        .ok_or_else(|| anyhow!("queue has no src pad"))?
        .link(&pic_pad)?;
    gst::Element::link_many([&selector, &convert, &tee, &sink_queue, &vsink])?;
    gst::Element::link_many([&tee, &snap_queue, &snap])?;
    selector.set_property("active-pad", &slate_pad);

    pipeline
        .set_state(gst::State::Playing)
        .context("display pipeline refused to start")?;
    let ctl = DisplayCtl {
        appsrc,
        selector,
        pic_pad,
        slate_pad,
        picture: false,
        caps: None,
    };
    Ok((
        Display {
            pipeline,
            text,
            snap,
        },
        ctl,
    ))
}

/// A decode pipeline and what the player tracks about it.
pub(crate) struct Decode {
    pub pipeline: gst::Pipeline,
    pub appsrc: gst_app::AppSrc,
    pub chosen: Arc<Mutex<Option<DecoderChoice>>>,
    pub frames: Arc<AtomicU64>,
    pub wait_key: Arc<AtomicBool>,
    pub built: std::time::Instant,
    pub bytes_in: u64,
    pub eos: bool,
}

impl Drop for Decode {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// What the decode pipeline needs to know to build its branches.
#[derive(Clone)]
pub(crate) struct DecodeConfig {
    pub audio_sink: AudioSink,
    pub decoder: DecoderPref,
    pub available: Arc<Vec<String>>,
    pub failed: HashSet<String>,
    pub max_bytes: u64,
}

pub(crate) fn build_decode(cfg: DecodeConfig, shared: Arc<Shared>) -> Result<Decode> {
    let pipeline = gst::Pipeline::with_name("nordlys-decode");
    let caps = gst::Caps::builder("video/mpegts")
        .field("systemstream", true)
        .field("packetsize", 188i32)
        .build();
    let appsrc = gst_app::AppSrc::builder()
        .name("ts")
        .caps(&caps)
        .format(gst::Format::Bytes)
        .is_live(false)
        .stream_type(gst_app::AppStreamType::Stream)
        .max_bytes(cfg.max_bytes)
        .block(false)
        .build();
    let demux = make(elements::TSDEMUX, Some("demux"))?;
    pipeline.add_many([appsrc.upcast_ref(), &demux])?;
    appsrc.link(&demux)?;

    let chosen = Arc::new(Mutex::new(None));
    let frames = Arc::new(AtomicU64::new(0));
    let wait_key = Arc::new(AtomicBool::new(true));
    let have_video = Arc::new(AtomicBool::new(false));
    let have_audio = Arc::new(AtomicBool::new(false));
    {
        let pipeline_weak = pipeline.downgrade();
        let chosen = chosen.clone();
        let frames = frames.clone();
        let wait_key = wait_key.clone();
        demux.connect_pad_added(move |demux, pad| {
            let Some(pipeline) = pipeline_weak.upgrade() else {
                return;
            };
            let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
            let name = caps
                .structure(0)
                .map(|s| s.name().to_string())
                .unwrap_or_default();
            let res = if let Some(codec) = VideoCodec::from_caps_name(&name) {
                if have_video.swap(true, Ordering::SeqCst) {
                    link_discard(&pipeline, pad)
                } else {
                    link_video(
                        &pipeline, pad, codec, &cfg, &chosen, &frames, &wait_key, &shared,
                    )
                }
            } else if name == "audio/mpeg" {
                let mpegversion = caps
                    .structure(0)
                    .and_then(|s| s.get::<i32>("mpegversion").ok())
                    .unwrap_or(0);
                let layer = caps
                    .structure(0)
                    .and_then(|s| s.get::<i32>("layer").ok())
                    .unwrap_or(3);
                if cfg.audio_sink == AudioSink::None || have_audio.swap(true, Ordering::SeqCst) {
                    link_discard(&pipeline, pad)
                } else {
                    // Sound is secondary: without it the picture still plays.
                    link_audio(&pipeline, pad, mpegversion, layer, &cfg, &shared).or_else(|e| {
                        tracing::warn!("audio disabled: {e:#}");
                        shared.set_error(format!("audio disabled: {e:#}"));
                        link_discard(&pipeline, pad)
                    })
                }
            } else {
                tracing::debug!(caps = %name, "ignoring stream");
                link_discard(&pipeline, pad)
            };
            if let Err(e) = res {
                tracing::warn!("cannot play stream {name}: {e:#}");
                gst::element_error!(
                    demux,
                    gst::StreamError::CodecNotFound,
                    ("cannot play {}: {:#}", name, e)
                );
            }
        });
    }
    pipeline
        .set_state(gst::State::Playing)
        .context("decode pipeline refused to start")?;
    Ok(Decode {
        pipeline,
        appsrc,
        chosen,
        frames,
        wait_key,
        built: std::time::Instant::now(),
        bytes_in: 0,
        eos: false,
    })
}

fn add_and_link(pipeline: &gst::Pipeline, pad: &gst::Pad, chain: &[gst::Element]) -> Result<()> {
    pipeline.add_many(chain)?;
    gst::Element::link_many(chain)?;
    for e in chain.iter().rev() {
        e.sync_state_with_parent()?;
    }
    let sinkpad = chain[0]
        .static_pad("sink")
        .ok_or_else(|| anyhow!("no sink pad"))?;
    pad.link(&sinkpad)?;
    Ok(())
}

fn link_discard(pipeline: &gst::Pipeline, pad: &gst::Pad) -> Result<()> {
    let sink = make(elements::FAKESINK, None)?;
    sink.set_property("sync", false);
    sink.set_property("async", false);
    add_and_link(pipeline, pad, &[sink])
}

fn branch_queue() -> Result<gst::Element> {
    let q = make(elements::QUEUE, None)?;
    // Compressed data; enough to hold a TS's audio/video interleave without starving preroll.
    q.set_property("max-size-time", 3_000_000_000u64);
    q.set_property("max-size-buffers", 0u32);
    q.set_property("max-size-bytes", 32u32 * 1024 * 1024);
    Ok(q)
}

#[allow(clippy::too_many_arguments)]
fn link_video(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    codec: VideoCodec,
    cfg: &DecodeConfig,
    chosen: &Arc<Mutex<Option<DecoderChoice>>>,
    frames: &Arc<AtomicU64>,
    wait_key: &Arc<AtomicBool>,
    shared: &Arc<Shared>,
) -> Result<()> {
    let names: Vec<&str> = cfg.available.iter().map(String::as_str).collect();
    let choice = choose_decoder(codec, &names, cfg.decoder, &cfg.failed).ok_or_else(|| {
        anyhow!(
            "no usable {} decoder (preference {:?}, failed: {:?}); software decoders: {}",
            codec.name(),
            cfg.decoder,
            cfg.failed,
            elements::Missing::OneOf("decoder", codec.software()).fix()
        )
    })?;
    tracing::info!(
        decoder = %choice.element,
        hardware = choice.hardware,
        codec = codec.name(),
        "video decoder chosen"
    );
    shared.set_decoder(&choice, codec);
    *chosen.lock().unwrap_or_else(|e| e.into_inner()) = Some(choice.clone());

    let queue = branch_queue()?;
    let parse = make(codec.parser(), None)?;
    parse.set_property("config-interval", -1i32);
    let filter = make(elements::CAPSFILTER, None)?;
    filter.set_property(
        "caps",
        gst::Caps::builder(codec.parsed_caps_name())
            .field("stream-format", "byte-stream")
            .field("alignment", "au")
            .build(),
    );
    let dec = make_named(&choice.element, "vdec")?;
    let sink = {
        let shared = shared.clone();
        let frames = frames.clone();
        let last_caps: Mutex<Option<gst::Caps>> = Mutex::new(None);
        gst_app::AppSink::builder()
            .name("frames")
            .sync(true)
            .max_buffers(2)
            .callbacks(
                gst_app::AppSinkCallbacks::builder()
                    .new_sample(move |sink| {
                        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                        frames.fetch_add(1, Ordering::Relaxed);
                        let mut last = last_caps.lock().unwrap_or_else(|e| e.into_inner());
                        let caps_changed = match (sample.caps(), last.as_ref()) {
                            (Some(c), Some(l)) => c != l,
                            (Some(_), None) => true,
                            _ => false,
                        };
                        if caps_changed {
                            *last = sample.caps_owned();
                        }
                        drop(last);
                        shared.on_frame(&sample, caps_changed);
                        Ok(gst::FlowSuccess::Ok)
                    })
                    .build(),
            )
            .build()
    };
    // Before a keyframe, decoding makes grey smears: drop until one comes (after a (re)build
    // or a gap in the input).
    {
        let wait_key = wait_key.clone();
        filter
            .static_pad("src")
            .ok_or_else(|| anyhow!("capsfilter has no src pad"))?
            .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                if wait_key.load(Ordering::Relaxed)
                    && let Some(buf) = info.buffer()
                {
                    if buf.flags().contains(gst::BufferFlags::DELTA_UNIT) {
                        return gst::PadProbeReturn::Drop;
                    }
                    wait_key.store(false, Ordering::Relaxed);
                }
                gst::PadProbeReturn::Ok
            });
    }
    if let Err(e) = add_and_link(
        pipeline,
        pad,
        &[queue, parse, filter, dec.clone(), sink.upcast()],
    ) {
        // A decoder that cannot even be set up (missing device, unsupported caps) fails
        // like one that breaks at runtime: the error comes from it, so the player moves on
        // to the next candidate.
        if dec.parent().is_some() {
            gst::element_error!(
                dec,
                gst::CoreError::Negotiation,
                ("decoder {} cannot be used: {:#}", choice.element, e)
            );
            return Ok(());
        }
        return Err(e);
    }
    Ok(())
}

fn link_audio(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    mpegversion: i32,
    layer: i32,
    cfg: &DecodeConfig,
    shared: &Arc<Shared>,
) -> Result<()> {
    let names: Vec<&str> = cfg.available.iter().map(String::as_str).collect();
    let (codec, parser, decoders): (&str, Element, &[Element]) = match (mpegversion, layer) {
        (2 | 4, _) => ("aac", elements::AACPARSE, elements::AAC_DECODERS),
        (1, 1 | 2) => ("mp2", elements::MPEGAUDIOPARSE, elements::MP2_DECODERS),
        (1, _) => ("mp3", elements::MPEGAUDIOPARSE, elements::MP3_DECODERS),
        _ => return Err(anyhow!("unknown MPEG audio version {mpegversion}")),
    };
    let decoder = first_available(decoders, &names)
        .ok_or_else(|| anyhow!("{}", elements::Missing::OneOf("audio decoder", decoders)))?;
    let queue = branch_queue()?;
    let parse = make(parser, None)?;
    let dec = make(decoder, Some("adec"))?;
    let convert = make(elements::AUDIOCONVERT, None)?;
    let resample = make(elements::AUDIORESAMPLE, None)?;
    let sink = make(
        *super::audio_sink_element(&cfg.audio_sink),
        Some("audiosink"),
    )?;
    match &cfg.audio_sink {
        AudioSink::Alsa(Some(dev)) => sink.set_property("device", dev),
        AudioSink::Fake | AudioSink::None => sink.set_property("sync", true),
        AudioSink::Auto | AudioSink::Alsa(None) => {}
    }
    let codec = codec.to_string();
    let shared2 = shared.clone();
    dec.static_pad("src")
        .ok_or_else(|| anyhow!("audio decoder has no src pad"))?
        .add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
            move |_, info| {
                match &info.data {
                    Some(gst::PadProbeData::Buffer(_)) => shared2.on_audio_buffer(),
                    Some(gst::PadProbeData::Event(ev)) => {
                        if let gst::EventView::Caps(c) = ev.view() {
                            let s = c.caps().structure(0);
                            shared2.set_audio(AudioStats {
                                codec: codec.clone(),
                                channels: s.and_then(|s| s.get::<i32>("channels").ok()).unwrap_or(0)
                                    as u32,
                                rate: s.and_then(|s| s.get::<i32>("rate").ok()).unwrap_or(0) as u32,
                                buffers: 0,
                            });
                        }
                    }
                    _ => {}
                }
                gst::PadProbeReturn::Ok
            },
        );
    add_and_link(pipeline, pad, &[queue, parse, dec, convert, resample, sink])
}
