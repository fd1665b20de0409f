//! The nordlys protocol core, free of I/O: what every node agrees on and decides.
//!
//! The modules follow the data flow: [`inject`] cuts MPEG-TS into signed [`piece`]s, [`wire`]
//! frames what peers say, [`swarm`] is the sans-IO state machine of one node, and [`sim`]
//! runs many of them on virtual time. The [`torrent`] names the stream and its key.
//! Nothing here reads a clock, touches a socket or spawns: the node driver (tokio), the
//! simulator and tests feed time and bytes in and carry the outputs out.

pub mod bencode;
pub mod inject;
pub mod piece;
pub mod sim;
pub mod swarm;
#[doc(hidden)]
pub mod test_media;
pub mod torrent;
pub mod wire;
