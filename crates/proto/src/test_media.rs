//! Test media made with ffmpeg (another encoder and muxer than GStreamer's), cached in
//! `target/nordlys-test-media/`. Used by unit tests, integration tests and benchmarks.

use std::path::PathBuf;
use std::process::Command;

#[derive(Clone, Copy, Debug)]
pub struct Spec {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub seconds: u32,
    /// `h264` or `hevc`.
    pub codec: &'static str,
    /// Frames between keyframes.
    pub gop: u32,
    /// Video bitrate in kbit/s; `None` leaves it to the encoder.
    pub kbit: Option<u32>,
}

impl Spec {
    pub fn new(codec: &'static str, width: u32, height: u32, seconds: u32) -> Self {
        Spec {
            width,
            height,
            fps: 30,
            seconds,
            codec,
            gop: 30,
            kbit: None,
        }
    }

    fn file_name(&self) -> String {
        let kbit = self.kbit.map(|k| format!("-{k}k")).unwrap_or_default();
        format!(
            "testsrc2-{}x{}p{}-{}-g{}{}-{}s.ts",
            self.width, self.height, self.fps, self.codec, self.gop, kbit, self.seconds
        )
    }
}

/// A small file for the source layer's tests: 640x360, half-second GOP. The name is only
/// for the caller's reading; the file is named by what it holds.
pub fn small(_name: &str, seconds: u32, codec: &'static str) -> PathBuf {
    ts_file(Spec {
        gop: 15,
        ..Spec::new(codec, 640, 360, seconds)
    })
}

/// Summary of a PNG (decoded by ffmpeg, scaled to 320x180): mean luma, the fraction of
/// colourful pixels, the fraction of bright pixels. Tells a test picture from the slate.
pub fn png_summary(path: &std::path::Path) -> (f64, f64, f64) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args([
            "-vf",
            "scale=320:180",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ])
        .output()
        .expect("ffmpeg decodes the PNG");
    assert!(out.status.success(), "cannot decode {}", path.display());
    let px = out.stdout.chunks_exact(3);
    let n = px.len() as f64;
    assert!(n > 0.0);
    let (mut luma, mut colour, mut bright) = (0.0, 0.0, 0.0);
    for p in px {
        let y = 0.299 * p[0] as f64 + 0.587 * p[1] as f64 + 0.114 * p[2] as f64;
        luma += y;
        if p.iter().max().unwrap() - p.iter().min().unwrap() > 60 {
            colour += 1.0;
        }
        if y > 180.0 {
            bright += 1.0;
        }
    }
    (luma / n, colour / n, bright / n)
}

/// The path of a cached TS file with testsrc2 video and a sine tone (AAC), made on first use.
/// Panics (a test failure, never a skip) with a clear message when ffmpeg is missing.
pub fn ts_file(spec: Spec) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/nordlys-test-media");
    std::fs::create_dir_all(&dir).expect("create target/nordlys-test-media");
    let path = dir.join(spec.file_name());
    if path.exists() {
        return path;
    }
    let gop = spec.gop.to_string();
    let mut video: Vec<String> = match spec.codec {
        "h264" => [
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
        ]
        .map(String::from)
        .to_vec(),
        "hevc" => [
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-x265-params",
            "log-level=error",
        ]
        .map(String::from)
        .to_vec(),
        other => panic!("unknown test video codec {other}"),
    };
    video.extend(["-g".to_string(), gop]);
    if let Some(k) = spec.kbit {
        let k = format!("{k}k");
        let buf = format!("{}k", spec.kbit.unwrap() / 2);
        video.extend([
            "-b:v".into(),
            k.clone(),
            "-maxrate".into(),
            k,
            "-bufsize".into(),
            buf,
        ]);
    }
    // A unique temporary name, then rename: tests run in parallel.
    let tmp = dir.join(format!(
        "{}.{}.{:?}.tmp.ts",
        spec.file_name(),
        std::process::id(),
        std::thread::current().id()
    ));
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i"])
        .arg(format!(
            "testsrc2=size={}x{}:rate={}",
            spec.width, spec.height, spec.fps
        ))
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &spec.seconds.to_string()])
        .args(&video)
        .args(["-c:a", "aac", "-ac", "2", "-b:a", "128k", "-f", "mpegts"])
        .arg(&tmp)
        .status()
        .unwrap_or_else(|e| {
            panic!("test media needs ffmpeg on PATH (scripts/setup installs it): {e}")
        });
    assert!(
        status.success(),
        "ffmpeg failed making {}: {status}",
        spec.file_name()
    );
    std::fs::rename(&tmp, &path).expect("rename test media");
    path
}
