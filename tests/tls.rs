//! TLS termination with real handshakes: SNI across several hosts, wildcards, the default
//! certificate, unknown names, ALPN, live certificate replacement and broken files.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use support::*;

struct Setup {
    config: ConfigDir,
    handle: tidegate::Handle,
    _echo: Backend,
    api: rustls::pki_types::CertificateDer<'static>,
    wild: rustls::pki_types::CertificateDer<'static>,
    local: rustls::pki_types::CertificateDer<'static>,
}

async fn setup() -> Setup {
    let config = ConfigDir::new(
        "https = \"127.0.0.1:0\"\n\n[tls]\ncerts_dir = \"certs\"\ndefault_cert = \"default.test\"",
        "",
    );
    let certs = config.dir.path().join("certs");
    let api = write_cert(&certs, "api", &["api.example.com"]);
    let wild = write_cert(&certs, "wild", &["*.example.com"]);
    // 127.0.0.1 as an IP SAN lets a client that connects by address (and so sends no SNI)
    // verify the default certificate.
    let local = write_cert(
        &certs,
        "local",
        &["default.test", "*.p.test.local", "127.0.0.1"],
    );
    let echo = echo_backend("echo").await;
    config.static_app(
        "web",
        &[echo.addr],
        "hosts = [\"api.example.com\", \"*.example.com\"]\nhsts_max_age = \"1h\"",
        "",
    );
    let handle = config.start().await;
    Setup {
        config,
        handle,
        _echo: echo,
        api,
        wild,
        local,
    }
}

#[tokio::test]
async fn sni_picks_the_certificate_by_its_own_names() {
    let s = setup().await;
    let addr = s.handle.https_addr().unwrap();
    let client = tls_client(
        &[s.api.clone(), s.wild.clone(), s.local.clone()],
        &[b"http/1.1"],
    );

    let exact = tls_connect(&client, addr, "api.example.com").await.unwrap();
    assert_eq!(peer_cert(&exact), s.api);
    let answer = get_over(exact, "api.example.com", "/").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.echoed("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(answer.headers["strict-transport-security"], "max-age=3600");

    let wildcard = tls_connect(&client, addr, "shop.example.com")
        .await
        .unwrap();
    assert_eq!(peer_cert(&wildcard), s.wild);
    // A TLS wildcard covers one label only, and the default certificate is not a fallback
    // for names no certificate covers: unrecognized_name.
    let error = tls_connect(&client, addr, "a.b.example.com")
        .await
        .unwrap_err();
    assert!(error.to_string().contains("UnrecognisedName"), "{error}");

    let app_host = tls_connect(&client, addr, "web.p.test.local")
        .await
        .unwrap();
    assert_eq!(peer_cert(&app_host), s.local);

    // No SNI (connecting by IP address): the default certificate.
    let no_sni = tls_connect(&client, addr, "127.0.0.1").await.unwrap();
    assert_eq!(peer_cert(&no_sni), s.local);
    assert_eq!(
        metric(
            &s.handle,
            "tidegate_tls_handshake_errors_total{reason=\"unrecognized_name\"}"
        )
        .await,
        1.0,
        "only a.b.example.com was unrecognized"
    );
    s.handle.shutdown().await;
}

#[tokio::test]
async fn an_unknown_name_without_a_default_fails_with_unrecognized_name() {
    let config = ConfigDir::new(
        "https = \"127.0.0.1:0\"\n\n[tls]\ncerts_dir = \"certs\"",
        "",
    );
    let only = write_cert(&config.dir.path().join("certs"), "only", &["only.test"]);
    let echo = echo_backend("echo").await;
    config.static_app("web", &[echo.addr], "", "");
    let handle = config.start().await;
    let client = tls_client(&[only], &[]);
    let error = tls_connect(&client, handle.https_addr().unwrap(), "other.test")
        .await
        .unwrap_err();
    assert!(error.to_string().contains("UnrecognisedName"), "{error}");
    handle.shutdown().await;
}

#[tokio::test]
async fn alpn_chooses_h2_and_http2_is_served() {
    let s = setup().await;
    let client = tls_client(std::slice::from_ref(&s.api), &[b"h2", b"http/1.1"]);
    let stream = tls_connect(&client, s.handle.https_addr().unwrap(), "api.example.com")
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut sender = h2_session(stream).await;
    let request = Request::get("https://api.example.com/over-h2")
        .body(full(Bytes::new()))
        .unwrap();
    let answer = read_answer(sender.send_request(request).await.unwrap()).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.body.contains("path=/over-h2"), "{}", answer.body);
    assert_eq!(answer.echoed("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(answer.headers["strict-transport-security"], "max-age=3600");
    s.handle.shutdown().await;
}

#[tokio::test]
async fn a_replaced_certificate_is_used_for_new_connections_only() {
    let s = setup().await;
    let addr = s.handle.https_addr().unwrap();
    let certs = s.config.dir.path().join("certs");
    let old_client = tls_client(std::slice::from_ref(&s.api), &[b"http/1.1"]);
    let open = tls_connect(&old_client, addr, "api.example.com")
        .await
        .unwrap();
    let reloads_before = metric(
        &s.handle,
        "tidegate_tls_cert_reload_total{result=\"success\"}",
    )
    .await;

    let renewed = write_cert(&certs, "api", &["api.example.com"]);
    let client = tls_client(&[s.api.clone(), renewed.clone()], &[b"http/1.1"]);
    eventually(
        "the renewed certificate to be served",
        Duration::from_secs(10),
        || async {
            let stream = tls_connect(&client, addr, "api.example.com").await.ok()?;
            (peer_cert(&stream) == renewed).then_some(())
        },
    )
    .await;
    assert!(
        metric(
            &s.handle,
            "tidegate_tls_cert_reload_total{result=\"success\"}"
        )
        .await
            > reloads_before
    );
    // The connection opened before the change still works.
    assert_eq!(
        get_over(open, "api.example.com", "/").await.status,
        StatusCode::OK
    );
    s.handle.shutdown().await;
}

#[tokio::test]
async fn a_broken_certificate_file_keeps_the_previous_certificate() {
    let s = setup().await;
    let addr = s.handle.https_addr().unwrap();
    write_atomically(
        &s.config.dir.path().join("certs/api.crt"),
        "-----BEGIN CERTIFICATE-----\nbroken\n",
    );
    wait_reloads_of(
        &s.handle,
        "tidegate_tls_cert_reload_total{result=\"error\"}",
    )
    .await;
    let client = tls_client(std::slice::from_ref(&s.api), &[b"http/1.1"]);
    let stream = tls_connect(&client, addr, "api.example.com").await.unwrap();
    assert_eq!(peer_cert(&stream), s.api);
    s.handle.shutdown().await;
}

#[tokio::test]
async fn plain_http_and_garbage_on_the_tls_port_are_dropped_without_harm() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = setup().await;
    let addr = s.handle.https_addr().unwrap();
    let client = tls_client(std::slice::from_ref(&s.api), &[b"http/1.1"]);
    let healthy = tls_connect(&client, addr, "api.example.com").await.unwrap();

    for junk in [
        &b"GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n"[..],
        &[0xff; 64][..],
    ] {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(junk).await.unwrap();
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
            .await
            .expect("the gateway closes the connection");
    }
    assert_eq!(
        metric(
            &s.handle,
            "tidegate_tls_handshake_errors_total{reason=\"not_tls\"}"
        )
        .await,
        2.0
    );
    assert_eq!(
        get_over(healthy, "api.example.com", "/").await.status,
        StatusCode::OK
    );
    s.handle.shutdown().await;
}

#[tokio::test]
async fn https_redirect_sends_plain_http_to_the_tls_listener() {
    let s = setup().await;
    s.config.static_app(
        "web",
        &[s._echo.addr],
        "hosts = [\"api.example.com\"]\nhttps_redirect = true",
        "",
    );
    s.handle.reload().await.unwrap();
    let answer = get(s.handle.http_addr().unwrap(), "api.example.com", "/a?b=1").await;
    assert_eq!(answer.status, StatusCode::PERMANENT_REDIRECT);
    let port = s.handle.https_addr().unwrap().port();
    assert_eq!(
        answer.headers["location"],
        format!("https://api.example.com:{port}/a?b=1").as_str()
    );
    s.handle.shutdown().await;
}

async fn wait_reloads_of(handle: &tidegate::Handle, series: &str) {
    eventually(series, Duration::from_secs(10), || async {
        (metric(handle, series).await >= 1.0).then_some(())
    })
    .await
}

#[tokio::test]
async fn an_http2_connection_is_idle_only_from_its_handshake_on() {
    // The idle limit of an HTTP/2 connection counts from when hyper takes it over: a client
    // that took most of `header_read_timeout` to start its handshake, then most of it again
    // to send its first request, is served.
    let config = ConfigDir::new(
        "header_read_timeout = \"1s\"\nhttps = \"127.0.0.1:0\"\n\n[tls]\ncerts_dir = \"certs\"",
        "",
    );
    let api = write_cert(
        &config.dir.path().join("certs"),
        "api",
        &["api.example.com"],
    );
    let echo = echo_backend("echo").await;
    config.static_app("web", &[echo.addr], "hosts = [\"api.example.com\"]", "");
    let handle = config.start().await;
    let client = tls_client(std::slice::from_ref(&api), &[b"h2"]);

    let tcp = tokio::net::TcpStream::connect(handle.https_addr().unwrap())
        .await
        .unwrap();
    // The pauses are what is under test: 600 ms each, 400 ms inside the limit either way.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let name = rustls::pki_types::ServerName::try_from("api.example.com").unwrap();
    let stream = client.connect(name, tcp).await.unwrap();
    let mut sender = h2_session(stream).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let request = Request::get("https://api.example.com/late")
        .body(full(Bytes::new()))
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .expect("served, not shut down");
    assert_eq!(read_answer(response).await.status, StatusCode::OK);
    handle.shutdown().await;
}

#[test]
fn certs_dev_writes_a_key_only_its_owner_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let config = ConfigDir::new(
        "https = \"127.0.0.1:0\"\n\n[tls]\ncerts_dir = \"certs\"",
        "",
    );
    let status = std::process::Command::new(TIDEGATE)
        .args(["certs", "dev", "--config"])
        .arg(config.gateway_file())
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    let certs = config.dir.path().join("certs");
    let mode = |file: &str| {
        std::fs::metadata(certs.join(file))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("dev.key"), 0o600);
    assert_eq!(mode("dev.crt") & 0o044, 0o044, "the certificate is public");
}
