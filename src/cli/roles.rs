//! Starting a node for each role: listener, trackers, status endpoint, the node loop.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::cli::{InjectArgs, NetArgs, SeedArgs, SwarmArgs};
use crate::net::node::{self, InjectorInput, NodeHandles, NodeOptions, NodeStatus};
use crate::net::status;
use crate::net::tracker;
use crate::swarm::{Delivery, Role};
use crate::torrent::LiveTorrent;

/// Everything a node needs besides its role-specific input and output.
pub struct NodeSetup {
    pub role: Role,
    pub torrent: LiveTorrent,
    pub listen: SocketAddr,
    pub peers: Vec<SocketAddr>,
    pub upload_limit_kbit: Option<u64>,
    pub status_addr: Option<SocketAddr>,
    pub linger: Duration,
    pub latency: Duration,
    pub trusted: Vec<SocketAddr>,
    pub upload_slots: usize,
    /// Substreams to push along (0: pull only).
    pub substreams: u8,
    /// Trackers to announce to besides the torrent's own.
    pub extra_trackers: Vec<String>,
    /// Extra fields for the status endpoint (the player's counters).
    pub status_extra: Option<status::Extra>,
    /// The settings the status page shows.
    pub status_settings: status::Settings,
    /// Stdout carries the stream (`receive --output -`): messages for people go to stderr.
    pub stdout_is_stream: bool,
    /// Filled in by the announcer: what each tracker last said.
    pub tracker_health: tracker::Health,
}

impl NodeSetup {
    pub fn from_args(role: Role, args: &SwarmArgs, default_linger: u64) -> anyhow::Result<Self> {
        check_net(&args.net)?;
        let torrent = LiveTorrent::read(&args.torrent)?;
        Ok(Self::from_net(role, torrent, &args.net, default_linger))
    }

    /// The node's settings from the shared flags; check them first with [`check_net`].
    pub fn from_net(role: Role, torrent: LiveTorrent, net: &NetArgs, default_linger: u64) -> Self {
        NodeSetup {
            role,
            torrent,
            listen: net.listen.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
            peers: net.peers.clone(),
            upload_limit_kbit: net.upload_limit,
            status_addr: net.status_addr,
            linger: Duration::from_secs(net.linger.unwrap_or(default_linger)),
            latency: Duration::from_millis(2000),
            trusted: Vec::new(),
            upload_slots: net.upload_slots,
            substreams: net.substreams,
            extra_trackers: net.trackers.clone(),
            status_extra: None,
            status_settings: net_settings(role, net),
            stdout_is_stream: false,
            tracker_health: tracker::Health::default(),
        }
    }
}

/// The shared flags as the status page shows them. Tracker URLs lose what may be a
/// credential (see [`status::redact_url`]).
pub fn net_settings(role: Role, net: &NetArgs) -> status::Settings {
    let list = |v: Vec<String>| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    vec![
        ("role".into(), role.name().into()),
        (
            "listen".into(),
            net.listen.map_or("any port".into(), |a| a.to_string()),
        ),
        (
            "peers".into(),
            list(net.peers.iter().map(ToString::to_string).collect()),
        ),
        (
            "trackers (besides the torrent's)".into(),
            list(net.trackers.iter().map(|t| status::redact_url(t)).collect()),
        ),
        (
            "upload limit".into(),
            net.upload_limit
                .map_or("none".into(), |k| format!("{k} kbit/s")),
        ),
        ("upload slots".into(), net.upload_slots.to_string()),
        ("substreams".into(), net.substreams.to_string()),
    ]
}

/// The rules for the flags every role shares, applied before anything starts.
pub fn check_net(net: &NetArgs) -> anyhow::Result<()> {
    for t in &net.trackers {
        if let Err(e) = crate::settings::tracker_url(t) {
            bail!("--tracker {e}");
        }
    }
    if net.upload_limit == Some(0) {
        bail!(
            "--upload-limit 0 kbit/s is not a limit; expected at least 1 (leave it out for no limit)"
        );
    }
    if net.substreams > nordlys_proto::wire::MAX_SUBSTREAMS {
        bail!(
            "--substreams {} is too many; expected 0 (pull only) to {}",
            net.substreams,
            nordlys_proto::wire::MAX_SUBSTREAMS
        );
    }
    if net.upload_slots == 0 {
        bail!("--upload-slots 0 would serve nobody; expected at least 1");
    }
    Ok(())
}

/// A started node: wait for it with `finish`.
pub struct Running {
    pub handles: NodeHandles,
    pub listen: SocketAddr,
    task: tokio::task::JoinHandle<anyhow::Result<NodeStatus>>,
    stop_trackers: tokio::sync::watch::Sender<bool>,
    announcer: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub async fn finish(self) -> anyhow::Result<NodeStatus> {
        let result = self.task.await.context("node task failed")?;
        let _ = self.stop_trackers.send(true);
        if let Some(a) = self.announcer {
            // `stopped` is best effort; do not hang on a dead tracker.
            let _ = tokio::time::timeout(Duration::from_secs(3), a).await;
        }
        result
    }
}

pub async fn start(
    setup: NodeSetup,
    injector: Option<InjectorInput>,
    deliveries: Option<mpsc::Sender<Delivery>>,
) -> anyhow::Result<Running> {
    let listener = TcpListener::bind(setup.listen)
        .await
        .with_context(|| format!("cannot listen on {}", setup.listen))?;
    let listen = listener.local_addr()?;
    let (peers_tx, peers_rx) = mpsc::channel(16);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (ready_tx, ready_rx) = oneshot::channel();
    let mut torrent = setup.torrent.clone();
    // A torrent made elsewhere may name trackers no role can use: say so once and leave them
    // out, rather than failing to announce to them forever.
    torrent
        .trackers
        .retain(|t| match crate::settings::tracker_url(t) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!("ignoring the torrent's tracker {e}");
                false
            }
        });
    for t in &setup.extra_trackers {
        if !torrent.trackers.contains(t) {
            torrent.trackers.push(t.clone());
        }
    }
    // Without a tracker or a peer to dial, only peers that dial us can be found: fine for an
    // injector that seedboxes dial, a dead end for anyone else if nobody knows them.
    if torrent.trackers.is_empty() && setup.peers.is_empty() {
        tracing::warn!(
            "no tracker (the torrent names none, no --tracker) and no --peer: \
             waiting for peers to connect to {listen}"
        );
    }
    let peer_id = node::new_peer_id();
    tracing::info!(
        role = setup.role.name(),
        infohash = %torrent.info_hash,
        %listen,
        "starting"
    );
    let opts = NodeOptions {
        role: setup.role,
        torrent: setup.torrent,
        listener,
        static_peers: setup.peers,
        upload_limit_bytes: setup.upload_limit_kbit.map(|k| k.saturating_mul(125)),
        latency: setup.latency,
        trusted: setup.trusted,
        linger: setup.linger,
        started: crate::cli::process_start(),
        max_peers: 50,
        upload_slots: setup.upload_slots,
        substreams: setup.substreams,
        peer_id,
    };
    let task = tokio::spawn(node::run(opts, injector, deliveries, peers_rx, ready_tx));
    let handles = ready_rx.await.context("node failed to start")?;

    let announcer = if torrent.trackers.is_empty() {
        None
    } else {
        let status_rx = handles.status.clone();
        let base = tracker::Announce {
            info_hash: torrent.info_hash,
            peer_id,
            port: listen.port(),
            uploaded: 0,
            downloaded: 0,
            left: if setup.role == Role::Injector { 0 } else { 1 },
            event: None,
            numwant: 50,
        };
        let stats = move || {
            status_rx
                .borrow()
                .as_ref()
                .map(|s| (s.swarm.bytes_up, s.swarm.bytes_down))
                .unwrap_or((0, 0))
        };
        Some(tokio::spawn(tracker::run_announcer(
            torrent.trackers.clone(),
            base,
            stats,
            peers_tx,
            stop_rx,
            setup.tracker_health.clone(),
        )))
    };
    if let Some(addr) = setup.status_addr {
        let l = status::bind(addr).await?;
        let line = format!("status on http://{}/status", l.local_addr()?);
        if setup.stdout_is_stream {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
        tokio::spawn(status::serve(
            l,
            handles.status_requests.clone(),
            setup.status_extra,
            setup.status_settings,
        ));
    }
    Ok(Running {
        handles,
        listen,
        task,
        stop_trackers: stop_tx,
        announcer,
    })
}

pub async fn inject(args: InjectArgs) -> anyhow::Result<()> {
    let mut setup = NodeSetup::from_args(Role::Injector, &args.swarm, 10)?;
    setup.trusted = args.trusted.clone();
    let key = crate::keys::read(&args.key)?;
    if key.verifying_key() != setup.torrent.public_key {
        bail!(
            "the key {} does not match the torrent's public key",
            args.key.display()
        );
    }
    let mut input = crate::source::input::open(&args.input, args.pace.into()).await?;
    println!("input {}", input.description());
    // The node reads a plain channel; this task owns the input and reports how it ended.
    let (tx, chunks) = mpsc::channel(64);
    tokio::spawn(async move {
        while let Some(chunk) = input.recv().await {
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
        match input.error() {
            Some(e) => tracing::error!(error = %e, "input failed; ending the stream"),
            None => tracing::info!("end of input"),
        }
    });
    let injector = InjectorInput {
        key,
        chunks,
        flush_after: Duration::from_millis(args.flush_ms),
    };
    let running = start(setup, Some(injector), None).await?;
    println!("injecting on {}", running.listen);
    let last = running.finish().await?;
    print_final(&last);
    println!(
        "stream ended: {} pieces, {} bytes in, {} bytes uploaded",
        last.swarm.pieces_emitted,
        last.bytes_in.unwrap_or(0),
        last.swarm.bytes_up
    );
    Ok(())
}

pub async fn seed(args: SeedArgs) -> anyhow::Result<()> {
    let setup = NodeSetup::from_args(Role::Seed, &args.swarm, 5)?;
    let running = start(setup, None, None).await?;
    println!("seeding on {}", running.listen);
    let last = running.finish().await?;
    print_final(&last);
    println!("stream ended: {} bytes uploaded", last.swarm.bytes_up);
    Ok(())
}

/// The last status as one JSON line on stderr, for operators' logs and the tests.
pub fn print_final(status: &NodeStatus) {
    print_final_with(status, None);
}

/// As `print_final`, with extra fields (the player's counters) merged in.
pub fn print_final_with(status: &NodeStatus, extra: Option<serde_json::Value>) {
    let Ok(mut value) = serde_json::to_value(status) else {
        return;
    };
    if let (Some(obj), Some(serde_json::Value::Object(more))) = (value.as_object_mut(), extra) {
        obj.extend(more);
    }
    eprintln!("final status {value}");
}
