//! Validation of the container runtime's keys: `[container]`, `[build]` and the gateway's
//! `[container_engine]`.

use std::path::{Path, PathBuf};

use super::model::{
    ContainerEngineSettings, ContainerSpec, ImageBuild, KubernetesSettings, PullPolicy,
};
use super::raw::{RawApp, RawContainerEngine, RawKubernetes, RawRun};
use super::revisions;
use super::validate::Checker;

/// The container port when `[container] port` is not set (Code Engine's default).
const DEFAULT_PORT: u16 = 8080;

/// Checks `[container]` and `[build]` of a container app.
pub(super) fn container_spec(c: &mut Checker<'_>, raw: &RawApp) -> Option<ContainerSpec> {
    if raw.run.is_some() || raw.static_.is_some() {
        c.report(
            "runtime",
            "a container app has a [container] table, not [run] or [static]",
        );
    }
    let Some(table) = &raw.container else {
        c.report(
            "container",
            format!(
                "runtime {:?} needs a [container] table with an image",
                raw.runtime.as_deref().unwrap_or("container")
            ),
        );
        return None;
    };
    let base = c.file.parent().unwrap_or(Path::new(".")).to_path_buf();
    let build = raw.build.as_ref().and_then(|build| {
        if build.command.is_some() {
            c.report(
                "build.command",
                "is for process apps; a container app's [build] has context and dockerfile",
            );
        }
        let Some(context) = &build.context else {
            c.report("build.context", "is required: the directory to build from");
            return None;
        };
        let context = base.join(context);
        if !context.is_dir() {
            c.report(
                "build.context",
                format!("{} is not a directory", context.display()),
            );
        }
        if let Some(file) = &build.dockerfile {
            if Path::new(file).is_absolute() || file.split('/').any(|part| part == "..") {
                c.report(
                    "build.dockerfile",
                    format!("{file:?} must be a path inside the build context"),
                );
            } else if !context.join(file).is_file() {
                c.report(
                    "build.dockerfile",
                    format!("{file:?} is not a file in {}", context.display()),
                );
            }
        } else if !context.join("Containerfile").is_file() && !context.join("Dockerfile").is_file()
        {
            c.report(
                "build.dockerfile",
                format!(
                    "{} has no Containerfile or Dockerfile; name the file",
                    context.display()
                ),
            );
        }
        Some(ImageBuild {
            context,
            dockerfile: build.dockerfile.clone(),
        })
    });
    let image = table.image.clone().filter(|image| !image.trim().is_empty());
    match (&image, &raw.build) {
        (None, None) => c.report("container.image", "is required (or a [build] to make it)"),
        (Some(_), Some(_)) => c.report(
            "container.image",
            "leave it out when [build] makes the image (it is tagged tidegate/<app>:<revision>)",
        ),
        _ => {}
    }
    if let Some(command) = &table.command {
        if command.is_empty() {
            c.report(
                "container.command",
                "is empty; leave it out to run the image's own command",
            );
        }
    }
    super::env::check(c, "container", &table.env, &table.inherit_env, "PORT");
    let port = table.port.unwrap_or(DEFAULT_PORT);
    if port == 0 {
        c.report("container.port", "must be a port between 1 and 65535");
    }
    let pull = match table.pull.as_deref().unwrap_or("missing") {
        "never" => PullPolicy::Never,
        "missing" => PullPolicy::Missing,
        "always" => PullPolicy::Always,
        other => {
            c.report(
                "container.pull",
                format!("{other:?} is not one of \"never\", \"missing\", \"always\""),
            );
            PullPolicy::Missing
        }
    };
    if let Some(path) = &table.readiness_path {
        if !path.starts_with('/') {
            c.report(
                "container.readiness_path",
                format!("{path:?} must start with \"/\""),
            );
        }
    }
    let resources = revisions::resources(
        c,
        "container",
        &RawRun {
            cpu: table.cpu,
            memory: table.memory.clone(),
            ..RawRun::default()
        },
    );
    Some(ContainerSpec {
        image,
        command: table.command.clone(),
        port,
        env: table.env.clone(),
        inherit_env: table.inherit_env.clone(),
        resources,
        pull,
        readiness_path: table.readiness_path.clone(),
        build,
    })
}

/// Checks `[container]` of a Kubernetes app: a container app whose image is referenced,
/// since images are built by the local engine, not in the cluster.
pub(super) fn kubernetes_spec(c: &mut Checker<'_>, raw: &RawApp) -> Option<ContainerSpec> {
    if raw.build.is_some() {
        c.report(
            "build",
            "a kubernetes app runs an image from a registry; builds run on the local backends \
             (build it with runtime = \"container\", push it, and name it in container.image)",
        );
        return None;
    }
    container_spec(c, raw)
}

/// Checks `[build]` of a process app: only `command`.
pub(super) fn process_build(c: &mut Checker<'_>, raw: &RawApp) -> Option<Vec<String>> {
    let build = raw.build.as_ref()?;
    if build.context.is_some() || build.dockerfile.is_some() {
        c.report(
            "build",
            "a process app's [build] has only a command (context and dockerfile are for containers)",
        );
    }
    match &build.command {
        Some(command) if !command.is_empty() && !command[0].trim().is_empty() => {
            Some(command.clone())
        }
        _ => {
            c.report("build.command", "needs at least the program to run");
            None
        }
    }
}

/// Checks `[kubernetes]`.
pub(super) fn kubernetes(
    c: &mut Checker<'_>,
    raw: Option<&RawKubernetes>,
    base: &Path,
) -> Option<KubernetesSettings> {
    let raw = raw?.clone();
    if let Some(namespace) = &raw.namespace {
        if !super::validate::is_dns_label(namespace) {
            c.report(
                "kubernetes.namespace",
                format!("{namespace:?} must be a DNS label: lower-case letters, digits and '-'"),
            );
        }
    }
    if raw
        .identity
        .as_deref()
        .is_some_and(|id| id.trim().is_empty())
    {
        c.report(
            "kubernetes.identity",
            "is empty; leave it out for the pod's name",
        );
    }
    Some(KubernetesSettings {
        kubeconfig: raw.kubeconfig.map(|path| base.join(path)),
        namespace: raw.namespace,
        leader_election: raw.leader_election.unwrap_or(false),
        identity: raw.identity,
    })
}

/// Checks `[container_engine]`.
pub(super) fn engine(
    c: &mut Checker<'_>,
    raw: Option<&RawContainerEngine>,
    gateway_file: &Path,
) -> ContainerEngineSettings {
    let raw = raw.cloned().unwrap_or_default();
    let socket = match raw.socket {
        Some(value) => match socket_path(&value) {
            Ok(path) => Some(path),
            Err(message) => {
                c.report("container_engine.socket", message);
                None
            }
        },
        // The environment is no config file: a DOCKER_HOST this runtime cannot use (a TCP
        // engine) is passed over, not an error in a config that may not even use containers.
        None => std::env::var("DOCKER_HOST")
            .ok()
            .and_then(|value| socket_path(&value).ok()),
    };
    let gateway_id = match raw.gateway_id {
        Some(id) if super::validate::is_dns_label(&id) => id,
        Some(id) => {
            c.report(
                "container_engine.gateway_id",
                format!("{id:?} must be a DNS label: lower-case letters, digits and '-'"),
            );
            default_gateway_id(gateway_file)
        }
        None => default_gateway_id(gateway_file),
    };
    ContainerEngineSettings { socket, gateway_id }
}

/// `unix:///run/podman/podman.sock` or `/run/podman/podman.sock` -> the path.
fn socket_path(value: &str) -> Result<PathBuf, String> {
    let path = value.strip_prefix("unix://").unwrap_or(value);
    if path.starts_with('/') {
        Ok(PathBuf::from(path))
    } else {
        Err(format!(
            "{value:?}: only a unix socket (unix:///path or /path) is supported"
        ))
    }
}

/// `gw-` and a hash of the gateway file's absolute path: stable across restarts of the same
/// gateway, different for two gateways on one machine.
fn default_gateway_id(gateway_file: &Path) -> String {
    let path = std::fs::canonicalize(gateway_file).unwrap_or_else(|_| gateway_file.to_path_buf());
    // FNV-1a: stable across Rust releases, unlike the standard library's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in path.as_os_str().as_encoded_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("gw-{:08x}", hash as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_paths_and_gateway_ids() {
        assert_eq!(
            socket_path("unix:///run/x.sock"),
            Ok(PathBuf::from("/run/x.sock"))
        );
        assert_eq!(socket_path("/run/x.sock"), Ok(PathBuf::from("/run/x.sock")));
        assert!(socket_path("tcp://127.0.0.1:2375").is_err());
        let a = default_gateway_id(Path::new("/etc/tidegate/a.toml"));
        assert_eq!(a, default_gateway_id(Path::new("/etc/tidegate/a.toml")));
        assert_ne!(a, default_gateway_id(Path::new("/etc/tidegate/b.toml")));
        assert!(a.starts_with("gw-") && a.len() == 11);
    }
}
