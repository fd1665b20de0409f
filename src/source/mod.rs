//! The injector's source layer: MPEG-TS in, pieces out.
//!
//! * [`input`]: opens a source (file paced by PCR, stdin, UDP, GStreamer capture) and yields
//!   byte chunks on a bounded channel (tokio).
//! * [`ts`]: pure, panic-free TS packet / PSI parsing and keyframe detection.
//! * [`packetizer`]: sans-IO cutter from TS bytes to keyframe-aligned raw pieces.
//! * [`pacing`]: sans-IO PCR pacer (plays a file at the stream's own rate).
//! * [`gst`]: GStreamer inputs (`test-pattern`, `gst:PIPELINE`).

pub mod gst;
pub mod input;
pub mod pacing;
pub mod packetizer;
pub mod ts;

#[cfg(test)]
pub(crate) mod test_media {
    //! Test media made with ffmpeg, cached in `target/nordlys-test-media/`.
    use std::path::PathBuf;
    use std::process::Command;

    /// Path of a cached ffmpeg-made TS file; made on first use. Panics (test failure) with a
    /// clear message when ffmpeg is missing or fails.
    pub(crate) fn ts_file(name: &str, seconds: u32, video: &str) -> PathBuf {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/nordlys-test-media");
        std::fs::create_dir_all(&dir).expect("create target/nordlys-test-media");
        let path = dir.join(name);
        if path.exists() {
            return path;
        }
        let video_args: &[&str] = match video {
            "h264" => &["-c:v", "libx264", "-preset", "ultrafast", "-g", "15"],
            "hevc" => &[
                "-c:v",
                "libx265",
                "-preset",
                "ultrafast",
                "-g",
                "15",
                "-x265-params",
                "log-level=error",
            ],
            other => panic!("unknown test video codec {other}"),
        };
        // Write to a unique temporary name and rename: tests run in parallel.
        let tmp = dir.join(format!(
            "{name}.{}.{:?}.tmp.ts",
            std::process::id(),
            std::thread::current().id()
        ));
        let t = seconds.to_string();
        let status = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"])
            .args(["-f", "lavfi", "-i", "sine"])
            .args(["-t", &t])
            .args(video_args)
            .args(["-c:a", "aac", "-f", "mpegts"])
            .arg(&tmp)
            .status()
            .unwrap_or_else(|e| {
                panic!("test media needs ffmpeg on PATH (apt install ffmpeg): {e}")
            });
        assert!(status.success(), "ffmpeg failed making {name}: {status}");
        std::fs::rename(&tmp, &path).expect("rename test media");
        path
    }
}
