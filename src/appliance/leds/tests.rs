use super::*;
use crate::appliance::config::LedConfig;
use std::time::Duration;

const MS: fn(u64) -> Duration = Duration::from_millis;

#[test]
fn level_at_follows_the_patterns() {
    for t in [0, 1, 499, 500, 999, 1000, 12345] {
        assert!(!level_at(Pattern::Off, MS(t)));
        assert!(level_at(Pattern::Solid, MS(t)));
    }
    let slow: Vec<bool> = [0, 499, 500, 999, 1000]
        .iter()
        .map(|&t| level_at(Pattern::SlowBlink, MS(t)))
        .collect();
    assert_eq!(slow, [true, true, false, false, true]);
    let fast: Vec<bool> = [0, 124, 125, 249, 250]
        .iter()
        .map(|&t| level_at(Pattern::FastBlink, MS(t)))
        .collect();
    assert_eq!(fast, [true, true, false, false, true]);
    assert_eq!(next_change(Pattern::SlowBlink, MS(0)), Some(MS(500)));
    assert_eq!(next_change(Pattern::SlowBlink, MS(500)), Some(MS(1000)));
    assert_eq!(next_change(Pattern::FastBlink, MS(130)), Some(MS(250)));
    assert_eq!(next_change(Pattern::Solid, MS(130)), None);
    assert_eq!(next_change(Pattern::Off, MS(130)), None);
}

#[test]
fn every_status_has_its_documented_pattern() {
    use Pattern::*;
    let table = [
        (
            Status::Booting,
            [SlowBlink, Off, Off],
            (Colour::White, SlowBlink),
        ),
        (
            Status::NoNetwork,
            [Solid, FastBlink, Off],
            (Colour::Yellow, FastBlink),
        ),
        (
            Status::Joining,
            [Solid, SlowBlink, Off],
            (Colour::Blue, SlowBlink),
        ),
        (
            Status::Buffering,
            [Solid, Solid, SlowBlink],
            (Colour::Cyan, SlowBlink),
        ),
        (
            Status::Playing,
            [Solid, Solid, Solid],
            (Colour::Green, Solid),
        ),
        (
            Status::Stalled,
            [Solid, Solid, FastBlink],
            (Colour::Magenta, FastBlink),
        ),
        (
            Status::Error,
            [FastBlink, FastBlink, FastBlink],
            (Colour::Red, FastBlink),
        ),
    ];
    assert_eq!(table.len(), Status::ALL.len());
    for (s, three, rgb) in table {
        assert_eq!(three_led_patterns(s), three, "{s}");
        assert_eq!(rgb_pattern(s), rgb, "{s}");
    }
    // Every status is distinguishable on both layouts.
    for (i, a) in Status::ALL.iter().enumerate() {
        for b in &Status::ALL[i + 1..] {
            assert_ne!(three_led_patterns(*a), three_led_patterns(*b), "{a} vs {b}");
            assert_ne!(rgb_pattern(*a), rgb_pattern(*b), "{a} vs {b}");
        }
    }
}

#[test]
fn rgb_levels_combine_colour_and_blink() {
    assert_eq!(
        levels(LedMode::Rgb, Status::Error, MS(0)),
        [true, false, false]
    );
    assert_eq!(
        levels(LedMode::Rgb, Status::Error, MS(125)),
        [false, false, false]
    );
    assert_eq!(
        levels(LedMode::Rgb, Status::Buffering, MS(10)),
        [false, true, true]
    );
    assert_eq!(
        levels(LedMode::Rgb, Status::Playing, MS(777)),
        [false, true, false]
    );
    assert_eq!(
        next_wake(LedMode::Three, Status::Buffering, MS(10)),
        Some(MS(500))
    );
    assert_eq!(next_wake(LedMode::Three, Status::Playing, MS(10)), None);
    assert_eq!(
        next_wake(LedMode::Three, Status::Stalled, MS(10)),
        Some(MS(125))
    );
}

/// Let the driver task run until it waits again (no wall-clock sleeping: the runtime is
/// current-thread with paused time, so this only yields).
#[cfg(not(target_arch = "aarch64"))]
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

/// Drive the recording backend through every status with paused virtual time and check
/// each channel's waveform at 1 ms resolution against `levels`.
#[cfg(not(target_arch = "aarch64"))] // paused clock: host only (see Cargo.toml)
#[tokio::test(start_paused = true)]
async fn driver_animates_every_status_on_the_recording_backend() {
    for mode in [LedMode::Three, LedMode::Rgb] {
        let rec = RecordingLeds::new();
        let (tx, rx) = watch::channel(Status::Booting);
        let start = tokio::time::Instant::now();
        let task = tokio::spawn(run(Box::new(rec.clone()), mode, rx));
        let mut expected_state = [None::<bool>; 3];
        let mut expected: Vec<LedEvent> = Vec::new();
        for (i, s) in Status::ALL.iter().enumerate() {
            if i > 0 {
                tx.send(*s).unwrap();
            }
            settle().await;
            // Two seconds per status, sampled every millisecond.
            let phase_start = start.elapsed();
            for ms in 0..=2000u64 {
                // At ms == 2000 the driver has shown this status at the phase's end instant,
                // before the next status is sent.
                let t = phase_start + MS(ms);
                let want = levels(mode, *s, t);
                for ch in 0..3 {
                    if expected_state[ch] != Some(want[ch]) {
                        expected.push((t, ch, want[ch]));
                        expected_state[ch] = Some(want[ch]);
                    }
                }
                if ms < 2000 {
                    tokio::time::advance(MS(1)).await;
                    settle().await;
                }
            }
        }
        let end = start.elapsed();
        drop(tx);
        task.await.unwrap();
        for (ch, st) in expected_state.iter().enumerate() {
            if *st == Some(true) {
                expected.push((end, ch, false));
            }
        }
        let got = rec.take();
        // Order within one instant: by channel, the final turn-off last.
        let key = |e: &LedEvent| (e.0, e.1);
        let mut got_sorted = got.clone();
        got_sorted.sort_by_key(key);
        let mut expected_sorted = expected.clone();
        expected_sorted.sort_by_key(key);
        assert!(got.len() > 40, "the test must see many blinks");
        let (got, expected) = (got_sorted, expected_sorted);
        assert_eq!(got, expected, "{mode:?}");
    }
}

#[cfg(not(target_arch = "aarch64"))] // paused clock: host only (see Cargo.toml)
#[tokio::test(start_paused = true)]
async fn driver_reacts_to_status_immediately_and_turns_off_at_the_end() {
    let rec = RecordingLeds::new();
    let (tx, rx) = watch::channel(Status::Playing);
    let task = tokio::spawn(run(Box::new(rec.clone()), LedMode::Three, rx));
    settle().await;
    assert_eq!(
        rec.take(),
        vec![(MS(0), 0, true), (MS(0), 1, true), (MS(0), 2, true)]
    );
    tokio::time::advance(MS(3000)).await;
    settle().await;
    assert_eq!(rec.take(), vec![], "solid LEDs are not rewritten");
    tx.send(Status::Joining).unwrap();
    settle().await;
    assert_eq!(
        rec.take(),
        vec![(MS(3000), 2, false)],
        "network slow blink is lit at t=3000"
    );
    drop(tx);
    task.await.unwrap();
    assert_eq!(rec.take(), vec![(MS(3000), 0, false), (MS(3000), 1, false)]);
}

fn fake_led(dir: &std::path::Path, name: &str, max: &str, trigger: &str) {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("brightness"), "0").unwrap();
    std::fs::write(d.join("max_brightness"), max).unwrap();
    std::fs::write(d.join("trigger"), trigger).unwrap();
}

fn read(dir: &std::path::Path, name: &str, file: &str) -> String {
    std::fs::read_to_string(dir.join(name).join(file)).unwrap()
}

#[test]
fn sysfs_backend_writes_brightness_and_clears_trigger() {
    let dir = tempfile::tempdir().unwrap();
    fake_led(dir.path(), "pwr", "255", "[heartbeat] none");
    fake_led(dir.path(), "net", "1", "mmc0");
    fake_led(dir.path(), "str", "garbage", "none");
    let mut leds =
        SysfsLeds::open(dir.path(), [Some("pwr"), Some("net"), Some("str")], false).unwrap();
    assert_eq!(read(dir.path(), "pwr", "trigger"), "none");
    assert_eq!(read(dir.path(), "net", "trigger"), "none");
    for (i, s) in Status::ALL.iter().enumerate() {
        let t = MS(i as u64 * 1000); // slow blinks lit, fast blinks lit at whole seconds
        let want = levels(LedMode::Three, *s, t);
        for (ch, on) in want.iter().enumerate() {
            leds.set(ch, *on).unwrap();
        }
        let got = [
            read(dir.path(), "pwr", "brightness"),
            read(dir.path(), "net", "brightness"),
            read(dir.path(), "str", "brightness"),
        ];
        let expect = [
            if want[0] { "255" } else { "0" },
            if want[1] { "1" } else { "0" },
            if want[2] { "1" } else { "0" }, // unparsable max_brightness falls back to 1
        ];
        assert_eq!(got, expect, "{s}");
    }
    // Active-low inverts.
    let mut inv = SysfsLeds::open(dir.path(), [Some("pwr"), None, None], true).unwrap();
    inv.set(0, true).unwrap();
    assert_eq!(read(dir.path(), "pwr", "brightness"), "0");
    inv.set(0, false).unwrap();
    assert_eq!(read(dir.path(), "pwr", "brightness"), "255");
    inv.set(2, true).unwrap(); // no LED on channel 2: ignored
}

#[test]
fn sysfs_backend_rejects_missing_and_hostile_names() {
    let dir = tempfile::tempdir().unwrap();
    assert!(SysfsLeds::open(dir.path(), [Some("absent"), None, None], false).is_err());
    assert!(SysfsLeds::open(dir.path(), [Some("../etc"), None, None], false).is_err());
    assert!(SysfsLeds::open(dir.path(), [Some(".."), None, None], false).is_err());
}

#[cfg(not(target_arch = "aarch64"))] // paused clock: host only (see Cargo.toml)
#[tokio::test(start_paused = true)]
async fn driver_over_sysfs_shows_error_pattern() {
    use crate::appliance::config::RgbLed;
    let dir = tempfile::tempdir().unwrap();
    fake_led(dir.path(), "r", "1", "none");
    fake_led(dir.path(), "g", "1", "none");
    fake_led(dir.path(), "b", "1", "none");
    let cfg = LedConfig {
        backend: LedBackendKind::Sysfs,
        rgb: Some(RgbLed {
            red: LedLine::Name("r".into()),
            green: LedLine::Name("g".into()),
            blue: LedLine::Name("b".into()),
        }),
        ..LedConfig::default()
    };
    let (backend, mode, desc) = open_backend_at(&cfg, dir.path(), dir.path()).unwrap();
    assert_eq!(mode, LedMode::Rgb);
    assert_eq!(desc, "RGB LEDs via sysfs");
    let (tx, rx) = watch::channel(Status::Error);
    let task = tokio::spawn(run(backend, mode, rx));
    settle().await;
    let rgb = || ["r", "g", "b"].map(|n| read(dir.path(), n, "brightness"));
    assert_eq!(rgb(), ["1", "0", "0"]);
    tokio::time::advance(MS(125)).await;
    settle().await;
    assert_eq!(rgb(), ["0", "0", "0"]);
    tokio::time::advance(MS(125)).await;
    settle().await;
    assert_eq!(rgb(), ["1", "0", "0"]);
    tx.send(Status::Playing).unwrap();
    settle().await;
    assert_eq!(rgb(), ["0", "1", "0"]);
    drop(tx);
    task.await.unwrap();
    assert_eq!(rgb(), ["0", "0", "0"]);
}

#[test]
fn auto_falls_back_cleanly_off_a_pi() {
    let root = tempfile::tempdir().unwrap(); // no device tree: not a Pi
    let leds = tempfile::tempdir().unwrap();
    let pins = LedConfig {
        power: Some(LedLine::Pin(17)),
        ..LedConfig::default()
    };
    let (mut b, _, desc) = open_backend_at(&pins, root.path(), leds.path()).unwrap();
    assert_eq!(b.name(), "none");
    assert!(desc.contains("not a Raspberry Pi"), "{desc}");
    b.set(0, true).unwrap();

    fake_led(leds.path(), "status", "1", "none");
    let named = LedConfig {
        power: Some(LedLine::Name("status".into())),
        ..LedConfig::default()
    };
    let (b, _, _) = open_backend_at(&named, root.path(), leds.path()).unwrap();
    assert_eq!(b.name(), "sysfs");

    let missing = LedConfig {
        power: Some(LedLine::Name("nope".into())),
        ..LedConfig::default()
    };
    let (b, _, desc) = open_backend_at(&missing, root.path(), leds.path()).unwrap();
    assert_eq!(b.name(), "none");
    assert!(desc.contains("no LED `nope`"), "{desc}");

    let (b, _, desc) = open_backend_at(&LedConfig::default(), root.path(), leds.path()).unwrap();
    assert_eq!((b.name(), desc.as_str()), ("none", "no LEDs configured"));
}

#[test]
fn explicit_backends_fail_cleanly_off_a_pi() {
    let leds = tempfile::tempdir().unwrap();
    let mk = |backend| LedConfig {
        backend,
        power: Some(LedLine::Pin(17)),
        ..LedConfig::default()
    };
    // rppal: not a Pi (or no /dev/gpiomem) -> an error, not a panic.
    if !is_raspberry_pi(std::path::Path::new("/")) {
        let e = open_backend_at(
            &mk(LedBackendKind::Rppal),
            std::path::Path::new("/"),
            leds.path(),
        )
        .err()
        .unwrap();
        assert!(e.to_string().starts_with("LED backend rppal:"), "{e}");
        // gpiocdev: no chip with a Pi header label here.
        let e = open_backend_at(
            &mk(LedBackendKind::Gpiocdev),
            std::path::Path::new("/"),
            leds.path(),
        )
        .err()
        .unwrap();
        assert!(e.to_string().starts_with("LED backend gpiocdev:"), "{e}");
    }
    let e = open_backend_at(
        &mk(LedBackendKind::Sysfs),
        std::path::Path::new("/"),
        leds.path(),
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("not an LED name"), "{e}");
}

#[test]
fn pi_detection_reads_the_device_tree_model() {
    let root = tempfile::tempdir().unwrap();
    assert!(!is_raspberry_pi(root.path()));
    std::fs::create_dir_all(root.path().join("proc/device-tree")).unwrap();
    std::fs::write(
        root.path().join("proc/device-tree/model"),
        b"Raspberry Pi 4 Model B Rev 1.5\0",
    )
    .unwrap();
    assert!(is_raspberry_pi(root.path()));
}
