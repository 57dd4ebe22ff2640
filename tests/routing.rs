//! Host routing through a real gateway: exact, wildcard, unknown, port/case/trailing dot,
//! HTTP/2 authority, absolute-form and CONNECT.

mod support;

use bytes::Bytes;
use http::{Request, StatusCode};
use support::*;

struct Setup {
    _config: ConfigDir,
    handle: tidegate::Handle,
    _backends: Vec<Backend>,
}

async fn setup() -> Setup {
    let config = ConfigDir::new("", "");
    let exact = echo_backend("exact").await;
    let wild = echo_backend("wild").await;
    let deeper = echo_backend("deeper").await;
    config.static_app("exact", &[exact.addr], "hosts = [\"api.example.com\"]", "");
    config.static_app("wild", &[wild.addr], "hosts = [\"*.example.com\"]", "");
    config.static_app(
        "deeper",
        &[deeper.addr],
        "hosts = [\"*.eu.example.com\"]",
        "",
    );
    let handle = config.start().await;
    Setup {
        _config: config,
        handle,
        _backends: vec![exact, wild, deeper],
    }
}

fn which(answer: &Answer) -> &str {
    answer
        .body
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("backend="))
        .unwrap_or("none")
}

#[tokio::test]
async fn exact_hosts_beat_wildcards_and_longer_wildcards_win() {
    let s = setup().await;
    let addr = s.handle.http_addr().unwrap();
    assert_eq!(which(&get(addr, "api.example.com", "/").await), "exact");
    assert_eq!(which(&get(addr, "www.example.com", "/").await), "wild");
    assert_eq!(which(&get(addr, "a.b.example.com", "/").await), "wild");
    assert_eq!(which(&get(addr, "x.eu.example.com", "/").await), "deeper");
    // The default host <app>.<project>.<domain> routes too.
    assert_eq!(which(&get(addr, "exact.p.test.local", "/").await), "exact");
    // A wildcard does not match its bare suffix.
    assert_eq!(
        get(addr, "example.com", "/").await.status,
        StatusCode::NOT_FOUND
    );
    s.handle.shutdown().await;
}

#[tokio::test]
async fn port_case_and_trailing_dot_are_ignored() {
    let s = setup().await;
    let addr = s.handle.http_addr().unwrap();
    assert_eq!(
        which(&get(addr, "API.Example.COM:8080", "/").await),
        "exact"
    );
    assert_eq!(which(&get(addr, "api.example.com.", "/").await), "exact");
    assert_eq!(
        which(&get(addr, "api.example.com.:443", "/").await),
        "exact"
    );
    s.handle.shutdown().await;
}

#[tokio::test]
async fn unknown_host_is_a_404_that_names_the_host() {
    let s = setup().await;
    let answer = get(s.handle.http_addr().unwrap(), "nothing.here.org", "/").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert!(
        answer.body.contains("\"nothing.here.org\""),
        "{}",
        answer.body
    );
    assert!(
        metric(
            &s.handle,
            "tidegate_requests_total{app=\"_unrouted\",code=\"404\"}"
        )
        .await
            >= 1.0
    );
    s.handle.shutdown().await;
}

#[tokio::test]
async fn malformed_and_missing_hosts_are_400() {
    let s = setup().await;
    let addr = s.handle.http_addr().unwrap();
    let answer = get(addr, "bad host:x", "/").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let request = Request::get("/")
        .version(http::Version::HTTP_10)
        .body(full(Bytes::new()))
        .unwrap();
    let answer = send(addr, request).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.body.contains("missing Host"), "{}", answer.body);
    s.handle.shutdown().await;
}

#[tokio::test]
async fn http2_routes_by_authority_and_forwards_host() {
    let s = setup().await;
    let request = Request::get("http://api.example.com/h2?x=1")
        .body(full(Bytes::new()))
        .unwrap();
    let answer = send_h2(s.handle.http_addr().unwrap(), request).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(which(&answer), "exact");
    // The instance sees a Host header and an origin-form path whatever the client spoke.
    assert_eq!(answer.echoed("host").as_deref(), Some("api.example.com"));
    assert!(answer.body.contains("path=/h2?x=1"), "{}", answer.body);
    assert_eq!(answer.headers["via"], "1.1 tidegate");
    s.handle.shutdown().await;
}

#[tokio::test]
async fn absolute_form_for_a_foreign_host_is_refused() {
    let s = setup().await;
    let addr = s.handle.http_addr().unwrap();
    let request = Request::get("http://evil.example.org/steal")
        .header("host", "api.example.com")
        .body(full(Bytes::new()))
        .unwrap();
    let answer = send(addr, request).await;
    assert_eq!(answer.status, StatusCode::MISDIRECTED_REQUEST);
    assert!(answer.body.contains("not an open proxy"), "{}", answer.body);

    // Absolute form for one of our hosts is served, by the URI's host (RFC 9112 3.2.2).
    let request = Request::get("http://api.example.com/ok")
        .header("host", "www.example.com")
        .body(full(Bytes::new()))
        .unwrap();
    let answer = send(addr, request).await;
    assert_eq!(which(&answer), "exact");
    assert!(answer.body.contains("path=/ok"), "{}", answer.body);

    let request = Request::connect("evil.example.org:443")
        .body(full(Bytes::new()))
        .unwrap();
    let answer = send(addr, request).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    s.handle.shutdown().await;
}
