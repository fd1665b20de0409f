//! `nordlys doctor` against a GStreamer registry that lacks the pango plugin (as a machine
//! without `gstreamer1.0-x` does), and against the full one.

use std::path::{Path, PathBuf};
use std::process::Command;

use gstreamer as gst;

/// The directory the system's plugins are in (where coreelements lives).
fn system_plugin_dir() -> PathBuf {
    gst::init().unwrap();
    let plugin = gst::Registry::get()
        .find_plugin("coreelements")
        .expect("GStreamer's core plugin is installed");
    let file = plugin.filename().expect("the core plugin has a file");
    file.parent().unwrap().to_path_buf()
}

fn doctor(plugin_dir: &Path, registry: &Path, extra: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nordlys"))
        .args([
            "doctor",
            "--video-sink",
            "fake",
            "--audio-sink",
            "fake",
            "--no-network",
        ])
        .args(extra)
        .env("GST_PLUGIN_SYSTEM_PATH_1_0", plugin_dir)
        .env("GST_PLUGIN_SYSTEM_PATH", plugin_dir)
        .env_remove("GST_PLUGIN_PATH")
        .env_remove("GST_PLUGIN_PATH_1_0")
        .env("GST_REGISTRY_1_0", registry)
        .env("GST_REGISTRY", registry)
        .output()
        .expect("nordlys runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn doctor_names_a_missing_plugin_and_its_package() {
    let system = system_plugin_dir();
    let tmp = tempfile::tempdir().unwrap();
    let without = tmp.path().join("plugins");
    std::fs::create_dir(&without).unwrap();
    let mut linked = 0;
    for entry in std::fs::read_dir(&system).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".so") && name != "libgstpango.so" {
            std::os::unix::fs::symlink(entry.path(), without.join(&name)).unwrap();
            linked += 1;
        }
    }
    assert!(linked > 10, "only {linked} plugins in {}", system.display());

    let (ok, text) = doctor(&without, &tmp.path().join("without.bin"), &[]);
    assert!(!ok, "doctor passed without pango:\n{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("MISSING") && l.contains("textoverlay"))
        .unwrap_or_else(|| panic!("no MISSING line for textoverlay:\n{text}"));
    assert!(line.contains("pango"), "{line}");
    assert!(line.contains("gstreamer1.0-x"), "{line}");
    assert!(
        line.contains("BR2_PACKAGE_GST1_PLUGINS_BASE_PLUGIN_PANGO"),
        "{line}"
    );
    // The injector's test pattern needs clockoverlay from the same plugin.
    let (ok, text) = doctor(
        &without,
        &tmp.path().join("without.bin"),
        &["--role", "inject", "--input", "test-pattern"],
    );
    assert!(!ok);
    assert!(
        text.lines().any(|l| l.starts_with("MISSING")
            && l.contains("clockoverlay")
            && l.contains("gstreamer1.0-x")),
        "{text}"
    );

    let (ok, text) = doctor(&system, &tmp.path().join("full.bin"), &[]);
    assert!(ok, "doctor failed with every plugin:\n{text}");
    assert!(!text.contains("MISSING"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("OK") && l.contains("textoverlay")),
        "{text}"
    );
}

#[test]
fn doctor_json_is_machine_readable() {
    let out = Command::new(env!("CARGO_BIN_EXE_nordlys"))
        .args(["doctor", "--role", "seed", "--no-network", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["role"], "seed");
    assert_eq!(v["ok"], true);
    assert!(v["checks"].as_array().is_some_and(|c| !c.is_empty()));
}
