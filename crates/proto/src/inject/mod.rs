//! The injector's protocol side: MPEG-TS bytes in, signed pieces out.
//!
//! * [`ts`]: pure, panic-free TS packet / PSI parsing and keyframe detection.
//! * [`packetizer`]: cutter from TS bytes to keyframe-aligned raw pieces.

pub mod packetizer;
pub mod ts;
