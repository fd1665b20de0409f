//! systemd integration: readiness and status notification (`Type=notify`) and the watchdog
//! (`WatchdogSec=`). Everything is a no-op when not started by systemd (no `NOTIFY_SOCKET`).

use std::ffi::OsStr;
use std::io;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use sd_notify::NotifyState;

/// Where notifications go: the socket named by `NOTIFY_SOCKET` (a path, or `@name` for the
/// abstract namespace), or nowhere.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    socket: Option<std::ffi::OsString>,
}

impl Notifier {
    /// From the `NOTIFY_SOCKET` environment variable.
    pub fn from_env() -> Self {
        Notifier {
            socket: std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty()),
        }
    }

    /// To an explicit socket (tests).
    pub fn to(socket: impl AsRef<OsStr>) -> Self {
        Notifier {
            socket: Some(socket.as_ref().to_owned()),
        }
    }

    /// Whether notifications go anywhere.
    pub fn enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// Send states, e.g. `READY=1`. A no-op without a socket.
    pub fn send(&self, states: &[NotifyState]) -> io::Result<()> {
        let Some(socket) = &self.socket else {
            return Ok(());
        };
        let msg: String = states.iter().map(|s| format!("{s}\n")).collect();
        let sock = UnixDatagram::unbound()?;
        let bytes = socket.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.connect_addr(&addr)?;
        } else {
            sock.connect(socket)?;
        }
        let n = sock.send(msg.as_bytes())?;
        if n != msg.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short write to NOTIFY_SOCKET",
            ));
        }
        Ok(())
    }
}

/// Tell systemd start-up is finished (`READY=1`). No-op outside systemd.
pub fn notify_ready() -> io::Result<()> {
    Notifier::from_env().send(&[NotifyState::Ready])
}

/// Set the one-line status shown by `systemctl status` (`STATUS=...`). Newlines are
/// replaced (they would end the status). No-op outside systemd.
pub fn notify_status(status: &str) -> io::Result<()> {
    let clean = status.replace(['\n', '\r'], " ");
    Notifier::from_env().send(&[NotifyState::Status(&clean)])
}

/// Tell systemd we are stopping (`STOPPING=1`).
pub fn notify_stopping() -> io::Result<()> {
    Notifier::from_env().send(&[NotifyState::Stopping])
}

/// How often to ping the watchdog: half of `WATCHDOG_USEC` (if `WATCHDOG_PID` is unset or
/// is this process), else `None`.
pub fn watchdog_interval() -> Option<Duration> {
    watchdog_interval_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

/// [`watchdog_interval`] from explicit values (pure; for tests).
pub fn watchdog_interval_from(
    usec: Option<&str>,
    pid: Option<&str>,
    my_pid: u32,
) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(my_pid)
    {
        return None;
    }
    Some(Duration::from_micros(usec) / 2)
}

/// Ping the watchdog (`WATCHDOG=1`). No-op outside systemd.
pub fn ping() -> io::Result<()> {
    Notifier::from_env().send(&[NotifyState::Watchdog])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_interval_is_half_of_watchdog_usec() {
        assert_eq!(
            watchdog_interval_from(Some("30000000"), None, 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_interval_from(Some("30000000"), Some("7"), 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_interval_from(Some("30000000"), Some("8"), 7),
            None,
            "meant for another process"
        );
        assert_eq!(watchdog_interval_from(None, None, 7), None);
        assert_eq!(watchdog_interval_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval_from(Some("soon"), None, 7), None);
    }

    #[test]
    fn notifications_reach_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::to(&path);
        assert!(n.enabled());
        n.send(&[NotifyState::Ready]).unwrap();
        n.send(&[NotifyState::Status("buffering 40%"), NotifyState::Watchdog])
            .unwrap();
        let mut buf = [0u8; 256];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\n");
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STATUS=buffering 40%\nWATCHDOG=1\n");
    }

    #[test]
    fn abstract_socket_is_supported() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("nordlys-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        Notifier::to(format!("@{name}"))
            .send(&[NotifyState::Ready])
            .unwrap();
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\n");
    }

    #[test]
    fn without_socket_everything_is_a_no_op() {
        let n = Notifier::default();
        assert!(!n.enabled());
        n.send(&[NotifyState::Ready]).unwrap();
    }

    #[test]
    fn missing_socket_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            Notifier::to(dir.path().join("absent"))
                .send(&[NotifyState::Ready])
                .is_err()
        );
    }
}
