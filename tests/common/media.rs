//! Test media for the integration tests (made by ffmpeg, see `nordlys::test_media`).

use std::path::PathBuf;

use nordlys::test_media::{Spec, ts_file};

/// 20 s of 1280x720 at 30 fps, H.264 (1 s GOP, 2.5 Mbit/s) and AAC, in MPEG-TS.
pub fn concert_720p_h264_aac() -> PathBuf {
    ts_file(Spec {
        kbit: Some(2500),
        ..Spec::new("h264", 1280, 720, 20)
    })
}
