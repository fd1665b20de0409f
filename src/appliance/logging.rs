//! Logging: to the systemd journal when running as a service, to stderr otherwise.

use std::path::Path;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// journald's native socket.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Where logs went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    Journald,
    Stderr,
    /// A global subscriber was already installed (e.g. `init` called twice).
    AlreadyInitialized,
}

/// Whether to log to journald: stderr is connected to the journal (`JOURNAL_STREAM`, set by
/// systemd for services), or the journal socket exists and stderr is not a terminal (so an
/// interactive `nordlys` on a systemd desktop still logs to the terminal).
pub fn wants_journald(journal_stream: bool, socket_exists: bool, stderr_is_tty: bool) -> bool {
    journal_stream || (socket_exists && !stderr_is_tty)
}

/// The filter: `RUST_LOG` if set and valid, else `level` (a level or directive list), else
/// `info`. Returns the filter and a warning to log once logging is up, if any.
pub fn filter(level: &str, rust_log: Option<&str>) -> (EnvFilter, Option<String>) {
    if let Some(env) = rust_log.filter(|s| !s.trim().is_empty()) {
        match EnvFilter::builder().parse(env) {
            Ok(f) => return (f, None),
            Err(e) => {
                if let Ok(f) = EnvFilter::builder().parse(level) {
                    return (f, Some(format!("ignoring invalid RUST_LOG `{env}`: {e}")));
                }
            }
        }
    }
    match EnvFilter::builder().parse(level) {
        Ok(f) => (f, None),
        Err(e) => (
            EnvFilter::new("info"),
            Some(format!("invalid log level `{level}` ({e}); using info")),
        ),
    }
}

/// Install the global tracing subscriber. Never panics; falls back to stderr if the journal
/// cannot be opened.
pub fn init(level: &str) -> LogTarget {
    use std::io::IsTerminal;
    let (filter, warning) = filter(level, std::env::var("RUST_LOG").ok().as_deref());
    let journald = wants_journald(
        std::env::var_os("JOURNAL_STREAM").is_some(),
        Path::new(JOURNAL_SOCKET).exists(),
        std::io::stderr().is_terminal(),
    );
    let mut journal_error = None;
    let journal_layer = if journald {
        match tracing_journald::layer() {
            Ok(l) => Some(l.with_syslog_identifier("nordlys".into())),
            Err(e) => {
                journal_error = Some(e);
                None
            }
        }
    } else {
        None
    };
    let (result, target) = match journal_layer {
        Some(layer) => (
            tracing_subscriber::registry()
                .with(filter)
                .with(layer)
                .try_init(),
            LogTarget::Journald,
        ),
        None => (
            tracing_subscriber::registry()
                .with(filter)
                // Colour codes only for a terminal: a log file or a pipe gets plain text.
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_writer(std::io::stderr)
                        .with_ansi(std::io::stderr().is_terminal()),
                )
                .try_init(),
            LogTarget::Stderr,
        ),
    };
    if result.is_err() {
        return LogTarget::AlreadyInitialized;
    }
    if let Some(e) = journal_error {
        tracing::warn!("cannot log to journald ({e}); logging to stderr");
    }
    if let Some(w) = warning {
        tracing::warn!("{w}");
    }
    target
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journald_choice() {
        assert!(wants_journald(true, false, true));
        assert!(wants_journald(false, true, false));
        assert!(!wants_journald(false, true, true));
        assert!(!wants_journald(false, false, false));
    }

    #[test]
    fn filter_prefers_valid_rust_log() {
        let (f, w) = filter("info", Some("nordlys=trace"));
        assert_eq!(f.to_string(), "nordlys=trace");
        assert!(w.is_none());
        let (f, w) = filter("debug", Some("=[bad"));
        assert_eq!(f.to_string(), "debug");
        assert!(w.unwrap().contains("RUST_LOG"));
        let (f, w) = filter("warn,nordlys::net=debug", None);
        assert_eq!(f.to_string(), "nordlys::net=debug,warn");
        assert!(w.is_none());
        let (f, w) = filter("=[bad", None);
        assert_eq!(f.to_string(), "info");
        assert!(w.is_some());
    }

    #[test]
    fn init_twice_does_not_panic() {
        let first = init("info");
        assert_ne!(first, LogTarget::AlreadyInitialized);
        assert_eq!(init("debug"), LogTarget::AlreadyInitialized);
    }
}
