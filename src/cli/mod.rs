//! The `nordlys` command line: one binary for every role.

mod demo;
mod progress;
mod receive;
mod roles;
mod simulate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};

use crate::player::{AudioSink, DecoderPref, VideoSink};
use crate::source::input::Pace;

/// When the process started: `startup_ms` and `first_frame_ms` count from here.
pub fn process_start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// A number for people: the value, or `-` when there is none yet (never `Some(..)`).
pub(crate) fn or_dash(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// A node's state as `/status` spells it.
pub(crate) fn state_name(s: crate::swarm::State) -> &'static str {
    use crate::swarm::State;
    match s {
        State::Joining => "joining",
        State::Buffering => "buffering",
        State::Playing => "playing",
        State::Stalled => "stalled",
        State::Ended => "ended",
    }
}

#[derive(Parser, Debug)]
#[command(name = "nordlys", version, about = "Live streaming over BitTorrent")]
struct Cli {
    /// Log filter: error, warn, info, debug, trace, or a RUST_LOG directive list (RUST_LOG,
    /// if set, wins) [default: info; receive --config: the file's log_level]
    #[arg(long, global = true)]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Make a new injector key.
    Keygen {
        /// Where to write the secret key (refused if the file exists).
        #[arg(long)]
        out: PathBuf,
    },
    /// Make a live torrent for an injector key.
    Create {
        /// The injector's key file, from `nordlys keygen`.
        #[arg(long)]
        key: PathBuf,
        /// The stream's name, shown on receivers' slates.
        #[arg(long)]
        name: String,
        /// Tracker announce URL, http:// only (repeatable; default: none, peers are then
        /// found only with --peer).
        #[arg(long = "tracker")]
        trackers: Vec<String>,
        /// Largest piece payload in bytes (a multiple of 188).
        #[arg(long, default_value_t = crate::torrent::DEFAULT_PIECE_LENGTH)]
        piece_size: u32,
        /// Seconds of stream that peers keep behind the newest piece.
        #[arg(long, default_value_t = crate::torrent::DEFAULT_WINDOW_SECS)]
        window: u32,
        /// Where to write the torrent (refused if the file exists, unless --force).
        #[arg(long)]
        out: PathBuf,
        /// Replace --out if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Cut an MPEG-TS stream into signed pieces and feed the swarm.
    Inject(InjectArgs),
    /// Add upload capacity to a swarm.
    Seed(SeedArgs),
    /// Join a swarm and play the stream or write it out.
    Receive(Box<ReceiveArgs>),
    /// Run the built-in HTTP tracker.
    Tracker {
        /// Address to serve announces on (port 0: any free port).
        #[arg(long, default_value = "0.0.0.0:6969")]
        listen: SocketAddr,
    },
    /// Check a receiver config file with the receiver's own rules; prints every problem with
    /// line and column, exits 1 if there is one.
    CheckConfig {
        /// The config file (nordlys.toml).
        path: PathBuf,
    },
    /// Tracker, injector on a test pattern, seedbox and receiver in one process.
    Demo(demo::DemoArgs),
    /// Check this machine for what a role needs (GStreamer elements, decoders, display,
    /// sound, LEDs, config, network); exits 1 if something needed is missing.
    Doctor(DoctorArgs),
    /// Simulate a whole audience in virtual time with the real core and injector; prints a
    /// summary, writes a JSON report and charts with --out.
    Simulate(simulate::SimulateArgs),
}

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// The role to check for.
    #[arg(long, value_enum, default_value = "receive")]
    pub role: crate::doctor::DoctorRole,
    /// Receiver config file (default: /boot/nordlys.toml, then /etc/nordlys/nordlys.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The injector's --input (checks what that input needs).
    #[arg(long)]
    pub input: Option<String>,
    /// A torrent whose trackers are probed.
    #[arg(long)]
    pub torrent: Option<PathBuf>,
    /// The video sink to check: `auto`, `kms[:CONNECTOR_ID]`, `window` or `fake`.
    #[arg(long, default_value = "auto")]
    pub video_sink: VideoSink,
    /// The audio sink to check: `auto`, `alsa[:DEVICE]`, `fake` or `none`.
    #[arg(long, default_value = "auto")]
    pub audio_sink: AudioSink,
    /// The decoder preference to check: `auto`, `hardware` or `software`.
    #[arg(long, default_value = "auto")]
    pub decoder: DecoderPref,
    /// Do not probe trackers and peers.
    #[arg(long)]
    pub no_network: bool,
    /// Do not open the LED backend.
    #[arg(long)]
    pub no_leds: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

fn doctor(args: &DoctorArgs) -> ExitCode {
    let report = crate::doctor::run(&crate::doctor::Settings {
        role: args.role,
        config: args.config.clone(),
        input: args.input.clone(),
        video_sink: args.video_sink.clone(),
        audio_sink: args.audio_sink.clone(),
        decoder: args.decoder,
        torrent: args.torrent.clone(),
        network: !args.no_network,
        leds: !args.no_leds,
        root: PathBuf::from("/"),
    });
    let text = if args.json {
        serde_json::to_string_pretty(&report).unwrap_or_default() + "\n"
    } else {
        report.text()
    };
    // A closed pipe (`| head`) is not worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// How a node meets its swarm: shared by every role.
#[derive(Args, Debug, Clone)]
pub struct NetArgs {
    /// Address to accept peers on, IP:PORT [default: 0.0.0.0:0, port 0 is any free port;
    /// receive --config: the file's network.listen_port]
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// A peer to connect to, IP:PORT (repeatable), besides those the trackers name.
    #[arg(long = "peer")]
    pub peers: Vec<SocketAddr>,
    /// Upload limit in kbit/s of piece payload, at least 1 [default: no limit]
    #[arg(long)]
    pub upload_limit: Option<u64>,
    /// Serve JSON status at http://ADDR/status (port 0: any free port; the address is
    /// printed) [default: no status endpoint]
    #[arg(long)]
    pub status_addr: Option<SocketAddr>,
    /// Seconds to keep serving peers after the stream ended [default: injector 10, seedbox
    /// 5, receiver 3]
    #[arg(long)]
    pub linger: Option<u64>,
    /// Upload slots: how many peers are served at once, at least 1.
    #[arg(long, default_value_t = 40)]
    pub upload_slots: usize,
    /// Push the stream along this many substreams, 1 to 64 (experimental; every node of a
    /// swarm should use the same number) [default: 0, pull only]
    #[arg(long, default_value_t = 0)]
    pub substreams: u8,
    /// A tracker to announce to besides the torrent's own, an http:// URL (repeatable)
    /// [default: none; receive --config adds the file's network.trackers]
    #[arg(long = "tracker")]
    pub trackers: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct SwarmArgs {
    /// The live torrent file, from `nordlys create`.
    #[arg(long)]
    pub torrent: PathBuf,
    #[command(flatten)]
    pub net: NetArgs,
}

#[derive(Args, Debug)]
pub struct InjectArgs {
    #[command(flatten)]
    pub swarm: SwarmArgs,
    /// The injector's key file (must match the torrent's public key).
    #[arg(long)]
    pub key: PathBuf,
    /// A file, `-` (stdin), `udp://HOST:PORT`, `test-pattern` or `gst:PIPELINE`.
    #[arg(long)]
    pub input: String,
    /// Play a file at the stream's own rate (`pcr`) or as fast as it reads (`none`).
    #[arg(long, default_value = "pcr")]
    pub pace: PaceArg,
    /// A piece is sent at the latest this many milliseconds after its first packet.
    #[arg(long, default_value_t = 200)]
    pub flush_ms: u64,
    /// A seedbox the injector always serves and feeds first, IP:PORT (repeatable)
    /// [default: none]
    #[arg(long = "trusted")]
    pub trusted: Vec<SocketAddr>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum PaceArg {
    Pcr,
    None,
}

impl From<PaceArg> for Pace {
    fn from(p: PaceArg) -> Pace {
        match p {
            PaceArg::Pcr => Pace::Pcr,
            PaceArg::None => Pace::None,
        }
    }
}

#[derive(Args, Debug)]
pub struct SeedArgs {
    #[command(flatten)]
    pub swarm: SwarmArgs,
}

#[derive(Args, Debug, Clone)]
pub struct ReceiveArgs {
    /// The live torrent: a .torrent file or an http:// URL of one (required unless --config
    /// names the stream; magnet links and https are not supported yet).
    #[arg(long)]
    pub torrent: Option<String>,
    /// `play` (show it), `-` (the stream's bytes on stdout, nothing else goes there) or a
    /// file path [default: play]
    #[arg(long)]
    pub output: Option<String>,
    /// Playout buffer in milliseconds: how far behind the newest piece to start; at least
    /// 200 and below the torrent's window [default: 2000]
    #[arg(long)]
    pub latency: Option<u64>,
    #[command(flatten)]
    pub net: NetArgs,
    /// `auto`, `kms[:CONNECTOR_ID]`, `window` or `fake` [default: auto]
    #[arg(long)]
    pub video_sink: Option<VideoSink>,
    /// `auto`, `alsa[:DEVICE]`, `fake` or `none` [default: auto]
    #[arg(long)]
    pub audio_sink: Option<AudioSink>,
    /// `auto`, `hardware` or `software` [default: auto]
    #[arg(long)]
    pub decoder: Option<DecoderPref>,
    /// Write a PNG of what the screen shows to this path, every --snapshot-every seconds
    /// [default: no snapshots]
    #[arg(long)]
    pub snapshot: Option<PathBuf>,
    /// Seconds between two --snapshot PNGs (at least 0.1).
    #[arg(long, default_value_t = 2.0)]
    pub snapshot_every: f64,
    /// Venue name for the slate [default: none; with --config: the file's venue]
    #[arg(long)]
    pub venue: Option<String>,
    /// Receiver config file (the appliance's nordlys.toml). Flags given on the command line
    /// win over the file's settings, the file over the defaults.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

pub fn main() -> ExitCode {
    process_start();
    let cli = Cli::parse();
    if let Command::CheckConfig { path } = &cli.command {
        let (ok, report) = crate::appliance::config::check_config(path);
        print!("{report}");
        if !report.ends_with('\n') {
            println!();
        }
        return if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    if let Command::Doctor(args) = &cli.command {
        return doctor(args);
    }
    if let Command::Simulate(args) = &cli.command {
        return simulate::main(args);
    }
    // The appliance's config names its own log level, so it is read before logging starts.
    let startup = match &cli.command {
        Command::Receive(args) if args.config.is_some() => Some(
            crate::appliance::config::load_for_receiver(args.config.as_deref()),
        ),
        _ => None,
    };
    // --log wins over the config file's log_level, which wins over the default.
    let log_level = (cli.log.clone())
        .or_else(|| startup.as_ref().map(|s| s.config().log_level.clone()))
        .unwrap_or_else(|| "info".into());
    crate::appliance::logging::init(&log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nordlys: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli.command, startup));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nordlys: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    command: Command,
    startup: Option<crate::appliance::config::Startup>,
) -> anyhow::Result<()> {
    match command {
        Command::Keygen { out } => {
            if out.exists() {
                anyhow::bail!(
                    "--out {}: the file exists; a key is never overwritten (move it away first)",
                    out.display()
                );
            }
            let key = crate::keys::generate()?;
            crate::keys::write(&out, &key)?;
            println!(
                "public key {}",
                crate::keys::public_hex(&key.verifying_key())
            );
            Ok(())
        }
        Command::Create {
            key,
            name,
            trackers,
            piece_size,
            window,
            out,
            force,
        } => {
            for t in &trackers {
                if let Err(e) = crate::settings::tracker_url(t) {
                    anyhow::bail!("--tracker {e}");
                }
            }
            if !force && out.exists() {
                anyhow::bail!(
                    "--out {}: the file exists; pass --force to replace it",
                    out.display()
                );
            }
            let key = crate::keys::read(&key)?;
            use crate::torrent::TorrentError;
            let bytes = crate::torrent::LiveTorrent::create(
                &name,
                &key.verifying_key(),
                piece_size,
                window,
                &trackers,
            )
            .map_err(|e| match e {
                // Name the flag: the core's text names only the torrent field.
                TorrentError::PieceLength(_) => anyhow::anyhow!("--piece-size {piece_size}: {e}"),
                TorrentError::Window(_) => anyhow::anyhow!("--window {window}: {e}"),
                e => e.into(),
            })?;
            let torrent = crate::torrent::LiveTorrent::parse(&bytes)?;
            std::fs::write(&out, &bytes)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
            if trackers.is_empty() {
                eprintln!(
                    "nordlys: warning: the torrent names no tracker: every node will need \
                     --peer (or --tracker) to find the others"
                );
            }
            println!("infohash {}", torrent.info_hash);
            println!("{}", torrent.magnet());
            Ok(())
        }
        Command::Inject(args) => roles::inject(args).await,
        Command::Seed(args) => roles::seed(args).await,
        Command::Receive(args) => receive::receive(*args, startup).await,
        Command::Tracker { listen } => {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
            println!("tracker on http://{}/announce", listener.local_addr()?);
            crate::net::tracker_server::serve(listener, Default::default()).await
        }
        Command::CheckConfig { .. } | Command::Doctor(_) | Command::Simulate(_) => {
            unreachable!("handled before the runtime starts")
        }
        Command::Demo(args) => demo::demo(args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every option and argument of every command says what it is (`--help` has no bare
    /// lines).
    #[test]
    fn every_help_line_is_explained() {
        use clap::CommandFactory;
        let cli = Cli::command();
        let mut bare = Vec::new();
        for cmd in std::iter::once(&cli).chain(cli.get_subcommands()) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg
                    .get_help()
                    .is_none_or(|h| h.to_string().trim().is_empty())
                {
                    bare.push(format!("{} {id}", cmd.get_name()));
                }
            }
        }
        assert!(bare.is_empty(), "options without help: {bare:?}");
    }
}
