//! The `tidegate` command: `serve`, `check`, `certs`, `demo-app`, and the API client commands
//! `app`, `revision`, `project`, `job` and `jobrun` (`cli`). Parsing, logging and signals live
//! here; everything else is the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tidegate::demo_app::{self, DemoOptions};
use tidegate::Gateway;
use tokio::signal::unix::{signal, SignalKind};

#[derive(Parser)]
#[command(name = "tidegate", version, about = "A scale-to-zero HTTP gateway")]
struct Cli {
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

// Parsed once per run: the size of its largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// The gateway config file.
        #[arg(long, default_value = "config/tidegate.toml")]
        config: PathBuf,
    },
    /// Validate a config (the gateway file and every app file) and exit.
    Check {
        #[arg(long, default_value = "config/tidegate.toml")]
        config: PathBuf,
    },
    /// Certificates: `certs dev` writes a self-signed development certificate.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Apps through the management API: create, update, get, list, delete.
    App {
        #[command(flatten)]
        target: tidegate::cli::Target,
        #[command(subcommand)]
        command: tidegate::cli::AppCommand,
    },
    /// Revisions through the management API.
    Revision {
        #[command(flatten)]
        target: tidegate::cli::Target,
        #[command(subcommand)]
        command: tidegate::cli::RevisionCommand,
    },
    /// Jobs through the management API: create, update, get, list, delete.
    Job {
        #[command(flatten)]
        target: tidegate::cli::Target,
        #[command(subcommand)]
        command: tidegate::cli::JobCommand,
    },
    /// Job runs through the management API: submit, resubmit, get, list, delete, logs.
    Jobrun {
        #[command(flatten)]
        target: tidegate::cli::Target,
        #[command(subcommand)]
        command: tidegate::cli::JobRunCommand,
    },
    /// Print a shell completion script: `tidegate completion bash > /etc/bash_completion.d/tidegate`.
    Completion { shell: clap_complete::Shell },
    /// Projects through the management API.
    Project {
        #[command(flatten)]
        target: tidegate::cli::Target,
        #[command(subcommand)]
        command: tidegate::cli::ProjectCommand,
    },
    /// Run the built-in demo app.
    DemoApp {
        /// Port to listen on (default: $PORT, else any free port).
        #[arg(long)]
        port: Option<u16>,
        /// Wait this many milliseconds before listening (default: $STARTUP_DELAY_MS or 0).
        #[arg(long, env = "STARTUP_DELAY_MS", default_value_t = 0)]
        startup_delay_ms: u64,
        /// Address to listen on (default 127.0.0.1; 0.0.0.0 in a pod).
        #[arg(long)]
        host: Option<std::net::IpAddr>,
    },
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Write dev.crt and dev.key for the domain, *.domain and *.<project>.domain into the
    /// config's certs directory.
    Dev {
        #[arg(long, default_value = "config/tidegate.toml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve { config } => serve(config, cli.log_format).await,
            Command::Check { config } => check(config),
            Command::Certs {
                command: CertsCommand::Dev { config },
            } => certs_dev(config),
            Command::DemoApp {
                port,
                startup_delay_ms,
                host,
            } => demo(port, startup_delay_ms, host).await,
            Command::App { target, command } => Ok(tidegate::cli::run_app(&target, command).await),
            Command::Revision { target, command } => {
                Ok(tidegate::cli::run_revision(&target, command).await)
            }
            Command::Completion { shell } => {
                use clap::CommandFactory;
                let mut command = Cli::command();
                clap_complete::generate(shell, &mut command, "tidegate", &mut std::io::stdout());
                Ok(ExitCode::SUCCESS)
            }
            Command::Project { target, command } => {
                Ok(tidegate::cli::run_project(&target, command).await)
            }
            Command::Job { target, command } => Ok(tidegate::cli::run_job(&target, command).await),
            Command::Jobrun { target, command } => {
                Ok(tidegate::cli::run_jobrun(&target, command).await)
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("tidegate: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: PathBuf, log_format: LogFormat) -> anyhow::Result<ExitCode> {
    let loaded = tidegate::config::load_tolerant(&config, None)
        .map_err(|errors| anyhow::anyhow!("invalid configuration:\n{errors}"))?;
    let handle = Gateway::builder(loaded)
        .config_file(&config)
        .log_json(matches!(log_format, LogFormat::Json))
        .start()
        .await?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reloading config, reopening the access log");
                handle.reopen_logs();
                let _ = handle.reload().await;
            }
        }
    }
    tracing::info!(
        "shutting down: finishing in-flight requests (send the signal again to stop now)"
    );
    tokio::select! {
        _ = handle.shutdown() => Ok(ExitCode::SUCCESS),
        _ = terminate.recv() => Ok(stop_now()),
        _ = interrupt.recv() => Ok(stop_now()),
    }
}

/// A second signal during the drain: give up on it. Instances still die with the gateway
/// (parent-death signal), so nothing is left behind.
fn stop_now() -> ExitCode {
    tracing::warn!("second signal: stopping without waiting for in-flight requests");
    ExitCode::FAILURE
}

fn check(config: PathBuf) -> anyhow::Result<ExitCode> {
    match tidegate::config::load(&config) {
        Ok(loaded) => {
            println!(
                "{}: ok ({} apps, {} jobs)",
                config.display(),
                loaded.apps.len(),
                loaded.jobs.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            for issue in &errors.0 {
                eprintln!("{issue}");
            }
            eprintln!("{}: {} problem(s)", config.display(), errors.0.len());
            Ok(ExitCode::FAILURE)
        }
    }
}

fn certs_dev(config: PathBuf) -> anyhow::Result<ExitCode> {
    let loaded = tidegate::config::load(&config).map_err(|errors| anyhow::anyhow!("{errors}"))?;
    let Some(tls) = &loaded.gateway.tls else {
        anyhow::bail!(
            "{}: no [tls] table, so no certs_dir to write to",
            config.display()
        );
    };
    let (file, names) = tidegate::tls::dev::write_dev_cert(&loaded, &tls.certs_dir)
        .map_err(|error| anyhow::anyhow!(error))?;
    println!("wrote {} for {}", file.display(), names.join(", "));
    println!(
        "self-signed: pass --cacert {} (or -k) to curl",
        file.display()
    );
    Ok(ExitCode::SUCCESS)
}

async fn demo(
    port: Option<u16>,
    startup_delay_ms: u64,
    host: Option<std::net::IpAddr>,
) -> anyhow::Result<ExitCode> {
    let options = DemoOptions {
        port,
        host,
        startup_delay: Duration::from_millis(startup_delay_ms),
    };
    let listener = demo_app::bind(&options)
        .await
        .context("demo-app cannot listen")?;
    tracing::info!(addr = %listener.local_addr()?, "demo app listening");
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        result = demo_app::serve(listener) => result?,
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(ExitCode::SUCCESS)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // rustls warns once per odd ClientHello (an IP address as SNI, say): client noise that
        // would flood the log under load; its errors still show.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rustls=error"));
    // Colours only on a terminal: log files and the per-instance logs stay plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
