//! The Raspberry Pi receiver appliance: configuration file, status LEDs, logging and systemd
//! integration. Thin glue around the other layers; see `docs/APPLIANCE.md`.

pub mod config;
pub mod leds;
pub mod logging;
pub mod systemd;
