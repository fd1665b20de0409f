//! The injector's source layer: MPEG-TS in, pieces out.
//!
//! * [`input`]: opens a source (file paced by PCR, stdin, UDP, GStreamer capture) and yields
//!   byte chunks on a bounded channel (tokio).
//! * [`ts`]: pure, panic-free TS packet / PSI parsing and keyframe detection.
//! * [`packetizer`]: sans-IO cutter from TS bytes to keyframe-aligned raw pieces.
//! * [`injector`]: sans-IO [`Injector`]: the packetizer plus sequence numbers, flags, signing
//!   and the end-of-stream piece.
//! * [`pacing`]: sans-IO PCR pacer (plays a file at the stream's own rate).
//! * [`gst`]: GStreamer inputs (`test-pattern`, `gst:PIPELINE`).

pub mod gst;
pub mod input;
pub mod pacing;

pub use nordlys_proto::inject::{Injector, injector, packetizer, ts};
