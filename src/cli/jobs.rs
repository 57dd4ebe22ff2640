//! `tidegate job create|update|get|list|delete`: job definitions through the API.

use clap::{Args, Subcommand};
use http::Method;
use serde_json::{json, Map, Value};

use super::client::{CliError, Client};
use super::spec::RunFlags;
use super::table::{self, text};
use super::{confirm, filtered, merge, print_json, show, Output, Target};

/// `tidegate job ...`
#[derive(Subcommand, Debug)]
pub enum JobCommand {
    /// Create a job: what each index runs, and how runs go.
    Create(JobCreateArgs),
    /// Change a job; runs started afterwards use the change.
    Update(JobUpdateArgs),
    /// A job's definition and its runs.
    Get { name: String },
    /// Every job (of one project).
    List {
        #[arg(long)]
        project: Option<String>,
    },
    /// Delete a job: its running runs are cancelled, its records kept until pruned. Asks
    /// first on a terminal; elsewhere needs --force.
    Delete {
        name: String,
        #[arg(short, long)]
        force: bool,
    },
}

/// The flags `job create` and `job update` share.
#[derive(Args, Debug, Default)]
pub struct JobFlags {
    #[command(flatten)]
    run: RunFlags,
    /// Indices of a run, e.g. "0-9,15".
    #[arg(long)]
    array_indices: Option<String>,
    /// Retries of a failed index.
    #[arg(long)]
    retry_limit: Option<i64>,
    /// Time limit of one attempt, e.g. 30m.
    #[arg(long)]
    max_execution_time: Option<String>,
    /// Instances of one run at once.
    #[arg(long)]
    max_parallel: Option<i64>,
    /// Cron expression: a run at each tick, e.g. "*/5 * * * *".
    #[arg(long)]
    schedule: Option<String>,
    /// The schedule's time zone, e.g. Europe/Berlin.
    #[arg(long)]
    timezone: Option<String>,
    /// forbid (skip a tick while the last scheduled run runs) or allow.
    #[arg(long)]
    concurrency_policy: Option<String>,
}

#[derive(Args, Debug)]
pub struct JobCreateArgs {
    name: String,
    #[arg(long, default_value = "default")]
    project: String,
    #[command(flatten)]
    flags: JobFlags,
}

#[derive(Args, Debug)]
pub struct JobUpdateArgs {
    name: String,
    /// Remove an environment variable; repeat for more.
    #[arg(long = "env-rm", value_name = "NAME")]
    env_rm: Vec<String>,
    #[command(flatten)]
    flags: JobFlags,
}

pub async fn run(target: &Target, command: JobCommand) -> Result<(), CliError> {
    let client = Client::from_target(target)?;
    match command {
        JobCommand::Create(args) => {
            let flags = &args.flags;
            let container = flags.run.image.is_some();
            if container == flags.run.command.is_some() {
                return Err(CliError::Refused(
                    "give exactly one of --command (a process job) or --image (a container job)"
                        .into(),
                ));
            }
            let mut spec = json!({ "name": args.name, "project": args.project });
            if container {
                spec["runtime"] = json!("container");
            }
            merge(&mut spec, job_patch(flags, container, &[])?);
            let created = client
                .call(Method::POST, "/api/v1/jobs", Some(&spec), None)
                .await?;
            match target.output {
                Output::Json => print_json(&created.body),
                Output::Table => println!("created job {}", args.name),
            }
            Ok(())
        }
        JobCommand::Update(args) => {
            let path = job_path(&args.name);
            let before = client.call(Method::GET, &path, None, None).await?;
            let container = before.body["spec"]["runtime"] == "container";
            let patch = job_patch(&args.flags, container, &args.env_rm)?;
            let updated = client
                .call(Method::PATCH, &path, Some(&patch), before.etag.as_deref())
                .await?;
            match target.output {
                Output::Json => print_json(&updated.body),
                Output::Table => println!("updated job {}", args.name),
            }
            Ok(())
        }
        JobCommand::Get { name } => show(&client, target.output, &job_path(&name), print_job).await,
        JobCommand::List { project } => {
            let path = filtered("/api/v1/jobs", "project", project.as_deref());
            show(&client, target.output, &path, print_jobs).await
        }
        JobCommand::Delete { name, force } => {
            if !force {
                confirm(&format!(
                    "Delete job {name}: its running runs are cancelled?"
                ))?;
            }
            client
                .call(Method::DELETE, &job_path(&name), None, None)
                .await?;
            println!("deleted job {name}");
            Ok(())
        }
    }
}

/// The patch of the job file the flags ask for.
fn job_patch(flags: &JobFlags, container: bool, env_rm: &[String]) -> Result<Value, CliError> {
    let mut section = Map::new();
    flags.run.fill(&mut section, env_rm)?;
    let mut patch = Map::new();
    if !section.is_empty() {
        let table = if container { "container" } else { "run" };
        patch.insert(table.into(), Value::Object(section));
    }
    for (key, value) in [
        (
            "array_indices",
            flags.array_indices.clone().map(Value::from),
        ),
        ("retry_limit", flags.retry_limit.map(Value::from)),
        (
            "max_execution_time",
            flags.max_execution_time.clone().map(Value::from),
        ),
        ("max_parallel", flags.max_parallel.map(Value::from)),
        ("schedule", flags.schedule.clone().map(Value::from)),
        ("timezone", flags.timezone.clone().map(Value::from)),
        (
            "concurrency_policy",
            flags.concurrency_policy.clone().map(Value::from),
        ),
    ] {
        if let Some(value) = value {
            patch.insert(key.into(), value);
        }
    }
    Ok(Value::Object(patch))
}

/// The jobs of a listing as a table, with each one's last run.
fn print_jobs(list: &Value) {
    let rows: Vec<Vec<String>> = list["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|job| {
            let last = &job["runs"][0];
            vec![
                text(&job["name"]),
                text(&job["project"]),
                text(&job["array_size"]),
                text(&job["schedule"]["cron"]),
                text(&last["name"]),
                text(&last["state"]),
            ]
        })
        .collect();
    table::print(
        &[
            "NAME", "PROJECT", "INDICES", "SCHEDULE", "LAST RUN", "STATE",
        ],
        &rows,
    );
}

fn print_job(job: &Value) {
    let spec = &job["spec"];
    let field = |key: &str, default: &str| match &spec[key] {
        Value::Null => default.to_string(),
        value => text(value),
    };
    println!("Name:                {}", text(&job["name"]));
    println!("Project:             {}", text(&job["project"]));
    println!("File:                {}", text(&job["file"]));
    println!("Array indices:       {}", field("array_indices", "0"));
    println!("Retry limit:         {}", field("retry_limit", "3"));
    println!(
        "Max execution time:  {}",
        field("max_execution_time", "7200s")
    );
    println!("Max parallel:        {}", field("max_parallel", "all"));
    println!("Schedule:            {}", field("schedule", "-"));
    if let Some(issues) = job["config_error"].as_array() {
        let issues: Vec<String> = issues.iter().map(text).collect();
        println!("Config error:        {}", issues.join("; "));
    }
    println!();
    println!("Runs:");
    super::jobruns::print_runs(&job["runs"]);
}

fn job_path(name: &str) -> String {
    format!("/api/v1/jobs/{name}")
}
