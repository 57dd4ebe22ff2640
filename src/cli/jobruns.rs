//! `tidegate jobrun submit|resubmit|get|list|delete|logs`: job runs through the API.

use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use http::Method;
use serde_json::{json, Value};

use super::client::{CliError, Client};
use super::spec::env_patch;
use super::table::{self, text};
use super::{confirm, filtered, print_json, show, Output, Target};

/// `tidegate jobrun ...`
#[derive(Subcommand, Debug)]
pub enum JobRunCommand {
    /// Start a run of a job; prints its name (with --wait, once it has finished).
    Submit(SubmitArgs),
    /// Run a run's job again with the settings that run had.
    Resubmit {
        name: String,
        #[command(flatten)]
        wait: WaitFlags,
    },
    /// A run's state, and each index's state, attempts and exit codes.
    Get { name: String },
    /// Every run (of one job), newest first.
    List {
        #[arg(long)]
        job: Option<String>,
    },
    /// Cancel a running run (its record is kept), or delete a finished one and its logs.
    /// Asks first on a terminal; elsewhere needs --force.
    Delete {
        name: String,
        #[arg(short, long)]
        force: bool,
    },
    /// What a run's instances wrote: every index's last attempt, or one index's.
    Logs {
        name: String,
        #[arg(long)]
        index: Option<u32>,
        /// That attempt of --index (default: its last).
        #[arg(long, requires = "index")]
        attempt: Option<u32>,
        #[arg(long)]
        tail: Option<usize>,
        /// Keep printing until the run ends.
        #[arg(short, long)]
        follow: bool,
    },
}

#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// The job to run.
    #[arg(long)]
    job: String,
    /// This run's indices instead of the job's, e.g. "0-9,15".
    #[arg(long)]
    array_indices: Option<String>,
    /// An extra environment variable for this run, `NAME=VALUE`; repeat for more.
    #[arg(long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
    #[arg(long)]
    retry_limit: Option<i64>,
    /// e.g. 30m.
    #[arg(long)]
    max_execution_time: Option<String>,
    #[arg(long)]
    max_parallel: Option<i64>,
    #[command(flatten)]
    wait: WaitFlags,
}

#[derive(Args, Debug)]
pub struct WaitFlags {
    /// Wait until the run has finished; exit 1 unless it succeeded.
    #[arg(long)]
    wait: bool,
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    wait_timeout: Duration,
}

pub async fn run(target: &Target, command: JobRunCommand) -> Result<(), CliError> {
    let client = Client::from_target(target)?;
    match command {
        JobRunCommand::Submit(args) => {
            let mut body = json!({ "job": args.job });
            let env = env_patch(&args.env, None, &[])?;
            if !env.is_empty() {
                body["env"] = Value::Object(env);
            }
            for (key, value) in [
                ("array_indices", args.array_indices.map(Value::from)),
                ("retry_limit", args.retry_limit.map(Value::from)),
                (
                    "max_execution_time",
                    args.max_execution_time.map(Value::from),
                ),
                ("max_parallel", args.max_parallel.map(Value::from)),
            ] {
                if let Some(value) = value {
                    body[key] = value;
                }
            }
            let run = client
                .call(Method::POST, "/api/v1/jobruns", Some(&body), None)
                .await?
                .body;
            started(&client, target.output, &run, &args.wait).await
        }
        JobRunCommand::Resubmit { name, wait } => {
            let path = format!("{}/resubmit", run_path(&name));
            let run = client.call(Method::POST, &path, None, None).await?.body;
            started(&client, target.output, &run, &wait).await
        }
        JobRunCommand::Get { name } => {
            show(&client, target.output, &run_path(&name), print_run).await
        }
        JobRunCommand::List { job } => {
            let path = filtered("/api/v1/jobruns", "job", job.as_deref());
            show(&client, target.output, &path, |list| {
                print_runs(&list["jobruns"])
            })
            .await
        }
        JobRunCommand::Delete { name, force } => {
            if !force {
                confirm(&format!(
                    "Delete job run {name} (a running one is cancelled)?"
                ))?;
            }
            let answer = client
                .call(Method::DELETE, &run_path(&name), None, None)
                .await?
                .body;
            match answer["state"].as_str() {
                Some(state) => println!("{name} {state}: its instances stopped"),
                None => println!("deleted {name} and its logs"),
            }
            Ok(())
        }
        JobRunCommand::Logs {
            name,
            index,
            attempt,
            tail,
            follow,
        } => {
            let mut query = Vec::new();
            if let Some(index) = index {
                query.push(format!("index={index}"));
            }
            if let Some(attempt) = attempt {
                query.push(format!("attempt={attempt}"));
            }
            if let Some(tail) = tail {
                query.push(format!("tail={tail}"));
            }
            if follow {
                query.push("follow=true".into());
            }
            let path = format!("{}/logs?{}", run_path(&name), query.join("&"));
            if follow {
                return client.stream(&path).await;
            }
            let answer = client.call(Method::GET, &path, None, None).await?;
            print!("{}", answer.text);
            Ok(())
        }
    }
}

/// After a submit: the run's name, or with `--wait` its end.
async fn started(
    client: &Client,
    output: Output,
    run: &Value,
    wait: &WaitFlags,
) -> Result<(), CliError> {
    let name = text(&run["name"]);
    if !wait.wait {
        match output {
            Output::Json => print_json(run),
            Output::Table => println!("{name}"),
        }
        return Ok(());
    }
    let began = Instant::now();
    let path = run_path(&name);
    let run = loop {
        let run = client.call(Method::GET, &path, None, None).await?.body;
        if !matches!(run["state"].as_str(), Some("pending" | "running")) {
            break run;
        }
        if began.elapsed() > wait.wait_timeout {
            return Err(CliError::Refused(format!(
                "{name} still runs after {}; see `tidegate jobrun get {name}`",
                humantime::format_duration(wait.wait_timeout)
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    match output {
        Output::Json => print_json(&run),
        Output::Table => println!("{name} {}: {}", text(&run["state"]), counts(&run)),
    }
    if run["state"] == "succeeded" {
        Ok(())
    } else {
        Err(CliError::Refused(format!(
            "{name} {}; see `tidegate jobrun get {name}` and `tidegate jobrun logs {name}`",
            text(&run["state"])
        )))
    }
}

/// `9 succeeded, 1 failed`.
fn counts(run: &Value) -> String {
    let counts: Vec<String> = run["counts"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(state, n)| format!("{n} {state}"))
        .collect();
    counts.join(", ")
}

/// A table of runs (newest first, as the API lists them).
pub fn print_runs(runs: &Value) {
    let rows: Vec<Vec<String>> = runs
        .as_array()
        .into_iter()
        .flatten()
        .map(|run| {
            vec![
                text(&run["name"]),
                text(&run["job"]),
                text(&run["state"]),
                format!(
                    "{}/{}",
                    run["counts"]["succeeded"].as_u64().unwrap_or(0),
                    text(&run["array_size"])
                ),
                text(&run["submitted_at"]),
                text(&run["finished_at"]),
            ]
        })
        .collect();
    table::print(
        &["NAME", "JOB", "STATE", "SUCCEEDED", "SUBMITTED", "FINISHED"],
        &rows,
    );
}

fn print_run(run: &Value) {
    println!("Name:       {}", text(&run["name"]));
    println!("Job:        {}", text(&run["job"]));
    println!("Project:    {}", text(&run["project"]));
    println!("State:      {}", text(&run["state"]));
    println!(
        "Indices:    {} ({})",
        text(&run["settings"]["array_indices"]),
        counts(run)
    );
    println!("Submitted:  {}", text(&run["submitted_at"]));
    println!("Started:    {}", text(&run["started_at"]));
    println!("Finished:   {}", text(&run["finished_at"]));
    if !run["message"].is_null() {
        println!("Message:    {}", text(&run["message"]));
    }
    println!();
    let rows: Vec<Vec<String>> = run["indices"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|index| {
            let attempts = index["attempts"].as_array().cloned().unwrap_or_default();
            let last = attempts.last().cloned().unwrap_or(Value::Null);
            vec![
                text(&index["index"]),
                text(&index["state"]),
                attempts.len().to_string(),
                text(&last["exit_code"]),
                text(&last["reason"]),
            ]
        })
        .collect();
    table::print(
        &["INDEX", "STATE", "ATTEMPTS", "EXIT", "LAST REASON"],
        &rows,
    );
}

fn run_path(name: &str) -> String {
    format!("/api/v1/jobruns/{name}")
}
