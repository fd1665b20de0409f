//! How a peer connection's TCP socket is set up, by either runtime.
//!
//! - No Nagle delay: HAVEs and requests are small and go at once.
//! - At most [`DEFAULT_SEND_BACKLOG`] bytes unsent in the kernel (`TCP_NOTSENT_LOWAT`), so
//!   "written" means "about to leave" (see `node::conn`).
//! - BBR as congestion control where the kernel lets us. A loss-based one (CUBIC, Linux's
//!   usual default) reads every lost segment as congestion: at 2 % random loss and a 100 ms
//!   round trip it carries about 1 Mbit/s (Mathis et al. 1997), a third of a 3 Mbit/s stream,
//!   so a piece crawls across every hop. BBR paces at the path's measured rate and keeps it
//!   below about 15 % loss (Cardwell et al., "BBR: Congestion-Based Congestion Control",
//!   2016). The sender's choice is what counts, and every sender in a swarm is a nordlys node.
//!
//! All three are best effort: without them a node still works, with more delay.

use std::os::fd::AsFd;

use socket2::SockRef;

use crate::swarm::DEFAULT_SEND_BACKLOG;

/// The congestion control asked for.
pub const CONGESTION: &str = "bbr";

/// Sets up a connected peer socket (see the module's comment).
pub fn tune(socket: &impl AsFd) {
    let sock = SockRef::from(socket);
    let _ = sock.set_tcp_nodelay(true);
    let _ = sock.set_tcp_notsent_lowat(DEFAULT_SEND_BACKLOG as u32);
    let _ = sock.set_tcp_congestion(CONGESTION.as_bytes());
}

/// Whether this process may send with [`CONGESTION`]: `Err` says why not (a kernel without
/// the module, or one that does not allow it to unprivileged users) and how to mend it.
pub fn congestion_available() -> Result<(), String> {
    let probe = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .map_err(|e| format!("no TCP socket: {e}"))?;
    match probe.set_tcp_congestion(CONGESTION.as_bytes()) {
        Ok(()) => Ok(()),
        Err(e) => Err(format!(
            "the kernel refuses TCP {CONGESTION} ({e}); under packet loss each connection \
             then carries far less (`nordlys doctor` says how to allow it)"
        )),
    }
}

/// The command that lets every user send with [`CONGESTION`] (made lasting by a file in
/// `/etc/sysctl.d/`, as the appliance image has).
pub const ALLOW_CONGESTION: &str =
    "sudo modprobe tcp_bbr && sudo sysctl -w net.ipv4.tcp_congestion_control=bbr";

#[cfg(test)]
mod tests {
    use super::*;

    /// The congestion control in force on `socket`.
    fn congestion(socket: &impl AsFd) -> String {
        let name = SockRef::from(socket).tcp_congestion().unwrap();
        String::from_utf8_lossy(&name)
            .trim_end_matches('\0')
            .to_string()
    }

    #[test]
    fn a_tuned_socket_sends_with_bbr_where_the_kernel_allows_it_and_keeps_little_unsent() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        // Reno is always allowed; this machine's default may already be BBR.
        SockRef::from(&ours).set_tcp_congestion(b"reno").unwrap();
        tune(&ours);
        let sock = SockRef::from(&ours);
        assert!(sock.tcp_nodelay().unwrap());
        assert_eq!(
            sock.tcp_notsent_lowat().unwrap(),
            DEFAULT_SEND_BACKLOG as u32
        );
        match congestion_available() {
            Ok(()) => assert_eq!(congestion(&ours), CONGESTION),
            // Not allowed here: the kernel's default stays, and the node still works.
            Err(why) => {
                assert!(why.contains("nordlys doctor"), "{why}");
                assert_eq!(congestion(&ours), "reno");
            }
        }
    }
}
