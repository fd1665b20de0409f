//! The tokio side of nordlys: everything that touches sockets and clocks.
//!
//! - `node`: runs one sans-IO swarm core on real TCP connections.
//! - `smol_node` (feature `smol`): the same core on smol instead of tokio; static peers only.
//! - `status`: `GET /status` as JSON.
//! - `tcp`: how a peer connection's socket is set up (BBR, little unsent, no Nagle).
//! - `tracker`: BEP 3 HTTP announce client (BEP 23 compact peers, BEP 7 `peers6`) and the
//!   announce loop that feeds peer lists to the node.
//! - `tracker_server`: the built-in HTTP tracker behind `nordlys tracker --listen ADDR`.

pub mod node;
#[cfg(feature = "smol")]
pub mod smol_node;
pub mod status;
pub mod tcp;
pub mod tracker;
pub mod tracker_server;

/// Logs what a driver hands on that an operator should hear of: pieces the player skipped
/// are the first clue to a hole in the picture.
pub(crate) fn log_delivery(d: &crate::swarm::Delivery) {
    if let crate::swarm::Delivery::Gap { next_seq, count } = d
        && *count > 0
    {
        tracing::warn!(first = next_seq - count, count, "pieces skipped");
    }
}
