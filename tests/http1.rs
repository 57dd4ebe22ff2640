//! The HTTP/1.1 engine at the byte level: keep-alive and pipelining, chunked bodies both
//! ways (re-encoded), framing that could smuggle a request, the requests it hands to hyper on the same
//! connection, and instances that answer in unusual ways. Clients (and some instances) are raw
//! sockets, so what is on the wire is exactly what the test says.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const HOST: &str = "app.p.test.local";

/// What the instance saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: http::HeaderMap,
    body: Bytes,
    trailers: Option<http::HeaderMap>,
}

/// A hyper instance that counts its connections and records every request. `/chunked`
/// answers with a streamed body of three parts (sent chunked, with no length); anything else
/// answers `path=<path>` with a length.
struct Recorder {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn recorder() -> Recorder {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (count, record) = (Arc::clone(&connections), Arc::clone(&seen));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let record = Arc::clone(&record);
            let service = service_fn(move |request: Request<Incoming>| {
                let record = Arc::clone(&record);
                async move {
                    let (parts, body) = request.into_parts();
                    let collected = body.collect().await.expect("request body");
                    let trailers = collected.trailers().cloned();
                    record.lock().unwrap().push(Seen {
                        method: parts.method.to_string(),
                        path: parts.uri.to_string(),
                        headers: parts.headers,
                        body: collected.to_bytes(),
                        trailers,
                    });
                    let response = if parts.uri.path() == "/chunked" {
                        let parts = ["one,", "two,", "three"]
                            .map(|part| Ok::<_, hyper::Error>(Frame::data(Bytes::from(part))));
                        Response::new(StreamBody::new(futures_util::stream::iter(parts)).boxed())
                    } else {
                        text_response(StatusCode::OK, format!("path={}", parts.uri))
                    };
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    Recorder {
        addr,
        connections,
        seen,
    }
}

impl Recorder {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// A response read off a raw connection.
#[derive(Debug)]
struct Raw {
    status: u16,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Reads more of a response; 0 when the gateway closed the connection.
async fn read_more<R: AsyncRead + Unpin>(stream: &mut R, buf: &mut Vec<u8>) -> usize {
    let mut chunk = vec![0u8; 16 * 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
        .await
        .expect("the gateway answers within 5 s")
        .unwrap_or(0);
    buf.extend_from_slice(&chunk[..n]);
    n
}

/// Reads one response from `stream` (`buf` keeps what belongs to the next one): by length,
/// chunked (decoded), or to the end of the connection.
async fn read_raw<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut Vec<u8>,
    head_request: bool,
) -> Raw {
    let (status, headers, length) = loop {
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut fields);
        if let httparse::Status::Complete(length) = response.parse(buf).expect("valid response") {
            let mut headers = http::HeaderMap::new();
            for field in response.headers.iter() {
                headers.append(
                    http::HeaderName::from_bytes(field.name.as_bytes()).unwrap(),
                    http::HeaderValue::from_bytes(field.value).unwrap(),
                );
            }
            break (response.code.unwrap(), headers, length);
        }
        assert!(read_more(stream, buf).await > 0, "closed before a response");
    };
    buf.drain(..length);
    let mut body = Vec::new();
    if head_request || status == 204 || status == 304 || status < 200 {
        return Raw {
            status,
            headers,
            body,
        };
    }
    if let Some(length) = headers.get("content-length") {
        let length: usize = length.to_str().unwrap().parse().unwrap();
        while buf.len() < length {
            assert!(read_more(stream, buf).await > 0, "closed inside the body");
        }
        body = buf.drain(..length).collect();
    } else if headers.get("transfer-encoding").is_some() {
        loop {
            let line_end = loop {
                if let Some(at) = buf.windows(2).position(|w| w == b"\r\n") {
                    break at;
                }
                assert!(read_more(stream, buf).await > 0, "closed inside a chunk");
            };
            let size =
                usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).unwrap(), 16).unwrap();
            while buf.len() < line_end + 2 + size + 2 {
                assert!(read_more(stream, buf).await > 0, "closed inside a chunk");
            }
            body.extend_from_slice(&buf[line_end + 2..line_end + 2 + size]);
            buf.drain(..line_end + 2 + size + 2);
            if size == 0 {
                break;
            }
        }
    } else {
        while read_more(stream, buf).await > 0 {}
        body = std::mem::take(buf);
    }
    Raw {
        status,
        headers,
        body,
    }
}

/// Writes a bodiless request `line` (method, target, version) for the test app's host.
async fn send_head(stream: &mut TcpStream, line: &str) {
    let request = format!("{line}\r\nHost: {HOST}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
}

/// Whether the gateway closed `stream` (reads end) within 5 s.
async fn closes(stream: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    matches!(
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await,
        Ok(Ok(_)) | Ok(Err(_))
    )
}

async fn gateway_for(upstream: SocketAddr) -> (ConfigDir, tidegate::Handle, SocketAddr) {
    let config = ConfigDir::new("", "");
    config.static_app("app", &[upstream], "", "");
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    (config, handle, addr)
}

#[tokio::test]
async fn pipelined_and_keep_alive_requests_share_one_instance_connection() {
    let instance = recorder().await;
    let (_config, handle, addr) = gateway_for(instance.addr).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    // Three requests in one write: answered in order.
    let pipelined: String = (1..=3)
        .map(|n| format!("GET /p{n} HTTP/1.1\r\nHost: {HOST}\r\n\r\n"))
        .collect();
    client.write_all(pipelined.as_bytes()).await.unwrap();
    for n in 1..=3 {
        let answer = read_raw(&mut client, &mut buf, false).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, format!("path=/p{n}").as_bytes());
        assert_eq!(answer.header("via"), Some("1.1 tidegate"));
        assert_eq!(answer.header("connection"), None);
    }
    // Then one at a time, still on the same connections both sides; a bodiless POST too
    // (only its retry on a connection found closed is for idempotent methods alone).
    for (n, method) in [(4, "GET"), (5, "POST"), (6, "GET")] {
        send_head(&mut client, &format!("{method} /s{n} HTTP/1.1")).await;
        let answer = read_raw(&mut client, &mut buf, false).await;
        assert_eq!(answer.body, format!("path=/s{n}").as_bytes());
    }
    assert_eq!(instance.connections.load(Ordering::SeqCst), 1);
    assert_eq!(instance.seen().len(), 6);
    // `Connection: close` is honoured: answered, then closed.
    let request = format!("GET /last HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n");
    client.write_all(request.as_bytes()).await.unwrap();
    let answer = read_raw(&mut client, &mut buf, false).await;
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(closes(&mut client).await);
    handle.shutdown().await;
}

#[tokio::test]
async fn chunked_bodies_stream_both_ways_re_encoded() {
    let instance = recorder().await;
    let (_config, handle, addr) = gateway_for(instance.addr).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    let request = format!(
        "POST /upload HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n\
         5\r\nhello\r\n6;note=x\r\n world\r\n0\r\nx-checksum: 11\r\n\r\n"
    );
    client.write_all(request.as_bytes()).await.unwrap();
    let answer = read_raw(&mut client, &mut buf, false).await;
    assert_eq!(answer.status, 200);
    let seen = instance.seen();
    assert_eq!(seen[0].method, "POST");
    assert_eq!(&seen[0].body[..], b"hello world");
    assert_eq!(seen[0].headers["transfer-encoding"], "chunked");
    assert_eq!(seen[0].headers["x-forwarded-for"], "127.0.0.1");
    // The body is re-encoded: chunk extensions and trailers stay behind (see body.rs).
    assert!(seen[0].trailers.is_none(), "{:?}", seen[0].trailers);

    // A streamed response stays chunked, and the connection stays usable after it.
    send_head(&mut client, "GET /chunked HTTP/1.1").await;
    let answer = read_raw(&mut client, &mut buf, false).await;
    assert_eq!(answer.header("transfer-encoding"), Some("chunked"));
    assert_eq!(answer.body, b"one,two,three");
    send_head(&mut client, "HEAD /h HTTP/1.1").await;
    let answer = read_raw(&mut client, &mut buf, true).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-length"), Some("7"));
    send_head(&mut client, "GET /after HTTP/1.1").await;
    assert_eq!(
        read_raw(&mut client, &mut buf, false).await.body,
        b"path=/after"
    );
    assert_eq!(instance.connections.load(Ordering::SeqCst), 1);
    handle.shutdown().await;
}

#[tokio::test]
async fn ambiguous_framing_is_refused_before_any_instance_sees_it() {
    let instance = recorder().await;
    let (_config, handle, addr) = gateway_for(instance.addr).await;
    for smuggler in [
        // CL.TE: a front end that trusts the length would pass the rest on as a request.
        "POST / HTTP/1.1\r\nHost: app.p.test.local\r\nContent-Length: 35\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: app.p.test.local\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\nabc",
        "POST / HTTP/1.1\r\nHost: app.p.test.local\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: app.p.test.local\r\nX-Bad Name: 1\r\n\r\n",
    ] {
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(smuggler.as_bytes()).await.unwrap();
        let answer = read_raw(&mut client, &mut Vec::new(), false).await;
        assert_eq!(answer.status, 400, "{smuggler:?}");
        assert!(closes(&mut client).await, "{smuggler:?} left the connection open");
    }
    // A chunked body whose framing breaks midway: 400, connection closed, nothing more sent.
    let mut client = TcpStream::connect(addr).await.unwrap();
    let broken = format!(
        "POST /broken HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXX\r\nGET /smuggled HTTP/1.1\r\n\r\n"
    );
    client.write_all(broken.as_bytes()).await.unwrap();
    assert_eq!(
        read_raw(&mut client, &mut Vec::new(), false).await.status,
        400
    );
    assert!(closes(&mut client).await);
    assert!(
        instance
            .seen()
            .iter()
            .all(|seen| seen.path != "/admin" && seen.path != "/smuggled"),
        "{:?}",
        instance.seen()
    );
    handle.shutdown().await;
}

#[tokio::test]
async fn fields_named_in_connection_cannot_unframe_a_body() {
    let instance = recorder().await;
    let (_config, handle, addr) = gateway_for(instance.addr).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    // `Connection` may name fields to drop at this hop; if that dropped the length, the
    // instance would read the body as a second request of the client's making.
    let inner = "GET /admin HTTP/1.1\r\nHost: app\r\n\r\n";
    let request = format!(
        "POST /form HTTP/1.1\r\nHost: {HOST}\r\nConnection: content-length\r\nContent-Length: {}\r\n\r\n{inner}",
        inner.len()
    );
    client.write_all(request.as_bytes()).await.unwrap();
    let answer = read_raw(&mut client, &mut Vec::new(), false).await;
    assert_eq!(answer.status, 200);
    let seen = instance.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(&seen[0].body[..], inner.as_bytes());
    handle.shutdown().await;
}

#[tokio::test]
async fn a_gateway_answer_to_head_has_a_length_but_no_body() {
    let instance = recorder().await;
    let (_config, handle, addr) = gateway_for(instance.addr).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    // A body after the 404's head would be read as the start of the next response.
    let pipelined = format!(
        "HEAD / HTTP/1.1\r\nHost: nobody.p.test.local\r\n\r\nGET /next HTTP/1.1\r\nHost: {HOST}\r\n\r\n"
    );
    client.write_all(pipelined.as_bytes()).await.unwrap();
    let missing = read_raw(&mut client, &mut buf, true).await;
    assert_eq!(missing.status, 404);
    let length: usize = missing.header("content-length").unwrap().parse().unwrap();
    assert!(length > 0);
    assert!(missing.header("date").is_some());
    let next = read_raw(&mut client, &mut buf, false).await;
    assert_eq!((next.status, &next.body[..]), (200, &b"path=/next"[..]));
    handle.shutdown().await;
}

#[tokio::test]
async fn requests_left_to_hyper_are_served_on_the_same_connection() {
    let instance = recorder().await;
    let (_config, handle, addr) = gateway_for(instance.addr).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    send_head(&mut client, "GET /first HTTP/1.1").await;
    assert_eq!(
        read_raw(&mut client, &mut buf, false).await.body,
        b"path=/first"
    );
    // `Expect: 100-continue` is hyper's: the client gets its 100 before sending the body.
    client
        .write_all(
            format!("PUT /put HTTP/1.1\r\nHost: {HOST}\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let interim = read_raw(&mut client, &mut buf, false).await;
    assert_eq!(interim.status, 100);
    client.write_all(b"data").await.unwrap();
    let answer = read_raw(&mut client, &mut buf, false).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, b"path=/put");
    let put = instance
        .seen()
        .into_iter()
        .find(|s| s.path == "/put")
        .unwrap();
    assert_eq!(&put.body[..], b"data");
    // Still served after the handoff, by hyper now.
    send_head(&mut client, "GET /third HTTP/1.1").await;
    assert_eq!(
        read_raw(&mut client, &mut buf, false).await.body,
        b"path=/third"
    );

    // HTTP/1.0 is hyper's too.
    let mut old = TcpStream::connect(addr).await.unwrap();
    send_head(&mut old, "GET /old HTTP/1.0").await;
    let answer = read_raw(&mut old, &mut Vec::new(), false).await;
    assert_eq!((answer.status, &answer.body[..]), (200, &b"path=/old"[..]));
    handle.shutdown().await;
}

/// A raw instance that answers every request head with `response` after `delay`, then keeps
/// the connection open for `hold` without reading (zero: closes it at once).
async fn scripted_instance(response: &'static [u8], delay: Duration, hold: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut chunk = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&chunk[..n]),
                    }
                }
                tokio::time::sleep(delay).await;
                let _ = stream.write_all(response).await;
                tokio::time::sleep(hold).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn unusual_instance_answers_reach_the_client_intact_or_end_its_connection() {
    // Delimited by close, after an interim 103: the client gets the body chunked, so its
    // connection stays open for the next request; the last response of a connection stays
    // delimited by close.
    let until_close =
        scripted_instance(b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nall of it", Duration::ZERO, Duration::ZERO)
            .await;
    let (_config, handle, addr) = gateway_for(until_close).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    send_head(&mut client, "GET / HTTP/1.1").await;
    let answer = read_raw(&mut client, &mut buf, false).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("transfer-encoding"), Some("chunked"));
    assert_eq!(answer.header("connection"), None);
    assert_eq!(answer.body, b"all of it");
    let last = format!("GET /again HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n");
    client.write_all(last.as_bytes()).await.unwrap();
    let answer = read_raw(&mut client, &mut buf, false).await;
    assert_eq!(answer.header("connection"), Some("close"));
    assert_eq!(answer.header("transfer-encoding"), None);
    assert_eq!(answer.body, b"all of it");
    handle.shutdown().await;

    // Breaks off inside its body: the client's connection ends rather than hanging, and the
    // truncated response is not mistaken for a complete one.
    let truncated = scripted_instance(
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten..",
        Duration::ZERO,
        Duration::ZERO,
    )
    .await;
    let (_config, handle, addr) = gateway_for(truncated).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    send_head(&mut client, "GET / HTTP/1.1").await;
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut received))
        .await
        .expect("the connection ends")
        .ok();
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.ends_with("only ten.."), "{text}");

    // Not HTTP at all: 502 that says so.
    let garbage = scripted_instance(
        b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
        Duration::ZERO,
        Duration::ZERO,
    )
    .await;
    let (_config, handle2, addr) = gateway_for(garbage).await;
    let answer = get(addr, HOST, "/").await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert!(answer.body.contains("invalid response"), "{}", answer.body);
    handle.shutdown().await;
    handle2.shutdown().await;
}

#[tokio::test]
async fn an_instance_that_answers_before_reading_the_upload_is_heard() {
    // Answers 413 at once and then neither reads the body nor closes, as an app that
    // rejects uploads by their head does. The gateway must not wait for the upload first.
    let instance = scripted_instance(
        b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 9\r\n\r\ntoo large",
        Duration::ZERO,
        Duration::from_secs(30),
    )
    .await;
    let (_config, handle, addr) = gateway_for(instance).await;
    let client = TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = client.into_split();
    let size = 64 * 1024 * 1024;
    let head = format!("PUT /big HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {size}\r\n\r\n");
    let upload = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        let block = vec![b'x'; 1024 * 1024];
        for _ in 0..64 {
            writer.write_all(&block).await?;
        }
        Ok::<_, std::io::Error>(writer)
    });
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), reader.read_to_end(&mut received))
        .await
        .expect("answered and closed well before request_timeout")
        .ok();
    let text = String::from_utf8_lossy(&received);
    assert!(
        text.starts_with("HTTP/1.1 413 Payload Too Large\r\n"),
        "{text}"
    );
    assert!(text.contains("connection: close\r\n"), "{text}");
    assert!(text.ends_with("too large"), "{text}");
    upload.abort();
    handle.shutdown().await;
}

#[tokio::test]
async fn an_instance_that_streams_its_answer_while_it_reads_the_upload_is_served_both_ways() {
    // An echo: answers at once with a chunked head, then sends each part of the body back as
    // it reads it. Waiting for the whole upload before reading the answer, or stopping the
    // upload once the answer starts, would stall it.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let instance = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = vec![0u8; 64 * 1024];
                let head_end = loop {
                    if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break at + 4;
                    }
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length: "))
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap();
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                    .await
                    .unwrap();
                let mut echoed = 0;
                let mut pending = buf.split_off(head_end);
                loop {
                    if !pending.is_empty() {
                        let frame = format!("{:x}\r\n", pending.len());
                        stream.write_all(frame.as_bytes()).await.unwrap();
                        stream.write_all(&pending).await.unwrap();
                        stream.write_all(b"\r\n").await.unwrap();
                        echoed += pending.len();
                        pending.clear();
                    }
                    if echoed >= length {
                        break;
                    }
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => pending.extend_from_slice(&chunk[..n]),
                    }
                }
                stream.write_all(b"0\r\n\r\n").await.unwrap();
            });
        }
    });
    let (_config, handle, addr) = gateway_for(instance).await;
    let client = TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = client.into_split();
    let size = 8 * 1024 * 1024;
    let head = format!("POST /echo HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {size}\r\n\r\n");
    let upload = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await.unwrap();
        let block: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
        for _ in 0..size / block.len() {
            writer.write_all(&block).await.unwrap();
        }
        writer
    });
    // Read while the upload runs: the answer streams before the upload ends.
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        read_raw(&mut reader, &mut Vec::new(), false),
    )
    .await
    .expect("the echo completes");
    upload.await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body.len(), size);
    assert!(answer
        .body
        .iter()
        .enumerate()
        .all(|(i, &b)| b == ((i % (64 * 1024)) % 251) as u8));
    handle.shutdown().await;
}

#[tokio::test]
async fn an_early_answer_to_a_chunked_upload_reaches_the_client_clean() {
    // The instance reads nothing of the body, waits until the gateway is stuck writing it,
    // then answers. Nothing of the upload may come before the answer on the client's side.
    let instance = scripted_instance(
        b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 6\r\n\r\nno way",
        Duration::from_millis(300),
        Duration::from_secs(30),
    )
    .await;
    let (_config, handle, addr) = gateway_for(instance).await;
    let client = TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = client.into_split();
    let upload = tokio::spawn(async move {
        let head =
            format!("PUT /up HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n");
        writer.write_all(head.as_bytes()).await?;
        let chunk = format!(
            "1000\r\n{}\r\n",
            &"HTTP/1.1 200 OK\r\n\r\n".repeat(4096 / 19 + 1)[..4096]
        );
        for _ in 0..16 * 1024 {
            writer.write_all(chunk.as_bytes()).await?;
        }
        Ok::<_, std::io::Error>(writer)
    });
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut received))
        .await
        .expect("answered and closed")
        .ok();
    let text = String::from_utf8_lossy(&received);
    assert!(
        text.starts_with("HTTP/1.1 401 Unauthorized\r\n"),
        "{}",
        &text[..text.len().min(200)]
    );
    assert!(text.ends_with("no way"), "{}", &text[..text.len().min(200)]);
    upload.abort();
    handle.shutdown().await;
}
