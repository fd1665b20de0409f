//! Decoder selection: a pure function over the element names the system offers.

use std::collections::HashSet;

use super::options::DecoderPref;
use crate::gst_elements::{self as elements, Element};

/// Video codecs the player handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VideoCodec {
    H264,
    H265,
}

impl VideoCodec {
    /// From a caps structure name such as `video/x-h264`.
    pub fn from_caps_name(name: &str) -> Option<Self> {
        match name {
            "video/x-h264" => Some(Self::H264),
            "video/x-h265" => Some(Self::H265),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::H264 => "h264",
            Self::H265 => "h265",
        }
    }
    pub fn parser(self) -> Element {
        match self {
            Self::H264 => elements::H264PARSE,
            Self::H265 => elements::H265PARSE,
        }
    }
    /// Caps the parser must produce for every decoder (V4L2 needs byte-stream/au).
    pub fn parsed_caps_name(self) -> &'static str {
        match self {
            Self::H264 => "video/x-h264",
            Self::H265 => "video/x-h265",
        }
    }
    pub fn software(self) -> &'static [Element] {
        match self {
            Self::H264 => elements::H264_SOFTWARE,
            Self::H265 => elements::H265_SOFTWARE,
        }
    }
}

/// The decoder picked for a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecoderChoice {
    pub element: String,
    pub hardware: bool,
}

/// Is `name` a V4L2 hardware decoder for `codec`? Stateful decoders are `v4l2h264dec` or,
/// for further devices, `v4l2videoNh264dec`; stateless ones `v4l2slh264dec` (and
/// `v4l2sl<dev>h264dec`).
fn hardware_rank(codec: VideoCodec, name: &str) -> Option<u8> {
    let suffix = format!("{}dec", codec.name());
    let mid = name.strip_prefix("v4l2")?.strip_suffix(suffix.as_str())?;
    match mid {
        "" => Some(0),   // stateful, first device
        "sl" => Some(2), // stateless, first device
        m if m.starts_with("sl") => Some(3),
        m if m.starts_with("video") && m[5..].chars().all(|c| c.is_ascii_digit()) => Some(1),
        _ => None,
    }
}

/// Candidates in order of preference, from what is available, minus the failed ones.
pub fn decoder_candidates(
    codec: VideoCodec,
    available: &[&str],
    pref: DecoderPref,
    failed: &HashSet<String>,
) -> Vec<DecoderChoice> {
    let mut out = Vec::new();
    if pref != DecoderPref::Software {
        let mut hw: Vec<(u8, &str)> = available
            .iter()
            .filter_map(|n| hardware_rank(codec, n).map(|r| (r, *n)))
            .collect();
        hw.sort();
        hw.dedup();
        out.extend(hw.into_iter().map(|(_, n)| DecoderChoice {
            element: n.to_string(),
            hardware: true,
        }));
    }
    if pref != DecoderPref::Hardware {
        out.extend(
            codec
                .software()
                .iter()
                .filter(|s| available.contains(&s.factory))
                .map(|s| DecoderChoice {
                    element: s.factory.to_string(),
                    hardware: false,
                }),
        );
    }
    out.retain(|c| !failed.contains(&c.element));
    out
}

/// The decoder to use now, if any.
pub fn choose_decoder(
    codec: VideoCodec,
    available: &[&str],
    pref: DecoderPref,
    failed: &HashSet<String>,
) -> Option<DecoderChoice> {
    decoder_candidates(codec, available, pref, failed)
        .into_iter()
        .next()
}

/// First available element out of `group`.
pub fn first_available(group: &[Element], available: &[&str]) -> Option<Element> {
    group
        .iter()
        .copied()
        .find(|e| available.contains(&e.factory))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PI4: &[&str] = &[
        "tsdemux",
        "h264parse",
        "avdec_h264",
        "avdec_h265",
        "v4l2h264dec",
        "v4l2slh265dec",
        "v4l2convert",
    ];
    const DESKTOP: &[&str] = &["tsdemux", "avdec_h264", "avdec_h265", "x264enc"];

    fn none() -> HashSet<String> {
        HashSet::new()
    }

    #[test]
    fn hardware_present_is_preferred() {
        let c = choose_decoder(VideoCodec::H264, PI4, DecoderPref::Auto, &none()).unwrap();
        assert_eq!(c.element, "v4l2h264dec");
        assert!(c.hardware);
        let c = choose_decoder(VideoCodec::H265, PI4, DecoderPref::Auto, &none()).unwrap();
        assert_eq!(c.element, "v4l2slh265dec");
        // Stateful before stateless, first device before others.
        let list = [
            "v4l2slh264dec",
            "v4l2video11h264dec",
            "v4l2h264dec",
            "avdec_h264",
        ];
        let order: Vec<_> = decoder_candidates(VideoCodec::H264, &list, DecoderPref::Auto, &none())
            .into_iter()
            .map(|c| c.element)
            .collect();
        assert_eq!(
            order,
            [
                "v4l2h264dec",
                "v4l2video11h264dec",
                "v4l2slh264dec",
                "avdec_h264"
            ]
        );
    }

    #[test]
    fn hardware_absent_falls_back_to_software() {
        let c = choose_decoder(VideoCodec::H264, DESKTOP, DecoderPref::Auto, &none()).unwrap();
        assert_eq!(c.element, "avdec_h264");
        assert!(!c.hardware);
        assert_eq!(
            choose_decoder(VideoCodec::H264, DESKTOP, DecoderPref::Hardware, &none()),
            None
        );
        assert_eq!(
            choose_decoder(VideoCodec::H264, &[], DecoderPref::Auto, &none()),
            None
        );
        // Not fooled by similar names.
        let odd = ["v4l2h264enc", "v4l2h265dec", "v4l2videoXh264dec"];
        assert_eq!(
            choose_decoder(VideoCodec::H264, &odd, DecoderPref::Auto, &none()),
            None
        );
    }

    #[test]
    fn failing_hardware_moves_to_next_candidate() {
        let mut failed = none();
        failed.insert("v4l2h264dec".to_string());
        let c = choose_decoder(VideoCodec::H264, PI4, DecoderPref::Auto, &failed).unwrap();
        assert_eq!(c.element, "avdec_h264");
        assert_eq!(
            choose_decoder(VideoCodec::H264, PI4, DecoderPref::Hardware, &failed),
            None
        );
        failed.insert("avdec_h264".to_string());
        assert_eq!(
            choose_decoder(VideoCodec::H264, PI4, DecoderPref::Auto, &failed),
            None
        );
    }

    #[test]
    fn software_preference_skips_hardware() {
        let c = choose_decoder(VideoCodec::H265, PI4, DecoderPref::Software, &none()).unwrap();
        assert_eq!(c.element, "avdec_h265");
    }
}
