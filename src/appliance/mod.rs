//! The Raspberry Pi receiver appliance: configuration file, status LEDs, logging and systemd
//! integration. Thin glue around the other layers; see `docs/APPLIANCE.md`.
//!
//! Entry points for the command line:
//! - `nordlys check-config PATH`: [`config::check_config`] → `(ok, report)`; print the report,
//!   exit non-zero unless `ok`.
//! - `nordlys receive [--config PATH]`: [`logging::init`], then
//!   [`config::load_for_receiver`] (never fails: a bad config gives `Startup::Error`, which the
//!   receiver shows as [`leds::Status::Error`] instead of exiting), [`leds::open_backend`] +
//!   [`leds::run`] fed by a `tokio::sync::watch` of [`leds::Status`], and
//!   [`systemd::notify_ready`] / [`systemd::notify_status`] / [`systemd::ping`] (the receiver
//!   pings only while its node loop publishes status, so a stalled loop gets restarted).

pub mod config;
pub mod leds;
pub mod logging;
pub mod systemd;
