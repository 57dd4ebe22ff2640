//! `dashboards/tidegate.json` is an importable Grafana dashboard whose every query names
//! metrics a real gateway exports: the gateway is exercised (a cold start, requests, a TLS
//! handshake that fails, a job run) and every family a query uses must be in `/metrics`.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};
use support::api::Api;
use support::*;
use tokio::io::AsyncWriteExt;

fn dashboard() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards/tidegate.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("the dashboard is JSON")
}

/// Every `expr` in the dashboard's panels (rows' nested panels too).
fn queries(panels: &Value, out: &mut Vec<String>) {
    for panel in panels.as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                out.push(expr.to_string());
            }
        }
        queries(&panel["panels"], out);
    }
}

/// The metric families an expression names (histogram series reduced to their family).
fn families(expr: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("tidegate_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let name = &expr[start..end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        found.insert(family.to_string());
        i = end;
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_exists_in_a_real_gateway() {
    let dashboard = dashboard();
    assert_eq!(
        dashboard["templating"]["list"][0]["type"], "datasource",
        "the datasource is a variable"
    );
    let mut exprs = Vec::new();
    queries(&dashboard["panels"], &mut exprs);
    assert!(exprs.len() >= 20, "{exprs:?}");
    for expr in &exprs {
        assert!(
            expr.contains("${datasource}") || !expr.contains("datasource"),
            "{expr}"
        );
    }
    let wanted: BTreeSet<String> = exprs.iter().flat_map(|e| families(e)).collect();

    let config = ConfigDir::new(
        "https = \"127.0.0.1:0\"\n\n[tls]\ncerts_dir = \"certs\"",
        "",
    );
    write_cert(
        &config.dir.path().join("certs"),
        "web",
        &["web.p.test.local"],
    );
    config.demo_app("web", &[], "");
    // An app whose upstream refuses connections: an upstream error.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    config.static_app("down", &[closed], "", "");
    let handle = config.start().await;
    let api = Api::of(&config, &handle);
    // A cold start and answered requests.
    assert_eq!(
        get(handle.http_addr().unwrap(), "web.p.test.local", "/")
            .await
            .status,
        200
    );
    assert_eq!(
        get(handle.http_addr().unwrap(), "down.p.test.local", "/")
            .await
            .status,
        502
    );
    // A TLS handshake that fails.
    let mut garbage = tokio::net::TcpStream::connect(handle.https_addr().unwrap())
        .await
        .unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    drop(garbage);
    // A job run.
    api.create_job(json!({"name": "j", "project": "p", "run": {"command": ["true"]}}))
        .await;
    api.submit("j", json!({})).await;
    eventually("the exported families", Duration::from_secs(10), || async {
        let text = admin_get(&handle, "/metrics").await.body;
        let exported: BTreeSet<&str> = text
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|rest| rest.split_whitespace().next())
            .collect();
        let missing: Vec<&String> = wanted
            .iter()
            .filter(|f| !exported.contains(f.as_str()))
            .collect();
        if missing.is_empty() {
            Some(())
        } else {
            eprintln!("not (yet) exported: {missing:?}");
            None
        }
    })
    .await;
    handle.shutdown().await;
}
