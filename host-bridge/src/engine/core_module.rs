//! Core modules made components, as Spin does for apps built for
//! `wasm32-wasip1` (spin-sdk 2 to 5, and other toolchains of that time).
//!
//! Such a module carries its component type in custom sections (written
//! by wit-bindgen) and imports WASI preview 1. `wit-component` wraps it in
//! a component, with the WASI preview 1 adapter (from wasmtime's release,
//! via `wasi-preview1-component-adapter-provider`) turning preview 1 calls
//! into WASI 0.2 imports. The wrapping is deterministic, so the compiled
//! result is found in the compiled-code cache on the next start like any
//! component's; only the wrapping itself, a few milliseconds, is redone.

use std::path::Path;
use wasmtime::error::Context as _;

/// The bytes of the component at `path`: the file itself, or, for a core
/// module, the component made from it.
pub fn component_bytes(path: &Path) -> wasmtime::Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    component_bytes_of(bytes, &path.display().to_string())
}

/// `bytes` as a component: unchanged if they are one, wrapped if they are
/// a core module. `what` names them in errors.
pub fn component_bytes_of(bytes: Vec<u8>, what: &str) -> wasmtime::Result<Vec<u8>> {
    if !wasmparser::Parser::is_core_wasm(&bytes) {
        return Ok(bytes);
    }
    wit_component::ComponentEncoder::default()
        .module(&bytes)
        .and_then(|encoder| {
            encoder.adapter(
                wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
                wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
            )
        })
        .and_then(|encoder| encoder.validate(true).encode())
        .map_err(|e| {
            wasmtime::format_err!(
                "{what} is a core module, not a component, and cannot be made one with the WASI preview 1 adapter: {e:#}"
            )
        })
}
