//! Plain JSON requests to the engine, for the answers bollard's typed models refuse: Podman 4
//! reports container states (such as `stopped`) outside Docker's list, and a typed parse of
//! such an answer fails as a whole.

use std::path::Path;

use http_body_util::BodyExt;
use serde_json::Value;

/// Label that tells which run of a gateway started a container.
pub const LABEL_RUN: &str = "tidegate.run";

/// Longest a plain request may take: the engine is local, and a wedged one must not hang
/// exit tasks or starts.
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// `GET path` on the engine's socket: the status code and the JSON body.
async fn get_json(socket: &Path, path: &str) -> Result<(u16, Value), String> {
    tokio::time::timeout(CALL_TIMEOUT, get_json_now(socket, path))
        .await
        .map_err(|_| format!("the engine did not answer GET {path} within {CALL_TIMEOUT:?}"))?
}

async fn get_json_now(socket: &Path, path: &str) -> Result<(u16, Value), String> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", socket.display()))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = http::Request::get(format!("/v1.41{path}"))
        .header(http::header::HOST, "engine")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    Ok((status, value))
}

/// One container in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub id: String,
    pub name: String,
    /// Its `tidegate.run` label: which run of a gateway started it.
    pub run: Option<String>,
}

/// The engine's containers with `label` (`key=value`), running or not.
pub async fn list_labelled(socket: &Path, label: &str) -> Result<Vec<Listed>, String> {
    let filters = serde_json::json!({ "label": [label] }).to_string();
    let query = percent_encoding::utf8_percent_encode(&filters, percent_encoding::NON_ALPHANUMERIC);
    let (status, list) = get_json(
        socket,
        &format!("/containers/json?all=true&filters={query}"),
    )
    .await?;
    if status != 200 {
        return Err(format!("the engine answered {status}: {list}"));
    }
    Ok(list
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|container| {
            let id = container["Id"].as_str()?.to_string();
            let name = container["Names"][0]
                .as_str()
                .map_or_else(|| id.clone(), |n| n.trim_start_matches('/').to_string());
            let run = container["Labels"][LABEL_RUN].as_str().map(str::to_string);
            Some(Listed { id, name, run })
        })
        .collect())
}

/// What the engine says about a container's run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    Running,
    Exited { code: i64, out_of_memory: bool },
    Gone,
}

/// The state of container `name`.
pub async fn run_state(socket: &Path, name: &str) -> Result<RunState, String> {
    let (status, inspect) = get_json(socket, &format!("/containers/{name}/json")).await?;
    match status {
        404 => Ok(RunState::Gone),
        200 => {
            let state = &inspect["State"];
            // Podman sets Running only in the running state; a container that is stopping
            // (its stop timeout under way), paused or restarting is still alive.
            let alive = state["Running"].as_bool().unwrap_or(false)
                || matches!(
                    state["Status"].as_str(),
                    Some("running" | "stopping" | "paused" | "restarting")
                );
            if alive {
                Ok(RunState::Running)
            } else {
                Ok(RunState::Exited {
                    code: state["ExitCode"].as_i64().unwrap_or(-1),
                    out_of_memory: state["OOMKilled"].as_bool().unwrap_or(false),
                })
            }
        }
        other => Err(format!("the engine answered {other}: {inspect}")),
    }
}
