//! The config loader on an app file: any text either fails to parse or is validated (with
//! issues that name the app file) without panicking.
#![no_main]

use std::path::{Path, PathBuf};

use libfuzzer_sys::fuzz_target;
use tidegate::config::{validate, RawApp, RawGatewayFile};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(app) = toml::from_str::<RawApp>(text) else {
        return;
    };
    let gateway: RawGatewayFile = toml::from_str("[gateway]\ndomain = \"localhost\"").unwrap();
    let file = PathBuf::from("apps/fuzz.toml");
    if let Err(errors) = validate(Path::new("tidegate.toml"), &gateway, &[(file.clone(), app)]) {
        assert!(!errors.0.is_empty());
        assert!(errors.0.iter().all(|issue| issue.file == file));
    }
});
