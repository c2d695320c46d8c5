//! An HTTP trigger's `route` and a request path: parsing and matching never
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, &str)| {
    let (route, path) = input;
    if let Ok(route) = host_bridge::manifest::route::Route::parse(route) {
        let _ = route.matches(path);
        let _ = host_bridge::manifest::route::best_match([&route], path);
    }
});
