//! No code: this crate only exists for the dependency features its manifest turns on (see the
//! comment in its Cargo.toml).
