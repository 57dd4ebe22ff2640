//! HTTP/2 clients whose requests have no body: served by hyper on the client side and by the
//! engine's instance client (`upstream::engine`) on the instance side. Instances are raw sockets
//! where the bytes matter, so what the gateway reads is exactly what the test says.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use support::*;
use tokio::net::TcpStream;

const HOST: &str = "app.p.test.local";

async fn gateway_for(instance: SocketAddr) -> (ConfigDir, tidegate::Handle, SocketAddr) {
    let config = ConfigDir::new("", "");
    config.static_app("app", &[instance], "", "");
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    (config, handle, addr)
}

fn request(method: Method, path: &str) -> Request<TestBody> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", HOST)
        .body(full(Bytes::new()))
        .unwrap()
}

#[tokio::test]
async fn requests_share_one_instance_connection_and_get_the_clients_headers() {
    // Echoes the request head in the body; hop-by-hop fields in its answer must not reach
    // the client.
    let (instance, connections) = raw_instance(
        |_, head| {
            format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: x-drop\r\nx-drop: 1\r\nkeep-alive: timeout=5\r\nx-app: yes\r\n\r\n{head}",
                head.len()
            )
            .into_bytes()
        },
        |_, _| false,
    )
    .await;
    let (_config, handle, addr) = gateway_for(instance).await;
    let mut session = h2_session(TcpStream::connect(addr).await.unwrap()).await;
    for i in 0..20 {
        let response = session
            .send_request(request(Method::GET, &format!("/n/{i}?q=1")))
            .await
            .unwrap();
        let answer = read_answer(response).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert!(
            answer
                .body
                .starts_with(&format!("GET /n/{i}?q=1 HTTP/1.1\r\n")),
            "{}",
            answer.body
        );
        let head = answer.body.to_ascii_lowercase();
        assert!(head.contains(&format!("host: {HOST}\r\n")), "{head}");
        assert!(head.contains("x-forwarded-proto: http\r\n"), "{head}");
        assert!(head.contains("via: 2 tidegate\r\n"), "{head}");
        assert!(
            !head.contains("content-length"),
            "a GET has no body: {head}"
        );
        assert_eq!(answer.headers["x-app"], "yes");
        assert_eq!(answer.headers["via"], "1.1 tidegate");
        for gone in ["x-drop", "keep-alive", "connection"] {
            assert!(
                !answer.headers.contains_key(gone),
                "{gone}: {:?}",
                answer.headers
            );
        }
    }
    // A bodiless POST says so with a length, as hyper's client does, and takes the pooled
    // connection too.
    for _ in 0..3 {
        let response = session.send_request(request(Method::POST, "/form"));
        let head = read_answer(response.await.unwrap()).await.body;
        assert!(
            head.to_ascii_lowercase().contains("content-length: 0\r\n"),
            "{head}"
        );
    }
    let opened = connections.load(Ordering::SeqCst);
    assert_eq!(opened, 1, "one pooled instance connection");
    handle.shutdown().await;
}

#[tokio::test]
async fn bodies_of_every_framing_arrive_whole() {
    let (instance, _) = raw_instance(
        |_, head| {
            let path = head.split(' ').nth(1).unwrap_or("/").to_string();
            match path.as_str() {
                "/chunked" => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4;ext=1\r\none,\r\n4\r\ntwo,\r\n5\r\nthree\r\n0\r\nx-trailer: t\r\n\r\n".to_vec(),
                "/close" => b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end".to_vec(),
                "/big" => {
                    let mut answer = b"HTTP/1.1 200 OK\r\ncontent-length: 8388608\r\n\r\n".to_vec();
                    answer.extend((0..8 * 1024 * 1024).map(|i| b'a' + (i % 26) as u8));
                    answer
                }
                "/empty" => b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n".to_vec(),
                _ => b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nhello world".to_vec(),
            }
        },
        |_, _| true,
    )
    .await;
    let (_config, handle, addr) = gateway_for(instance).await;
    let mut session = h2_session(TcpStream::connect(addr).await.unwrap()).await;
    let mut get = |method: Method, path: &'static str| {
        let response = session.send_request(request(method, path));
        async move { read_answer(response.await.unwrap()).await }
    };

    assert_eq!(get(Method::GET, "/chunked").await.body, "one,two,three");
    let close = get(Method::GET, "/close").await;
    assert_eq!(close.body, "until the end");
    assert_eq!(close.headers["content-type"], "text/plain");
    let big = get(Method::GET, "/big").await;
    assert_eq!(big.body.len(), 8 * 1024 * 1024);
    assert!(big.body.starts_with("abcdefghijklmnopqrstuvwxyzabc"));
    // 8 MiB of the alphabet over and over ends at "t" (8388607 % 26 == 19).
    assert_eq!(&big.body[big.body.len() - 4..], "qrst");
    let head = get(Method::HEAD, "/").await;
    assert_eq!((head.status, head.body.as_str()), (StatusCode::OK, ""));
    assert_eq!(head.headers["content-length"], "11");
    let empty = get(Method::GET, "/empty").await;
    assert_eq!(
        (empty.status, empty.body.as_str()),
        (StatusCode::NO_CONTENT, "")
    );
    handle.shutdown().await;
}

#[tokio::test]
async fn a_closed_pooled_connection_is_replaced_and_a_broken_instance_is_a_502() {
    // Keeps its connections open after every answer, then closes each one after its second
    // answer without saying so: a request that finds such a connection in the pool is sent
    // again on a new one, unseen by the client.
    let (instance, connections) = raw_instance(
        |n, _| format!("HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n{n}").into_bytes(),
        |n, _| n == 1,
    )
    .await;
    let (_config, handle, addr) = gateway_for(instance).await;
    let mut session = h2_session(TcpStream::connect(addr).await.unwrap()).await;
    for _ in 0..6 {
        let answer = read_answer(
            session
                .send_request(request(Method::GET, "/"))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    }
    assert!(connections.load(Ordering::SeqCst) >= 3);
    handle.shutdown().await;

    let (garbage, _) =
        raw_instance(|_, _| b"SSH-2.0-OpenSSH_9.2\r\n\r\n".to_vec(), |_, _| true).await;
    let (_config, handle, addr) = gateway_for(garbage).await;
    let answer = send_h2(addr, request(Method::GET, "/")).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert!(answer.body.contains("invalid response"), "{}", answer.body);

    // A body cut short reaches the client as a reset stream (which the client may see before
    // or after the head), never as a complete answer.
    let (truncated, _) = raw_instance(
        |_, _| b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten..".to_vec(),
        |_, _| true,
    )
    .await;
    let (_config, handle2, addr) = gateway_for(truncated).await;
    let mut session = h2_session(TcpStream::connect(addr).await.unwrap()).await;
    let exchange = async {
        let response = session.send_request(request(Method::GET, "/")).await?;
        http_body_util::BodyExt::collect(response.into_body()).await
    };
    let ended = tokio::time::timeout(Duration::from_secs(5), exchange).await;
    assert!(ended.expect("ends within 5 s").is_err());
    handle.shutdown().await;
    handle2.shutdown().await;
}

#[tokio::test]
async fn concurrent_streams_each_get_their_own_answer_over_pooled_connections() {
    // Every answer names its request; some are chunked, some delimited by close (so their
    // connection is not reused), some HEAD. Any mix-up between pooled connections, or a
    // response read as another's, shows as a wrong answer.
    let (instance, connections) = raw_instance(
        |_, head| {
            let path = head.split(' ').nth(1).unwrap_or("/").to_string();
            let head_request = head.starts_with("HEAD ");
            if path.ends_with("/chunked") {
                format!("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{path}\r\n0\r\n\r\n", path.len())
                    .into_bytes()
            } else if path.ends_with("/close") {
                format!("HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n{path}").into_bytes()
            } else if head_request {
                format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", path.len()).into_bytes()
            } else {
                format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{path}", path.len()).into_bytes()
            }
        },
        |_, head| head.split(' ').nth(1).is_some_and(|path| path.ends_with("/close")),
    )
    .await;
    let (_config, handle, addr) = gateway_for(instance).await;
    let mut clients = Vec::new();
    for client in 0..4 {
        let mut session = h2_session(TcpStream::connect(addr).await.unwrap()).await;
        clients.push(tokio::spawn(async move {
            let mut streams = Vec::new();
            for n in 0..60 {
                let kind = ["plain", "chunked", "close", "head"][n % 4];
                let path = format!("/c{client}/n{n}/{kind}");
                let method = if kind == "head" {
                    Method::HEAD
                } else {
                    Method::GET
                };
                let response = session.send_request(request(method, &path));
                streams.push(tokio::spawn(async move {
                    let answer = read_answer(response.await.unwrap()).await;
                    (path, kind, answer)
                }));
            }
            for stream in streams {
                let (path, kind, answer) = stream.await.unwrap();
                assert_eq!(answer.status, StatusCode::OK, "{path}");
                if kind == "head" {
                    assert_eq!(answer.body, "", "{path}");
                    assert_eq!(answer.headers["content-length"], path.len().to_string());
                } else {
                    assert_eq!(answer.body, path);
                }
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    // Connections were reused: far fewer than the 240 requests (the 60 close-delimited
    // answers each end theirs).
    let opened = connections.load(Ordering::SeqCst);
    assert!(
        opened < 240,
        "{opened} instance connections for 240 requests"
    );
    handle.shutdown().await;
}

#[tokio::test]
async fn uploads_and_bodiless_requests_of_every_client_share_one_instance_connection() {
    // An instance that answers with the length of the body it read, counting connections.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let instance = listener.local_addr().unwrap();
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = std::sync::Arc::clone(&connections);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|request: Request<_>| async move {
                    use http_body_util::BodyExt;
                    let body: hyper::body::Incoming = request.into_body();
                    let length = body.collect().await?.to_bytes().len();
                    Ok::<_, hyper::Error>(http::Response::new(full(length.to_string())))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let (_config, handle, addr) = gateway_for(instance).await;
    let mut session = h2_session(TcpStream::connect(addr).await.unwrap()).await;
    for i in 0..5 {
        // An upload goes through hyper's client, on a connection of the instance's pool...
        let upload = Request::post("/up")
            .header("host", HOST)
            .body(full(Bytes::from(vec![b'x'; 1000 + i])))
            .unwrap();
        let answer = read_answer(session.send_request(upload).await.unwrap()).await;
        assert_eq!(answer.body, (1000 + i).to_string());
        // ...which comes back for the engine's next bodiless request, and the next upload.
        let answer = read_answer(
            session
                .send_request(request(Method::GET, "/"))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((answer.status, answer.body.as_str()), (StatusCode::OK, "0"));
    }
    let answer = get(addr, HOST, "/").await;
    assert_eq!((answer.status, answer.body.as_str()), (StatusCode::OK, "0"));
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "one pool, one connection"
    );
    handle.shutdown().await;
}
