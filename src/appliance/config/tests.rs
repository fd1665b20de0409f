use super::*;
use std::path::Path;

const EXAMPLE: &str = include_str!("../../../overlay/etc/nordlys/nordlys.toml");

fn errors(text: &str) -> Vec<ConfigError> {
    check_str(text).errors
}

fn find<'a>(errs: &'a [ConfigError], key: &str) -> &'a ConfigError {
    errs.iter()
        .find(|e| e.key == key)
        .unwrap_or_else(|| panic!("no error for `{key}` in {errs:#?}"))
}

#[test]
fn shipped_example_parses() {
    let cfg = parse_str(EXAMPLE, Path::new("nordlys.toml")).expect("shipped example must be valid");
    assert_eq!(cfg.venue, "Example Hall");
    assert_eq!(cfg.stream.target_latency_ms, 2000);
    assert_eq!(
        cfg.stream_source(),
        Some(StreamSource::TorrentFile("/boot/event.torrent".into()))
    );
    assert_eq!(cfg.network.listen_port, 6881);
    assert_eq!(cfg.video.sink, VideoSink::Auto);
    assert_eq!(cfg.video.connector.as_deref(), Some("HDMI-A-1"));
    assert_eq!(cfg.audio.device, AudioDevice::Auto);
    assert_eq!(cfg.leds.power, Some(LedLine::Pin(17)));
    assert_eq!(cfg.status_address, Some("0.0.0.0:8080".parse().unwrap()));
}

#[test]
fn shipped_example_uncommented_rgb_variant_parses() {
    // The commented-out [leds.rgb] block must be valid too once the three single LEDs go.
    let text = EXAMPLE
        .replace("power = 17\n", "")
        .replace("network = 27\n", "")
        .replace("stream = 22\n", "")
        .replace("# [leds.rgb]", "[leds.rgb]")
        .replace("# red = 17", "red = 17")
        .replace("# green = 27", "green = 27")
        .replace("# blue = 22", "blue = 22");
    let cfg = parse_str(&text, Path::new("x")).unwrap();
    assert_eq!(
        cfg.leds.rgb,
        Some(RgbLed {
            red: LedLine::Pin(17),
            green: LedLine::Pin(27),
            blue: LedLine::Pin(22)
        })
    );
}

#[test]
fn minimal_config_gets_defaults() {
    let cfg = parse_str(
        "[stream]\nsource = \"http://venue.example/e.torrent\"\n",
        Path::new("x"),
    )
    .unwrap();
    assert_eq!(cfg.stream.target_latency_ms, 2000);
    assert_eq!(cfg.log_level, "info");
    assert_eq!(cfg.leds.backend, LedBackendKind::Auto);
    assert!(matches!(
        cfg.stream_source(),
        Some(StreamSource::TorrentUrl(_))
    ));
}

/// What the receiver cannot use at run time is refused when the file is checked.
#[test]
fn magnet_and_https_sources_are_refused_up_front() {
    for (source, why) in [
        (
            "magnet:?xt=urn:btih:0123",
            "magnet links are not supported yet",
        ),
        (
            "https://venue.example/e.torrent",
            "https is not supported yet",
        ),
    ] {
        let errs = errors(&format!("[stream]\nsource = \"{source}\"\n"));
        let e = find(&errs, "stream.source");
        assert_eq!((e.line, e.column), (2, 10));
        assert!(
            e.message.contains(source) && e.message.contains(why),
            "{}",
            e.message
        );
        assert!(
            e.message
                .contains("expected a .torrent file path or an http:// URL")
        );
    }
}

#[test]
fn typo_key_and_wrong_type_are_both_reported_with_line_and_column() {
    let text = "[stream]\nsource = \"/boot/e.torrent\"\ntarget_latncy_ms = 1000\n\n[network]\nlisten_port = \"6881\"\n";
    let errs = errors(text);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    let typo = find(&errs, "stream.target_latncy_ms");
    assert_eq!((typo.line, typo.column), (3, 1));
    assert!(typo.message.contains("unknown key"), "{}", typo.message);
    assert!(
        typo.message.contains("target_latency_ms"),
        "lists the expected keys: {}",
        typo.message
    );
    let ty = find(&errs, "network.listen_port");
    assert_eq!((ty.line, ty.column), (6, 15));
    assert!(ty.message.contains("expected u16"), "{}", ty.message);
    // And the report printed by check-config carries them.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nordlys.toml");
    std::fs::write(&p, text).unwrap();
    let (ok, report) = check_config(&p);
    assert!(!ok);
    assert!(
        report.contains("line 3, column 1: `stream.target_latncy_ms` is an unknown key"),
        "{report}"
    );
    assert!(
        report.contains("line 6, column 15: `network.listen_port` has the wrong type"),
        "{report}"
    );
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let text = r#"venue = "Hall"
colour = "blue"
[stream]
source = "ftp://example.org/x.torrent"
target_latency_ms = 99999
[network]
static_peers = ["192.0.2.1:6881", "nonsense", "host.example:70000"]
trackers = ["http://tracker.example:6969/announce", "gopher://x"]
[video]
sink = "hdmi"
connector = "HDMI A 1"
[audio]
device = "pulse"
[leds]
backend = "rppal"
power = 40
network = "GPIO27"
stream = 17
[leds.rgb]
red = 1
gren = 2
"#;
    let errs = errors(text);
    let at = |k: &str| {
        let e = find(&errs, k);
        (e.line, e.column)
    };
    assert_eq!(at("colour"), (2, 1));
    assert_eq!(at("stream.source"), (4, 10));
    assert_eq!(at("stream.target_latency_ms"), (5, 21));
    assert_eq!(at("network.static_peers[1]"), (7, 35));
    assert_eq!(at("network.static_peers[2]"), (7, 47));
    assert_eq!(at("network.trackers[1]"), (8, 53));
    assert_eq!(at("video.sink"), (10, 8));
    assert_eq!(at("video.connector"), (11, 13));
    assert_eq!(at("audio.device"), (13, 10));
    assert_eq!(at("leds.power"), (16, 9));
    assert_eq!(at("leds.network"), (17, 11));
    assert_eq!(at("leds.rgb.gren"), (21, 1));
    assert_eq!(at("leds.rgb"), (19, 1));
    assert!(
        find(&errs, "leds.rgb")
            .message
            .contains("missing key `green`"),
        "{errs:#?}"
    );
    assert!(errs.iter().all(|e| e.key != "leds.rgb.red"), "{errs:#?}");
    assert!(find(&errs, "video.sink").message.contains("`kms`"));
    assert!(
        find(&errs, "stream.target_latency_ms")
            .message
            .contains("200..=60000")
    );
    assert!(find(&errs, "leds.power").message.contains("0..=27"));
    // Sorted by position.
    let pos: Vec<_> = errs.iter().map(|e| (e.line, e.column)).collect();
    let mut sorted = pos.clone();
    sorted.sort();
    assert_eq!(pos, sorted);
}

#[test]
fn incomplete_rgb_led_is_reported_at_its_table() {
    let errs = errors("[stream]\nsource = \"a.torrent\"\n[leds.rgb]\nred = 1\nblue = 2\n");
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(
        (errs[0].line, errs[0].column, errs[0].key.as_str()),
        (3, 1, "leds.rgb")
    );
    assert!(errs[0].message.contains("missing key `green`"), "{errs:#?}");
}

#[test]
fn unknown_keys_point_at_the_key() {
    let errs =
        errors("[stream]\nsource = \"a.torrent\"\n  \"odd key\" = 1\nx.y = 2\n[bogus.sub]\n");
    assert_eq!(find(&errs, "stream.odd key").column, 3);
    assert_eq!(
        (find(&errs, "stream.x").line, find(&errs, "stream.x").column),
        (4, 1)
    );
    assert_eq!(
        (find(&errs, "bogus").line, find(&errs, "bogus").column),
        (5, 2)
    );
}

#[test]
fn missing_source_is_an_error() {
    let errs = errors("[network]\nlisten_port = 7000\n");
    let e = find(&errs, "stream.source");
    assert!(e.message.contains("missing"));
}

#[test]
fn syntax_error_has_position() {
    let errs = errors("[stream]\nsource = \"unterminated\n");
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].line, 2);
    assert!(errs[0].message.contains("syntax"), "{}", errs[0].message);
}

#[test]
fn section_of_wrong_type_is_reported() {
    let errs = errors("stream = 5\n");
    let e = find(&errs, "stream");
    assert_eq!((e.line, e.column), (1, 10));
}

#[test]
fn hostile_inputs_never_panic() {
    let cases = [
        "",
        "\u{feff}",
        "[[stream]]\nsource=1",
        "[leds]\npower = -1\nnetwork = 1e99\nstream = 18446744073709551615",
        "[leds.rgb]\nred = [1,2]",
        "leds = { rgb = 5 }",
        "[network]\nstatic_peers = [[[]]]\ntrackers = [{}]",
        "a.b.c.d.e.f = 1",
        "log_level = \"\u{0}\"",
        "venue = 1979-05-27T07:32:00Z",
        "[stream]\nsource = \"magnet:\"\n[stream]\nsource=\"x\"",
        "x = '''\n\n",
        "[video]\nconnector = \"\"\nsink = \"KMS\"",
        &"[".repeat(10_000),
        &format!("venue = \"{}\"", "é".repeat(1000)),
    ];
    for c in cases {
        let checked = check_str(c);
        assert!(!checked.errors.is_empty(), "expected errors for {c:?}");
        for e in &checked.errors {
            assert!(!e.message.is_empty());
        }
    }
}

#[test]
fn unreadable_files_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, report) = check_config(&dir.path().join("absent.toml"));
    assert!(!ok);
    assert!(report.contains("cannot read"), "{report}");
    let (ok, report) = check_config(dir.path());
    assert!(!ok);
    assert!(report.contains("not a regular file"), "{report}");
    let bin = dir.path().join("bin.toml");
    std::fs::write(&bin, b"venue = \"a\"\n\xff\xfe").unwrap();
    let (ok, report) = check_config(&bin);
    assert!(!ok);
    assert!(
        report.contains("line 2, column 1") && report.contains("UTF-8"),
        "{report}"
    );
}

#[test]
fn bad_config_starts_in_error_state_with_best_effort_config() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nordlys.toml");
    std::fs::write(&p, "[stream]\nsource = \"/boot/e.torrent\"\n[leds]\nbackend = \"sysfs\"\npower = \"led0\"\nbogus = 1\n").unwrap();
    match load_for_receiver(Some(&p)) {
        Startup::Error { config, errors } => {
            assert_eq!(
                config.leds.backend,
                LedBackendKind::Sysfs,
                "good keys are kept"
            );
            assert_eq!(config.leds.power, Some(LedLine::Name("led0".into())));
            assert_eq!(errors.errors.len(), 1);
            assert_eq!(errors.errors[0].line, 6);
        }
        other => panic!("expected error state, got {other:?}"),
    }
    match load_for_receiver(Some(&dir.path().join("missing.toml"))) {
        Startup::Error { config, .. } => assert_eq!(config, Config::default()),
        other => panic!("expected error state, got {other:?}"),
    }
    std::fs::write(&p, "[stream]\nsource = \"/boot/e.torrent\"\n").unwrap();
    assert!(matches!(load_for_receiver(Some(&p)), Startup::Ready { .. }));
}

#[test]
fn line_col_counts_characters() {
    let t = "ab\né=x\n";
    assert_eq!(line_col(t, 0), (1, 1));
    assert_eq!(line_col(t, 3), (2, 1));
    assert_eq!(line_col(t, 5), (2, 2)); // after the two-byte é
    assert_eq!(line_col(t, 4), (2, 1)); // inside é: rounded down
    assert_eq!(line_col(t, 999), (3, 1));
}

#[test]
fn default_paths_are_boot_then_etc() {
    assert_eq!(
        default_paths(),
        vec![
            PathBuf::from("/boot/nordlys.toml"),
            PathBuf::from("/etc/nordlys/nordlys.toml")
        ]
    );
}

#[test]
fn the_file_sets_the_players_sinks_and_decoder() {
    use crate::player::{AudioSink, DecoderPref, VideoSink};
    let cfg = parse_str(
        "[stream]\nsource = \"http://venue.example/e.torrent\"\n\
         [video]\nsink = \"kms\"\ndecoder = \"software\"\n\
         [audio]\ndevice = \"alsa:hw:1\"\n",
        Path::new("x"),
    )
    .unwrap();
    let (video, audio, decoder) = cfg.player_settings();
    assert!(
        matches!(video, VideoSink::Kms { connector: None }),
        "{video:?}"
    );
    assert!(
        matches!(&audio, AudioSink::Alsa(Some(d)) if d == "hw:1"),
        "{audio:?}"
    );
    assert!(matches!(decoder, DecoderPref::Software), "{decoder:?}");
    let defaults = parse_str(
        "[stream]\nsource = \"http://venue.example/e.torrent\"\n",
        Path::new("x"),
    )
    .unwrap()
    .player_settings();
    assert!(matches!(
        defaults,
        (VideoSink::Auto, AudioSink::Auto, DecoderPref::Auto)
    ));
}
