//! Graceful shutdown: in-flight requests finish, new connections are refused, readiness flips.

mod support;

use std::time::Duration;

use http::StatusCode;
use support::*;

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let config = ConfigDir::new("", "");
    let slow = backend(|_request| async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        text_response(StatusCode::OK, "finished\n")
    })
    .await;
    config.static_app("app", &[slow.addr], "", "");
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    assert_eq!(admin_get(&handle, "/readyz").await.status, StatusCode::OK);

    let request = tokio::spawn(get(addr, "app.p.test.local", "/"));
    wait_in_flight(&handle, "app", 1.0).await;
    let admin = handle.admin_addr();
    let shutdown = tokio::spawn(handle.shutdown());

    // Readiness turns 503 while draining, and the public listener stops accepting.
    eventually(
        "readyz to report shutting down",
        Duration::from_secs(5),
        || async {
            (get(admin, "admin", "/readyz").await.status == StatusCode::SERVICE_UNAVAILABLE)
                .then_some(())
        },
    )
    .await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());

    let answer = request.await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "finished\n");
    tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .expect("shutdown completes once the request is done")
        .unwrap();
}

#[tokio::test]
async fn shutdown_gives_up_on_requests_after_the_grace_period() {
    let config = ConfigDir::new("", "");
    config.write_gateway("shutdown_grace = \"200ms\"", "");
    let stuck = backend(|_request| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        text_response(StatusCode::OK, "never\n")
    })
    .await;
    config.static_app("app", &[stuck.addr], "", "");
    let handle = config.start().await;
    let addr = handle.http_addr().unwrap();
    let _request = tokio::spawn(get(addr, "app.p.test.local", "/"));
    wait_in_flight(&handle, "app", 1.0).await;
    tokio::time::timeout(Duration::from_secs(5), handle.shutdown())
        .await
        .expect("shutdown returns after the grace period");
}
