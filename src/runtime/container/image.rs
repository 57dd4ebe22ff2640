//! A revision's image: built from its `[build]` context through the engine's build endpoint,
//! or checked and pulled per `pull`. Both write to the revision's build log.

use std::path::Path;

use bollard::errors::Error as EngineError;
use bollard::query_parameters::{BuildImageOptionsBuilder, CreateImageOptionsBuilder};
use bollard::Docker;
use futures_util::StreamExt;

use super::{is_not_found, ContainerBackend};
use crate::config::{ContainerSpec, PullPolicy};
use crate::runtime::logs::BuildLog;
use crate::runtime::PrepareRequest;

impl ContainerBackend {
    pub(super) async fn build_image(
        &self,
        docker: &Docker,
        request: &PrepareRequest,
        spec: &ContainerSpec,
        log: &mut BuildLog,
    ) -> Result<String, String> {
        let build = spec.build.as_ref().expect("checked by the caller");
        // Always built: a tag of the same name may come from another gateway, or from before
        // a restart that reused the revision number (the controller builds a revision once).
        let tag = format!("tidegate/{}:{}", request.app.name, request.revision);
        let dockerfile = match &build.dockerfile {
            Some(file) => file.clone(),
            None if build.context.join("Containerfile").is_file() => "Containerfile".into(),
            None => "Dockerfile".into(),
        };
        log.write(&format!(
            "building {tag} from {} ({dockerfile})",
            build.context.display()
        ));
        let context = build.context.clone();
        let archive = tokio::task::spawn_blocking(move || tar_directory(&context))
            .await
            .map_err(|e| format!("packing the build context failed: {e}"))?
            .map_err(|e| format!("cannot pack {}: {e}", build.context.display()))?;
        let options = BuildImageOptionsBuilder::default()
            .dockerfile(&dockerfile)
            .t(&tag)
            .rm(true)
            .build();
        let mut stream =
            docker.build_image(options, None, Some(bollard::body_full(archive.into())));
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(text) = info.stream {
                        let text = text.trim_end();
                        if !text.is_empty() {
                            log.write(text);
                        }
                    }
                }
                Err(error) => {
                    let message = match error {
                        EngineError::DockerStreamError { error } => error.trim().to_string(),
                        other => other.to_string(),
                    };
                    log.write(&format!("build failed: {message}"));
                    return Err(format!("image build failed: {message}"));
                }
            }
        }
        let Some(id) = docker
            .inspect_image(&tag)
            .await
            .ok()
            .and_then(|image| image.id)
        else {
            log.write("build ended without producing the image");
            return Err(format!("image build did not produce {tag}"));
        };
        log.write(&format!("built {tag} ({id})"));
        // Instances run the image by its id: the tag may move (another gateway building an
        // app of the same name on the same engine), the id does not.
        Ok(id)
    }

    pub(super) async fn ensure_image(
        &self,
        docker: &Docker,
        image: &str,
        pull: PullPolicy,
        log: &mut BuildLog,
    ) -> Result<(), String> {
        let present = match docker.inspect_image(image).await {
            Ok(_) => true,
            Err(error) if is_not_found(&error) => false,
            Err(error) => return Err(format!("cannot look up image {image}: {error}")),
        };
        match (pull, present) {
            (PullPolicy::Never, true) | (PullPolicy::Missing, true) => {
                log.write(&format!("{image} is on the engine; not pulling it"));
                return Ok(());
            }
            (PullPolicy::Never, false) => {
                return Err(format!(
                    "image {image} is not on the engine and pull = \"never\""
                ))
            }
            _ => {}
        }
        log.write(&format!("pulling {image}"));
        let options = CreateImageOptionsBuilder::new().from_image(image).build();
        let mut stream = docker.create_image(Some(options), None, None);
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(status) = info.status {
                        log.write(&status);
                    }
                }
                Err(error) => {
                    log.write(&format!("pull failed: {error}"));
                    return Err(format!("cannot pull {image}: {error}"));
                }
            }
        }
        Ok(())
    }
}

/// Packs a directory into an in-memory tar archive (the engine's build context).
fn tar_directory(dir: &Path) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    // Links are archived as links, as Docker does: never what they point at outside the
    // context.
    builder.follow_symlinks(false);
    builder.append_dir_all(".", dir)?;
    builder.into_inner()
}
