//! Test media made with ffmpeg (another encoder and muxer than the GStreamer ones the
//! injector's own inputs use), cached under target/.

use std::path::PathBuf;
use std::process::Command;

fn media_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/nordlys-test-media");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn ffmpeg(out: &PathBuf, args: &[&str]) {
    if out.exists() {
        return;
    }
    let tmp = out.with_extension("partial.ts");
    let status = Command::new("ffmpeg")
        .args(["-y", "-hide_banner", "-loglevel", "error"])
        .args(args)
        .arg(&tmp)
        .status()
        .expect(
            "ffmpeg is needed for the tests (apt-get install ffmpeg; scripts/test installs it)",
        );
    assert!(status.success(), "ffmpeg failed making {}", out.display());
    std::fs::rename(tmp, out).unwrap();
}

/// 20 s of 1280x720 at 30 fps, H.264 (1 s GOP) and AAC, in MPEG-TS.
pub fn concert_720p_h264_aac() -> PathBuf {
    let out = media_dir().join("concert-720p-h264-aac-20s.ts");
    ffmpeg(
        &out,
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            "20",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-g",
            "30",
            "-b:v",
            "2500k",
            "-maxrate",
            "2500k",
            "-bufsize",
            "1250k",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            "-f",
            "mpegts",
        ],
    );
    out
}
