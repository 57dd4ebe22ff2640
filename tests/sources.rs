//! `PUT /api/v1/apps/{name}/source`: uploaded build contexts are stored content-addressed
//! in the state directory; archives that try to write outside it, bodies that are not tar,
//! and requests without the token are refused or defused and leave nothing behind.

mod support;

use http::{Method, Request, StatusCode};
use support::*;

async fn upload(
    handle: &tidegate::Handle,
    token: Option<&str>,
    app: &str,
    body: Vec<u8>,
) -> Answer {
    let mut request = Request::builder()
        .method(Method::PUT)
        .uri(format!("/api/v1/apps/{app}/source"))
        .header("host", "admin")
        .header("content-type", "application/x-tar");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    send(handle.admin_addr(), request.body(full(body)).unwrap()).await
}

/// A tar archive with one file at `path`, written raw so `..` and absolute paths get in.
fn raw_entry(path: &str, contents: &[u8]) -> Vec<u8> {
    let mut header = tar::Header::new_old();
    header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
    header.set_size(contents.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(&header, contents).unwrap();
    builder.into_inner().unwrap()
}

#[tokio::test]
async fn uploads_are_stored_by_content_and_cannot_escape() {
    let config = ConfigDir::new("", "");
    let handle = config.start().await;
    let token = std::fs::read_to_string(config.dir.path().join("state/admin-token")).unwrap();
    let token = Some(token.trim());

    let refused = upload(&handle, None, "web", raw_entry("a.txt", b"a")).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(!config.dir.path().join("state/sources").exists());

    let first = upload(&handle, token, "web", raw_entry("a.txt", b"a")).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let first: serde_json::Value = serde_json::from_str(&first.body).unwrap();
    let stored = std::path::PathBuf::from(first["path"].as_str().unwrap());
    assert_eq!(std::fs::read_to_string(stored.join("a.txt")).unwrap(), "a");
    let again = upload(&handle, token, "web", raw_entry("a.txt", b"a")).await;
    let again: serde_json::Value = serde_json::from_str(&again.body).unwrap();
    assert_eq!(
        again["path"], first["path"],
        "the same tree, the same directory"
    );

    let outside = config.dir.path().join("escaped.txt");
    for path in ["../../escaped.txt", "../escaped.txt"] {
        let answer = upload(&handle, token, "web", raw_entry(path, b"x")).await;
        assert!(answer.status.is_success() || answer.status == StatusCode::BAD_REQUEST);
        assert!(!outside.exists(), "{path} escaped");
        assert!(!stored.parent().unwrap().join("escaped.txt").exists());
    }

    for (body, want) in [
        (Vec::new(), "the body is empty"),
        (
            b"not a tar archive, but long enough to look like a header block? no".repeat(10),
            "not a usable tar archive",
        ),
    ] {
        let answer = upload(&handle, token, "web", body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        assert!(answer.body.contains(want), "{}", answer.body);
    }
    let answer = upload(&handle, token, "Bad_Name", raw_entry("a.txt", b"a")).await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    let leftovers: Vec<_> = std::fs::read_dir(stored.parent().unwrap())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "no half-received archive left: {leftovers:?}"
    );
    handle.shutdown().await;

    // "web" never got a file: its uploads go at the next start.
    let handle = config.start().await;
    assert!(!stored.exists(), "an orphaned upload is removed at start");
    handle.shutdown().await;
}
