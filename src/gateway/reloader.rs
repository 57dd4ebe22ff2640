//! The reload path: file events and explicit requests (SIGHUP, `Handle::reload`) in,
//! validated configs applied and swapped route tables out, one reload at a time.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot, watch};

use crate::autoscaler::AppRegistry;
use crate::config::{self, watch::ConfigWatcher, Config, ConfigErrors};
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::routes::RouteTable;
use crate::server::stopped;

/// What a reload cannot change: listener addresses and the TLS settings they were built with.
type Listeners = (
    Option<SocketAddr>,
    Option<SocketAddr>,
    SocketAddr,
    Option<crate::config::TlsSettings>,
);

/// Owns the reload path: file events and explicit requests in, swapped route tables out.
pub(super) struct Reloader {
    /// The gateway file; `None` for a gateway built from a config value (nothing to reload).
    pub path: Option<PathBuf>,
    pub registry: Arc<AppRegistry>,
    pub proxy: Arc<Proxy>,
    pub watcher: Option<ConfigWatcher>,
    /// The config that serves now: a reload keeps a rejected app file's app at its spec here.
    pub current: Arc<ArcSwap<Config>>,
}

impl Reloader {
    pub async fn run(
        mut self,
        initial: Config,
        mut requests: mpsc::UnboundedReceiver<oneshot::Sender<Result<(), ConfigErrors>>>,
        mut changes: mpsc::UnboundedReceiver<()>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut listeners = (
            initial.gateway.http,
            initial.gateway.https,
            initial.gateway.admin,
            initial.gateway.tls.clone(),
        );
        loop {
            let responder = tokio::select! {
                _ = stopped(&mut shutdown) => break,
                Some(responder) = requests.recv() => Some(responder),
                Some(()) = changes.recv() => {
                    // Wait for the burst of events of one save to settle, unless a request
                    // (the management API after a write, SIGHUP) asks for the reload now.
                    tokio::select! {
                        _ = config::watch::settle(&mut changes) => None,
                        Some(responder) = requests.recv() => Some(responder),
                    }
                }
            };
            let result = self.reload(&mut listeners);
            if let Some(responder) = responder {
                let _ = responder.send(result);
            }
        }
    }

    /// Loads the files again and applies what is valid: a gateway-file error keeps the whole
    /// previous config; a bad app file keeps only its own app at its previous spec while the
    /// other files apply. Either way the problems are returned (and logged and counted).
    fn reload(&mut self, listeners: &mut Listeners) -> Result<(), ConfigErrors> {
        let metrics = &self.proxy.metrics;
        let Some(path) = &self.path else {
            return Ok(());
        };
        let previous = self.current.load_full();
        let config = match config::load_tolerant(path, Some(&previous)) {
            Ok(config) => config,
            Err(errors) => {
                metrics.config_reloads.with_label_values(&["error"]).inc();
                for issue in &errors.0 {
                    tracing::error!(%issue, "config reload rejected; the previous config keeps serving");
                }
                return Err(errors);
            }
        };
        let now = (
            config.gateway.http,
            config.gateway.https,
            config.gateway.admin,
            config.gateway.tls.clone(),
        );
        if now != *listeners {
            tracing::warn!("listener addresses or [tls] changed; they take effect on restart");
        }
        let states = self.registry.apply(&config);
        for file in config.rejected.iter().filter(|file| !file.job) {
            if let Some(app) = states.get(&file.app) {
                let issues: Vec<String> = file.issues.iter().map(ToString::to_string).collect();
                app.record("ConfigRejected", issues.join("; "));
            }
        }
        let table = RouteTable::build(&config, &states);
        self.proxy.routes.store(Arc::new(table));
        if let Some(watcher) = &mut self.watcher {
            watcher.rewatch(&[&config.gateway.apps_dir, &config.gateway.jobs_dir]);
        }
        report_rejected(&config, metrics);
        let rejected: Vec<_> = config
            .rejected
            .iter()
            .flat_map(|file| file.issues.iter().cloned())
            .collect();
        tracing::info!(
            apps = config.apps.len(),
            rejected_files = config.rejected.len(),
            "config reloaded"
        );
        self.current.store(Arc::new(config));
        if rejected.is_empty() {
            record_success(metrics);
            Ok(())
        } else {
            metrics.config_reloads.with_label_values(&["error"]).inc();
            Err(ConfigErrors(rejected))
        }
    }
}

/// Logs every rejected app file with what serves instead, and sets the gauge of them.
pub(super) fn report_rejected(config: &Config, metrics: &Metrics) {
    metrics
        .config_rejected_files
        .set(config.rejected.len() as i64);
    for file in &config.rejected {
        let serving = if file.kept_previous {
            "its previous spec keeps serving"
        } else {
            "it is not served"
        };
        for issue in &file.issues {
            tracing::error!(app = %file.app, %issue, "app file rejected; {serving}");
        }
    }
}

pub(super) fn record_success(metrics: &Metrics) {
    metrics.config_reloads.with_label_values(&["success"]).inc();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    metrics.config_last_success.set(now);
}
