//! The access log of the real binary: every request's line is written, even when the
//! gateway is stopped right after (the buffer is written out on SIGTERM); a file of its own
//! is opened again on SIGHUP (logrotate); the default goes to standard output with the rest
//! of the log, in JSON with `--log-format json`.

mod support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::process::spawn_gateway;
use support::*;

/// A config whose app `web` (project `p`) is the static `upstream`, on fixed ports.
fn config(upstream: SocketAddr, extra: &str) -> (ConfigDir, SocketAddr) {
    let config = ConfigDir::new("", "");
    let listeners = config.fixed_ports(extra);
    config.static_app("web", &[upstream], "", "");
    (config, listeners.http)
}

async fn start(config: &ConfigDir, addr: SocketAddr, args: &[&str]) -> tokio::process::Child {
    spawn_gateway(config, args, Stdio::piped(), addr).await
}

/// `count` requests on one keep-alive connection, each answered 200.
async fn requests(addr: SocketAddr, count: usize) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    for i in 0..count {
        let request = Request::get(format!("/n/{i}"))
            .header("host", "web.p.test.local")
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        sender.ready().await.unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.into_body().collect().await.unwrap();
    }
}

async fn terminate(mut child: tokio::process::Child) -> String {
    kill(Pid::from_raw(child.id().unwrap() as i32), Signal::SIGTERM).unwrap();
    let output = tokio::time::timeout(Duration::from_secs(30), async {
        let mut stdout = child.stdout.take().unwrap();
        let mut text = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut stdout, &mut text)
            .await
            .unwrap();
        child.wait().await.unwrap();
        text
    })
    .await
    .expect("the gateway stops");
    String::from_utf8(output).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_reaches_the_file_and_sighup_starts_a_new_one() {
    let upstream = echo_backend("web").await;
    let (config, addr) = config(upstream.addr, "access_log = \"logs/access.log\"");
    let file = config.dir.path().join("logs/access.log");
    let gateway = start(&config, addr, &[]).await;
    requests(addr, 1500).await;
    // Rotated as logrotate does: moved away, then SIGHUP.
    let rotated = config.dir.path().join("logs/access.log.1");
    std::fs::rename(&file, &rotated).unwrap();
    kill(Pid::from_raw(gateway.id().unwrap() as i32), Signal::SIGHUP).unwrap();
    eventually("the file opened again", Duration::from_secs(10), || async {
        file.exists().then_some(())
    })
    .await;
    requests(addr, 500).await;
    let stdout = terminate(gateway).await;

    let old = std::fs::read_to_string(&rotated).unwrap();
    let new = std::fs::read_to_string(&file).unwrap();
    assert_eq!((old.lines().count(), new.lines().count()), (1500, 500));
    let last = new.lines().last().unwrap();
    assert!(
        last.contains("INFO tidegate::access: app=\"web\" revision=\"static\"")
            && last.contains("host=\"web.p.test.local\" method=GET path=/n/499 status=200"),
        "{last}"
    );
    assert!(!stdout.contains("tidegate::access"), "the file only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_goes_to_stdout_with_every_line_after_sigterm() {
    let upstream = echo_backend("web").await;
    let (config, addr) = config(upstream.addr, "");
    let gateway = start(&config, addr, &["--log-format", "json"]).await;
    requests(addr, 2000).await;
    let stdout = terminate(gateway).await;
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .filter(|line: &serde_json::Value| line["target"] == "tidegate::access")
        .collect();
    assert_eq!(lines.len(), 2000);
    assert_eq!(lines[1999]["path"], "/n/1999");
    assert_eq!(lines[1999]["status"], 200);
    assert_eq!(lines[1999]["app"], "web");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_combined_format_reads_as_nginx_writes_it_from_both_engines() {
    let upstream = echo_backend("web").await;
    let (config, addr) = config(
        upstream.addr,
        "access_log = \"access.log\"\naccess_log_format = \"combined\"",
    );
    let gateway = start(&config, addr, &[]).await;
    // HTTP/1.1 (the engine), with both fields, one of them needing escapes.
    let answer = send(
        addr,
        Request::get("/one?x=1")
            .header("host", "web.p.test.local")
            .header("referer", "https://example.com/page")
            .header("user-agent", "agent \"quoted\"")
            .body(full(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    // HTTP/2 (hyper), without a Referer.
    let answer = send_h2(
        addr,
        Request::get(format!("http://web.p.test.local:{}/two", addr.port()))
            .header("user-agent", "h2-agent/1")
            .body(full(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let stdout = terminate(gateway).await;

    let log = std::fs::read_to_string(config.dir.path().join("access.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "{log}");
    let (one, two) = (lines[0], lines[1]);
    // `127.0.0.1 - - [07/Dec/2026:06:20:05 +0000] "GET /one?x=1 HTTP/1.1" 200 N "ref" "ua"`
    let rest = one.strip_prefix("127.0.0.1 - - [").expect(one);
    let (time, rest) = rest.split_once("] ").expect(one);
    assert!(
        time.len() == 26 && time.ends_with(" +0000") && &time[2..3] == "/",
        "{time}"
    );
    let bytes = answer_bytes(rest, "\"GET /one?x=1 HTTP/1.1\" 200 ");
    assert!(bytes > 0, "{one}");
    assert!(
        rest.ends_with(" \"https://example.com/page\" \"agent \\x22quoted\\x22\""),
        "{one}"
    );
    let rest = two.split_once("] ").expect(two).1;
    assert!(
        answer_bytes(rest, "\"GET /two HTTP/2.0\" 200 ") > 0,
        "{two}"
    );
    assert!(rest.ends_with(" \"-\" \"h2-agent/1\""), "{two}");
    assert!(!stdout.contains("tidegate::access"), "the file only");
}

/// The body size after `prefix` (the request line and status) in a combined line.
fn answer_bytes(rest: &str, prefix: &str) -> u64 {
    let after = rest
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{rest:?} does not start with {prefix:?}"));
    after.split(' ').next().unwrap().parse().unwrap()
}
