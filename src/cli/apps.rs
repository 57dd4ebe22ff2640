//! `tidegate app create|update|get|list|delete` and `tidegate project list`.

use std::time::{Duration, Instant};

use clap::Args;
use http::Method;
use serde_json::{json, Map, Value};

use super::client::{CliError, Client};
use super::show::{print_app, print_list};
use super::table::{self, text};
use super::{AppCommand, Output, ProjectCommand, Target};

/// What runs and how it scales: the flags `create` and `update` share.
#[derive(Args, Debug, Default)]
pub struct SpecFlags {
    /// The program and its arguments, split on spaces (process apps).
    #[arg(long)]
    command: Option<String>,
    /// The image to run (container apps).
    #[arg(long)]
    image: Option<String>,
    /// An environment variable, `NAME=VALUE`; repeat for more.
    #[arg(long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// Environment variables from a file of `NAME=VALUE` lines (`#` comments and blank
    /// lines skipped); `--env` flags win over it.
    #[arg(long, value_name = "FILE")]
    env_from_file: Option<std::path::PathBuf>,
    /// public, project or private.
    #[arg(long)]
    visibility: Option<String>,
    #[arg(long)]
    min_scale: Option<u32>,
    #[arg(long)]
    max_scale: Option<u32>,
    /// Requests per instance at most.
    #[arg(long)]
    concurrency: Option<u32>,
    /// CPUs per instance, e.g. 0.5.
    #[arg(long)]
    cpu: Option<f64>,
    /// Memory per instance, e.g. 512M.
    #[arg(long)]
    memory: Option<String>,
    /// The port the container listens on (container apps).
    #[arg(long)]
    port: Option<u16>,
    /// Return at once instead of waiting for the revision to be ready.
    #[arg(long)]
    no_wait: bool,
    /// How long to wait for the revision.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    wait_timeout: Duration,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    name: String,
    #[arg(long, default_value = "default")]
    project: String,
    #[command(flatten)]
    spec: SpecFlags,
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    name: String,
    /// Remove an environment variable; repeat for more.
    #[arg(long = "env-rm", value_name = "NAME")]
    env_rm: Vec<String>,
    #[command(flatten)]
    spec: SpecFlags,
}

pub async fn run(target: &Target, command: AppCommand) -> Result<(), CliError> {
    let client = Client::resolve(
        target.server.as_deref(),
        target.token.as_deref(),
        &target.config,
    )?;
    match command {
        AppCommand::Create(args) => create(&client, target.output, args).await,
        AppCommand::Update(args) => update(&client, target.output, args).await,
        AppCommand::Get { name } => {
            let app = client
                .call(Method::GET, &app_path(&name), None, None)
                .await?
                .body;
            match target.output {
                Output::Json => print_json(&app),
                Output::Table => print_app(&app),
            }
            Ok(())
        }
        AppCommand::List { project } => {
            let path = match &project {
                Some(project) => format!("/api/v1/apps?project={project}"),
                None => "/api/v1/apps".to_string(),
            };
            let list = client.call(Method::GET, &path, None, None).await?.body;
            match target.output {
                Output::Json => print_json(&list),
                Output::Table => print_list(&list),
            }
            Ok(())
        }
        AppCommand::Delete { name } => {
            client
                .call(Method::DELETE, &app_path(&name), None, None)
                .await?;
            println!("deleted {name}: its instances drain and stop");
            Ok(())
        }
        AppCommand::Logs {
            name,
            instance,
            tail,
            follow,
        } => super::live::logs(&client, &name, instance.as_deref(), tail, follow).await,
        AppCommand::Events { name } => super::live::events(&client, target.output, &name).await,
        AppCommand::Traffic { name, split } => super::live::traffic(&client, &name, &split).await,
    }
}

pub async fn run_project(target: &Target, command: ProjectCommand) -> Result<(), CliError> {
    let client = Client::resolve(
        target.server.as_deref(),
        target.token.as_deref(),
        &target.config,
    )?;
    match command {
        ProjectCommand::List => {
            let list = client
                .call(Method::GET, "/api/v1/projects", None, None)
                .await?
                .body;
            if target.output == Output::Json {
                print_json(&list);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list["projects"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    vec![
                        text(&p["name"]),
                        p["apps"].as_array().map_or(0, Vec::len).to_string(),
                    ]
                })
                .collect();
            table::print(&["NAME", "APPS"], &rows);
            Ok(())
        }
        ProjectCommand::Create { name } => {
            let body = json!({ "name": name });
            let created = client
                .call(Method::POST, "/api/v1/projects", Some(&body), None)
                .await?;
            match target.output {
                Output::Json => print_json(&created.body),
                Output::Table => println!("created project {name}"),
            }
            Ok(())
        }
        ProjectCommand::Get { name } => {
            let path = format!("/api/v1/projects/{name}");
            let project = client.call(Method::GET, &path, None, None).await?.body;
            match target.output {
                Output::Json => print_json(&project),
                Output::Table => {
                    println!("Name:  {}", text(&project["name"]));
                    let apps: Vec<String> = project["apps"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(text)
                        .collect();
                    println!(
                        "Apps:  {}",
                        if apps.is_empty() {
                            "-".to_string()
                        } else {
                            apps.join(", ")
                        }
                    );
                }
            }
            Ok(())
        }
        ProjectCommand::Delete { name } => {
            let path = format!("/api/v1/projects/{name}");
            client.call(Method::DELETE, &path, None, None).await?;
            println!("deleted project {name}");
            Ok(())
        }
    }
}

async fn create(client: &Client, output: Output, args: CreateArgs) -> Result<(), CliError> {
    let flags = &args.spec;
    let container = flags.image.is_some();
    if container == flags.command.is_some() {
        return Err(CliError::Refused(
            "give exactly one of --command (a process app) or --image (a container app)".into(),
        ));
    }
    let mut spec = json!({ "name": args.name, "project": args.project });
    if container {
        spec["runtime"] = json!("container");
    }
    merge(&mut spec, section_patch(flags, container, &[])?);
    let created = client
        .call(Method::POST, "/api/v1/apps", Some(&spec), None)
        .await?;
    let revision = format!("{}-00001", args.name);
    if !flags.no_wait {
        wait_ready(client, &args.name, &revision, flags.wait_timeout).await?;
    }
    match output {
        Output::Json => print_json(&created.body),
        Output::Table => println!("{}", text(&created.body["url"])),
    }
    Ok(())
}

async fn update(client: &Client, output: Output, args: UpdateArgs) -> Result<(), CliError> {
    let before = client
        .call(Method::GET, &app_path(&args.name), None, None)
        .await?;
    let container = before.body["spec"]["runtime"] == "container";
    let patch = section_patch(&args.spec, container, &args.env_rm)?;
    let section = if container { "container" } else { "run" };
    let new_revision = patch.get(section).is_some();
    let old = text(&before.body["status"]["revision"]);
    let updated = client
        .call(
            Method::PATCH,
            &app_path(&args.name),
            Some(&patch),
            before.etag.as_deref(),
        )
        .await?;
    if new_revision && !args.spec.no_wait {
        let revision = next_revision(&args.name, &old);
        wait_ready(client, &args.name, &revision, args.spec.wait_timeout).await?;
        if output == Output::Table {
            println!("{revision}");
        }
    }
    if output == Output::Json {
        print_json(&updated.body);
    }
    Ok(())
}

/// The patch of the spec the flags ask for: the run section (`run` or `container`) and
/// `scale`, plus `visibility`.
fn section_patch(flags: &SpecFlags, container: bool, env_rm: &[String]) -> Result<Value, CliError> {
    let mut section = Map::new();
    if let Some(command) = &flags.command {
        section.insert(
            "command".into(),
            json!(command.split_whitespace().collect::<Vec<_>>()),
        );
    }
    if let Some(image) = &flags.image {
        section.insert("image".into(), json!(image));
    }
    let mut env = Map::new();
    let mut pairs: Vec<String> = Vec::new();
    if let Some(file) = &flags.env_from_file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| CliError::Refused(format!("--env-from-file {}: {e}", file.display())))?;
        pairs.extend(
            text.lines()
                .map(str::trim)
                .filter(|line| !line.is_empty() && !line.starts_with('#'))
                .map(str::to_string),
        );
    }
    pairs.extend(flags.env.iter().cloned());
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
    if !env.is_empty() {
        section.insert("env".into(), Value::Object(env));
    }
    if let Some(cpu) = flags.cpu {
        section.insert("cpu".into(), json!(cpu));
    }
    if let Some(memory) = &flags.memory {
        section.insert("memory".into(), json!(memory));
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
    let mut patch = Map::new();
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

/// Waits until `revision` is the app's ready one, or has failed (then says why).
async fn wait_ready(
    client: &Client,
    name: &str,
    revision: &str,
    timeout: Duration,
) -> Result<(), CliError> {
    let started = Instant::now();
    loop {
        let app = client
            .call(Method::GET, &app_path(name), None, None)
            .await?
            .body;
        if let Some(issues) = app["config_error"].as_array() {
            let issues: Vec<String> = issues.iter().map(text).collect();
            return Err(CliError::Refused(format!(
                "the gateway rejected the file: {}",
                issues.join("; ")
            )));
        }
        let status = &app["status"];
        if status["latest_ready"] == revision {
            return Ok(());
        }
        let failed = status["revisions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| {
                r["name"] == revision
                    && matches!(r["state"].as_str(), Some("failed" | "build-failed"))
            });
        if let Some(failed) = failed {
            return Err(CliError::Refused(format!(
                "revision {revision} failed: {}",
                failed["last_error"].as_str().unwrap_or("(no reason given)")
            )));
        }
        if started.elapsed() > timeout {
            return Err(CliError::Refused(format!(
                "revision {revision} not ready after {}; see `tidegate app get {name}`",
                humantime::format_duration(timeout)
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The revision after `current` (`web-00002` after `web-00001`).
fn next_revision(app: &str, current: &str) -> String {
    let number: u32 = current
        .rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    format!("{app}-{:05}", number + 1)
}

fn app_path(name: &str) -> String {
    format!("/api/v1/apps/{name}")
}

fn merge(into: &mut Value, patch: Value) {
    if let (Value::Object(into), Value::Object(patch)) = (into, patch) {
        into.extend(patch);
    }
}

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}
