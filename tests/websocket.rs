//! WebSocket proxying with real clients and servers (tokio-tungstenite on both ends): echo of
//! text, binary and large frames, ping/pong, close from either side, TLS, sessions counted as
//! in-flight requests, 1,000 concurrent sessions, idle timeout, and waking an app from zero.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use support::*;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// An echo server; "bye" makes it close the session itself.
async fn ws_backend() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = socket.next().await {
                    let bye = matches!(&message, Message::Text(text) if text.as_str() == "bye");
                    if bye {
                        let _ = socket.close(None).await;
                        break;
                    }
                    let echo = matches!(message, Message::Text(_) | Message::Binary(_));
                    if matches!(message, Message::Close(_))
                        || (echo && socket.send(message).await.is_err())
                    {
                        break;
                    }
                }
            });
        }
    });
    (addr, task)
}

async fn connect<S>(stream: S, url: &str) -> WebSocketStream<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let request = url.into_client_request().unwrap();
    let (socket, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    socket
}

async fn ws(addr: SocketAddr, host: &str) -> WebSocketStream<TcpStream> {
    connect(
        TcpStream::connect(addr).await.unwrap(),
        &format!("ws://{host}/ws"),
    )
    .await
}

async fn echo_round<S>(socket: &mut WebSocketStream<S>, message: Message)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    socket.send(message.clone()).await.unwrap();
    loop {
        match socket.next().await.unwrap().unwrap() {
            Message::Pong(_) | Message::Ping(_) => continue,
            echoed => {
                assert_eq!(echoed, message);
                return;
            }
        }
    }
}

async fn static_setup(app_top: &str) -> (ConfigDir, tidegate::Handle, tokio::task::JoinHandle<()>) {
    let (backend, task) = ws_backend().await;
    let config = ConfigDir::new("", "");
    config.static_app("chat", &[backend], app_top, "");
    let handle = config.start().await;
    (config, handle, task)
}

#[tokio::test]
async fn messages_echo_through_the_plain_listener() {
    let (_config, handle, _backend) = static_setup("").await;
    let mut socket = ws(handle.http_addr().unwrap(), "chat.p.test.local").await;
    echo_round(&mut socket, Message::text("hello")).await;
    echo_round(&mut socket, Message::binary(vec![0u8, 1, 2, 255])).await;
    let large: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    echo_round(&mut socket, Message::binary(large)).await;

    socket
        .send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    let pong = loop {
        match socket.next().await.unwrap().unwrap() {
            Message::Pong(payload) => break payload,
            _ => continue,
        }
    };
    assert_eq!(&pong[..], b"are you there");

    // While open, the session is one in-flight request of its app.
    assert_eq!(
        metric(&handle, "tidegate_websocket_sessions{app=\"chat\"}").await,
        1.0
    );
    assert_eq!(
        metric(&handle, "tidegate_in_flight_requests{app=\"chat\"}").await,
        1.0
    );

    // Close from the client: the close handshake completes end to end.
    socket.close(None).await.unwrap();
    while let Some(Ok(_)) = socket.next().await {}
    eventually("the session to end", Duration::from_secs(5), || async {
        (metric(&handle, "tidegate_websocket_sessions{app=\"chat\"}").await == 0.0).then_some(())
    })
    .await;
    assert_eq!(
        metric(&handle, "tidegate_in_flight_requests{app=\"chat\"}").await,
        0.0
    );
    assert!(
        metric(
            &handle,
            "tidegate_websocket_bytes_total{app=\"chat\",direction=\"from_client\"}"
        )
        .await
            > 4e6
    );
    assert!(
        metric(
            &handle,
            "tidegate_websocket_bytes_total{app=\"chat\",direction=\"to_client\"}"
        )
        .await
            > 4e6
    );
    handle.shutdown().await;
}

#[tokio::test]
async fn the_server_can_close_the_session() {
    let (_config, handle, _backend) = static_setup("").await;
    let mut socket = ws(handle.http_addr().unwrap(), "chat.p.test.local").await;
    socket.send(Message::text("bye")).await.unwrap();
    let closed = loop {
        match socket.next().await {
            Some(Ok(Message::Close(_))) | None => break true,
            Some(Ok(_)) => continue,
            Some(Err(_)) => break true,
        }
    };
    assert!(closed);
    eventually("the session to end", Duration::from_secs(5), || async {
        (metric(&handle, "tidegate_websocket_sessions{app=\"chat\"}").await == 0.0).then_some(())
    })
    .await;
    handle.shutdown().await;
}

#[tokio::test]
async fn websockets_work_over_tls() {
    let (backend, _task) = ws_backend().await;
    let config = ConfigDir::new(
        "https = \"127.0.0.1:0\"\n\n[tls]\ncerts_dir = \"certs\"",
        "",
    );
    let cert = write_cert(
        &config.dir.path().join("certs"),
        "chat",
        &["chat.p.test.local"],
    );
    config.static_app("chat", &[backend], "", "");
    let handle = config.start().await;
    let client = tls_client(&[cert], &[b"http/1.1"]);
    let stream = tls_connect(&client, handle.https_addr().unwrap(), "chat.p.test.local")
        .await
        .unwrap();
    let mut socket = connect(stream, "wss://chat.p.test.local/ws").await;
    echo_round(&mut socket, Message::text("over tls")).await;
    socket.close(None).await.unwrap();
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_sessions() {
    // Sessions count against the hard concurrency limit like requests; lift it for one backend.
    let (backend, _task) = ws_backend().await;
    let config = ConfigDir::new("", "");
    config.static_app("chat", &[backend], "", "concurrency = 0");
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    let mut sockets = Vec::with_capacity(1000);
    for chunk in 0..10 {
        let opened: Vec<_> = (0..100)
            .map(|_| tokio::spawn(async move { ws(addr, "chat.p.test.local").await }))
            .collect();
        for task in opened {
            sockets.push(task.await.unwrap());
        }
        assert_eq!(sockets.len(), (chunk + 1) * 100);
    }
    assert_eq!(
        metric(&handle, "tidegate_websocket_sessions{app=\"chat\"}").await,
        1000.0
    );
    let rounds: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, mut socket)| {
            tokio::spawn(async move {
                echo_round(&mut socket, Message::text(format!("session {i}"))).await;
                socket.close(None).await.unwrap();
            })
        })
        .collect();
    for round in rounds {
        round.await.unwrap();
    }
    eventually("all sessions to end", Duration::from_secs(20), || async {
        (metric(&handle, "tidegate_websocket_sessions{app=\"chat\"}").await == 0.0).then_some(())
    })
    .await;
    assert_eq!(
        metric(&handle, "tidegate_websocket_sessions_total{app=\"chat\"}").await,
        1000.0
    );
    handle.shutdown().await;
}

#[tokio::test]
async fn an_idle_session_is_closed_after_the_app_timeout() {
    let (_config, handle, _backend) = static_setup("websocket_idle_timeout = \"300ms\"").await;
    let mut socket = ws(handle.http_addr().unwrap(), "chat.p.test.local").await;
    echo_round(&mut socket, Message::text("still here")).await;
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = socket.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the idle session was not closed");
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_wakes_an_app_from_zero() {
    let config = ConfigDir::new("", "");
    config.demo_app("web", &[], "");
    let handle = config.start().await;
    assert_eq!(app_status(&handle, "web").await["ready"], 0);
    let mut socket = ws(handle.http_addr().unwrap(), "web.p.test.local").await;
    echo_round(&mut socket, Message::text("good morning")).await;
    assert_eq!(app_status(&handle, "web").await["ready"], 1);
    socket.close(None).await.unwrap();
    handle.shutdown().await;
}

#[tokio::test]
async fn websockets_over_http2_extended_connect() {
    let (_config, handle, _backend) = static_setup("").await;
    let stream = TcpStream::connect(handle.http_addr().unwrap())
        .await
        .unwrap();
    let mut sender = h2_session(stream).await;
    let mut request = http::Request::connect("http://chat.p.test.local/ws")
        .header("sec-websocket-version", "13")
        .body(full(bytes::Bytes::new()))
        .unwrap();
    request
        .extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let response = sender.send_request(request).await.unwrap();
    if response.status() != 200 {
        let answer = read_answer(response).await;
        panic!("RFC 8441: a 2xx opens the tunnel, got {answer:?}");
    }
    let upgraded = hyper::upgrade::on(response).await.unwrap();
    let mut socket = WebSocketStream::from_raw_socket(
        hyper_util::rt::TokioIo::new(upgraded),
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    echo_round(&mut socket, Message::text("over h2")).await;
    assert_eq!(
        metric(&handle, "tidegate_websocket_sessions{app=\"chat\"}").await,
        1.0
    );
    socket.close(None).await.unwrap();
    handle.shutdown().await;
}

/// A client frame (masked, as RFC 6455 requires of clients unless `masked` is false).
fn client_frame(opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut frame = vec![
        0x80 | opcode,
        (payload.len() as u8) | if masked { 0x80 } else { 0 },
    ];
    if masked {
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    } else {
        frame.extend_from_slice(payload);
    }
    frame
}

/// Opens a WebSocket to the demo app by hand, sends `frame`, and returns the close code of
/// the Close frame it answers with (`None` if the connection ends without one).
async fn demo_close_code(frame: &[u8]) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tidegate::demo_app::bind(&tidegate::demo_app::DemoOptions::default())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(tidegate::demo_app::serve(listener));
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let handshake =
        "GET /ws HTTP/1.1\r\nHost: demo\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    stream.write_all(handshake.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    while !received.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed during the handshake");
        received.extend_from_slice(&chunk[..n]);
    }
    assert!(received.starts_with(b"HTTP/1.1 101"));
    stream.write_all(frame).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer));
    let _ = read
        .await
        .expect("the demo app ends the session within 5 s");
    server.abort();
    // A server frame is unmasked: [FIN|opcode, length, payload...]; Close is opcode 8.
    match answer.as_slice() {
        [0x88, length, code @ ..] if *length >= 2 => Some(u16::from_be_bytes([code[0], code[1]])),
        [0x88, 0, ..] => Some(1005),
        _ => None,
    }
}

#[tokio::test]
async fn the_demo_app_answers_a_close_and_names_protocol_errors() {
    // A Close with 1000 is answered with a Close (RFC 6455 5.5.1), echoing the code.
    let close = client_frame(0x8, &1000u16.to_be_bytes(), true);
    assert_eq!(demo_close_code(&close).await, Some(1000));
    // An unmasked client frame is a protocol error: 1002.
    assert_eq!(
        demo_close_code(&client_frame(0x1, b"hi", false)).await,
        Some(1002)
    );
    // Text that is not UTF-8: 1007.
    assert_eq!(
        demo_close_code(&client_frame(0x1, &[0xff, 0xfe], true)).await,
        Some(1007)
    );
}
