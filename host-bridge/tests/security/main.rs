//! The edges around the sandbox, tried as an attacker would (see
//! SECURITY.md): one module per edge, one test per way around it.
//!
//! Each test can be run against an older build as a negative control:
//! `HOST_BRIDGE_BIN=path/to/old/host-bridge cargo test -p host-bridge --test security`.

#[path = "../common/mod.rs"]
mod common;

mod admin;
mod cache;
mod journal;
mod listeners;
mod outbound;
mod output;
mod registry;
mod sidecar;
