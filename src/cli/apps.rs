//! `tidegate app create|update|get|list|delete` and `tidegate project list`.

use std::time::{Duration, Instant};

use clap::Args;
use http::Method;
use serde_json::json;

use super::client::{CliError, Client};
use super::show::{print_app, print_list};
use super::spec::{section_patch, upload_source, SpecFlags};
use super::table::{self, text};
use super::{
    confirm, filtered, merge, print_json, show, AppCommand, Output, ProjectCommand, Target,
};

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
        AppCommand::Get { name } => show(&client, target.output, &app_path(&name), print_app).await,
        AppCommand::List { project } => {
            let path = filtered("/api/v1/apps", "project", project.as_deref());
            show(&client, target.output, &path, print_list).await
        }
        AppCommand::Delete { name, force } => {
            if !force {
                confirm(&format!(
                    "Delete app {name}: its instances stop, its file and revisions go?"
                ))?;
            }
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
    let (command, image) = (flags.run.command.is_some(), flags.run.image.is_some());
    let container = image || !command;
    if image == (command || flags.build_source.is_some()) {
        return Err(CliError::Refused(
            "give --command (a process app, optionally with --build-source), --image or --build-source alone (a container app)".into(),
        ));
    }
    let mut spec = json!({ "name": args.name, "project": args.project });
    if container {
        spec["runtime"] = json!("container");
    }
    if flags.build_source.is_some() {
        // Refused before the upload rather than after it.
        let project = format!("/api/v1/projects/{}", args.project);
        client.call(Method::GET, &project, None, None).await?;
    }
    let source = upload_source(client, &args.name, flags).await?;
    merge(
        &mut spec,
        section_patch(flags, container, &[], source.as_deref())?,
    );
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
    let source = upload_source(client, &args.name, &args.spec).await?;
    let patch = section_patch(&args.spec, container, &args.env_rm, source.as_deref())?;
    let section = if container { "container" } else { "run" };
    let old = text(&before.body["status"]["revision"]);
    let updated = client
        .call(
            Method::PATCH,
            &app_path(&args.name),
            Some(&patch),
            before.etag.as_deref(),
        )
        .await?;
    // What runs changed (not only scale or visibility): a new revision rolls out.
    let new_revision = [section, "build"]
        .iter()
        .any(|key| updated.body["spec"][key] != before.body["spec"][key]);
    if !new_revision && output == Output::Table {
        println!("{old} (what runs is unchanged: no new revision)");
    }
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
