//! The example configs shipped in `config/` are valid, and `tidegate check` reports problems
//! with file and field and a non-zero exit.

mod support;

use std::path::Path;
use std::process::Command;

use support::ConfigDir;

#[test]
fn every_shipped_gateway_config_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "toml") {
            let config = tidegate::config::load(&path)
                .unwrap_or_else(|errors| panic!("{} is invalid:\n{errors}", path.display()));
            assert!(!config.apps.is_empty(), "{} has no apps", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 1, "no gateway config found in {}", dir.display());
}

#[test]
fn check_command_accepts_the_example_and_rejects_bad_files() {
    let binary = env!("CARGO_BIN_EXE_tidegate");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/tidegate.toml");
    let output = Command::new(binary)
        .args(["check", "--config"])
        .arg(&example)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("ok"));

    let config = ConfigDir::new(
        "trusted_proxies = [\"10.0.0.0/99\"]",
        "stable_window = \"a minute\"",
    );
    config.write_app(
        "web",
        "name = \"Web\"\nruntime = \"process\"\nhosts = [\"a.*.example.com\"]\n[run]\ncommand = []\n[scale]\nmin_scale = 4\nmax_scale = 2\n",
    );
    let output = Command::new(binary)
        .args(["check", "--config"])
        .arg(config.gateway_file())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "tidegate.toml: gateway.trusted_proxies[0]: \"10.0.0.0/99\" is not an IP address",
        "tidegate.toml: defaults.stable_window: \"a minute\" is not a duration",
        "web.toml: name: \"Web\" must be 1-63 lower-case letters",
        "web.toml: hosts[0]: \"a.*.example.com\"",
        "web.toml: run.command: needs at least the program to run",
        "web.toml: scale.min_scale: 4 is greater than max_scale 2",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}
