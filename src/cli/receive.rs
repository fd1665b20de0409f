//! `nordlys receive`: join a swarm, then play the stream or write it out.
//!
//! With `--config` (the appliance) the settings come from `nordlys.toml`; a bad config never
//! exits (systemd would restart us in a loop): the slate and the LEDs show the error instead.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};

use crate::appliance::config::Startup;
use crate::appliance::leds;
use crate::cli::ReceiveArgs;
use crate::cli::roles::{self, NodeSetup};
use crate::net::node::NodeStatus;
use crate::player::{Player, PlayerHandle, PlayerInput, PlayerOptions, SlateInfo, SlateState};
use crate::swarm::{Delivery, Role, State};
use crate::torrent::LiveTorrent;

enum Output {
    Play,
    Stdout,
    File(PathBuf),
}

pub async fn receive(mut args: ReceiveArgs, startup: Option<Startup>) -> anyhow::Result<()> {
    let appliance = startup.is_some();
    let (led_tx, led_rx) = watch::channel(leds::Status::Booting);
    if let Some(startup) = &startup {
        start_leds(startup, led_rx);
        match startup {
            Startup::Ready { config, path } => {
                apply_config(&mut args, config)?;
                if let Some(missing) = appliance_doctor(path) {
                    return show_config_error(&args, config, &missing, led_tx).await;
                }
            }
            Startup::Error { config, errors } => {
                return show_config_error(&args, config, &errors.to_string(), led_tx).await;
            }
        }
    }
    let Some(torrent_spec) = args.torrent.clone() else {
        bail!("--torrent is required (or --config naming the stream)");
    };
    let torrent = match load_torrent(&torrent_spec).await {
        Ok(t) => t,
        Err(e) if appliance => {
            let config = startup.as_ref().unwrap().config();
            return show_config_error(&args, config, &format!("{e:#}"), led_tx).await;
        }
        Err(e) => return Err(e),
    };
    if args.latency >= torrent.window_secs as u64 * 1000 {
        bail!(
            "--latency {} ms must be below the torrent's window of {} s: peers keep no older stream",
            args.latency,
            torrent.window_secs
        );
    }
    let output = match args.output.as_deref() {
        None | Some("play") => Output::Play,
        Some("-") => Output::Stdout,
        Some(path) => Output::File(PathBuf::from(path)),
    };
    let (tx, rx) = mpsc::channel::<Delivery>(1024);
    let player = match output {
        Output::Play => Some(start_player(&args, &torrent.name)?),
        _ => None,
    };
    let mut setup = NodeSetup::from_net(Role::Receiver, torrent, &args.net, 3);
    setup.latency = Duration::from_millis(args.latency);
    if let Some(p) = &player {
        let p = p.clone();
        setup.status_extra = Some(Arc::new(move || {
            serde_json::to_value(p.stats()).unwrap_or(serde_json::Value::Null)
        }));
    }
    let running = roles::start(setup, None, Some(tx)).await?;
    if appliance {
        let _ = crate::appliance::systemd::notify_ready();
        spawn_watchdog(running.handles.status.clone());
    }
    let writer = match (&output, &player) {
        (Output::Play, Some(p)) => tokio::spawn(feed_player(
            rx,
            running.handles.status.clone(),
            p.clone(),
            led_tx,
        )),
        (Output::Stdout, _) => tokio::spawn(write_out(rx, None)),
        (Output::File(path), _) => tokio::spawn(write_out(rx, Some(path.clone()))),
        (Output::Play, None) => unreachable!(),
    };
    let last = running.finish().await?;
    writer.await.context("output task failed")??;
    let player_stats = player
        .as_ref()
        .and_then(|p| serde_json::to_value(p.stats()).ok());
    roles::print_final_with(&last, player_stats);
    eprintln!(
        "stream ended: output up to piece {:?}, {} missed, continuity {:.4}",
        last.swarm.output_seq, last.swarm.pieces_missed, last.swarm.continuity
    );
    if let Some(p) = player {
        tokio::task::spawn_blocking(move || drop(p)).await.ok();
    }
    Ok(())
}

/// A torrent from a file, or from an http:// URL (retried for a minute: at boot the network
/// may come up after us).
async fn load_torrent(spec: &str) -> anyhow::Result<LiveTorrent> {
    if !spec.starts_with("http://") && !spec.starts_with("https://") {
        return Ok(LiveTorrent::read(std::path::Path::new(spec))?);
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut last = None;
    for attempt in 0..12 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        match fetch_torrent(&client, spec).await {
            Ok(t) => return Ok(t),
            Err(e) => {
                tracing::warn!(url = spec, error = %format!("{e:#}"), "cannot fetch the torrent yet");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap().context(format!("cannot fetch {spec}")))
}

async fn fetch_torrent(client: &reqwest::Client, url: &str) -> anyhow::Result<LiveTorrent> {
    let mut resp = client.get(url).send().await?.error_for_status()?;
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        body.extend_from_slice(&chunk);
        if body.len() > crate::torrent::MAX_TORRENT_BYTES {
            bail!(
                "more than {} bytes: not a torrent",
                crate::torrent::MAX_TORRENT_BYTES
            );
        }
    }
    Ok(LiveTorrent::parse(&body)?)
}

fn apply_config(
    args: &mut ReceiveArgs,
    c: &crate::appliance::config::Config,
) -> anyhow::Result<()> {
    use crate::appliance::config::StreamSource;
    match c.stream_source() {
        Some(StreamSource::TorrentFile(path)) => args.torrent = Some(path.display().to_string()),
        Some(StreamSource::TorrentUrl(url)) => args.torrent = Some(url.to_string()),
        Some(StreamSource::Magnet(_)) => {
            bail!("stream.source: magnet links are not supported yet; use a .torrent file or URL")
        }
        None => bail!("stream.source is missing"),
    }
    args.latency = c.stream.target_latency_ms as u64;
    args.net.listen = std::net::SocketAddr::new([0, 0, 0, 0].into(), c.network.listen_port);
    if c.network.upload_limit_kbps > 0 {
        args.net.upload_limit = Some(c.network.upload_limit_kbps as u64);
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
    args.net.status_addr = c.status_address.or(args.net.status_addr);
    args.venue = c.venue.clone();
    (args.video_sink, args.audio_sink, args.decoder) = player_settings(c);
    args.output = Some("play".into());
    Ok(())
}

/// The player's sinks and decoder preference as a config file sets them.
pub(crate) fn player_settings(
    c: &crate::appliance::config::Config,
) -> (
    crate::player::VideoSink,
    crate::player::AudioSink,
    crate::player::DecoderPref,
) {
    use crate::appliance::config as cfg;
    let video = match c.video.sink {
        cfg::VideoSink::Auto => crate::player::VideoSink::Auto,
        cfg::VideoSink::Kms => crate::player::VideoSink::Kms { connector: None },
        cfg::VideoSink::Window => crate::player::VideoSink::Window,
        cfg::VideoSink::Fake => crate::player::VideoSink::Fake,
    };
    let decoder = match c.video.decoder {
        cfg::DecoderChoice::Auto => crate::player::DecoderPref::Auto,
        cfg::DecoderChoice::Hardware => crate::player::DecoderPref::Hardware,
        cfg::DecoderChoice::Software => crate::player::DecoderPref::Software,
    };
    let audio = match &c.audio.device {
        cfg::AudioDevice::Auto => crate::player::AudioSink::Auto,
        cfg::AudioDevice::Alsa(d) => crate::player::AudioSink::Alsa(d.clone()),
        cfg::AudioDevice::Fake => crate::player::AudioSink::Fake,
        cfg::AudioDevice::None => crate::player::AudioSink::None,
    };
    (video, audio, decoder)
}

fn start_player(args: &ReceiveArgs, event: &str) -> anyhow::Result<PlayerRef> {
    let opts = PlayerOptions {
        video_sink: args.video_sink.clone(),
        audio_sink: args.audio_sink.clone(),
        decoder: args.decoder,
        snapshot: args
            .snapshot
            .clone()
            .map(|p| (p, Duration::from_secs_f64(args.snapshot_every.max(0.1)))),
        event_name: event.to_string(),
        venue: args.venue.clone(),
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
                if last_slate.as_ref().is_none_or(|l| l.state != info.state || l.peers != info.peers) {
                    sender.try_send(PlayerInput::Slate(info.clone()));
                    last_slate = Some(info);
                }
            }
        }
    }
}

/// Writes the verified stream to a file or stdout. Gaps are simply absent bytes: TS
/// demuxers resynchronise on the next packet.
async fn write_out(mut rx: mpsc::Receiver<Delivery>, path: Option<PathBuf>) -> anyhow::Result<()> {
    let mut out: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = match &path {
        Some(p) => Box::new(
            tokio::fs::File::create(p)
                .await
                .with_context(|| format!("cannot create {}", p.display()))?,
        ),
        None => Box::new(tokio::io::stdout()),
    };
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
    a.venue = config.venue.clone();
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Serves one HTTP response with `body` to each connection.
    async fn serve(body: Vec<u8>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut req = [0u8; 1024];
                let _ = s.read(&mut req).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&body).await;
            }
        });
        format!("http://{addr}/event.torrent")
    }

    #[tokio::test]
    async fn torrent_from_a_url() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]).verifying_key();
        let bytes = LiveTorrent::create("hall", &key, 32712, 30, &[]).unwrap();
        let url = serve(bytes).await;
        let t = load_torrent(&url).await.unwrap();
        assert_eq!(t.name, "hall");
    }

    #[tokio::test]
    async fn oversized_or_bad_downloads_are_refused() {
        let client = reqwest::Client::new();
        let url = serve(vec![b'x'; crate::torrent::MAX_TORRENT_BYTES + 10]).await;
        let err = fetch_torrent(&client, &url).await.unwrap_err();
        assert!(format!("{err:#}").contains("not a torrent"), "{err:#}");
        let url = serve(b"d4:spam4:eggse".to_vec()).await;
        assert!(fetch_torrent(&client, &url).await.is_err());
    }
}
