//! A client of the management API for tests: JSON in and out, with the gateway's token.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use serde_json::Value;

use super::{full, send, ConfigDir};

pub struct Api {
    pub addr: SocketAddr,
    pub token: String,
}

/// An answer: status, JSON body, `ETag`.
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub etag: Option<String>,
}

impl Api {
    /// The client of a gateway started from `config`, with its generated token.
    pub fn of(config: &ConfigDir, handle: &tidegate::Handle) -> Self {
        let token = std::fs::read_to_string(config.dir.path().join("state/admin-token")).unwrap();
        Api {
            addr: handle.admin_addr(),
            token: token.trim().to_string(),
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        if_match: Option<&str>,
    ) -> Reply {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "admin")
            .header("authorization", format!("Bearer {}", self.token));
        if let Some(tag) = if_match {
            request = request.header("if-match", tag);
        }
        let body = body.map_or(Bytes::new(), |b| Bytes::from(b.to_string()));
        let answer = send(self.addr, request.body(full(body)).unwrap()).await;
        Reply {
            status: answer.status,
            etag: answer
                .headers
                .get("etag")
                .map(|v| v.to_str().unwrap().to_string()),
            body: serde_json::from_str(&answer.body)
                .unwrap_or_else(|_| panic!("not JSON: {}", answer.body)),
        }
    }
}

impl Api {
    /// A `GET` whose answer is text (logs).
    pub async fn text(&self, path: &str) -> (StatusCode, String) {
        let request = Request::builder()
            .uri(path)
            .header("host", "admin")
            .header("authorization", format!("Bearer {}", self.token))
            .body(full(Bytes::new()))
            .unwrap();
        let answer = send(self.addr, request).await;
        (answer.status, answer.body)
    }
}

impl Api {
    /// The client of a gateway process listening at `admin`, with the token its state
    /// directory holds.
    pub fn at(config: &ConfigDir, admin: SocketAddr) -> Self {
        let token = std::fs::read_to_string(config.dir.path().join("state/admin-token")).unwrap();
        Api {
            addr: admin,
            token: token.trim().to_string(),
        }
    }

    /// `POST path` that must answer 201; the answer's body.
    pub async fn create(&self, path: &str, body: Value) -> Value {
        let made = self.call(Method::POST, path, Some(body), None).await;
        assert_eq!(
            made.status,
            StatusCode::CREATED,
            "POST {path}: {}",
            made.body
        );
        made.body
    }

    /// Creates project `name`.
    pub async fn project(&self, name: &str) {
        self.create("/api/v1/projects", serde_json::json!({ "name": name }))
            .await;
    }

    /// Creates a job that must be served at once.
    pub async fn create_job(&self, spec: Value) {
        let made = self.create("/api/v1/jobs", spec).await;
        assert_eq!(made["served"], true, "{made}");
    }

    /// Submits a run of `job` with `overrides`; its name.
    pub async fn submit(&self, job: &str, overrides: Value) -> String {
        let mut body = overrides;
        body["job"] = serde_json::json!(job);
        let run = self.create("/api/v1/jobruns", body).await;
        run["name"].as_str().unwrap().to_string()
    }

    /// A run's record now.
    pub async fn run(&self, run: &str) -> Value {
        self.call(Method::GET, &format!("/api/v1/jobruns/{run}"), None, None)
            .await
            .body
    }

    /// A run's record once it has finished.
    pub async fn finished(&self, run: &str) -> Value {
        super::eventually(
            &format!("{run} to finish"),
            std::time::Duration::from_secs(120),
            || async {
                let record = self.run(run).await;
                let state = record["state"].as_str().unwrap_or("");
                (!matches!(state, "pending" | "running")).then_some(record)
            },
        )
        .await
    }
}
