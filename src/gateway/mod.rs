//! Wiring: loads the config, binds the listeners, starts the accept loops, the reload loop,
//! the jobs, the stats sampler and the access log, and hands back a [`Handle`] with the bound
//! addresses and a way to shut down.
//!
//! Reloads come from the file watcher (debounced) and from [`Handle::reload`] (SIGHUP in the
//! binary); both run the same load -> validate -> apply -> swap path, one at a time, in the
//! reload loop. A failed load changes nothing but the error counter and the log.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

mod reloader;
mod setup;

use crate::admin::Admin;
use crate::api::{token::Token, Api};
use crate::autoscaler::AppRegistry;
use crate::autoscaler::InstanceBudget;
use crate::config::{self, watch::ConfigWatcher, Config, ConfigErrors};
use crate::identity::Identities;
use crate::jobs::Jobs;
use crate::metrics::Metrics;
use crate::proxy::{ConnInfo, ListenerKind, Proxy, ProxyBody};
use crate::routes::RouteTable;
use crate::runtime::{ContainerBackend, ProcessBackend, RuntimeBackend, StaticBackend};
use crate::server::{self, Handler, ListenerConfig};
use crate::stats::History;
use crate::tls::Tls;
use reloader::{record_success, report_rejected, Reloader};
use setup::{bind, local_addr, start_access_log};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration:\n{0}")]
    Config(ConfigErrors),
    #[error("cannot open the access log ({sink}): {error}")]
    AccessLog { sink: String, error: std::io::Error },
    #[error("management API token: {0}")]
    Token(std::io::Error),
    #[error("cannot listen on {addr} ({listener}): {error}")]
    Bind {
        listener: &'static str,
        addr: SocketAddr,
        error: std::io::Error,
    },
}

impl From<ConfigErrors> for StartError {
    fn from(errors: ConfigErrors) -> Self {
        StartError::Config(errors)
    }
}

/// The gateway as a library: what `tidegate serve` runs and what tests start in-process.
pub struct Gateway;

/// A gateway to be started from a loaded [`Config`]: its runtime backends can be replaced
/// (tests run process apps on `runtime::MemoryBackend`), and without a config file it has
/// nothing to watch or reload.
pub struct GatewayBuilder {
    config: Config,
    path: Option<PathBuf>,
    backends: Vec<Arc<dyn RuntimeBackend>>,
    /// The process logs JSON: so does the access log, unless `access_log_format` says.
    log_json: bool,
}

impl Gateway {
    /// Loads the config at `config_path`, binds every listener and starts serving; the
    /// files are watched and reloaded.
    ///
    /// Returns once the listeners are bound, so a client may connect as soon as this returns.
    pub async fn start(config_path: impl AsRef<Path>) -> Result<Handle, StartError> {
        let path = config_path.as_ref().to_path_buf();
        let config = config::load_tolerant(&path, None)?;
        Gateway::builder(config).config_file(path).start().await
    }

    /// A gateway for `config`, with the built-in backends.
    pub fn builder(config: Config) -> GatewayBuilder {
        GatewayBuilder {
            config,
            path: None,
            backends: Vec::new(),
            log_json: false,
        }
    }
}

impl GatewayBuilder {
    /// The gateway file `config` was loaded from: it and the apps directory are watched and
    /// reloaded.
    pub fn config_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// Whether the rest of the log is JSON (`--log-format json`): the access log follows
    /// unless `access_log_format` is set.
    pub fn log_json(mut self, json: bool) -> Self {
        self.log_json = json;
        self
    }

    /// Runs the apps whose `runtime` is `backend.kind()` on `backend` instead of the
    /// built-in backend of that kind.
    pub fn backend(mut self, backend: Arc<dyn RuntimeBackend>) -> Self {
        self.backends.retain(|b| b.kind() != backend.kind());
        self.backends.push(backend);
        self
    }

    /// Binds every listener and starts serving. Returns once the listeners are bound.
    pub async fn start(self) -> Result<Handle, StartError> {
        let GatewayBuilder {
            config,
            path,
            backends: chosen,
            log_json,
        } = self;
        let metrics = Metrics::new();
        report_rejected(&config, &metrics);
        let identities = Arc::new(Identities::default());
        let mut backends = chosen;
        // The built-in backend of each kind, unless one was given.
        let given = |kind: &str| backends.iter().any(|backend| backend.kind() == kind);
        let (has_static, has_process, has_container, has_kubernetes) = (
            given("static"),
            given("process"),
            given("container"),
            given("kubernetes"),
        );
        if !has_static {
            backends.push(Arc::new(StaticBackend));
        }
        if !has_process {
            backends.push(Arc::new(ProcessBackend::new(
                config.gateway.logs_dir.clone(),
                Arc::clone(&identities),
            )));
        }
        if !has_container {
            backends.push(Arc::new(ContainerBackend::new(
                &config.gateway.container_engine,
                config.gateway.logs_dir.clone(),
                Arc::clone(&identities),
            )));
        }
        #[cfg(feature = "kubernetes")]
        if !has_kubernetes {
            backends.push(Arc::new(crate::runtime::KubernetesBackend::new(
                config.gateway.kubernetes.clone(),
            )));
        }
        #[cfg(not(feature = "kubernetes"))]
        let _ = has_kubernetes;
        let registry = Arc::new(AppRegistry::new(
            Arc::clone(&metrics),
            backends,
            Some(config.gateway.state_dir.clone()),
            InstanceBudget::new(config.gateway.max_instances),
        ));
        let states = registry.apply(&config);
        let table = RouteTable::build(&config, &states);
        let access_log = start_access_log(&config, log_json)?;
        let proxy = Arc::new(Proxy::new(
            table,
            Arc::clone(&metrics),
            &config.gateway.upstream,
            identities,
            access_log,
        ));
        if config.rejected.is_empty() {
            record_success(&metrics);
        }
        let current = Arc::new(ArcSwap::from_pointee(config.clone()));

        let settings = &config.gateway;
        let http = match settings.http {
            Some(addr) => Some(bind("http", addr).await?),
            None => None,
        };
        let https = match settings.https {
            Some(addr) => Some(bind("https", addr).await?),
            None => None,
        };
        let admin = bind("admin", settings.admin).await?;
        let http_addr = http.as_ref().map(local_addr);
        let https_addr = https.as_ref().map(local_addr);
        if let Some(addr) = https_addr {
            let _ = proxy.https_port.set(addr.port());
        }
        if let Some(addr) = http_addr {
            let _ = proxy.http_port.set(addr.port());
        }
        let (token, token_file) = Token::load(settings).map_err(StartError::Token)?;
        let (reload_tx, reload_rx) = mpsc::unbounded_channel();
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let jobs = {
            let registry = Arc::clone(&registry);
            Jobs::start(
                Arc::clone(&current),
                registry.backends().to_vec(),
                &metrics,
                Arc::new(move || registry.instance_count()),
                shutdown_rx.clone(),
            )
        };
        let history = History::new();
        {
            let proxy = Arc::clone(&proxy);
            tokio::spawn(crate::stats::run(
                Arc::clone(&history),
                move || proxy.routes.load().apps(),
                shutdown_rx.clone(),
            ));
        }
        let api = Arc::new(Api::new(
            token,
            Arc::clone(&current),
            Arc::clone(&proxy),
            Arc::clone(&jobs),
            history,
            &metrics,
            reload_tx.clone(),
        ));
        #[cfg(feature = "kubernetes")]
        let api_handle = Arc::clone(&api);
        let tls = settings.tls.as_ref().map(|tls| Tls::load(tls, &metrics));
        let tls_watcher = match &tls {
            Some(tls) => match tls.watch() {
                Ok(watcher) => Some(watcher),
                Err(error) => {
                    tracing::warn!(%error, "cannot watch the certs directory; certificate changes need a restart");
                    None
                }
            },
            None => None,
        };
        let admin_addr = local_addr(&admin);

        let (admin_stop_tx, admin_stop_rx) = watch::channel(false);
        let mut public = Vec::new();
        if let Some(listener) = http {
            public.push(tokio::spawn(server::run(
                listener,
                ListenerConfig {
                    name: "http",
                    kind: ListenerKind::Http,
                    limits: settings.limits.clone(),
                    grace: settings.shutdown_grace,
                    tls: None,
                },
                Arc::clone(&proxy),
                Arc::clone(&metrics),
                shutdown_rx.clone(),
            )));
        }
        if let (Some(listener), Some(tls)) = (https, &tls) {
            public.push(tokio::spawn(server::run(
                listener,
                ListenerConfig {
                    name: "https",
                    kind: ListenerKind::Https,
                    limits: settings.limits.clone(),
                    grace: settings.shutdown_grace,
                    tls: Some(Arc::clone(tls)),
                },
                Arc::clone(&proxy),
                Arc::clone(&metrics),
                shutdown_rx.clone(),
            )));
        }
        let admin_task = tokio::spawn(server::run(
            admin,
            ListenerConfig {
                name: "admin",
                kind: ListenerKind::Http,
                limits: settings.limits.clone(),
                grace: Duration::from_secs(1),
                tls: None,
            },
            Arc::new(Admin {
                proxy: Arc::clone(&proxy),
                shutting_down: shutdown_rx.clone(),
                registry: Arc::clone(&registry),
                config: Arc::clone(&current),
                api,
            }),
            Arc::clone(&metrics),
            admin_stop_rx,
        ));

        tokio::spawn(crate::runtime::log_retention::run(
            settings.logs_dir.clone(),
            settings.log_retention,
            shutdown_rx.clone(),
        ));

        // The watcher starts before `start` returns, so an edit made right after is not missed.
        let (changes_tx, changes_rx) = mpsc::unbounded_channel();
        let watcher = path.as_ref().and_then(|path| {
            let dirs = [
                config.gateway.apps_dir.as_path(),
                config.gateway.jobs_dir.as_path(),
            ];
            match ConfigWatcher::start(path, &dirs, changes_tx) {
                Ok(watcher) => Some(watcher),
                Err(error) => {
                    tracing::warn!(%error, "cannot watch config files; reload with SIGHUP");
                    None
                }
            }
        });
        let reloader = Reloader {
            path: path.clone(),
            registry: Arc::clone(&registry),
            proxy: Arc::clone(&proxy),
            watcher,
            current,
        };
        #[cfg(feature = "kubernetes")]
        let replicas = crate::replicas::join(
            &config.gateway,
            admin_addr,
            Arc::clone(&registry),
            &api_handle,
        )
        .await;
        let reload_task = tokio::spawn(reloader.run(config, reload_rx, changes_rx, shutdown_rx));

        tracing::info!(
            http = ?http_addr,
            https = ?https_addr,
            admin = %admin_addr,
            api_token = %token_file.display(),
            config = %path.as_deref().map_or("(built in)".into(), |p| p.display().to_string()),
            "tidegate started"
        );
        Ok(Handle {
            http_addr,
            https_addr,
            _tls_watcher: tls_watcher,
            admin_addr,
            proxy,
            registry,
            jobs,
            shutdown_tx,
            admin_stop_tx,
            reload_tx,
            public,
            admin_task,
            reload_task,
            #[cfg(feature = "kubernetes")]
            replicas,
        })
    }
}

/// A running gateway. Dropping it without [`Handle::shutdown`] leaves it running until the
/// tokio runtime ends.
pub struct Handle {
    http_addr: Option<SocketAddr>,
    https_addr: Option<SocketAddr>,
    _tls_watcher: Option<notify::RecommendedWatcher>,
    admin_addr: SocketAddr,
    proxy: Arc<Proxy>,
    registry: Arc<AppRegistry>,
    jobs: Arc<Jobs>,
    shutdown_tx: watch::Sender<bool>,
    admin_stop_tx: watch::Sender<bool>,
    reload_tx: mpsc::UnboundedSender<oneshot::Sender<Result<(), ConfigErrors>>>,
    public: Vec<JoinHandle<()>>,
    admin_task: JoinHandle<()>,
    reload_task: JoinHandle<()>,
    /// The other gateway replicas, when it is one of several.
    #[cfg(feature = "kubernetes")]
    replicas: Option<crate::replicas::Replicas>,
}

impl Handle {
    /// The bound address of the plain HTTP listener (useful with port 0).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The bound address of the HTTPS listener.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https_addr
    }

    /// The bound address of the admin listener.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The gateway's metrics, for tests and embedding.
    pub fn metrics(&self) -> &Metrics {
        &self.proxy.metrics
    }

    /// Loads the config files again now (what SIGHUP does) and reports the outcome; an invalid
    /// config keeps the previous one serving.
    pub async fn reload(&self) -> Result<(), ConfigErrors> {
        let (tx, rx) = oneshot::channel();
        if self.reload_tx.send(tx).is_err() {
            return Ok(());
        }
        rx.await.unwrap_or(Ok(()))
    }

    /// Opens the access log file again (SIGHUP: logrotate moved it away).
    pub fn reopen_logs(&self) {
        self.proxy.access_log.reopen();
    }

    /// Stops accepting, lets in-flight requests finish within `shutdown_grace`, stops every
    /// instance the gateway started, then stops the admin listener and returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown_tx.send(true);
        // Hand over first: the Lease, and this replica's share of the load.
        self.registry.shutting_down().await;
        #[cfg(feature = "kubernetes")]
        if let Some(replicas) = self.replicas {
            replicas.leave().await;
        }
        for task in self.public {
            let _ = task.await;
        }
        let _ = self.reload_task.await;
        // WebSocket sessions outlive their HTTP connections: give them their grace too.
        self.proxy.sessions.close_all().await;
        self.jobs.shutdown().await;
        self.registry.shutdown().await;
        let _ = self.admin_stop_tx.send(true);
        let _ = self.admin_task.await;
        // Last: every request's line is written before the process ends.
        self.proxy.access_log.shutdown();
        tracing::info!("tidegate stopped");
    }
}

impl Handler for Proxy {
    type Body = ProxyBody;

    async fn call(
        self: Arc<Self>,
        conn: ConnInfo,
        request: http::Request<hyper::body::Incoming>,
    ) -> http::Response<ProxyBody> {
        self.handle(conn, request).await
    }

    fn serve_http1<'a, IO>(
        &'a self,
        io: IO,
        conn: ConnInfo,
        limits: &'a crate::config::ListenerLimits,
        stop: &'a mut watch::Receiver<bool>,
    ) -> impl std::future::Future<Output = crate::proxy::h1::Exit<IO>> + Send + 'a
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'a,
    {
        crate::proxy::h1::serve(self, io, conn, limits, stop)
    }
}
