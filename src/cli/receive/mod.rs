//! `nordlys receive`: join a swarm, then play the stream or write it out.
//!
//! With `--config` (the appliance) the settings come from `nordlys.toml`; a bad config never
//! exits (systemd would restart us in a loop): the slate and the LEDs show the error instead.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};

use crate::appliance::config::{SOURCE_EXPECTED, Startup, StreamSource};
use crate::appliance::leds;
use crate::cli::ReceiveArgs;
use crate::cli::progress;
use crate::cli::roles::{self, NodeSetup};
use crate::net::node::NodeStatus;
use crate::player::{Player, PlayerHandle, PlayerInput, PlayerOptions, SlateInfo, SlateState};
use crate::settings::Origin;
use crate::swarm::{Delivery, Role, State};

mod fetch;
use fetch::load_torrent;

enum Output {
    Play,
    Stdout,
    File(PathBuf),
}

pub async fn receive(mut args: ReceiveArgs, startup: Option<Startup>) -> anyhow::Result<()> {
    let appliance = startup.is_some();
    let (led_tx, led_rx) = watch::channel(leds::Status::Booting);
    // Until the config is applied, every setting is a flag's.
    let mut latency_origin = Origin::Flag("--latency");
    if let Some(startup) = &startup {
        start_leds(startup, led_rx);
        match startup {
            Startup::Ready { config, path } => {
                latency_origin = apply_config(&mut args, config)?;
                if let Some(missing) = appliance_doctor(path) {
                    return show_config_error(&args, config, &missing, led_tx).await;
                }
            }
            Startup::Error { config, errors } => {
                return show_config_error(&args, config, &errors.to_string(), led_tx).await;
            }
        }
    }
    roles::check_net(&args.net)?;
    if !(args.snapshot_every.is_finite() && args.snapshot_every >= 0.1) {
        bail!(
            "--snapshot-every {} s: expected at least 0.1 seconds",
            args.snapshot_every
        );
    }
    let Some(torrent_spec) = args.torrent.clone() else {
        bail!("--torrent is required (or --config naming the stream); {SOURCE_EXPECTED}");
    };
    let source =
        StreamSource::parse(&torrent_spec).map_err(|e| anyhow::anyhow!("--torrent {e}"))?;
    let torrent = match load_torrent(&source).await {
        Ok(t) => t,
        Err(e) => match &startup {
            Some(s) => {
                return show_config_error(&args, s.config(), &format!("{e:#}"), led_tx).await;
            }
            None => return Err(e),
        },
    };
    let latency = args.latency.unwrap_or(DEFAULT_LATENCY_MS);
    if let Err(e) = crate::settings::latency(latency, torrent.window_secs) {
        let e = format!("{latency_origin} {e}");
        match &startup {
            // The appliance shows it on the slate rather than exiting into a restart loop.
            Some(s) => return show_config_error(&args, s.config(), &e, led_tx).await,
            None => bail!(e),
        }
    }
    let output = match args.output.as_deref() {
        None | Some("play") => Output::Play,
        Some("-") => Output::Stdout,
        Some(path) => Output::File(PathBuf::from(path)),
    };
    // Open the output file before joining: a path that cannot be written is a setting to fix,
    // not something to find out once the stream flows.
    let out_file = match &output {
        Output::File(path) => Some(
            tokio::fs::File::create(path)
                .await
                .with_context(|| format!("--output {}: cannot create the file", path.display()))?,
        ),
        _ => None,
    };
    let (tx, rx) = mpsc::channel::<Delivery>(1024);
    let player = match output {
        Output::Play => Some(start_player(&args, &torrent.name)?),
        _ => None,
    };
    // The trackers the node announces to (roles::start leaves out those it cannot use).
    let trackers = (torrent.trackers.iter())
        .filter(|t| crate::settings::tracker_url(t).is_ok())
        .count()
        + (args.net.trackers.iter())
            .filter(|t| !torrent.trackers.contains(t))
            .count();
    let mut setup = NodeSetup::from_net(Role::Receiver, torrent, &args.net, 3);
    let watch = progress::Watch::new(
        Duration::from_millis(latency),
        latency_origin,
        trackers,
        args.net.peers.len(),
        setup.tracker_health.clone(),
    );
    setup.latency = Duration::from_millis(latency);
    setup.status_settings = status_settings(&args, Some(latency));
    setup.stdout_is_stream = matches!(output, Output::Stdout);
    // Why the receiver is not making progress, if it is not: for /status.
    let waiting_for: Arc<Mutex<Option<String>>> = Arc::default();
    {
        let (player, waiting_for) = (player.clone(), waiting_for.clone());
        setup.status_extra = Some(Arc::new(move || {
            let mut v = player
                .as_ref()
                .map_or_else(|| serde_json::json!({}), |p| player_status(&p.stats()));
            if let Some(obj) = v.as_object_mut() {
                let why = waiting_for
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                obj.insert("waiting_for".into(), why.into());
            }
            v
        }));
    }
    let running = roles::start(setup, None, Some(tx)).await?;
    let mut give_up = tokio::spawn(watch_progress(
        watch,
        running.handles.status.clone(),
        waiting_for,
    ));
    if appliance {
        let _ = crate::appliance::systemd::notify_ready();
        spawn_watchdog(running.handles.status.clone());
    }
    let writer = match (&output, &player, out_file) {
        (Output::Play, Some(p), _) => tokio::spawn(feed_player(
            rx,
            running.handles.status.clone(),
            p.clone(),
            led_tx,
        )),
        (_, _, Some(file)) => tokio::spawn(write_out(rx, Box::new(file))),
        _ => tokio::spawn(write_out(rx, Box::new(tokio::io::stdout()))),
    };
    let last = tokio::select! {
        last = running.finish() => last?,
        Ok(Some(why)) = &mut give_up => bail!(why),
    };
    give_up.abort();
    writer.await.context("output task failed")??;
    let player_stats = player.as_ref().map(|p| player_status(&p.stats()));
    roles::print_final_with(&last, player_stats);
    eprintln!(
        "stream ended: output up to piece {}, {} missed, {} late, continuity {:.4}",
        crate::cli::or_dash(last.swarm.output_seq),
        last.swarm.pieces_missed,
        last.swarm.pieces_late,
        last.swarm.continuity
    );
    if let Some(p) = player {
        tokio::task::spawn_blocking(move || drop(p)).await.ok();
    }
    Ok(())
}

/// Says why the receiver makes no progress, in the log (when the reason changes, and every
/// [`REPEAT_WAITING`]) and in `waiting_for`; returns the final error where waiting cannot
/// help, `None` once the node is gone.
async fn watch_progress(
    mut watch: progress::Watch,
    mut status: watch::Receiver<Option<NodeStatus>>,
    waiting_for: Arc<Mutex<Option<String>>>,
) -> Option<String> {
    let mut logged: Option<(String, std::time::Instant)> = None;
    while status.changed().await.is_ok() {
        let Some(st) = status.borrow_and_update().clone() else {
            continue;
        };
        let now = std::time::Instant::now();
        let why = match watch.observe(now, &st) {
            progress::Verdict::GiveUp(why) => return Some(why),
            progress::Verdict::Waiting(why) => Some(why),
            progress::Verdict::Fine => None,
        };
        if let Some(why) = &why
            && logged
                .as_ref()
                .is_none_or(|(l, at)| l != why || now >= *at + REPEAT_WAITING)
        {
            tracing::warn!("{}: {why}", crate::cli::state_name(st.swarm.state));
            logged = Some((why.clone(), now));
        }
        *waiting_for.lock().unwrap_or_else(|e| e.into_inner()) = why;
    }
    None
}

/// How often an unchanged reason for waiting is logged again.
const REPEAT_WAITING: Duration = Duration::from_secs(30);

/// The receiver's latency when neither a flag nor a config file sets it.
const DEFAULT_LATENCY_MS: u64 = 2000;

/// The player's counters for `/status` and the final status. The player's own `state` (the
/// slate it shows) is renamed `slate`: `state` is the node's, one meaning per field.
fn player_status(stats: &crate::player::PlayerStats) -> serde_json::Value {
    let mut v = serde_json::to_value(stats).unwrap_or(serde_json::Value::Null);
    if let Some(obj) = v.as_object_mut()
        && let Some(slate) = obj.remove("state")
    {
        obj.insert("slate".into(), slate);
    }
    v
}

/// Fills in what the command line left out from the config file: flags win over the file,
/// the file over the defaults. Returns where the latency came from, for messages.
fn apply_config(
    args: &mut ReceiveArgs,
    c: &crate::appliance::config::Config,
) -> anyhow::Result<Origin> {
    if args.torrent.is_none() {
        match &c.stream.source {
            Some(s) => args.torrent = Some(s.clone()),
            None => bail!("stream.source is missing; {SOURCE_EXPECTED}"),
        }
    }
    let latency_origin = match args.latency {
        Some(_) => Origin::Flag("--latency"),
        None => {
            args.latency = Some(u64::from(c.stream.target_latency_ms));
            Origin::Key("stream.target_latency_ms")
        }
    };
    args.net.listen = args.net.listen.or(Some(std::net::SocketAddr::new(
        [0, 0, 0, 0].into(),
        c.network.listen_port,
    )));
    if args.net.upload_limit.is_none() && c.network.upload_limit_kbps > 0 {
        args.net.upload_limit = Some(u64::from(c.network.upload_limit_kbps));
    }
    for p in &c.network.static_peers {
        // `host:port`: names are resolved once, at start.
        use std::net::ToSocketAddrs;
        match p.to_socket_addrs() {
            Ok(addrs) => args.net.peers.extend(addrs),
            Err(e) => tracing::warn!(peer = %p, error = %e, "cannot resolve a static peer"),
        }
    }
    args.net.trackers.extend(c.network.trackers.iter().cloned());
    args.net.status_addr = args.net.status_addr.or(c.status_address);
    args.venue.get_or_insert_with(|| c.venue.clone());
    let (video, audio, decoder) = c.player_settings();
    args.video_sink.get_or_insert(video);
    args.audio_sink.get_or_insert(audio);
    args.decoder.get_or_insert(decoder);
    args.output.get_or_insert_with(|| "play".into());
    Ok(latency_origin)
}

fn start_player(args: &ReceiveArgs, event: &str) -> anyhow::Result<PlayerRef> {
    let opts = PlayerOptions {
        video_sink: args.video_sink.clone().unwrap_or_default(),
        audio_sink: args.audio_sink.clone().unwrap_or_default(),
        decoder: args.decoder.unwrap_or_default(),
        snapshot: args
            .snapshot
            .clone()
            // Checked in receive(); the slate for a config error comes earlier, so never panic
            // on a value that was not checked yet.
            .map(|p| {
                let every = Duration::try_from_secs_f64(args.snapshot_every)
                    .unwrap_or(Duration::from_secs(2));
                (p, every.max(Duration::from_millis(100)))
            }),
        event_name: event.to_string(),
        venue: args.venue.clone().unwrap_or_default(),
        started: crate::cli::process_start(),
        ..PlayerOptions::default()
    };
    Ok(PlayerRef(Arc::new(Player::start(opts)?)))
}

/// The player shared between the feeder and the status endpoint.
#[derive(Clone)]
struct PlayerRef(Arc<PlayerHandle>);

impl PlayerRef {
    fn stats(&self) -> crate::player::PlayerStats {
        self.0.stats()
    }
}

fn slate_state(state: State) -> SlateState {
    match state {
        State::Joining => SlateState::Joining,
        State::Buffering => SlateState::Buffering,
        State::Playing => SlateState::Playing,
        State::Stalled => SlateState::Stalled,
        State::Ended => SlateState::Ended,
    }
}

fn led_status(state: State) -> leds::Status {
    match state {
        State::Joining => leds::Status::Joining,
        State::Buffering => leds::Status::Buffering,
        State::Playing => leds::Status::Playing,
        State::Stalled | State::Ended => leds::Status::Stalled,
    }
}

/// Hands verified stream to the player, and the node's state to the slate and LEDs.
async fn feed_player(
    mut rx: mpsc::Receiver<Delivery>,
    mut status: watch::Receiver<Option<NodeStatus>>,
    player: PlayerRef,
    leds: watch::Sender<leds::Status>,
) -> anyhow::Result<()> {
    let sender = player.0.sender();
    let mut last_slate: Option<SlateInfo> = None;
    loop {
        tokio::select! {
            d = rx.recv() => match d {
                Some(Delivery::Data { payload, .. }) => { sender.try_send(PlayerInput::Data(payload)); }
                Some(Delivery::Gap { .. }) => { sender.try_send(PlayerInput::Gap); }
                Some(Delivery::End) | None => {
                    sender.try_send(PlayerInput::End);
                    return Ok(());
                }
            },
            changed = status.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                let Some(st) = status.borrow_and_update().clone() else { continue };
                let info = SlateInfo {
                    state: slate_state(st.swarm.state),
                    peers: st.swarm.peers as u32,
                    buffer_fill: 0.0,
                    error: None,
                };
                let mut led = led_status(st.swarm.state);
                // Nobody to talk to and no address of our own: the cable, not the swarm.
                if st.swarm.peers == 0
                    && st.swarm.state == State::Joining
                    && crate::player::local_addresses().is_empty()
                {
                    led = leds::Status::NoNetwork;
                }
                leds.send_replace(led);
                // `End` (below) tells the player, which shows the ended slate once the picture
                // it holds has played out; saying "ended" now would cut that short.
                if st.swarm.state == State::Ended {
                    continue;
                }
                forward_slate(&mut last_slate, info, |i| sender.try_send(PlayerInput::Slate(i)));
            }
        }
    }
}

/// Hands the player a slate that differs from the last one it took. One the player could
/// not take (its queue full of stream after a stall) is offered again with the next status:
/// remembering it as sent would leave the player showing a stale state, say "stalled" while
/// the stream plays, for as long as the state does not change.
fn forward_slate(
    last: &mut Option<SlateInfo>,
    info: SlateInfo,
    send: impl FnOnce(SlateInfo) -> bool,
) {
    let changed = last
        .as_ref()
        .is_none_or(|l| l.state != info.state || l.peers != info.peers);
    if changed && send(info.clone()) {
        *last = Some(info);
    }
}

/// Writes the verified stream to a file or stdout. Gaps are simply absent bytes: TS
/// demuxers resynchronise on the next packet.
async fn write_out(
    mut rx: mpsc::Receiver<Delivery>,
    mut out: Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
) -> anyhow::Result<()> {
    while let Some(d) = rx.recv().await {
        match d {
            Delivery::Data { payload, .. } => out.write_all(&payload).await?,
            Delivery::Gap { .. } => {}
            Delivery::End => break,
        }
    }
    out.flush().await?;
    Ok(())
}

fn start_leds(startup: &Startup, status: watch::Receiver<leds::Status>) {
    match leds::open_backend(&startup.config().leds) {
        Ok((backend, mode, how)) => {
            tracing::info!(leds = %how, "status LEDs");
            tokio::spawn(leds::run(backend, mode, status));
        }
        Err(e) => tracing::warn!(error = %e, "no status LEDs"),
    }
}

/// Pings systemd's watchdog only while the node loop is alive: the loop publishes its status
/// every 250 ms, and a loop that stopped publishing stops the pings, so systemd restarts us.
fn spawn_watchdog(mut status: watch::Receiver<Option<NodeStatus>>) {
    let Some(interval) = crate::appliance::systemd::watchdog_interval() else {
        return;
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            match status.has_changed() {
                Ok(true) => {
                    status.mark_unchanged();
                    let _ = crate::appliance::systemd::ping();
                }
                Ok(false) => tracing::warn!("node loop silent; not feeding the watchdog"),
                Err(_) => return,
            }
        }
    });
}

/// The appliance cannot start the stream: show why on the slate and LEDs, and stay up.
/// At boot, before joining: the doctor's local checks (no network probes; the LEDs are
/// ours already), each problem to the journal. Returns what the receiver lacks, for the
/// slate, if it cannot play at all.
fn appliance_doctor(config: &std::path::Path) -> Option<String> {
    use crate::doctor::{self, Status};
    let report = doctor::run(&doctor::Settings {
        role: doctor::DoctorRole::Receive,
        config: Some(config.to_path_buf()),
        input: None,
        video_sink: Default::default(),
        audio_sink: Default::default(),
        decoder: Default::default(),
        torrent: None,
        network: false,
        leds: false,
        root: std::path::PathBuf::from("/"),
    });
    for c in &report.checks {
        let fix = c.fix.as_deref().unwrap_or("");
        match c.status {
            Status::Missing => {
                tracing::error!(area = c.area, fix, "doctor: {}: {}", c.name, c.detail)
            }
            Status::Warn => tracing::warn!(area = c.area, fix, "doctor: {}: {}", c.name, c.detail),
            Status::Ok | Status::Info => {
                tracing::debug!(area = c.area, "doctor: {}: {}", c.name, c.detail)
            }
        }
    }
    // Only what stops playback entirely holds the receiver on the error slate; a missing
    // sound card or display is in the journal, and the player copes (sound is secondary,
    // the display sink retries).
    let missing: Vec<String> = report
        .missing()
        .filter(|c| matches!(c.area, "gstreamer" | "element" | "decoder"))
        .map(|c| match &c.fix {
            Some(fix) => format!("missing {}: {} ({fix})", c.name, c.detail),
            None => format!("missing {}: {}", c.name, c.detail),
        })
        .collect();
    (!missing.is_empty()).then(|| missing.join("\n"))
}

async fn show_config_error(
    args: &ReceiveArgs,
    config: &crate::appliance::config::Config,
    error: &str,
    leds: watch::Sender<leds::Status>,
) -> anyhow::Result<()> {
    tracing::error!(%error, "cannot start the stream");
    leds.send_replace(leds::Status::Error);
    let mut a = args.clone();
    a.venue = Some(config.venue.clone());
    let _ = apply_config(&mut a, config);
    // Without a slate (its elements may be what is missing) the LEDs still say "error".
    let player = match start_player(&a, "nordlys") {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "no slate either");
            None
        }
    };
    if let Some(p) = &player {
        p.0.sender().try_send(PlayerInput::Slate(SlateInfo {
            state: SlateState::Error,
            peers: 0,
            buffer_fill: 0.0,
            error: Some(error.to_string()),
        }));
    }
    serve_error_status(&a, player.clone(), error).await;
    let _ = crate::appliance::systemd::notify_ready();
    let _ = crate::appliance::systemd::notify_status(&format!("config error: {error}"));
    // Nothing runs but this wait: keep the watchdog fed, or systemd would restart us into
    // the same error every WatchdogSec.
    let interval = crate::appliance::systemd::watchdog_interval();
    loop {
        match interval {
            Some(every) => {
                tokio::time::sleep(every).await;
                let _ = crate::appliance::systemd::ping();
            }
            None => std::future::pending::<()>().await,
        }
    }
}

/// `/status` in the error state, on the address the flags or the config give: the error,
/// and what the player shows.
async fn serve_error_status(args: &ReceiveArgs, player: Option<PlayerRef>, error: &str) {
    let Some(addr) = args.net.status_addr else {
        return;
    };
    let listener = match crate::net::status::bind(addr).await {
        Ok(l) => l,
        Err(e) => return tracing::error!(error = %format!("{e:#}"), "no status endpoint"),
    };
    if let Ok(local) = listener.local_addr() {
        println!("status on http://{local}/status");
    }
    let error = error.to_string();
    let value = Arc::new(move || {
        let mut v =
            (player.as_ref()).map_or_else(|| serde_json::json!({}), |p| player_status(&p.stats()));
        if let Some(obj) = v.as_object_mut() {
            obj.insert("role".into(), "receiver".into());
            obj.insert("state".into(), "error".into());
            obj.insert("last_error".into(), error.clone().into());
        }
        v
    });
    let settings = status_settings(args, args.latency);
    tokio::spawn(crate::net::status::serve_value(listener, value, settings));
}

/// The receiver's settings in effect, for the status page: the flags merged with the config
/// file. Nothing here is secret but what a URL may carry, which is left out.
fn status_settings(args: &ReceiveArgs, latency_ms: Option<u64>) -> crate::net::status::Settings {
    use crate::player::{AudioSink, DecoderPref, VideoSink};
    let video = match args.video_sink.clone().unwrap_or_default() {
        VideoSink::Auto => "auto".to_string(),
        VideoSink::Kms { connector: None } => "kms".into(),
        VideoSink::Kms { connector: Some(c) } => format!("kms:{c}"),
        VideoSink::Window => "window".into(),
        VideoSink::Fake => "fake".into(),
    };
    let audio = match args.audio_sink.clone().unwrap_or_default() {
        AudioSink::Auto => "auto".to_string(),
        AudioSink::Alsa(None) => "alsa".into(),
        AudioSink::Alsa(Some(d)) => format!("alsa:{d}"),
        AudioSink::Fake => "fake".into(),
        AudioSink::None => "none".into(),
    };
    let decoder = match args.decoder.unwrap_or_default() {
        DecoderPref::Auto => "auto",
        DecoderPref::Hardware => "hardware",
        DecoderPref::Software => "software",
    };
    let or_none = |v: Option<String>| v.unwrap_or_else(|| "none".into());
    let mut out = vec![
        (
            "torrent".to_string(),
            or_none(args.torrent.as_deref().map(crate::net::status::redact_url)),
        ),
        ("output".into(), or_none(args.output.clone())),
        (
            "latency".into(),
            latency_ms.map_or("–".into(), |ms| format!("{ms} ms")),
        ),
        ("venue".into(), or_none(args.venue.clone())),
        ("video sink".into(), video),
        ("audio sink".into(), audio),
        ("decoder".into(), decoder.into()),
        (
            "config file".into(),
            or_none(args.config.as_ref().map(|p| p.display().to_string())),
        ),
    ];
    out.extend(roles::net_settings(Role::Receiver, &args.net));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slate_the_player_could_not_take_is_offered_again_until_it_is() {
        let info = |state| SlateInfo {
            state,
            peers: 1,
            buffer_fill: 0.0,
            error: None,
        };
        let mut last = None;
        let mut offered = Vec::new();
        // Forwards a status saying `state`; the player takes it or not.
        let mut status = |state, taken| {
            forward_slate(&mut last, info(state), |i| {
                offered.push(i.state);
                taken
            })
        };
        status(SlateState::Stalled, true);
        // The stream came back while the player's queue was full: Playing is dropped...
        status(SlateState::Playing, false);
        // ...and offered again with the next status, which says the same.
        status(SlateState::Playing, true);
        // Taken: the same state is not sent again.
        status(SlateState::Playing, true);
        assert_eq!(
            offered,
            [
                SlateState::Stalled,
                SlateState::Playing,
                SlateState::Playing
            ]
        );
        assert_eq!(last.map(|l| l.state), Some(SlateState::Playing));
    }

    /// Flags given with --config win over the file; the file fills in the rest.
    #[test]
    fn flags_win_over_the_config_file() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct W {
            #[command(flatten)]
            a: ReceiveArgs,
        }
        let parse = |args: &[&str]| {
            W::try_parse_from(std::iter::once("receive").chain(args.iter().copied()))
                .unwrap()
                .a
        };
        let config = crate::appliance::config::parse_str(
            "venue = \"Hall\"\n[stream]\nsource = \"/boot/e.torrent\"\ntarget_latency_ms = 3000\n\
             [network]\nlisten_port = 7000\ntrackers = [\"http://t.example/announce\"]\n",
            std::path::Path::new("nordlys.toml"),
        )
        .unwrap();
        let mut a = parse(&[
            "--output",
            "x.ts",
            "--latency",
            "500",
            "--listen",
            "127.0.0.1:0",
            "--venue",
            "Club",
        ]);
        assert_eq!(
            apply_config(&mut a, &config).unwrap(),
            Origin::Flag("--latency")
        );
        assert_eq!(a.output.as_deref(), Some("x.ts"));
        assert_eq!(a.latency, Some(500));
        assert_eq!(a.net.listen, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(a.venue.as_deref(), Some("Club"));
        assert_eq!(a.torrent.as_deref(), Some("/boot/e.torrent"));
        let mut a = parse(&[]);
        assert_eq!(
            apply_config(&mut a, &config).unwrap(),
            Origin::Key("stream.target_latency_ms")
        );
        assert_eq!(a.output.as_deref(), Some("play"));
        assert_eq!(a.latency, Some(3000));
        assert_eq!(a.net.listen, Some("0.0.0.0:7000".parse().unwrap()));
        assert_eq!(a.net.trackers, ["http://t.example/announce"]);
        assert_eq!(a.venue.as_deref(), Some("Hall"));
    }
}
