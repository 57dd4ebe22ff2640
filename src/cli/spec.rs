//! The flags `app create|update` (and, for what runs, `job create|update`) share, and the
//! patch of the file they make.

use std::time::Duration;

use clap::Args;
use serde_json::{json, Map, Value};

use super::client::{CliError, Client};

/// What runs, for apps and jobs alike: the keys of the run section (`run` or
/// `container`) the flags set.
#[derive(Args, Debug, Default)]
pub struct RunFlags {
    /// The program and its arguments, split on spaces (a process app or job).
    #[arg(long)]
    pub command: Option<String>,
    /// The image to run (a container app or job).
    #[arg(long)]
    pub image: Option<String>,
    /// An environment variable, `NAME=VALUE`; repeat for more.
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Environment variables from a file of `NAME=VALUE` lines (`#` comments and blank
    /// lines skipped); `--env` flags win over it.
    #[arg(long, value_name = "FILE")]
    pub env_from_file: Option<std::path::PathBuf>,
    /// CPUs per instance, e.g. 0.5.
    #[arg(long)]
    pub cpu: Option<f64>,
    /// Memory per instance, e.g. 512M.
    #[arg(long)]
    pub memory: Option<String>,
}

impl RunFlags {
    /// Adds the keys the flags set to a run section; `env_rm` names are removed.
    pub fn fill(
        &self,
        section: &mut Map<String, Value>,
        env_rm: &[String],
    ) -> Result<(), CliError> {
        if let Some(command) = &self.command {
            section.insert(
                "command".into(),
                json!(command.split_whitespace().collect::<Vec<_>>()),
            );
        }
        if let Some(image) = &self.image {
            section.insert("image".into(), json!(image));
        }
        let env = env_patch(&self.env, self.env_from_file.as_deref(), env_rm)?;
        if !env.is_empty() {
            section.insert("env".into(), Value::Object(env));
        }
        if let Some(cpu) = self.cpu {
            section.insert("cpu".into(), json!(cpu));
        }
        if let Some(memory) = &self.memory {
            section.insert("memory".into(), json!(memory));
        }
        Ok(())
    }
}

/// What runs and how it scales: the flags `app create` and `app update` share.
#[derive(Args, Debug, Default)]
pub struct SpecFlags {
    #[command(flatten)]
    pub run: RunFlags,
    /// A local directory uploaded to the gateway: with --command, the process app runs
    /// in it (after --build-command); without, it is a container app built from the
    /// directory's Containerfile/Dockerfile. An unchanged tree makes no new revision.
    #[arg(long, value_name = "DIR")]
    pub build_source: Option<std::path::PathBuf>,
    /// With --build-source and --command: run once per revision before its instances,
    /// e.g. "make release".
    #[arg(long, value_name = "COMMAND")]
    pub build_command: Option<String>,
    /// With --build-source of a container app: the build file inside the directory.
    #[arg(long, value_name = "FILE")]
    pub build_dockerfile: Option<String>,
    /// public, project or private.
    #[arg(long)]
    pub visibility: Option<String>,
    #[arg(long)]
    pub min_scale: Option<u32>,
    #[arg(long)]
    pub max_scale: Option<u32>,
    /// Requests per instance at most.
    #[arg(long)]
    pub concurrency: Option<u32>,
    /// The port the container listens on (container apps).
    #[arg(long)]
    pub port: Option<u16>,
    /// Return at once instead of waiting for the revision to be ready.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for the revision.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub wait_timeout: Duration,
}

/// Uploads `--build-source`, if given; the stored directory's path.
pub async fn upload_source(
    client: &Client,
    app: &str,
    flags: &SpecFlags,
) -> Result<Option<String>, CliError> {
    match &flags.build_source {
        Some(dir) => super::source::upload(client, app, dir).await.map(Some),
        None => Ok(None),
    }
}

/// The patch of the spec the flags ask for: the run section (`run` or `container`),
/// `build` and `scale`, plus `visibility`. `source` is where an uploaded `--build-source`
/// was stored.
pub fn section_patch(
    flags: &SpecFlags,
    container: bool,
    env_rm: &[String],
    source: Option<&str>,
) -> Result<Value, CliError> {
    let mut section = Map::new();
    let mut build = Map::new();
    match (source, container) {
        (Some(source), true) => {
            build.insert("context".into(), json!(source));
            if let Some(file) = &flags.build_dockerfile {
                build.insert("dockerfile".into(), json!(file));
            }
            // A built image replaces a named one.
            section.insert("image".into(), Value::Null);
        }
        (Some(source), false) => {
            section.insert("workdir".into(), json!(source));
        }
        (None, _) => {}
    }
    if let Some(command) = &flags.build_command {
        if container || source.is_none() {
            return Err(CliError::Refused(
                "--build-command needs --build-source and a process app (--command)".into(),
            ));
        }
        build.insert(
            "command".into(),
            json!(command.split_whitespace().collect::<Vec<_>>()),
        );
    }
    flags.run.fill(&mut section, env_rm)?;
    let mut patch = Map::new();
    if !build.is_empty() {
        patch.insert("build".into(), Value::Object(build));
    } else if flags.run.image.is_some() {
        // A named image replaces a built one.
        patch.insert("build".into(), Value::Null);
    }
    if let Some(port) = flags.port {
        section.insert("port".into(), json!(port));
    }
    let mut scale = Map::new();
    for (key, value) in [
        ("min_scale", flags.min_scale),
        ("max_scale", flags.max_scale),
        ("concurrency", flags.concurrency),
    ] {
        if let Some(value) = value {
            scale.insert(key.into(), json!(value));
        }
    }
    if !section.is_empty() {
        patch.insert(
            if container { "container" } else { "run" }.into(),
            Value::Object(section),
        );
    }
    if !scale.is_empty() {
        patch.insert("scale".into(), Value::Object(scale));
    }
    if let Some(visibility) = &flags.visibility {
        patch.insert("visibility".into(), json!(visibility));
    }
    Ok(Value::Object(patch))
}

/// The `env` member of a patch: `--env-from-file` lines, then `--env NAME=VALUE` pairs
/// (which win), and `null` for each `--env-rm` name.
pub fn env_patch(
    pairs_given: &[String],
    from_file: Option<&std::path::Path>,
    env_rm: &[String],
) -> Result<Map<String, Value>, CliError> {
    let mut env = Map::new();
    let mut pairs: Vec<String> = Vec::new();
    if let Some(file) = from_file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| CliError::Refused(format!("--env-from-file {}: {e}", file.display())))?;
        pairs.extend(
            text.lines()
                .map(str::trim)
                .filter(|line| !line.is_empty() && !line.starts_with('#'))
                .map(str::to_string),
        );
    }
    pairs.extend(pairs_given.iter().cloned());
    for pair in &pairs {
        let Some((name, value)) = pair.split_once('=') else {
            return Err(CliError::Refused(format!(
                "--env {pair}: expected NAME=VALUE"
            )));
        };
        env.insert(name.into(), json!(value));
    }
    for name in env_rm {
        env.insert(name.clone(), Value::Null);
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_source_replaces_the_image_and_a_named_image_replaces_the_build() {
        let flags = SpecFlags {
            build_dockerfile: Some("Dockerfile.prod".into()),
            ..SpecFlags::default()
        };
        let patch = section_patch(&flags, true, &[], Some("/state/sources/api/ab12")).unwrap();
        assert_eq!(
            patch,
            json!({
                "build": {"context": "/state/sources/api/ab12", "dockerfile": "Dockerfile.prod"},
                "container": {"image": null}
            })
        );
        let flags = SpecFlags {
            run: RunFlags {
                image: Some("registry/api:2".into()),
                ..RunFlags::default()
            },
            ..SpecFlags::default()
        };
        let patch = section_patch(&flags, true, &[], None).unwrap();
        assert_eq!(
            patch,
            json!({"build": null, "container": {"image": "registry/api:2"}})
        );
    }

    #[test]
    fn a_process_source_is_the_workdir_and_its_build_command_the_build() {
        let flags = SpecFlags {
            run: RunFlags {
                command: Some("./bin/api --fast".into()),
                ..RunFlags::default()
            },
            build_command: Some("make release".into()),
            ..SpecFlags::default()
        };
        let patch = section_patch(&flags, false, &[], Some("/s/api/cd34")).unwrap();
        assert_eq!(
            patch,
            json!({
                "build": {"command": ["make", "release"]},
                "run": {"command": ["./bin/api", "--fast"], "workdir": "/s/api/cd34"}
            })
        );
        let refused = section_patch(&flags, false, &[], None).unwrap_err();
        assert!(refused.to_string().contains("--build-source"), "{refused}");
    }
}
