//! TODO
pub mod gst;
