//! The real `tidegate` binary as a client of a gateway's API.

use super::{ConfigDir, TIDEGATE};

/// Runs `tidegate <args>` against the gateway; the token comes from the gateway's state
/// directory through `--config`, as for a local operator.
pub async fn tidegate(
    config: &ConfigDir,
    handle: &tidegate::Handle,
    args: &[&str],
) -> (i32, String, String) {
    let output = tokio::process::Command::new(TIDEGATE)
        .args(args)
        .arg("--server")
        .arg(handle.admin_addr().to_string())
        .arg("--config")
        .arg(config.gateway_file())
        .env_remove("TIDEGATE_TOKEN")
        .env_remove("TIDEGATE_SERVER")
        .output()
        .await
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
