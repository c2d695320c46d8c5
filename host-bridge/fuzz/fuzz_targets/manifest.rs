//! A `spin.toml`: loading never panics; it either loads or says why not,
//! naming the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|text: &str| {
    let path = Path::new("/nonexistent/fuzz/spin.toml");
    if let Err(e) = host_bridge::manifest::Manifest::parse(path, text) {
        assert!(e.to_string().contains("spin.toml"), "{e}");
    }
});
