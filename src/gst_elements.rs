//! Every GStreamer element nordlys creates, with the plugin, Debian package and Buildroot
//! option that provide it: one catalog for the player, the slate, the inputs and
//! `nordlys doctor`, so a missing element is named the same way wherever it shows.
//!
//! Pipelines make their elements only through [`make`], from the constants here, and each
//! use (the display, the decoder, an input) lists what it makes in a [`Need`]. Tests walk
//! the pipelines that were really built and check every element against its `Need`, so the
//! lists cannot drift from the code.

use std::fmt;

use gstreamer as gst;
use gstreamer::prelude::*;

/// A GStreamer plugin and where it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plugin {
    pub name: &'static str,
    /// The Debian 12 package holding the plugin ("" if Debian has none).
    pub debian: &'static str,
    /// The Buildroot option that builds it ("" if Buildroot has none).
    pub buildroot: &'static str,
}

/// One element factory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Element {
    pub factory: &'static str,
    pub plugin: &'static Plugin,
}

const fn el(factory: &'static str, plugin: &'static Plugin) -> Element {
    Element { factory, plugin }
}

const fn plugin(name: &'static str, debian: &'static str, buildroot: &'static str) -> Plugin {
    Plugin {
        name,
        debian,
        buildroot,
    }
}

// Plugins. The package names were read with `dpkg -S` on Debian 12 (GStreamer 1.22).
const CORE: Plugin = plugin(
    "coreelements",
    "libgstreamer1.0-0",
    "BR2_PACKAGE_GSTREAMER1",
);
const APP: Plugin = plugin(
    "app",
    "gstreamer1.0-plugins-base",
    "BR2_PACKAGE_GST1_PLUGINS_BASE_PLUGIN_APP",
);
const VIDEOTESTSRC_P: Plugin = plugin(
    "videotestsrc",
    "gstreamer1.0-plugins-base",
    "BR2_PACKAGE_GST1_PLUGINS_BASE_PLUGIN_VIDEOTESTSRC",
);
const AUDIOTESTSRC_P: Plugin = plugin(
    "audiotestsrc",
    "gstreamer1.0-plugins-base",
    "BR2_PACKAGE_GST1_PLUGINS_BASE_PLUGIN_AUDIOTESTSRC",
);
const PANGO: Plugin = plugin(
    "pango",
    "gstreamer1.0-x",
    "BR2_PACKAGE_GST1_PLUGINS_BASE_PLUGIN_PANGO",
);
const VIDEOCONVERTSCALE: Plugin = plugin(
    "videoconvertscale",
    "gstreamer1.0-plugins-base",
    "BR2_PACKAGE_GST1_PLUGINS_BASE_PLUGIN_VIDEOCONVERTSCALE",
);
const VIDEORATE_P: Plugin = plugin(
    "videorate",
    "gstreamer1.0-plugins-base",
    "BR2_PACKAGE_GST1_PLUGINS_BASE_PLUGIN_VIDEORATE",
);
const AUDIOCONVERT_P: Plugin = plugin(
    "audioconvert",
    "gstreamer1.0-plugins-base",
    "BR2_PACKAGE_GST1_PLUGINS_BASE_PLUGIN_AUDIOCONVERT",
);
const AUDIORESAMPLE_P: Plugin = plugin(
    "audioresample",
    "gstreamer1.0-plugins-base",
    "BR2_PACKAGE_GST1_PLUGINS_BASE_PLUGIN_AUDIORESAMPLE",
);
const ALSA: Plugin = plugin(
    "alsa",
    "gstreamer1.0-alsa",
    "BR2_PACKAGE_GST1_PLUGINS_BASE_PLUGIN_ALSA",
);
const AUDIOPARSERS: Plugin = plugin(
    "audioparsers",
    "gstreamer1.0-plugins-good",
    "BR2_PACKAGE_GST1_PLUGINS_GOOD_PLUGIN_AUDIOPARSERS",
);
const AUTODETECT: Plugin = plugin(
    "autodetect",
    "gstreamer1.0-plugins-good",
    "BR2_PACKAGE_GST1_PLUGINS_GOOD_PLUGIN_AUTODETECT",
);
const MPG123: Plugin = plugin(
    "mpg123",
    "gstreamer1.0-plugins-good",
    "BR2_PACKAGE_GST1_PLUGINS_GOOD_PLUGIN_MPG123",
);
/// Stateful V4L2 codecs (`v4l2h264dec`, `v4l2videoNh264dec`).
pub const VIDEO4LINUX2: Plugin = plugin(
    "video4linux2",
    "gstreamer1.0-plugins-good",
    "BR2_PACKAGE_GST1_PLUGINS_GOOD_PLUGIN_V4L2",
);
/// Stateless V4L2 codecs (`v4l2slh264dec`, `v4l2slh265dec`).
pub const V4L2CODECS: Plugin = plugin(
    "v4l2codecs",
    "gstreamer1.0-plugins-bad",
    "BR2_PACKAGE_GST1_PLUGINS_BAD_PLUGIN_V4L2CODECS",
);
const MPEGTSDEMUX: Plugin = plugin(
    "mpegtsdemux",
    "gstreamer1.0-plugins-bad",
    "BR2_PACKAGE_GST1_PLUGINS_BAD_PLUGIN_MPEGTSDEMUX",
);
const MPEGTSMUX_P: Plugin = plugin(
    "mpegtsmux",
    "gstreamer1.0-plugins-bad",
    "BR2_PACKAGE_GST1_PLUGINS_BAD_PLUGIN_MPEGTSMUX",
);
const VIDEOPARSERSBAD: Plugin = plugin(
    "videoparsersbad",
    "gstreamer1.0-plugins-bad",
    "BR2_PACKAGE_GST1_PLUGINS_BAD_PLUGIN_VIDEOPARSERS",
);
const KMS: Plugin = plugin(
    "kms",
    "gstreamer1.0-plugins-bad",
    "BR2_PACKAGE_GST1_PLUGINS_BAD_PLUGIN_KMS",
);
const OPENH264: Plugin = plugin(
    "openh264",
    "gstreamer1.0-plugins-bad",
    "BR2_PACKAGE_GST1_PLUGINS_BAD_PLUGIN_OPENH264",
);
const DE265: Plugin = plugin("de265", "gstreamer1.0-plugins-bad", "");
const FAAD_P: Plugin = plugin(
    "faad",
    "gstreamer1.0-plugins-bad",
    "BR2_PACKAGE_GST1_PLUGINS_BAD_PLUGIN_FAAD",
);
const VOAACENC_P: Plugin = plugin(
    "voaacenc",
    "gstreamer1.0-plugins-bad",
    "BR2_PACKAGE_GST1_PLUGINS_BAD_PLUGIN_VOAACENC",
);
const FDKAAC: Plugin = plugin("fdkaac", "", "BR2_PACKAGE_GST1_PLUGINS_BAD_PLUGIN_FDK_AAC");
const X264: Plugin = plugin(
    "x264",
    "gstreamer1.0-plugins-ugly",
    "BR2_PACKAGE_GST1_PLUGINS_UGLY_PLUGIN_X264",
);
const LIBAV: Plugin = plugin("libav", "gstreamer1.0-libav", "BR2_PACKAGE_GST1_LIBAV");

// Elements.
pub const CAPSFILTER: Element = el("capsfilter", &CORE);
pub const QUEUE: Element = el("queue", &CORE);
pub const TEE: Element = el("tee", &CORE);
pub const INPUT_SELECTOR: Element = el("input-selector", &CORE);
pub const FAKESINK: Element = el("fakesink", &CORE);
pub const APPSRC: Element = el("appsrc", &APP);
pub const APPSINK: Element = el("appsink", &APP);
pub const VIDEOTESTSRC: Element = el("videotestsrc", &VIDEOTESTSRC_P);
pub const AUDIOTESTSRC: Element = el("audiotestsrc", &AUDIOTESTSRC_P);
pub const TEXTOVERLAY: Element = el("textoverlay", &PANGO);
pub const CLOCKOVERLAY: Element = el("clockoverlay", &PANGO);
pub const TIMEOVERLAY: Element = el("timeoverlay", &PANGO);
pub const VIDEOCONVERT: Element = el("videoconvert", &VIDEOCONVERTSCALE);
pub const VIDEOSCALE: Element = el("videoscale", &VIDEOCONVERTSCALE);
pub const VIDEORATE: Element = el("videorate", &VIDEORATE_P);
pub const AUDIOCONVERT: Element = el("audioconvert", &AUDIOCONVERT_P);
pub const AUDIORESAMPLE: Element = el("audioresample", &AUDIORESAMPLE_P);
pub const ALSASINK: Element = el("alsasink", &ALSA);
pub const AUTOVIDEOSINK: Element = el("autovideosink", &AUTODETECT);
pub const AUTOAUDIOSINK: Element = el("autoaudiosink", &AUTODETECT);
pub const KMSSINK: Element = el("kmssink", &KMS);
pub const TSDEMUX: Element = el("tsdemux", &MPEGTSDEMUX);
pub const MPEGTSMUX: Element = el("mpegtsmux", &MPEGTSMUX_P);
pub const H264PARSE: Element = el("h264parse", &VIDEOPARSERSBAD);
pub const H265PARSE: Element = el("h265parse", &VIDEOPARSERSBAD);
pub const AACPARSE: Element = el("aacparse", &AUDIOPARSERS);
pub const MPEGAUDIOPARSE: Element = el("mpegaudioparse", &AUDIOPARSERS);
pub const X264ENC: Element = el("x264enc", &X264);
pub const AVDEC_H264: Element = el("avdec_h264", &LIBAV);
pub const AVDEC_H265: Element = el("avdec_h265", &LIBAV);
pub const AVDEC_AAC: Element = el("avdec_aac", &LIBAV);
pub const AVDEC_MP2FLOAT: Element = el("avdec_mp2float", &LIBAV);
pub const AVDEC_MP3: Element = el("avdec_mp3", &LIBAV);
pub const AVENC_AAC: Element = el("avenc_aac", &LIBAV);
pub const OPENH264DEC: Element = el("openh264dec", &OPENH264);
pub const LIBDE265DEC: Element = el("libde265dec", &DE265);
pub const MPG123AUDIODEC: Element = el("mpg123audiodec", &MPG123);
pub const FAAD: Element = el("faad", &FAAD_P);
pub const FDKAACDEC: Element = el("fdkaacdec", &FDKAAC);
pub const FDKAACENC: Element = el("fdkaacenc", &FDKAAC);
pub const VOAACENC: Element = el("voaacenc", &VOAACENC_P);

/// Software decoders in order of preference (the hardware ones are found by name pattern,
/// see `player::select`).
pub const H264_SOFTWARE: &[Element] = &[AVDEC_H264, OPENH264DEC];
pub const H265_SOFTWARE: &[Element] = &[AVDEC_H265, LIBDE265DEC];
pub const AAC_DECODERS: &[Element] = &[AVDEC_AAC, FDKAACDEC, FAAD];
pub const MP2_DECODERS: &[Element] = &[MPG123AUDIODEC, AVDEC_MP2FLOAT];
pub const MP3_DECODERS: &[Element] = &[MPG123AUDIODEC, AVDEC_MP3];
pub const AAC_ENCODERS: &[Element] = &[FDKAACENC, AVENC_AAC, VOAACENC];

/// What one part of nordlys needs: every element of `all`, and one of each `any` group.
#[derive(Debug, Clone, Copy)]
pub struct Need {
    /// Shown in reports: "the slate and display", "the test pattern input"...
    pub what: &'static str,
    pub all: &'static [Element],
    pub any: &'static [(&'static str, &'static [Element])],
}

/// The display pipeline: slate, picture switch, snapshot tee (the video sink comes from
/// the options; see [`video_sink_element`]).
pub const DISPLAY: Need = Need {
    what: "the slate and display",
    all: &[
        VIDEOTESTSRC,
        CAPSFILTER,
        TEXTOVERLAY,
        APPSRC,
        QUEUE,
        INPUT_SELECTOR,
        VIDEOCONVERT,
        TEE,
        FAKESINK,
    ],
    any: &[],
};

/// The decode pipeline, less the video decoder (chosen at run time, see `player::select`)
/// and the audio sink (from the options).
pub const DECODE: Need = Need {
    what: "the stream decoder",
    all: &[
        APPSRC,
        TSDEMUX,
        QUEUE,
        CAPSFILTER,
        APPSINK,
        FAKESINK,
        H264PARSE,
        H265PARSE,
        AACPARSE,
        MPEGAUDIOPARSE,
        AUDIOCONVERT,
        AUDIORESAMPLE,
    ],
    any: &[("AAC audio decoder", AAC_DECODERS)],
};

/// The encoding half of every GStreamer input (`test-pattern`, `gst:`).
pub const ENCODE: Need = Need {
    what: "the input encoder",
    all: &[
        MPEGTSMUX,
        APPSINK,
        QUEUE,
        VIDEOCONVERT,
        VIDEOSCALE,
        VIDEORATE,
        CAPSFILTER,
        X264ENC,
        H264PARSE,
        AUDIOCONVERT,
        AUDIORESAMPLE,
        AACPARSE,
    ],
    any: &[("AAC audio encoder", AAC_ENCODERS)],
};

/// The sources of the `test-pattern` input.
pub const TEST_PATTERN: Need = Need {
    what: "the test pattern input",
    all: &[VIDEOTESTSRC, CLOCKOVERLAY, TIMEOVERLAY, AUDIOTESTSRC],
    any: &[],
};

impl Need {
    /// Every element this need names.
    pub fn elements(&self) -> impl Iterator<Item = &'static Element> + use<> {
        let all = self.all;
        let any = self.any;
        all.iter().chain(any.iter().flat_map(|(_, g)| g.iter()))
    }

    /// Is `factory` one of the elements of this need?
    pub fn names(&self, factory: &str) -> bool {
        self.elements().any(|e| e.factory == factory)
    }

    /// What of this need `available` lacks: each missing element of `all`, and for each
    /// `any` group with none present, the group.
    pub fn missing(&self, available: &[&str]) -> Vec<Missing> {
        let mut out: Vec<Missing> = self
            .all
            .iter()
            .filter(|e| !available.contains(&e.factory))
            .map(|e| Missing::Element(*e))
            .collect();
        for (what, group) in self.any {
            if !group.iter().any(|e| available.contains(&e.factory)) {
                out.push(Missing::OneOf(what, group));
            }
        }
        out
    }
}

/// Something a [`Need`] lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    Element(Element),
    OneOf(&'static str, &'static [Element]),
}

impl Missing {
    /// How to get it, in one line.
    pub fn fix(&self) -> String {
        match self {
            Missing::Element(e) => e.fix(),
            Missing::OneOf(_, group) => group
                .iter()
                .map(Element::fix)
                .collect::<Vec<_>>()
                .join("; or "),
        }
    }
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Missing::Element(e) => write!(
                f,
                "GStreamer element \"{}\" is missing (plugin \"{}\"): {}",
                e.factory,
                e.plugin.name,
                e.fix()
            ),
            Missing::OneOf(what, group) => {
                let names: Vec<_> = group.iter().map(|e| e.factory).collect();
                write!(
                    f,
                    "no {what}: none of the GStreamer elements {} is present: {}",
                    names.join(", "),
                    self.fix()
                )
            }
        }
    }
}

impl Element {
    /// Look a factory up by name (for elements chosen at run time).
    pub fn by_name(factory: &str) -> Option<Element> {
        ALL.iter().find(|e| e.factory == factory).copied()
    }

    /// How to get this element, in one line.
    pub fn fix(&self) -> String {
        let debian = match self.plugin.debian {
            "" => "Debian has no package for it".to_string(),
            p => format!("install the Debian package {p}"),
        };
        match self.plugin.buildroot {
            "" => format!("{debian} (Buildroot has no package for it)"),
            opt => format!("{debian} (Buildroot: {opt}=y)"),
        }
    }
}

/// Every element in the catalog.
pub const ALL: &[Element] = &[
    CAPSFILTER,
    QUEUE,
    TEE,
    INPUT_SELECTOR,
    FAKESINK,
    APPSRC,
    APPSINK,
    VIDEOTESTSRC,
    AUDIOTESTSRC,
    TEXTOVERLAY,
    CLOCKOVERLAY,
    TIMEOVERLAY,
    VIDEOCONVERT,
    VIDEOSCALE,
    VIDEORATE,
    AUDIOCONVERT,
    AUDIORESAMPLE,
    ALSASINK,
    AUTOVIDEOSINK,
    AUTOAUDIOSINK,
    KMSSINK,
    TSDEMUX,
    MPEGTSMUX,
    H264PARSE,
    H265PARSE,
    AACPARSE,
    MPEGAUDIOPARSE,
    X264ENC,
    AVDEC_H264,
    AVDEC_H265,
    AVDEC_AAC,
    AVDEC_MP2FLOAT,
    AVDEC_MP3,
    AVENC_AAC,
    OPENH264DEC,
    LIBDE265DEC,
    MPG123AUDIODEC,
    FAAD,
    FDKAACDEC,
    FDKAACENC,
    VOAACENC,
];

/// The error of [`make`]: the element's name, plugin and package, or GStreamer's refusal.
#[derive(Debug, thiserror::Error)]
pub enum MakeError {
    #[error("{0}")]
    Missing(Missing),
    #[error("GStreamer element \"{factory}\" is present but could not be made: {source}")]
    Failed {
        factory: &'static str,
        source: gst::glib::BoolError,
    },
}

/// Make an element of the catalog, optionally named.
pub fn make(element: Element, name: Option<&str>) -> Result<gst::Element, MakeError> {
    let Some(factory) = gst::ElementFactory::find(element.factory) else {
        return Err(MakeError::Missing(Missing::Element(element)));
    };
    let mut b = factory.create();
    if let Some(n) = name {
        b = b.name(n);
    }
    b.build().map_err(|source| MakeError::Failed {
        factory: element.factory,
        source,
    })
}

/// Names of every element factory in the GStreamer registry.
pub fn available() -> Vec<String> {
    gst::Registry::get()
        .features(gst::ElementFactory::static_type())
        .into_iter()
        .map(|f| f.name().to_string())
        .collect()
}

/// Fail with every missing element of `needs` at once, each with its plugin and package.
pub fn require(needs: &[Need], available: &[&str]) -> Result<(), MissingElements> {
    let mut missing = Vec::new();
    for need in needs {
        for m in need.missing(available) {
            if !missing.contains(&m) {
                missing.push(m);
            }
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(MissingElements(missing))
    }
}

/// [`require`]'s error: what is missing, one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingElements(pub Vec<Missing>);

impl std::error::Error for MissingElements {}

impl fmt::Display for MissingElements {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, m) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{m}")?;
        }
        Ok(())
    }
}

/// The factory names of every element inside `bin`, recursively (for the tests that keep
/// the [`Need`] lists true to the pipelines).
pub fn factories_in(bin: &gst::Bin) -> Vec<String> {
    bin.iterate_recurse()
        .into_iter()
        .flatten()
        .filter(|e| !e.is::<gst::Pipeline>())
        .filter_map(|e| e.factory().map(|f| f.name().to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_names_element_plugin_and_package() {
        let everything: Vec<&str> = ALL.iter().map(|e| e.factory).collect();
        assert!(DISPLAY.missing(&everything).is_empty());
        let without_pango: Vec<&str> = everything
            .iter()
            .copied()
            .filter(|n| !n.ends_with("overlay"))
            .collect();
        let err = require(&[DISPLAY, TEST_PATTERN], &without_pango).unwrap_err();
        let text = err.to_string();
        for word in [
            "textoverlay",
            "clockoverlay",
            "timeoverlay",
            "\"pango\"",
            "gstreamer1.0-x",
        ] {
            assert!(text.contains(word), "{word} not in {text}");
        }
        assert_eq!(err.0.len(), 3, "one line per missing element: {text}");
    }

    #[test]
    fn any_group_is_missing_only_when_all_are() {
        let some = ["fdkaacdec"];
        assert!(
            !DECODE
                .missing(&some)
                .iter()
                .any(|m| matches!(m, Missing::OneOf(..)))
        );
        let m = DECODE.missing(&[]);
        let group = m
            .iter()
            .find(|m| matches!(m, Missing::OneOf(..)))
            .expect("the AAC group is missing");
        let text = group.to_string();
        assert!(
            text.contains("avdec_aac") && text.contains("gstreamer1.0-libav"),
            "{text}"
        );
    }

    #[test]
    fn catalog_names_are_unique_and_complete() {
        for (i, a) in ALL.iter().enumerate() {
            assert!(
                ALL[i + 1..].iter().all(|b| b.factory != a.factory),
                "{a:?} twice"
            );
        }
        for need in [DISPLAY, DECODE, ENCODE, TEST_PATTERN] {
            for e in need.elements() {
                assert_eq!(Element::by_name(e.factory), Some(*e));
            }
        }
    }

    /// The plugin each present element really lives in is the one the catalog names, so a
    /// fix we print points at the right package.
    #[test]
    fn plugin_names_match_the_registry() {
        gst::init().unwrap();
        let mut checked = 0;
        for e in ALL {
            if let Some(f) = gst::ElementFactory::find(e.factory) {
                let plugin = f.plugin_name().map(|p| p.to_string());
                assert_eq!(plugin.as_deref(), Some(e.plugin.name), "{}", e.factory);
                checked += 1;
            }
        }
        assert!(
            checked > 20,
            "only {checked} catalog elements are installed"
        );
    }
}
