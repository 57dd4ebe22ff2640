//! A gateway built from a config value rather than files, its process apps run by the
//! in-memory backend: the whole data path and control plane, with no file and no process.

mod support;

use std::path::{Path, PathBuf};

use http::StatusCode;
use support::*;
use tidegate::config::{validate, RawApp, RawGatewayFile};
use tidegate::runtime::MemoryBackend;
use tidegate::Gateway;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_from_a_config_value_serves_apps_on_a_backend_it_is_given() {
    let state = tempfile::tempdir().unwrap();
    let gateway: RawGatewayFile = toml::from_str(&format!(
        "[gateway]\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\ndomain = \"test\"\nstate_dir = {:?}\n",
        state.path()
    ))
    .unwrap();
    let app: RawApp =
        toml::from_str("project = \"p\"\n[run]\ncommand = [\"never-run\"]\n").unwrap();
    let config = validate(
        Path::new("tidegate.toml"),
        &gateway,
        &[(PathBuf::from("apps/web.toml"), app)],
    )
    .unwrap();
    let backend = MemoryBackend::new("process");
    let handle = Gateway::builder(config)
        .backend(backend.clone())
        .start()
        .await
        .unwrap();
    assert!(
        backend.running().is_empty(),
        "nothing runs before a request"
    );

    let answer = get(handle.http_addr().unwrap(), "web.p.test", "/").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body, "instance=web-00001-1 revision=web-00001\n");
    assert_eq!(backend.running(), ["web-00001-1"]);
    assert!(handle.reload().await.is_ok(), "no file: nothing to reload");

    handle.shutdown().await;
    assert!(backend.running().is_empty(), "stopped with the gateway");
}
