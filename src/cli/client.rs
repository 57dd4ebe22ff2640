//! The CLI's connection to the management API: which server, which token, one request.
//!
//! The server is `--server`/`TIDEGATE_SERVER`, else the admin address of the local gateway
//! file (`--config`, default `config/tidegate.toml`). The token is `TIDEGATE_TOKEN`, else
//! the local gateway's token file (`admin_token_file`, or the one it generated in its state
//! directory). Inside an instance `TIDEGATE_TOKEN` is the instance's own identity token,
//! which the API refuses: pass the API token another way there (docs/cli.md).

use std::path::Path;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

use crate::api::token::GENERATED;
use crate::config::{validate, GatewaySettings, RawGatewayFile};

/// Why a command failed: the server refused (exit 1), or it could not be asked (exit 1 too,
/// with what to fix).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Unreachable(String),
}

/// Where and how to reach the API.
pub struct Client {
    /// `host:port` of the admin listener.
    authority: String,
    token: String,
}

/// A JSON answer.
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    /// The body as text (logs are plain text).
    pub text: String,
    pub etag: Option<String>,
}

impl Client {
    /// The client for `server` (or the local gateway of `config`) and its token.
    pub fn resolve(
        server: Option<&str>,
        token: Option<&str>,
        config: &Path,
    ) -> Result<Self, CliError> {
        let local = local_settings(config);
        let authority = match server {
            Some(server) => server
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string(),
            None => match &local {
                Some(settings) => settings.admin.to_string(),
                None => {
                    return Err(CliError::Unreachable(format!(
                        "no server: pass --server HOST:PORT (or set TIDEGATE_SERVER), or run where {} is",
                        config.display()
                    )))
                }
            },
        };
        let token = match token {
            Some(token) => token.trim().to_string(),
            None => {
                let file = local.as_ref().map(|settings| {
                    settings
                        .admin_token_file
                        .clone()
                        .unwrap_or_else(|| settings.state_dir.join(GENERATED))
                });
                let read = file
                    .as_ref()
                    .and_then(|file| std::fs::read_to_string(file).ok());
                match read {
                    Some(token) => token.trim().to_string(),
                    None => {
                        return Err(CliError::Unreachable(
                            "no token: set TIDEGATE_TOKEN, or run where the gateway's config and state directory are".into(),
                        ))
                    }
                }
            }
        };
        Ok(Client { authority, token })
    }

    /// The client the command-line flags name.
    pub fn from_target(target: &super::Target) -> Result<Self, CliError> {
        Self::resolve(
            target.server.as_deref(),
            target.token.as_deref(),
            &target.config,
        )
    }

    /// Sends one request; a 4xx/5xx answer becomes [`CliError::Refused`] with the server's
    /// message.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<Answer, CliError> {
        let answer = self.try_call(method, path, body, if_match).await?;
        refused(&answer)?;
        Ok(answer)
    }

    /// A `GET` whose body streams (a followed log): printed as it comes, until the server
    /// ends it or the command is interrupted.
    pub async fn stream(&self, path: &str) -> Result<(), CliError> {
        use std::io::Write;
        let response = self.send(Method::GET, path, None, None).await?;
        if !response.status().is_success() {
            return refused(&self.answer(response).await?);
        }
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| self.unreachable(&e))?;
            if let Some(data) = frame.data_ref() {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(data);
                let _ = out.flush();
            }
        }
        Ok(())
    }

    /// Sends one request and returns whatever the server answered.
    pub async fn try_call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<Answer, CliError> {
        let body = body.map(|body| ("application/json", Bytes::from(body.to_string())));
        self.answer(self.send(method, path, body, if_match).await?)
            .await
    }

    /// Sends a tar archive (a build source) and reads the JSON answer; a refusal becomes
    /// [`CliError::Refused`].
    pub async fn upload(
        &self,
        method: Method,
        path: &str,
        archive: Bytes,
    ) -> Result<Answer, CliError> {
        let response = self
            .send(method, path, Some(("application/x-tar", archive)), None)
            .await?;
        let answer = self.answer(response).await?;
        refused(&answer)?;
        Ok(answer)
    }

    async fn answer(
        &self,
        response: http::Response<hyper::body::Incoming>,
    ) -> Result<Answer, CliError> {
        let status = response.status();
        let etag = response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.unreachable(&e))?
            .to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| serde_json::json!({ "error": text.trim() }));
        Ok(Answer {
            status,
            body,
            text,
            etag,
        })
    }

    /// Opens a connection and sends one request with the token; the response's body is
    /// the caller's to read.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Bytes)>,
        if_match: Option<&str>,
    ) -> Result<http::Response<hyper::body::Incoming>, CliError> {
        let stream = TcpStream::connect(&self.authority)
            .await
            .map_err(|e| self.unreachable(&e))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.unreachable(&e))?;
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.authority)
            .header("authorization", format!("Bearer {}", self.token));
        if let Some(tag) = if_match {
            request = request.header("if-match", tag);
        }
        let body = match body {
            Some((content_type, body)) => {
                request = request.header("content-type", content_type);
                body
            }
            None => Bytes::new(),
        };
        let request = request.body(Full::new(body)).expect("a valid request");
        sender
            .send_request(request)
            .await
            .map_err(|e| self.unreachable(&e))
    }

    fn unreachable(&self, error: &dyn std::fmt::Display) -> CliError {
        CliError::Unreachable(format!(
            "cannot reach the management API at {}: {error}",
            self.authority
        ))
    }
}

/// A 4xx/5xx answer as [`CliError::Refused`] with the server's message.
fn refused(answer: &Answer) -> Result<(), CliError> {
    if answer.status.is_client_error() || answer.status.is_server_error() {
        let message = answer.body["error"].as_str().unwrap_or("(no message)");
        return Err(CliError::Refused(format!("{message} ({})", answer.status)));
    }
    Ok(())
}

/// The local gateway file's settings (admin address, state directory), read without the
/// apps, which may be in the middle of an edit.
fn local_settings(config: &Path) -> Option<GatewaySettings> {
    let text = std::fs::read_to_string(config).ok()?;
    let raw: RawGatewayFile = toml::from_str(&text).ok()?;
    validate(config, &raw, &[])
        .ok()
        .map(|config| config.gateway)
}
