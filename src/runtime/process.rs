//! The `process` runtime: each instance is a child process of the gateway.
//!
//! The gateway picks a free loopback port and passes it in `PORT` (and `port_env`, if the
//! app names another variable), in a clean environment with the app's `env` and the injected
//! variables (see `runtime::env`): nothing else of the gateway's own environment. The program `tidegate` means this gateway's
//! own binary, so the demo app runs without anything on `PATH`.
//!
//! No instance outlives the gateway: each child leads its own process group (so a stop reaches
//! the workers it forks), is stopped with SIGTERM and then SIGKILL after the grace period, and
//! has the kernel's parent-death signal set to SIGKILL, so even a gateway killed with SIGKILL
//! takes its instances with it. An exit is reported at once through the instance's `exited`
//! channel, as "stopped" when the gateway asked for it and as a crash otherwise.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::Command;
use tokio::sync::watch;

use std::ffi::CString;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::cgroup::{Cgroups, InstanceGroup};
use super::env;
use super::logs::{capture, BuildLog, LogTarget};
use super::{
    Exit, Placement, PrepareRequest, Prepared, RuntimeBackend, RuntimeError, StartRequest,
    StartedInstance,
};
use crate::config::{AppSpec, RuntimeSpec};
use crate::identity::{Identities, TOKEN_ENV};

struct Child {
    pgid: Pid,
    stopping: AtomicBool,
    exited: watch::Receiver<Option<Exit>>,
}

/// Runs instances as local child processes.
pub struct ProcessBackend {
    logs_dir: PathBuf,
    identities: Arc<Identities>,
    own_binary: PathBuf,
    children: Arc<Mutex<HashMap<String, Arc<Child>>>>,
    /// Where `cpu` and `memory` limits go; `None` where the machine does not allow them.
    cgroups: Option<Cgroups>,
}

impl ProcessBackend {
    /// Instance output goes to files under `logs_dir`; each instance gets a token from
    /// `identities` (see `identity`), revoked when it exits.
    /// Resource limits are applied through cgroups when the machine has them; the start-up
    /// log says which, or why not.
    pub fn new(logs_dir: PathBuf, identities: Arc<Identities>) -> Self {
        let cgroups = match Cgroups::detect() {
            Ok(cgroups) => {
                tracing::info!(
                    "run.cpu and run.memory limits apply through {}",
                    cgroups.describe()
                );
                Some(cgroups)
            }
            Err(reason) => {
                tracing::warn!("run.cpu and run.memory cannot be applied on this machine: {reason}; process instances run without those limits");
                None
            }
        };
        ProcessBackend {
            logs_dir,
            identities,
            own_binary: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("tidegate")),
            children: Arc::new(Mutex::new(HashMap::new())),
            cgroups,
        }
    }

    /// The program to run: `tidegate` means the gateway's own binary.
    fn program(&self, name: &str) -> PathBuf {
        match name {
            "tidegate" => self.own_binary.clone(),
            other => PathBuf::from(other),
        }
    }

    fn children(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Child>>> {
        self.children.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl RuntimeBackend for ProcessBackend {
    fn kind(&self) -> &'static str {
        "process"
    }

    fn placement(&self, _app: &AppSpec) -> Placement {
        Placement::OnDemand
    }

    /// Runs `[build] command` once for the revision, in its workdir, with its env; output
    /// goes to the revision's build log.
    async fn prepare(&self, request: PrepareRequest) -> Result<Prepared, RuntimeError> {
        let failed = |reason: String| RuntimeError::PrepareFailed {
            revision: request.revision.clone(),
            reason,
        };
        let RuntimeSpec::Process(run) = &request.app.runtime else {
            return Err(failed("not a process app".into()));
        };
        let Some(build) = &run.build else {
            return Ok(Prepared::default());
        };
        let mut log = BuildLog::create(&self.logs_dir, &request.app.name, &request.revision)
            .map_err(|e| failed(format!("cannot write the build log: {e}")))?;
        log.write(&format!("$ {}", build.join(" ")));
        let program = self.program(&build[0]);
        let mut command = Command::new(&program);
        command
            .args(&build[1..])
            .env_clear()
            .envs(env::process_base())
            .envs(env::inherited(&run.inherit_env))
            .envs(&run.env)
            .envs(env::injected(&request.app, &request.revision))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = &run.workdir {
            command.current_dir(dir);
        }
        prepare_child(&mut command, Vec::new());
        let mut child = command
            .spawn()
            .map_err(|e| failed(format!("cannot run {}: {e}", program.display())))?;
        let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
        for output in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ]
        .into_iter()
        .flatten()
        {
            let lines_tx = lines_tx.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncBufReadExt;
                // Bytes, not text: a build's output need not be UTF-8.
                let mut reader = tokio::io::BufReader::new(output);
                let mut line = Vec::new();
                while reader
                    .read_until(b'\n', &mut line)
                    .await
                    .is_ok_and(|n| n > 0)
                {
                    let text = String::from_utf8_lossy(&line).trim_end().to_string();
                    let _ = lines_tx.send(text);
                    line.clear();
                }
            });
        }
        drop(lines_tx);
        while let Some(line) = lines.recv().await {
            log.write(&line);
        }
        let status = child
            .wait()
            .await
            .map_err(|e| failed(format!("build command could not be waited for: {e}")))?;
        if status.success() {
            log.write("build succeeded");
            Ok(Prepared::default())
        } else {
            let reason = format!("build command {} {}", build[0], describe(status));
            log.write(&reason);
            Err(failed(reason))
        }
    }

    async fn start(&self, request: StartRequest) -> Result<StartedInstance, RuntimeError> {
        let failed = |reason: String| RuntimeError::StartFailed {
            instance: request.instance_id.clone(),
            reason,
        };
        let RuntimeSpec::Process(run) = &request.app.runtime else {
            return Err(failed("not a process app".into()));
        };
        // A job's instance serves nothing, so it needs no port.
        let port = match request.job {
            Some(_) => 0,
            None => free_port().map_err(|e| failed(format!("no free port: {e}")))?,
        };
        let program = self.program(&run.command[0]);
        let token = self.identities.issue(&request.app.project);
        let mut command = Command::new(&program);
        command
            .args(&run.command[1..])
            .env_clear()
            .envs(env::process_base())
            .envs(env::inherited(&run.inherit_env))
            .envs(&run.env)
            .envs(instance_env(&request, &run.port_env, port))
            .env("TIDEGATE_INSTANCE", &request.instance_id)
            .env(TOKEN_ENV, &token)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = &run.workdir {
            command.current_dir(dir);
        }
        let limited = run.resources.cpu_millis.is_some() || run.resources.memory_bytes.is_some();
        let group = match (&self.cgroups, limited) {
            (Some(cgroups), true) => match cgroups.create(&request.instance_id, &run.resources) {
                Ok(group) => Some(group),
                Err(error) => {
                    self.identities.revoke(&token);
                    return Err(failed(format!(
                        "cannot set up its cpu/memory limits: {error}"
                    )));
                }
            },
            _ => None,
        };
        prepare_child(
            &mut command,
            group
                .as_ref()
                .map(InstanceGroup::procs_files)
                .unwrap_or_default(),
        );
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(error) => {
                self.identities.revoke(&token);
                if let Some(group) = &group {
                    group.remove();
                }
                return Err(failed(format!("cannot run {}: {error}", program.display())));
            }
        };
        let Some(pid) = child.id() else {
            self.identities.revoke(&token);
            return Err(failed("exited at once".into()));
        };
        let pgid = Pid::from_raw(pid as i32);

        let target = LogTarget::of(&self.logs_dir, &request);
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(capture(stdout, target.clone(), "stdout"));
        }
        let log = target.file.clone();
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(capture(stderr, target, "stderr"));
        }

        let (exit_tx, exit_rx) = watch::channel(None);
        let entry = Arc::new(Child {
            pgid,
            stopping: AtomicBool::new(false),
            exited: exit_rx.clone(),
        });
        self.children()
            .insert(request.instance_id.clone(), Arc::clone(&entry));
        let children = Arc::clone(&self.children);
        let identities = Arc::clone(&self.identities);
        let id = request.instance_id.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            identities.revoke(&token);
            // Whatever the leader did, its group goes with it.
            let _ = killpg(entry.pgid, Signal::SIGKILL);
            let out_of_memory = group.as_ref().is_some_and(|group| group.oom_kills() > 0);
            let exit = if entry.stopping.load(Ordering::Acquire) {
                Exit::Stopped
            } else {
                let code = match &status {
                    Ok(status) if !out_of_memory => status.code(),
                    _ => None,
                };
                Exit::Crashed {
                    code,
                    description: match (status, &group) {
                        (Ok(_), Some(group)) if out_of_memory => format!(
                            "killed for exceeding its memory limit of {} (out of memory)",
                            group.memory_limit().map_or("?".into(), format_bytes)
                        ),
                        (Ok(status), _) => describe(status),
                        (Err(error), _) => format!("could not be waited for: {error}"),
                    },
                    out_of_memory,
                }
            };
            children
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            let _ = exit_tx.send(Some(exit));
            if let Some(group) = group {
                remove_when_empty(group).await;
            }
        });

        let port_hint = if run.port_env == "PORT" {
            "$PORT".to_string()
        } else {
            format!("${}", run.port_env)
        };
        Ok(StartedInstance {
            id: request.instance_id,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            exited: exit_rx,
            listen_hint: format!("the app must listen on the port in {port_hint}"),
            log: Some(log),
        })
    }

    async fn stop(&self, instance_id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let Some(child) = self.children().get(instance_id).cloned() else {
            return Ok(());
        };
        child.stopping.store(true, Ordering::Release);
        let mut exited = child.exited.clone();
        let _ = killpg(child.pgid, Signal::SIGTERM);
        if tokio::time::timeout(grace, exited.wait_for(Option::is_some))
            .await
            .is_err()
        {
            tracing::warn!(
                instance = instance_id,
                ?grace,
                "instance ignored SIGTERM; killing it"
            );
            let _ = killpg(child.pgid, Signal::SIGKILL);
            let _ = exited.wait_for(Option::is_some).await;
        }
        Ok(())
    }

    async fn shutdown(&self) {
        let children: Vec<Arc<Child>> = self.children().values().cloned().collect();
        for child in &children {
            child.stopping.store(true, Ordering::Release);
            let _ = killpg(child.pgid, Signal::SIGKILL);
        }
        for child in children {
            let mut exited = child.exited.clone();
            let _ = exited.wait_for(Option::is_some).await;
        }
        if let Some(cgroups) = &self.cgroups {
            cgroups.remove_patiently().await;
        }
    }
}

/// The injected variables: an app instance's and its port, or a job attempt's.
fn instance_env(request: &StartRequest, port_env: &str, port: u16) -> env::Env {
    match &request.job {
        Some(job) => job.env.clone(),
        None => {
            let mut vars = env::injected(&request.app, &request.revision);
            vars.push(("PORT".into(), port.to_string()));
            vars.push((port_env.to_string(), port.to_string()));
            vars
        }
    }
}

/// Asks the kernel to SIGKILL the child when the gateway dies, however it dies, and has the
/// child join its cgroups (`procs_files`) before it runs anything of its own.
#[allow(unsafe_code)]
fn prepare_child(command: &mut Command, procs_files: Vec<CString>) {
    let gateway = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and only makes the prctl,
    // getppid, open, write and close system calls, which are async-signal-safe; it allocates
    // nothing (the paths were made before the fork; errors are raw OS error codes).
    unsafe {
        command.pre_exec(move || {
            let os_error =
                |errno: nix::errno::Errno| std::io::Error::from_raw_os_error(errno as i32);
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(os_error)?;
            // The gateway may have died between fork and prctl: then nobody would kill us.
            if nix::unistd::getppid().as_raw() as u32 != gateway {
                return Err(os_error(nix::errno::Errno::ESRCH));
            }
            for file in &procs_files {
                let fd = nix::fcntl::open(
                    file.as_c_str(),
                    OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(os_error)?;
                // "0" moves the writing process.
                nix::unistd::write(&fd, b"0").map_err(os_error)?;
            }
            Ok(())
        });
    }
}

/// Removes an exited instance's cgroups once the kernel has let go of its last process.
async fn remove_when_empty(group: InstanceGroup) {
    for _ in 0..100 {
        group.remove();
        if !group.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tracing::warn!(?group, "could not remove an exited instance's cgroup");
}

/// `256 MiB`, `1.5 GiB`.
fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 {
        format!("{value} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

fn describe(status: std::process::ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => {
            let name = Signal::try_from(signal)
                .map(|s| s.as_str())
                .unwrap_or("unknown signal");
            format!("killed by signal {signal} ({name})")
        }
        _ => status.to_string(),
    }
}
