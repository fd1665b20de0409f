//! `nordlys demo`: the whole chain on one machine. A built-in tracker, an injector on the
//! test pattern, a seedbox and a receiver that plays it (in a window, or headless).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;

use crate::cli::roles::{self, NodeSetup};
use crate::net::node::InjectorInput;
use crate::player::{AudioSink, Player, PlayerInput, PlayerOptions, VideoSink};
use crate::swarm::{Delivery, Role};
use crate::torrent::LiveTorrent;

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// No window and no sound: fake sinks (for servers and CI).
    #[arg(long)]
    headless: bool,
    /// End the stream after this many seconds (default: run until interrupted).
    #[arg(long)]
    duration: Option<u64>,
    /// Receiver playout latency in milliseconds.
    #[arg(long, default_value_t = 1000)]
    latency: u64,
}

pub async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let dir = tempfile_dir()?;
    // Tracker.
    let tracker_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let tracker_url = format!("http://{}/announce", tracker_listener.local_addr()?);
    tokio::spawn(crate::net::tracker_server::serve(
        tracker_listener,
        Default::default(),
    ));
    println!("tracker   {tracker_url}");
    // Key and torrent.
    let key = crate::keys::generate()?;
    let bytes = LiveTorrent::create(
        "nordlys demo",
        &key.verifying_key(),
        crate::torrent::DEFAULT_PIECE_LENGTH,
        crate::torrent::DEFAULT_WINDOW_SECS,
        std::slice::from_ref(&tracker_url),
    )?;
    let torrent = LiveTorrent::parse(&bytes)?;
    std::fs::write(dir.join("demo.torrent"), &bytes)?;
    println!(
        "torrent   {} ({})",
        dir.join("demo.torrent").display(),
        torrent.info_hash
    );

    let setup = |role, latency| NodeSetup {
        role,
        torrent: torrent.clone(),
        listen: "127.0.0.1:0".parse().unwrap(),
        peers: Vec::new(),
        upload_limit_kbit: None,
        status_addr: None,
        linger: Duration::from_secs(2),
        latency: Duration::from_millis(latency),
        trusted: Vec::new(),
        upload_slots: 40,
        substreams: 0,
        extra_trackers: Vec::new(),
        status_extra: None,
        status_settings: Vec::new(),
        stdout_is_stream: false,
        tracker_health: Default::default(),
    };

    // Injector on the test pattern, ended after --duration.
    let (chunks, gst_input) = crate::source::gst::spawn_gst_input("test-pattern", None)?;
    let chunks = limit_duration(chunks, gst_input, args.duration.map(Duration::from_secs));
    let injector = InjectorInput {
        key,
        chunks,
        flush_after: Duration::from_millis(200),
    };
    let inj = roles::start(setup(Role::Injector, 0), Some(injector), None).await?;
    println!("injector  {} (test pattern)", inj.listen);
    let seed = roles::start(setup(Role::Seed, 0), None, None).await?;
    println!("seedbox   {}", seed.listen);

    // Receiver with a player.
    let (video_sink, audio_sink) = if args.headless {
        (VideoSink::Fake, AudioSink::Fake)
    } else {
        (VideoSink::Window, AudioSink::Auto)
    };
    let player = Arc::new(Player::start(PlayerOptions {
        video_sink,
        audio_sink,
        event_name: torrent.name.clone(),
        venue: "demo".into(),
        started: crate::cli::process_start(),
        ..PlayerOptions::default()
    })?);
    let (tx, mut rx) = mpsc::channel::<Delivery>(1024);
    let recv = roles::start(setup(Role::Receiver, args.latency), None, Some(tx)).await?;
    println!(
        "receiver  {} ({})",
        recv.listen,
        if args.headless { "headless" } else { "window" }
    );

    let sender = player.sender();
    let feeder = tokio::spawn(async move {
        while let Some(d) = rx.recv().await {
            let input = match d {
                Delivery::Data { payload, .. } => PlayerInput::Data(payload),
                Delivery::Gap { .. } => PlayerInput::Gap,
                Delivery::End => PlayerInput::End,
            };
            sender.try_send(input);
        }
    });
    let mut status = recv.handles.status.clone();
    let reporter = {
        let player = player.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tick.tick().await;
                let s = status.borrow_and_update().clone();
                let p = player.stats();
                if let Some(s) = s {
                    println!(
                        "receiver: {}, {} peers, piece {}, lag {} ms, {} frames rendered, decoder {}",
                        crate::cli::state_name(s.swarm.state),
                        s.swarm.peers,
                        crate::cli::or_dash(s.swarm.output_seq),
                        crate::cli::or_dash(s.lag_ms),
                        p.frames_rendered,
                        p.decoder.as_deref().unwrap_or("-"),
                    );
                }
            }
        })
    };
    let received = recv.finish().await?;
    reporter.abort();
    feeder.await.ok();
    let injected = inj.finish().await?;
    let seeded = seed.finish().await?;
    // Let the player show what it holds before the summary.
    let stats = player.stats();
    println!(
        "demo ended: {} pieces injected, receiver continuity {:.3}, {} frames rendered, first frame after {} ms, seedbox uploaded {} bytes",
        injected.swarm.pieces_emitted,
        received.swarm.continuity,
        stats.frames_rendered,
        crate::cli::or_dash(stats.first_frame_ms),
        seeded.swarm.bytes_up,
    );
    let ok = stats.frames_rendered > 0;
    tokio::task::spawn_blocking(move || drop(player)).await.ok();
    std::fs::remove_dir_all(&dir).ok();
    anyhow::ensure!(ok, "the receiver rendered no frames");
    Ok(())
}

/// Forwards input chunks until `limit` has passed, then ends the input (the injector then
/// signs the end of the stream).
fn limit_duration(
    mut chunks: mpsc::Receiver<bytes::Bytes>,
    guard: crate::source::gst::GstInput,
    limit: Option<Duration>,
) -> mpsc::Receiver<bytes::Bytes> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let deadline = limit.map(|l| tokio::time::Instant::now() + l);
        loop {
            let next = async {
                match deadline {
                    Some(d) => tokio::time::timeout_at(d, chunks.recv())
                        .await
                        .ok()
                        .flatten(),
                    None => chunks.recv().await,
                }
            };
            match next.await {
                Some(c) => {
                    if tx.send(c).await.is_err() {
                        break;
                    }
                }
                None => break,
            }
        }
        tokio::task::spawn_blocking(move || drop(guard)).await.ok();
    });
    rx
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("nordlys-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}
