//! A bulk delivery's body: parsing the envelope and every entry never
//! panics, and every entry keeps its own id.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    if let Some(entries) = host_bridge::broker::dapr_app::bulk_entries(body, "pubsub", "topic") {
        for (_, event) in entries {
            if let Ok(event) = event {
                assert_eq!(event.specversion, "1.0");
            }
        }
    }
});
