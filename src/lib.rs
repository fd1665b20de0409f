//! nordlys: live streaming over BitTorrent.
//!
//! The modules follow the data flow: `source` cuts MPEG-TS into signed pieces, `swarm` is the
//! sans-IO protocol core, `net` drives it over TCP with tokio, `player` plays the verified
//! stream with GStreamer, and `appliance` is the glue for the Raspberry Pi receiver.

pub mod appliance;
pub mod cli;
pub mod doctor;
pub mod gst_elements;
pub mod keys;
pub mod net;
pub mod player;
pub mod settings;
pub mod source;

pub use nordlys_proto::{bencode, inject, piece, sim, swarm, test_media, torrent, wire};
