//! The injector's protocol side: MPEG-TS bytes in, signed pieces out.
//!
//! * [`ts`]: pure, panic-free TS packet / PSI parsing and keyframe detection.
//! * [`packetizer`]: cutter from TS bytes to keyframe-aligned raw pieces.
//! * [`injector`]: the packetizer plus sequence numbers, flags, signing and the end of stream:
//!   what every driver (the tokio node, the simulator) feeds TS bytes into.

pub mod injector;
pub mod packetizer;
pub mod ts;

pub use injector::Injector;
