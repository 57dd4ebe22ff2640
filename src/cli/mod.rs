//! The `tidegate app|revision|project|job|jobrun` commands: a client of the management API
//! (docs/cli.md).
//!
//! Exit codes: 0 done, 1 refused by the server (its message on stderr) or unreachable,
//! 2 a usage error (clap's).

mod apps;
mod client;
mod jobruns;
mod jobs;
mod live;
mod show;
mod source;
mod spec;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};

pub use client::{CliError, Client};
pub use jobruns::JobRunCommand;
pub use jobs::JobCommand;

/// Where the API is and how to print answers; shared by every API command.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// The management API, `HOST:PORT` (default: the admin address of `--config`).
    #[arg(long, env = "TIDEGATE_SERVER", global = true)]
    pub server: Option<String>,
    /// The API token (default: the local gateway's token file).
    #[arg(long, env = "TIDEGATE_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// The local gateway file, for the default server and token.
    #[arg(long, default_value = "config/tidegate.toml", global = true)]
    pub config: PathBuf,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// `tidegate app ...`
#[derive(Subcommand, Debug)]
pub enum AppCommand {
    /// Create an app; waits until its first revision is ready and prints its URL.
    Create(apps::CreateArgs),
    /// Change an app; a change of what runs makes a new revision, which it waits for.
    Update(apps::UpdateArgs),
    /// An app's URL, status, revisions, traffic and instances.
    Get { name: String },
    /// Every app (of one project).
    List {
        #[arg(long)]
        project: Option<String>,
    },
    /// Delete an app: its instances drain and stop, its file goes. Asks first on a
    /// terminal; elsewhere needs --force.
    Delete {
        name: String,
        /// Delete without asking.
        #[arg(short, long)]
        force: bool,
    },
    /// The app's output: every instance's, or one's.
    Logs {
        name: String,
        /// Only this instance (see `app get`).
        #[arg(long)]
        instance: Option<String>,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<usize>,
        /// Keep printing what the instances write, until interrupted.
        #[arg(short, long)]
        follow: bool,
    },
    /// What happened to the app: revisions created, ready or failed, scaling, crashes,
    /// rejected config.
    Events { name: String },
    /// Split the app's traffic: `REVISION=PERCENT[,TAG]`..., REVISION may be `latest`.
    Traffic {
        name: String,
        #[arg(required = true)]
        split: Vec<String>,
    },
}

/// `tidegate revision ...`
#[derive(Subcommand, Debug)]
pub enum RevisionCommand {
    /// The revisions of an app, newest first, with state and traffic.
    List {
        #[arg(long)]
        app: String,
    },
    /// One revision, e.g. `web-00002`.
    Get { name: String },
}

/// `tidegate project ...`
#[derive(Subcommand, Debug)]
pub enum ProjectCommand {
    /// Every project and its apps.
    List,
    /// Create a project for apps to be created in.
    Create { name: String },
    /// A project and its apps.
    Get { name: String },
    /// Delete an empty project.
    Delete { name: String },
}

/// Runs an app command and maps the outcome to the exit code.
pub async fn run_app(target: &Target, command: AppCommand) -> ExitCode {
    exit(apps::run(target, command).await)
}

/// Runs a revision command.
pub async fn run_revision(target: &Target, command: RevisionCommand) -> ExitCode {
    let result = async {
        let client = Client::resolve(
            target.server.as_deref(),
            target.token.as_deref(),
            &target.config,
        )?;
        live::revision(&client, target.output, command).await
    };
    exit(result.await)
}

/// Runs a project command.
pub async fn run_project(target: &Target, command: ProjectCommand) -> ExitCode {
    exit(apps::run_project(target, command).await)
}

fn exit(result: Result<(), CliError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tidegate: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a job command.
pub async fn run_job(target: &Target, command: JobCommand) -> ExitCode {
    exit(jobs::run(target, command).await)
}

/// Runs a job run command.
pub async fn run_jobrun(target: &Target, command: JobRunCommand) -> ExitCode {
    exit(jobruns::run(target, command).await)
}

/// Asks `question` on the terminal; without one (a script), refuses: a deletion there
/// must say `--force`.
fn confirm(question: &str) -> Result<(), CliError> {
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(CliError::Refused(
            "not deleting without a terminal to ask on: pass --force".into(),
        ));
    }
    print!("{question} [y/N] ");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    let _ = stdin.lock().read_line(&mut answer);
    match answer.trim() {
        "y" | "Y" | "yes" => Ok(()),
        _ => Err(CliError::Refused("not deleted".into())),
    }
}

/// Adds `patch`'s members to `into` (both JSON objects).
fn merge(into: &mut serde_json::Value, patch: serde_json::Value) {
    if let (serde_json::Value::Object(into), serde_json::Value::Object(patch)) = (into, patch) {
        into.extend(patch);
    }
}

fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// `GET path`, printed as JSON or, by default, as `table` prints it.
async fn show(
    client: &Client,
    output: Output,
    path: &str,
    table: fn(&serde_json::Value),
) -> Result<(), CliError> {
    let answer = client.call(http::Method::GET, path, None, None).await?.body;
    match output {
        Output::Json => print_json(&answer),
        Output::Table => table(&answer),
    }
    Ok(())
}

/// `base`, filtered by `key` if a value is given: `/api/v1/apps?project=shop`.
fn filtered(base: &str, key: &str, value: Option<&str>) -> String {
    match value {
        Some(value) => format!("{base}?{key}={value}"),
        None => base.to_string(),
    }
}
