//! TLS termination: certificates from the certs directory, chosen per connection by SNI, and
//! reloaded live when files in that directory change.
//!
//! `store` loads and indexes the certificates, `accept` runs a connection's handshake, `dev`
//! writes a development certificate. [`Tls`] owns the live store: the directory is watched
//! (like the config directory: the directory, not the files, with a debounce), every change
//! rebuilds the store and swaps it in whole. Open connections keep the config they were
//! accepted with; a broken file is reported and its previous certificate stays in use.

pub mod accept;
pub mod dev;
pub mod store;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use prometheus::{IntCounterVec, IntGauge};
use tokio::sync::mpsc;

use crate::config::watch::settle;
use crate::config::TlsSettings;
use crate::metrics::Metrics;
use store::CertStore;

/// The live certificate store of the HTTPS listener.
pub struct Tls {
    dir: PathBuf,
    default_name: Option<String>,
    store: ArcSwap<CertStore>,
    reloads: IntCounterVec,
    loaded: IntGauge,
    pub handshake_errors: IntCounterVec,
}

impl Tls {
    /// Loads the certs directory once; problems are logged, never fatal (an empty store makes
    /// every handshake fail with `unrecognized_name` until certificates appear).
    pub fn load(settings: &TlsSettings, metrics: &Metrics) -> Arc<Self> {
        let tls = Tls {
            dir: settings.certs_dir.clone(),
            default_name: settings.default_cert.clone(),
            store: ArcSwap::from_pointee(CertStore::default()),
            reloads: metrics.tls_cert_reloads.clone(),
            loaded: metrics.tls_certificates.clone(),
            handshake_errors: metrics.tls_handshake_errors.clone(),
        };
        tls.reload();
        Arc::new(tls)
    }

    /// The store to pick a connection's certificate from.
    pub fn store(&self) -> Arc<CertStore> {
        self.store.load_full()
    }

    /// Loads the directory again and swaps the result in.
    pub fn reload(&self) {
        let previous = self.store.load_full();
        let (store, errors) =
            CertStore::load(&self.dir, self.default_name.as_deref(), Some(&previous));
        for error in &errors {
            tracing::error!(%error, "certificate problem");
        }
        self.reloads
            .with_label_values(&[if errors.is_empty() {
                "success"
            } else {
                "error"
            }])
            .inc();
        self.loaded.set(store.len() as i64);
        if store.is_empty() {
            tracing::warn!(dir = %self.dir.display(), "no usable certificate: HTTPS handshakes will fail until one is added (tidegate certs dev writes one)");
        } else {
            tracing::info!(dir = %self.dir.display(), certificates = store.len(), "certificates loaded");
        }
        self.store.store(Arc::new(store));
    }

    /// Watches the certs directory and reloads on every change until the returned watcher is
    /// dropped.
    pub fn watch(self: &Arc<Self>) -> notify::Result<RecommendedWatcher> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(event) = event {
                    if !matches!(event.kind, EventKind::Access(_)) {
                        let _ = tx.send(());
                    }
                }
            })?;
        std::fs::create_dir_all(&self.dir).ok();
        watcher.watch(Path::new(&self.dir), RecursiveMode::NonRecursive)?;
        let tls = Arc::clone(self);
        tokio::spawn(async move {
            while rx.recv().await.is_some() {
                if !settle(&mut rx).await {
                    return;
                }
                tls.reload();
            }
        });
        Ok(watcher)
    }
}
