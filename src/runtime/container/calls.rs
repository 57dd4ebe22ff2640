//! Engine calls the backend makes, each with the error handling it needs: connecting,
//! creating a container (and its body), reading its published port, removing it, and
//! removing the leftovers of an earlier run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::errors::Error as EngineError;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use bollard::Docker;

use super::engine::{list_labelled, LABEL_RUN};
use super::{API_VERSION, CALL_TIMEOUT_SECS, LABEL_GATEWAY};
use crate::config::ContainerSpec;
use crate::identity::TOKEN_ENV;
use crate::runtime::StartRequest;

/// Removes containers labelled with this gateway's id: they are from an earlier run (this one
/// has started none yet), whose gateway died without stopping them.
/// Containers of this run (`run`) are never touched, even if a start went ahead of a
/// failed listing.
pub(super) async fn remove_leftovers(
    docker: &Docker,
    socket: &Path,
    gateway_id: &str,
    run: &str,
) -> Result<(), String> {
    let label = format!("{LABEL_GATEWAY}={gateway_id}");
    let list = list_labelled(socket, &label).await.map_err(|error| {
        tracing::warn!(%error, "cannot list containers to remove leftovers of an earlier run");
        error
    })?;
    for container in list.into_iter().filter(|c| c.run.as_deref() != Some(run)) {
        tracing::warn!(container = %container.name, "removing a container left by an earlier run of this gateway");
        remove(docker, &container.id).await;
    }
    Ok(())
}

/// `DOCKER_HOST` is read by validation; here the usual places, Podman's first.
pub(super) fn default_socket() -> PathBuf {
    let mut candidates = vec![PathBuf::from("/run/podman/podman.sock")];
    if let Ok(dir) = std::env::var("XDG_RUNTIME_DIR") {
        candidates.push(Path::new(&dir).join("podman/podman.sock"));
    }
    candidates.push(PathBuf::from("/var/run/docker.sock"));
    candidates
        .iter()
        .find(|path| path.exists())
        .cloned()
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"))
}

pub(super) fn connect(socket: &Path) -> Result<Docker, String> {
    Docker::connect_with_unix(&socket.to_string_lossy(), CALL_TIMEOUT_SECS, &API_VERSION)
        .map_err(|e| format!("cannot connect to {}: {e}", socket.display()))
}

/// The create call's body: image, env with `PORT`, labels, the port published on loopback
/// at an engine-chosen port, limits, and an init process.
pub(super) fn create_body(
    request: &StartRequest,
    spec: &ContainerSpec,
    image: &str,
    (gateway_id, run): (&str, &str),
    token: &str,
) -> ContainerCreateBody {
    // As for processes (`runtime::env`), but no base: the image brings its own PATH.
    let inherited = crate::runtime::env::inherited(&spec.inherit_env);
    let own = spec.env.iter().map(|(k, v)| (k.clone(), v.clone()));
    let injected = match &request.job {
        Some(job) => job.env.clone(),
        None => {
            let mut vars = crate::runtime::env::injected(&request.app, &request.revision);
            vars.push(("PORT".into(), spec.port.to_string()));
            vars
        }
    };
    let mut env: Vec<String> = inherited
        .into_iter()
        .chain(own)
        .chain(injected)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    env.push(format!("TIDEGATE_INSTANCE={}", request.instance_id));
    env.push(format!("{TOKEN_ENV}={token}"));
    let labels = HashMap::from([
        (LABEL_GATEWAY.to_string(), gateway_id.to_string()),
        (LABEL_RUN.to_string(), run.to_string()),
        ("tidegate.app".to_string(), request.app.name.clone()),
        ("tidegate.revision".to_string(), request.revision.clone()),
        ("tidegate.instance".to_string(), request.instance_id.clone()),
    ]);
    let port_key = format!("{}/tcp", spec.port);
    // A job's instance serves nothing: no port is published for it.
    let serves = request.job.is_none();
    ContainerCreateBody {
        image: Some(image.to_string()),
        cmd: spec.command.clone(),
        env: Some(env),
        labels: Some(labels),
        exposed_ports: serves.then(|| vec![port_key.clone()]),
        host_config: Some(HostConfig {
            port_bindings: serves.then(|| {
                HashMap::from([(
                    port_key,
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".into()),
                        host_port: Some(String::new()),
                    }]),
                )])
            }),
            memory: spec.resources.memory_bytes.map(|bytes| bytes as i64),
            nano_cpus: spec
                .resources
                .cpu_millis
                .map(|millis| i64::from(millis) * 1_000_000),
            init: Some(true),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    }
}

/// Creates the container; a leftover of the same name (an instance id reused after a
/// restart) is removed first.
pub(super) async fn create(
    docker: &Docker,
    name: &str,
    body: ContainerCreateBody,
) -> Result<(), String> {
    let options = || Some(CreateContainerOptionsBuilder::new().name(name).build());
    match docker.create_container(options(), body.clone()).await {
        Ok(_) => Ok(()),
        Err(error) if is_name_conflict(&error) => {
            remove(docker, name).await;
            docker
                .create_container(options(), body)
                .await
                .map(|_| ())
                .map_err(|e| format!("the engine could not create it: {}", engine_message(&e)))
        }
        Err(error) => Err(format!(
            "the engine could not create it: {}",
            engine_message(&error)
        )),
    }
}

/// The host port the engine published for `port`.
pub(super) fn published_port(
    inspect: &bollard::models::ContainerInspectResponse,
    port: u16,
) -> Result<u16, String> {
    inspect
        .network_settings
        .as_ref()
        .and_then(|settings| settings.ports.as_ref())
        .and_then(|ports| ports.get(&format!("{port}/tcp")).cloned().flatten())
        .and_then(|bindings| bindings.into_iter().find_map(|b| b.host_port))
        .and_then(|host_port| host_port.parse().ok())
        .ok_or_else(|| format!("the engine published no host port for container port {port}"))
}

/// Removes a container, retrying while the engine is still cleaning up after its exit
/// (Podman refuses a removal in that moment).
pub(super) async fn remove(docker: &Docker, name: &str) {
    let mut last = None;
    for _ in 0..20 {
        match docker
            .remove_container(
                name,
                Some(RemoveContainerOptionsBuilder::new().force(true).build()),
            )
            .await
        {
            Ok(()) => return,
            Err(error) if is_not_found(&error) => return,
            Err(error) => last = Some(engine_message(&error)),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tracing::warn!(
        container = name,
        error = last.unwrap_or_default(),
        "could not remove the container"
    );
}

pub(super) fn is_not_found(error: &EngineError) -> bool {
    matches!(
        error,
        EngineError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Docker answers 409 to a name in use; Podman 4 answers 500 with "already in use".
pub(super) fn is_name_conflict(error: &EngineError) -> bool {
    match error {
        EngineError::DockerResponseServerError {
            status_code,
            message,
        } => *status_code == 409 || message.contains("already in use"),
        _ => false,
    }
}

/// The engine's own message, without bollard's wrapping.
pub(super) fn engine_message(error: &EngineError) -> String {
    match error {
        EngineError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}
