//! A real container engine for tests (Podman's Docker-compatible API, started by
//! `scripts/test`; `DOCKER_HOST` points at it), the busybox build context the container
//! tests build their images from, and a guard that removes a test's containers.

use std::path::PathBuf;
use std::time::Duration;

use bollard::{ClientVersion, Docker};
use tidegate::runtime::container::list_labelled;

use super::{eventually, ConfigDir};

pub fn engine() -> Docker {
    let host = std::env::var("DOCKER_HOST").unwrap_or_default();
    assert!(
        host.starts_with("unix://"),
        "DOCKER_HOST must point at a container engine's unix socket; run ./scripts/test, which starts one"
    );
    Docker::connect_with_unix(
        &host,
        30,
        &ClientVersion {
            major_version: 1,
            minor_version: 41,
        },
    )
    .expect("the engine socket exists")
}

/// Writes the test image's build context to `<config dir>/ctx` and returns its path.
pub fn busybox_context(config: &ConfigDir) -> PathBuf {
    let ctx = config.dir.path().join("ctx");
    std::fs::create_dir_all(ctx.join("www/cgi-bin")).unwrap();
    std::fs::copy("/bin/busybox", ctx.join("busybox"))
        .expect("/bin/busybox (busybox-static, installed by ./scripts/test)");
    std::fs::write(ctx.join("www/index.html"), "ok\n").unwrap();
    let cgi = |name: &str, body: &str| {
        let path = ctx.join("www/cgi-bin").join(name);
        std::fs::write(
            &path,
            format!("#!/bin/busybox sh\necho 'Content-Type: text/plain'\necho\n{body}\n"),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    cgi(
        "env",
        "echo \"greeting=$GREETING instance=$TIDEGATE_INSTANCE\"",
    );
    cgi("slow", "/bin/busybox sleep 0.3\necho slow");
    std::fs::write(
        ctx.join("Containerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY www /www\n\
         ENTRYPOINT [\"/bin/busybox\", \"sh\", \"-c\", \"exec /bin/busybox httpd -f -p 0.0.0.0:${PORT} -h /www\"]\n",
    )
    .unwrap();
    std::fs::write(
        ctx.join("Broken.Containerfile"),
        "FROM scratch\nCOPY no-such-file /x\n",
    )
    .unwrap();
    ctx
}

/// The socket of the engine the tests use.
pub fn socket() -> PathBuf {
    PathBuf::from(
        std::env::var("DOCKER_HOST")
            .unwrap()
            .trim_start_matches("unix://"),
    )
}

/// A config dir whose gateway labels its containers `tidegate.gateway=<id>`, and which removes
/// every container with that label when dropped, so a failed test leaves nothing behind.
pub struct Engine {
    pub config: ConfigDir,
    pub id: String,
}

impl Engine {
    pub fn new(test: &str) -> Self {
        let id = format!("test-{}-{test}", std::process::id());
        let config = ConfigDir::new("", &format!("\n[container_engine]\ngateway_id = \"{id}\""));
        busybox_context(&config);
        Engine { config, id }
    }

    /// Names of this gateway's containers, running or not.
    pub async fn containers(&self) -> Vec<String> {
        list_labelled(&socket(), &format!("tidegate.gateway={}", self.id))
            .await
            .unwrap()
            .into_iter()
            .map(|container| container.name)
            .collect()
    }

    pub async fn wait_containers(&self, what: &str, check: impl Fn(usize) -> bool) {
        eventually(what, Duration::from_secs(30), || async {
            check(self.containers().await.len()).then_some(())
        })
        .await;
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // A thread of its own: drop runs inside the test's runtime, which cannot block.
        let label = format!("tidegate.gateway={}", self.id);
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let docker = engine();
                for container in list_labelled(&socket(), &label).await.unwrap_or_default() {
                    let _ = docker
                        .remove_container(
                            &container.id,
                            Some(
                                bollard::query_parameters::RemoveContainerOptionsBuilder::new()
                                    .force(true)
                                    .build(),
                            ),
                        )
                        .await;
                }
            });
        })
        .join();
    }
}

/// Adds a job image to the busybox context: `sh -c <command>` (`Job.Containerfile`).
pub fn job_containerfile(config: &ConfigDir) {
    std::fs::write(
        config.dir.path().join("ctx/Job.Containerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nENTRYPOINT [\"/bin/busybox\", \"sh\", \"-c\"]\n",
    )
    .unwrap();
}
