//! A delivery's body, as daprd (or anyone reaching the app port) sends it:
//! parsing never panics, and what it accepts is a 1.0 CloudEvent.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    if let Ok(event) = host_bridge::broker::cloudevent::parse(body) {
        assert_eq!(event.specversion, "1.0");
    }
});
