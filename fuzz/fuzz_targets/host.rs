//! Host normalisation for routing: never panics, is idempotent, and its result is lower case
//! without a port or a trailing dot, so two spellings of one host route alike.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidegate::routes::normalize_host;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(host) = normalize_host(text) {
        assert!(!host.chars().any(|c| c.is_ascii_uppercase()), "{host:?}");
        assert!(!host.ends_with('.'), "{host:?}");
        assert_eq!(
            normalize_host(&host).as_deref(),
            Some(&*host),
            "not idempotent"
        );
    }
});
