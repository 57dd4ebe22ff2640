//! Regression tests for what outside testing (smuggling probes, an HTTP/2 conformance client,
//! slowloris) found on the data path: each test sends exactly what the probe sent and checks
//! the answer a careful proxy gives. Raw sockets where the bytes matter.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HOST: &str = "app.p.test.local";

async fn gateway_for(instance: SocketAddr) -> (ConfigDir, tidegate::Handle, SocketAddr) {
    let config = ConfigDir::new("", "");
    config.static_app("app", &[instance], "", "");
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    (config, handle, addr)
}

/// An instance that answers with the request body it received: `len=<n> body=<bytes>`.
async fn body_echo() -> Backend {
    backend(|request: Request<Incoming>| async move {
        match request.into_body().collect().await {
            Ok(body) => {
                let body = body.to_bytes();
                let text = format!("len={} body={}", body.len(), String::from_utf8_lossy(&body));
                text_response(StatusCode::OK, text)
            }
            Err(_) => text_response(StatusCode::BAD_REQUEST, "body broke off"),
        }
    })
    .await
}

/// Everything the gateway sends until it closes the connection (within 5 s), and whether it
/// closed cleanly (FIN) rather than with a reset.
async fn read_to_close(stream: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut received = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("the gateway closes the connection within 5 s");
        match read {
            Ok(0) => return (received, true),
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(_) => return (received, false),
        }
    }
}

/// The first response on `stream`: status line and the rest as text.
async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(request).await.unwrap();
    let (received, _) = read_to_close(&mut client).await;
    String::from_utf8_lossy(&received).into_owned()
}

/// The request count of `app` with status `code`.
async fn requests(handle: &tidegate::Handle, code: u16) -> f64 {
    metric(
        handle,
        &format!("tidegate_requests_total{{app=\"app\",code=\"{code}\"}}"),
    )
    .await
}

async fn upstream_errors(handle: &tidegate::Handle) -> f64 {
    let mut total = 0.0;
    for kind in ["connect", "reset", "timeout"] {
        let series = format!("tidegate_upstream_errors_total{{app=\"app\",kind=\"{kind}\"}}");
        total += metric(handle, &series).await;
    }
    total
}

#[tokio::test]
async fn an_upgrade_request_with_a_body_is_refused_before_any_instance_sees_it() {
    let (instance, connections) = raw_instance(
        |_, _| {
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n"
                .to_vec()
        },
        |_, _| false,
    )
    .await;
    let (_config, handle, addr) = gateway_for(instance).await;
    let body = "x".repeat(43);
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Content-Length: 43\r\n\r\n{body}"
    );
    let answer = raw_exchange(addr, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("upgrade request must not have a body"),
        "{answer}"
    );
    assert_eq!(connections.load(Ordering::SeqCst), 0);
    handle.shutdown().await;
}

#[tokio::test]
async fn get_bodies_of_unknown_length_reach_the_instance_chunked() {
    let instance = body_echo().await;
    let (_config, handle, addr) = gateway_for(instance.addr).await;
    // Handed to hyper by the engine (Upgrade that is not a WebSocket, or Expect), chunked.
    for extra in [
        "Upgrade: foo\r\nConnection: upgrade\r\n",
        "Expect: 100-continue\r\n",
    ] {
        let request = format!(
            "GET /x HTTP/1.1\r\nHost: {HOST}\r\n{extra}Transfer-Encoding: chunked\r\n\
             Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        );
        let answer = raw_exchange(addr, request.as_bytes()).await;
        assert!(answer.contains("len=5 body=hello"), "{extra:?}: {answer}");
    }
    // HTTP/2: DATA frames and no content-length.
    for method in [Method::GET, Method::HEAD] {
        let request = Request::builder()
            .method(method.clone())
            .uri(format!("http://{HOST}/x"))
            .body(body_of(["hel", "lo"]))
            .unwrap();
        let answer = send_h2(addr, request).await;
        assert_eq!(answer.status, StatusCode::OK, "{method}");
        if method == Method::GET {
            assert_eq!(answer.body, "len=5 body=hello");
        }
    }
    handle.shutdown().await;
}

/// A body of unknown length made of `parts`.
fn body_of(parts: [&'static str; 2]) -> TestBody {
    let frames = parts.map(|part| Ok::<_, hyper::Error>(Frame::data(Bytes::from(part))));
    StreamBody::new(futures_util::stream::iter(frames)).boxed()
}

#[tokio::test]
async fn a_second_host_is_refused_even_on_requests_left_to_hyper() {
    let instance = body_echo().await;
    let (_config, handle, addr) = gateway_for(instance.addr).await;
    for (line, extra) in [
        (
            "GET / HTTP/1.1",
            "Upgrade: websocket\r\nConnection: upgrade\r\n",
        ),
        (
            "POST / HTTP/1.1",
            "Expect: 100-continue\r\nContent-Length: 0\r\n",
        ),
        ("GET / HTTP/1.0", ""),
    ] {
        let request = format!("{line}\r\nHost: {HOST}\r\n{extra}Host: other.example\r\n\r\n");
        let answer = raw_exchange(addr, request.as_bytes()).await;
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "{line} {extra:?}: {answer}"
        );
        assert!(answer.contains("more than one Host"), "{answer}");
    }
    assert_eq!(requests(&handle, 200).await, 0.0);
    handle.shutdown().await;
}

#[tokio::test]
async fn client_faults_on_the_hyper_path_are_the_clients_not_the_instances() {
    let instance = body_echo().await;
    let (_config, handle, addr) = gateway_for(instance.addr).await;

    // A malformed chunk size on a request handed to hyper: 400.
    let mut client = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nHost: {HOST}\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    client.write_all(head.as_bytes()).await.unwrap();
    client.write_all(b"zz\r\nhello\r\n0\r\n\r\n").await.unwrap();
    let (received, _) = read_to_close(&mut client).await;
    let text = String::from_utf8_lossy(&received);
    assert!(text.contains("HTTP/1.1 400"), "{text}");
    assert!(text.contains("request body"), "{text}");

    // The client leaves in the middle of its upload: 499.
    let mut client = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nHost: {HOST}\r\nExpect: 100-continue\r\nContent-Length: 100\r\n\r\n"
    );
    client.write_all(head.as_bytes()).await.unwrap();
    client.write_all(b"0123456789").await.unwrap();
    client.shutdown().await.unwrap();
    eventually(
        "a 499 for the upload cut short",
        Duration::from_secs(5),
        || async { (requests(&handle, 499).await == 1.0).then_some(()) },
    )
    .await;

    // An HTTP/2 client resets its stream mid-upload: 499.
    let frames: Vec<Result<Frame<Bytes>, hyper::Error>> =
        vec![Ok(Frame::data(Bytes::from("part")))];
    let stream = futures_util::StreamExt::chain(
        futures_util::stream::iter(frames),
        futures_util::stream::pending(),
    );
    let request = Request::post(format!("http://{HOST}/"))
        .body(StreamBody::new(stream).boxed())
        .unwrap();
    let mut session = h2_session(TcpStream::connect(addr).await.unwrap()).await;
    let sending = tokio::spawn(async move { session.send_request(request).await });
    wait_in_flight(&handle, "app", 1.0).await;
    sending.abort();
    eventually(
        "a 499 for the reset stream",
        Duration::from_secs(5),
        || async { (requests(&handle, 499).await == 2.0).then_some(()) },
    )
    .await;

    assert_eq!(requests(&handle, 400).await, 1.0);
    assert_eq!(requests(&handle, 502).await, 0.0);
    assert_eq!(upstream_errors(&handle).await, 0.0);
    handle.shutdown().await;
}

#[tokio::test]
async fn a_refused_head_reaches_the_client_before_the_connection_closes_cleanly() {
    let instance = body_echo().await;
    let (_config, handle, addr) = gateway_for(instance.addr).await;
    for head in [
        format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nHost: {HOST}\r\n\r\n"),
        format!(
            "GET / HTTP/1.1\r\nHost: {HOST}\r\nX-Big: {}\r\n\r\n",
            "y".repeat(80 * 1024)
        ),
    ] {
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(head.as_bytes()).await.unwrap();
        // More input the gateway will never read as a request.
        client.write_all(&vec![b'z'; 64 * 1024]).await.unwrap();
        let (received, clean) = read_to_close(&mut client).await;
        let text = String::from_utf8_lossy(&received);
        assert!(
            text.starts_with("HTTP/1.1 400") || text.starts_with("HTTP/1.1 431"),
            "{text}"
        );
        assert!(
            text.contains("tidegate:"),
            "the whole answer arrives: {text}"
        );
        assert!(clean, "closed with a reset after: {text}");
    }
    handle.shutdown().await;
}

/// HTTP/2 frames in `bytes` as (type, flags, stream, payload).
fn frames(mut bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
    let mut frames = Vec::new();
    while bytes.len() >= 9 {
        let length = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff;
        let end = (9 + length).min(bytes.len());
        frames.push((bytes[3], bytes[4], stream, bytes[9..end].to_vec()));
        bytes = &bytes[end..];
    }
    frames
}

#[tokio::test]
async fn a_tls_connection_that_chose_h2_speaks_only_http2() {
    let config = ConfigDir::new(
        "https = \"127.0.0.1:0\"\n\n[tls]\ncerts_dir = \"certs\"",
        "",
    );
    let cert = write_cert(&config.dir.path().join("certs"), "app", &[HOST]);
    let instance = body_echo().await;
    config.static_app("app", &[instance.addr], "", "");
    let handle = config.start().await;
    let client = tls_client(&[cert], &[b"h2"]);
    let addr = handle.https_addr().unwrap();
    for sent in [
        "INVALID CONNECTION PREFACE\r\n\r\n".to_string(),
        format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n"),
    ] {
        let mut stream = tls_connect(&client, addr, HOST).await.unwrap();
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        stream.write_all(sent.as_bytes()).await.unwrap();
        let mut received = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut received));
        let _ = read.await.expect("closed within 5 s");
        assert!(
            !received.starts_with(b"HTTP/"),
            "{:?}",
            String::from_utf8_lossy(&received)
        );
        let goaway = frames(&received)
            .into_iter()
            .find(|frame| frame.0 == 0x7)
            .expect("a GOAWAY frame");
        assert_eq!(&goaway.3[4..8], &1u32.to_be_bytes(), "PROTOCOL_ERROR");
    }
    assert_eq!(requests(&handle, 200).await, 0.0);
    handle.shutdown().await;
}

#[tokio::test]
async fn an_extended_connect_the_instance_did_not_upgrade_is_a_502() {
    let (instance, _) = raw_instance(
        |_, _| b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
        |_, _| false,
    )
    .await;
    let (_config, handle, addr) = gateway_for(instance).await;
    let mut sender = h2_session(TcpStream::connect(addr).await.unwrap()).await;
    let mut request = Request::connect(format!("http://{HOST}/not-a-socket"))
        .header("sec-websocket-version", "13")
        .body(full(Bytes::new()))
        .unwrap();
    request
        .extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let answer = read_answer(sender.send_request(request).await.unwrap()).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{answer:?}");
    assert!(
        answer.body.contains("did not accept the upgrade"),
        "{}",
        answer.body
    );
    assert_eq!(requests(&handle, 502).await, 1.0);
    handle.shutdown().await;
}

#[tokio::test]
async fn a_complete_response_head_over_the_limit_is_a_502() {
    // 40 fields of 8 KiB: 320 KiB, written at once, so the head arrives complete.
    let (instance, _) = raw_instance(
        |_, _| {
            let mut head = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n".to_vec();
            for n in 0..40 {
                head.extend_from_slice(format!("x-big-{n}: {}\r\n", "v".repeat(8192)).as_bytes());
            }
            head.extend_from_slice(b"\r\nok");
            head
        },
        |_, _| false,
    )
    .await;
    let (_config, handle, addr) = gateway_for(instance).await;
    let answer = get(addr, HOST, "/").await;
    assert_eq!(
        answer.status,
        StatusCode::BAD_GATEWAY,
        "{:?}",
        answer.status
    );
    assert!(answer.body.contains("too large"), "{}", answer.body);
    let answer = send_h2(
        addr,
        Request::get(format!("http://{HOST}/"))
            .body(full(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    handle.shutdown().await;
}
