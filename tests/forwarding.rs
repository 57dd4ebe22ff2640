//! What reaches the instance and what comes back: headers, bodies streamed both ways, load
//! balancing, and the gateway's own answers when an instance fails.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use support::*;
use tokio::sync::Semaphore;

#[tokio::test]
async fn headers_are_rewritten_for_the_instance() {
    let config = ConfigDir::new("", "");
    let echo = echo_backend("echo").await;
    config.static_app("app", &[echo.addr], "", "");
    let handle = config.start().await;
    let request = Request::get("/path?q=1")
        .header("host", "App.P.Test.Local:8080")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("te", "trailers")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-host", "forged.example")
        .header("forwarded", "for=6.6.6.6")
        .header("x-custom", "kept")
        .body(full(Bytes::new()))
        .unwrap();
    let answer = send(handle.http_addr().unwrap(), request).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    for hop in ["x-hop", "keep-alive", "proxy-authorization", "te"] {
        assert_eq!(
            answer.echoed(hop),
            None,
            "{hop} must not reach the instance"
        );
    }
    assert_eq!(answer.echoed("x-custom").as_deref(), Some("kept"));
    assert_eq!(
        answer.echoed("host").as_deref(),
        Some("App.P.Test.Local:8080")
    );
    assert_eq!(
        answer.echoed("x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(answer.echoed("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(
        answer.echoed("x-forwarded-host").as_deref(),
        Some("App.P.Test.Local:8080")
    );
    assert_eq!(
        answer.echoed("forwarded").as_deref(),
        Some("for=127.0.0.1;host=\"App.P.Test.Local:8080\";proto=http")
    );
    assert_eq!(answer.echoed("via").as_deref(), Some("1.1 tidegate"));
    assert!(answer.body.contains("path=/path?q=1"), "{}", answer.body);
    assert_eq!(answer.headers["via"], "1.1 tidegate");
    handle.shutdown().await;
}

#[tokio::test]
async fn trusted_proxies_keep_and_extend_forwarding_headers() {
    let config = ConfigDir::new("trusted_proxies = [\"127.0.0.1\"]", "");
    let echo = echo_backend("echo").await;
    config.static_app("app", &[echo.addr], "", "");
    let handle = config.start().await;
    let request = Request::get("/")
        .header("host", "app.p.test.local")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "public.example")
        .header("forwarded", "for=203.0.113.9;proto=https")
        .body(full(Bytes::new()))
        .unwrap();
    let answer = send(handle.http_addr().unwrap(), request).await;
    assert_eq!(
        answer.echoed("x-forwarded-for").as_deref(),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(answer.echoed("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(
        answer.echoed("x-forwarded-host").as_deref(),
        Some("public.example")
    );
    assert_eq!(
        answer.echoed("forwarded").as_deref(),
        Some("for=203.0.113.9;proto=https, for=127.0.0.1;host=\"app.p.test.local\";proto=http")
    );
    handle.shutdown().await;
}

#[tokio::test]
async fn least_outstanding_requests_avoids_a_busy_instance() {
    let config = ConfigDir::new("", "");
    let gate = Arc::new(Semaphore::new(0));
    let held = Arc::new(AtomicUsize::new(0));
    let (gate2, held2) = (Arc::clone(&gate), Arc::clone(&held));
    let slow = backend(move |_request| {
        let (gate, held) = (Arc::clone(&gate2), Arc::clone(&held2));
        async move {
            held.fetch_add(1, Ordering::SeqCst);
            gate.acquire().await.unwrap().forget();
            text_response(StatusCode::OK, "backend=slow\n")
        }
    })
    .await;
    let fast = echo_backend("fast").await;
    config.static_app("lb", &[slow.addr, fast.addr], "", "");
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();

    // Send requests until one is held by the slow instance.
    let mut pending = Vec::new();
    while held.load(Ordering::SeqCst) == 0 {
        pending.push(tokio::spawn(get(addr, "lb.p.test.local", "/")));
        eventually(
            "a request to finish or be held",
            Duration::from_secs(5),
            || async {
                (held.load(Ordering::SeqCst) > 0 || pending.last().unwrap().is_finished())
                    .then_some(())
            },
        )
        .await;
    }
    // While the slow instance has one outstanding request, every new one goes to the other.
    for _ in 0..20 {
        let answer = get(addr, "lb.p.test.local", "/").await;
        assert!(answer.body.starts_with("backend=fast"), "{}", answer.body);
    }
    gate.add_permits(100);
    for task in pending {
        assert_eq!(task.await.unwrap().status, StatusCode::OK);
    }
    handle.shutdown().await;
}

#[tokio::test]
async fn refused_and_reset_upstreams_are_502_with_the_cause() {
    let config = ConfigDir::new("", "");
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let resetting = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let reset_addr = resetting.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = resetting.accept().await {
            drop(stream);
        }
    });
    config.static_app("down", &[closed], "", "");
    config.static_app("flaky", &[reset_addr], "", "");
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();

    let answer = get(addr, "down.p.test.local", "/").await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert!(answer.body.contains("app \"down\""), "{}", answer.body);
    assert!(answer.body.contains("could not connect"), "{}", answer.body);
    assert!(
        answer.body.to_lowercase().contains("refused"),
        "{}",
        answer.body
    );

    let answer = get(addr, "flaky.p.test.local", "/").await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert!(answer.body.contains("app \"flaky\""), "{}", answer.body);
    assert!(
        answer.body.contains("closed the connection"),
        "{}",
        answer.body
    );

    assert_eq!(
        metric(
            &handle,
            "tidegate_upstream_errors_total{app=\"down\",kind=\"connect\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &handle,
            "tidegate_upstream_errors_total{app=\"flaky\",kind=\"reset\"}"
        )
        .await,
        1.0
    );
    handle.shutdown().await;
}

#[tokio::test]
async fn a_slow_upstream_is_504_after_request_timeout() {
    let config = ConfigDir::new("", "");
    let slow = backend(|_request| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        text_response(StatusCode::OK, "late")
    })
    .await;
    config.static_app("slow", &[slow.addr], "", "request_timeout = \"200ms\"");
    let handle = config.start().await;
    let started = std::time::Instant::now();
    let answer = get(handle.http_addr().unwrap(), "slow.p.test.local", "/").await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(answer.body.contains("app \"slow\""), "{}", answer.body);
    assert!(answer.body.contains("request_timeout"), "{}", answer.body);
    assert!(started.elapsed() < Duration::from_secs(5));
    handle.shutdown().await;
}

#[tokio::test]
async fn oversized_headers_get_431_and_the_connection_limit_holds() {
    let config = ConfigDir::new("max_header_bytes = 16384\nmax_connections = 2", "");
    let echo = echo_backend("echo").await;
    config.static_app("app", &[echo.addr], "", "");
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    let request = Request::get("/")
        .header("host", "app.p.test.local")
        .header("x-big", "y".repeat(20_000))
        .body(full(Bytes::new()))
        .unwrap();
    let answer = send(addr, request).await;
    assert_eq!(answer.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);

    // Two idle connections take both slots; a third client is not served until one closes.
    let first = tokio::net::TcpStream::connect(addr).await.unwrap();
    let second = tokio::net::TcpStream::connect(addr).await.unwrap();
    eventually("two open connections", Duration::from_secs(5), || async {
        (metric(&handle, "tidegate_connections_open{listener=\"http\"}").await == 2.0).then_some(())
    })
    .await;
    let mut third = tokio::spawn(get(addr, "app.p.test.local", "/"));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut third)
            .await
            .is_err(),
        "a third connection was served beyond max_connections = 2"
    );
    drop(first);
    let answer = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("the third client is served once a slot frees")
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    drop(second);
    handle.shutdown().await;
}

#[tokio::test]
async fn private_apps_refuse_clients_outside_private_networks() {
    let config = ConfigDir::new("private_networks = [\"10.0.0.0/8\"]", "");
    let echo = echo_backend("echo").await;
    config.static_app("internal", &[echo.addr], "visibility = \"private\"", "");
    config.static_app("open", &[echo.addr], "", "");
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    let answer = get(addr, "internal.p.test.local", "/").await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert!(answer.body.contains("not public"), "{}", answer.body);
    assert_eq!(
        get(addr, "open.p.test.local", "/").await.status,
        StatusCode::OK
    );

    // Loopback is a private network by default: the same app admits local clients.
    config.write_gateway("", "");
    handle.reload().await.unwrap();
    assert_eq!(
        get(addr, "internal.p.test.local", "/").await.status,
        StatusCode::OK
    );
    handle.shutdown().await;
}

#[tokio::test]
async fn a_silent_client_is_disconnected_after_the_header_timeout() {
    use tokio::io::AsyncReadExt;
    let config = ConfigDir::new("header_read_timeout = \"300ms\"", "");
    let echo = echo_backend("echo").await;
    config.static_app("app", &[echo.addr], "", "");
    let handle = config.start().await;
    let mut silent = tokio::net::TcpStream::connect(handle.http_addr().unwrap())
        .await
        .unwrap();
    let mut buffer = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buffer))
        .await
        .expect("the gateway closes a connection that never speaks");
    assert_eq!(read.unwrap(), 0);
    // A client that dawdles inside its request head is cut off too (hyper's header timeout).
    let mut slow = tokio::net::TcpStream::connect(handle.http_addr().unwrap())
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut slow, b"GET / HTTP/1.1\r\nHost: app.p.test.local\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest))
        .await
        .expect("the gateway closes a connection whose head never ends")
        .ok();
    handle.shutdown().await;
}

#[tokio::test]
async fn a_pooled_connection_the_instance_closed_is_retried_on_a_fresh_one() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A raw backend that answers one request per connection, keep-alive style, then closes
    // the connection once the answer is out, as an instance with a short idle timeout does.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (closed_tx, mut closed_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let closed_tx = closed_tx.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buffer = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buffer[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n")
                    .await;
                drop(stream);
                let _ = closed_tx.send(());
            });
        }
    });
    let config = ConfigDir::new("", "");
    config.static_app("app", &[addr], "", "");
    let handle = config.start().await;
    let gateway = handle.http_addr().unwrap();
    for _ in 0..3 {
        let answer = get(gateway, "app.p.test.local", "/").await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert_eq!(answer.body, "ok\n");
        // The instance has closed the connection the gateway keeps for the next request.
        closed_rx.recv().await.unwrap();
    }
    assert_eq!(
        metric(
            &handle,
            "tidegate_upstream_errors_total{app=\"app\",kind=\"reset\"}"
        )
        .await,
        0.0
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_visibility_admits_only_instances_of_the_same_project() {
    let config = ConfigDir::new("", "");
    let echo = echo_backend("secret").await;
    config.static_app("secret", &[echo.addr], "visibility = \"project\"", "");
    config.demo_app("caller", &[], "");
    config.write_app(
        "stranger",
        &format!(
            "project = \"q\"\n[run]\ncommand = [\"{TIDEGATE}\", \"demo-app\"]\nreadiness_path = \"/healthz\"\n"
        ),
    );
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    // Each instance finds its token in TIDEGATE_TOKEN (the demo app echoes its environment).
    let caller = get(addr, "caller.p.test.local", "/env/TIDEGATE_TOKEN")
        .await
        .body;
    let stranger = get(addr, "stranger.q.test.local", "/env/TIDEGATE_TOKEN")
        .await
        .body;
    let with_token = |token: &str| {
        Request::get("/")
            .header("host", "secret.p.test.local")
            .header("x-tidegate-token", token.trim())
            .body(full(Bytes::new()))
            .unwrap()
    };

    let outsider = get(addr, "secret.p.test.local", "/").await;
    assert_eq!(outsider.status, StatusCode::FORBIDDEN);
    assert!(
        outsider.body.contains("only instances of its own project"),
        "{}",
        outsider.body
    );
    assert_eq!(
        send(addr, with_token(&stranger)).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(addr, with_token("forged")).await.status,
        StatusCode::FORBIDDEN
    );

    let insider = send(addr, with_token(&caller)).await;
    assert_eq!(insider.status, StatusCode::OK, "{}", insider.body);
    assert!(insider.body.starts_with("backend=secret"));
    assert_eq!(
        insider.echoed("x-tidegate-token"),
        None,
        "the token must not reach the app"
    );
    handle.shutdown().await;
}
