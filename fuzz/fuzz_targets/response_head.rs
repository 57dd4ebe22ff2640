//! An instance's response head as the engine reads it: never panics, and a head it accepts is
//! within the bytes given and the size limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidegate::http1::upstream_head::{fields, parse, Parsed};

fuzz_target!(|data: &[u8]| {
    let mut space = fields();
    match parse(data, &mut space) {
        Ok(Some(Parsed::Final(head))) => {
            assert!(head.length <= data.len());
            assert!(head.length <= 256 * 1024);
            assert!(head.status.as_u16() >= 200);
        }
        Ok(Some(Parsed::Interim(length))) => assert!(length <= data.len()),
        Ok(None) | Err(_) => {}
    }
});
