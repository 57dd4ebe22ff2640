//! App and job definitions shared by the gateway replicas: one ConfigMap per definition
//! (`tidegate-app-<name>`, `tidegate-job-<name>`, label `tidegate.dev/definition`, the file's
//! text under `definition.toml`), written by the API of whichever replica takes the request,
//! and mirrored by every replica into its `apps_dir` / `jobs_dir`, where the usual watcher
//! and validation take it from there. ConfigMaps rather than a CustomResourceDefinition: no
//! cluster-scoped object to install, and the text stays the file the operator knows (a CRD
//! would need a schema for every key and a second validation). A mirrored file is written
//! only when its text differs, with mode 0600 (env values may be secrets); one whose
//! ConfigMap is deleted is removed. The mirror is the only writer of these directories (the
//! API waits for it), so events apply in the cluster's order; after a (re)list the files it
//! wrote (listed in `.tidegate-mirrored`, which outlives a restart) without a ConfigMap go,
//! and files put there by hand stay.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::watcher::{self, watcher, Event};
use kube::Api;
use serde_json::json;

use crate::api::store::DefinitionStore;

const KIND_LABEL: &str = "tidegate.dev/definition";
const NAME_LABEL: &str = "tidegate.dev/name";
const KEY: &str = "definition.toml";

/// The ConfigMaps of one namespace as the API's definition store.
pub struct ClusterDefinitions {
    api: Api<ConfigMap>,
}

fn object_name(kind: &str, name: &str) -> String {
    format!("tidegate-{kind}-{name}")
}

impl ClusterDefinitions {
    pub fn new(api: Api<ConfigMap>) -> Arc<Self> {
        Arc::new(ClusterDefinitions { api })
    }
}

async fn bounded<T>(call: impl std::future::Future<Output = kube::Result<T>>) -> Result<T, String> {
    match tokio::time::timeout(Duration::from_secs(10), call).await {
        Ok(result) => result.map_err(|e| format!("kubernetes: {e}")),
        Err(_) => Err("kubernetes: the API server did not answer within 10 s".into()),
    }
}

impl DefinitionStore for ClusterDefinitions {
    fn put<'a>(
        &'a self,
        kind: &'a str,
        name: &'a str,
        text: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            let body = json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": object_name(kind, name),
                    "labels": {
                        KIND_LABEL: kind, NAME_LABEL: name,
                        "app.kubernetes.io/managed-by": "tidegate",
                    },
                },
                "data": { KEY: text },
            });
            let params = PatchParams::apply("tidegate").force();
            bounded(
                self.api
                    .patch(&object_name(kind, name), &params, &Patch::Apply(&body)),
            )
            .await
            .map(|_| ())
        })
    }

    fn delete<'a>(
        &'a self,
        kind: &'a str,
        name: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            match bounded(
                self.api
                    .delete(&object_name(kind, name), &DeleteParams::default()),
            )
            .await
            {
                Err(message) if message.contains("not found") => Ok(()),
                other => other.map(|_| ()),
            }
        })
    }
}

/// One mirrored definition: where its file goes and its text.
fn entry(map: &ConfigMap, apps: &Path, jobs: &Path) -> Option<(PathBuf, String)> {
    let labels = map.metadata.labels.as_ref()?;
    let dir = match labels.get(KIND_LABEL)?.as_str() {
        "app" => apps,
        "job" => jobs,
        _ => return None,
    };
    let name = labels.get(NAME_LABEL)?;
    // A name that is not a plain file name is not ours to write.
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return None;
    }
    let text = map.data.as_ref()?.get(KEY)?.clone();
    Some((dir.join(format!("{name}.toml")), text))
}

/// Writes `text` to `path` unless it holds it already.
fn mirror(path: &Path, text: &str) {
    if std::fs::read_to_string(path).is_ok_and(|current| current == text) {
        return;
    }
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match crate::secret_file::write(path, text.as_bytes()) {
        Ok(()) => tracing::info!(file = %path.display(), "definition mirrored from the cluster"),
        Err(error) => tracing::warn!(file = %path.display(), %error, "cannot mirror a definition"),
    }
}

/// The list of files the mirror wrote (ConfigMap name, path), kept beside the app files
/// (a dot file, which the config loader passes over) so a restarted replica still knows
/// which files are its own: files put there by hand are never removed.
fn manifest_path(apps: &Path) -> PathBuf {
    apps.join(".tidegate-mirrored")
}

fn read_manifest(apps: &Path) -> BTreeMap<String, PathBuf> {
    std::fs::read_to_string(manifest_path(apps))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let (name, path) = line.split_once('\t')?;
            Some((name.to_string(), PathBuf::from(path)))
        })
        .collect()
}

fn write_manifest(apps: &Path, mirrored: &BTreeMap<String, PathBuf>) {
    let text: String = mirrored
        .iter()
        .map(|(name, path)| format!("{name}\t{}\n", path.display()))
        .collect();
    let _ = std::fs::create_dir_all(apps);
    if let Err(error) = crate::secret_file::write(&manifest_path(apps), text.as_bytes()) {
        tracing::warn!(%error, "cannot record the mirrored definitions");
    }
}

/// Keeps `apps_dir` and `jobs_dir` in line with the namespace's definition ConfigMaps until
/// aborted. A relist removes the files of definitions deleted meanwhile (those mirrored
/// before by this process).
pub async fn run_mirror(api: Api<ConfigMap>, apps: PathBuf, jobs: PathBuf) {
    let config = watcher::Config::default().labels(KIND_LABEL);
    let mut stream = watcher(api, config).boxed();
    let mut mirrored: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut relist: Option<BTreeMap<String, PathBuf>> = None;
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => relist = Some(BTreeMap::new()),
            Ok(Event::InitApply(map)) => {
                if let Some((path, text)) = entry(&map, &apps, &jobs) {
                    mirror(&path, &text);
                    if let (Some(seen), Some(name)) = (relist.as_mut(), map.metadata.name) {
                        seen.insert(name, path);
                    }
                }
            }
            Ok(Event::InitDone) => {
                let seen = relist.take().unwrap_or_default();
                // Files this mirror wrote before (this run or an earlier one: the list is
                // kept on disk) whose ConfigMap is gone were deleted meanwhile.
                mirrored.extend(read_manifest(&apps));
                for (name, path) in &mirrored {
                    if !seen.contains_key(name) && std::fs::remove_file(path).is_ok() {
                        tracing::info!(file = %path.display(), "definition no longer in the cluster");
                    }
                }
                mirrored = seen;
                write_manifest(&apps, &mirrored);
            }
            Ok(Event::Apply(map)) => {
                if let Some((path, text)) = entry(&map, &apps, &jobs) {
                    mirror(&path, &text);
                    if let Some(name) = map.metadata.name {
                        mirrored.insert(name, path);
                        write_manifest(&apps, &mirrored);
                    }
                }
            }
            Ok(Event::Delete(map)) => {
                let path = map
                    .metadata
                    .name
                    .as_ref()
                    .and_then(|name| mirrored.remove(name))
                    .or_else(|| entry(&map, &apps, &jobs).map(|(path, _)| path));
                if let Some(path) = path {
                    if std::fs::remove_file(&path).is_ok() {
                        tracing::info!(file = %path.display(), "definition deleted in the cluster");
                    }
                    write_manifest(&apps, &mirrored);
                }
            }
            Err(error) => {
                tracing::warn!(%error, "definition watch failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
