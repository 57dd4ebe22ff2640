//! Bodies stream through in constant memory. Alone in its own test binary, because it measures
//! the resident memory of the whole test process.

mod support;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use support::*;

#[tokio::test]
async fn a_gibibyte_streams_both_ways_in_constant_memory() {
    const SIZE: u64 = 1 << 30;
    let config = ConfigDir::new("", "");
    let sink = backend(|request: http::Request<hyper::body::Incoming>| async move {
        if request.uri().path() == "/download" {
            let mut response = http::Response::new(RepeatBody::new(SIZE).boxed());
            *response.status_mut() = StatusCode::OK;
            return response;
        }
        let mut body = request.into_body();
        let mut total = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                total += data.len() as u64;
            }
        }
        text_response(StatusCode::OK, total.to_string())
    })
    .await;
    config.static_app("big", &[sink.addr], "", "");
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    let before = rss_kib();

    let upload = Request::post("/upload")
        .header("host", "big.p.test.local")
        .body(RepeatBody::new(SIZE).boxed())
        .unwrap();
    let answer = send(addr, upload).await;
    assert_eq!(answer.body, SIZE.to_string());

    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = Request::get("/download")
        .header("host", "big.p.test.local")
        .body(full(Bytes::new()))
        .unwrap();
    let mut body = sender.send_request(request).await.unwrap().into_body();
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            total += data.len() as u64;
        }
    }
    assert_eq!(total, SIZE);
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    assert!(
        grown_mib < 64,
        "memory grew by {grown_mib} MiB while streaming 2 GiB"
    );
    handle.shutdown().await;
}
