//! The admin listener: health, readiness, the apps listing and Prometheus metrics.

mod support;

use http::StatusCode;
use support::*;

#[tokio::test]
async fn admin_endpoints_describe_the_gateway() {
    let config = ConfigDir::new("", "");
    let echo = echo_backend("echo").await;
    config.static_app("web", &[echo.addr], "hosts = [\"*.web.example\"]", "");
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    assert_eq!(
        get(addr, "web.p.test.local", "/").await.status,
        StatusCode::OK
    );

    assert_eq!(admin_get(&handle, "/healthz").await.status, StatusCode::OK);
    assert_eq!(admin_get(&handle, "/readyz").await.status, StatusCode::OK);
    assert_eq!(
        admin_get(&handle, "/nope").await.status,
        StatusCode::NOT_FOUND
    );

    let apps: serde_json::Value =
        serde_json::from_str(&admin_get(&handle, "/apps").await.body).unwrap();
    let web = &apps["apps"][0];
    assert_eq!(web["name"], "web");
    assert_eq!(web["project"], "p");
    assert_eq!(web["runtime"], "static");
    assert_eq!(
        web["hosts"],
        serde_json::json!(["web.p.test.local", "*.web.example"])
    );
    assert_eq!(web["instances"][0]["addr"], echo.addr.to_string());
    assert_eq!(web["in_flight"], 0);

    let metrics = admin_get(&handle, "/metrics").await.body;
    for family in [
        "tidegate_requests_total{app=\"web\",code=\"200\"} 1",
        "tidegate_request_duration_seconds_count{app=\"web\"} 1",
        "tidegate_in_flight_requests{app=\"web\"} 0",
        "tidegate_config_reload_total{result=\"success\"} 1",
        "tidegate_config_reload_total{result=\"error\"} 0",
        "tidegate_connections_total{listener=\"http\"}",
    ] {
        assert!(metrics.contains(family), "missing {family} in:\n{metrics}");
    }
    // The admin API is not reachable through the public listener.
    assert_eq!(
        get(addr, "web.p.test.local", "/metrics")
            .await
            .body
            .lines()
            .next(),
        Some("backend=echo")
    );
    handle.shutdown().await;
}
