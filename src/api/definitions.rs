//! Listing, reading, creating, patching and deleting definition files, the same for apps
//! and jobs: the name
//! and project checked, the text checked as `tidegate check` checks it, written atomically,
//! versions compared (`If-Match`), the live reload asked for before the answer. What is
//! particular to each kind (its view, what goes with a deleted one) stays in `apps`, `jobs`.

use std::path::{Path, PathBuf};

/// Longest a write waits for the replicas' mirror to put the cluster's text in place.
const MIRROR_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value as Json};

use super::document;
use super::files::{check_version, is_file_name, project_of, DefinitionFile};
use super::reply::{error, invalid, json, versioned, ApiResult, Refusal};
use super::Api;
use crate::config::check_definition_file;

/// Which definitions a request is about.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    App,
    Job,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::App => "app",
            Kind::Job => "job",
        }
    }

    /// The collection's name: the JSON key of a listing.
    fn plural(self) -> &'static str {
        match self {
            Kind::App => "apps",
            Kind::Job => "jobs",
        }
    }

    /// The noun with its article: "an app", "a job".
    fn a(self) -> &'static str {
        match self {
            Kind::App => "an app",
            Kind::Job => "a job",
        }
    }
}

impl Api {
    /// Stores (`Some` text) or removes (`None`) the definition in the shared store of the
    /// gateway replicas, if there is one; a failure refuses the write (503), nothing changed.
    async fn share(&self, kind: Kind, name: &str, text: Option<&str>) -> Result<(), Refusal> {
        let Some(store) = self.store.get() else {
            return Ok(());
        };
        let result = match text {
            Some(text) => store.put(kind.noun(), name, text).await,
            None => store.delete(kind.noun(), name).await,
        };
        result.map_err(|reason| {
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot share the {} with the other gateway replicas: {reason}; nothing was changed", kind.noun()),
            )
        })
    }

    /// Puts a definition's checked text in place (`None`: removes it). With replicas the
    /// mirror is the one writer of these files (so an older event can never overwrite a
    /// newer text): wait until it has written what the cluster now holds.
    async fn settle(&self, path: &Path, text: Option<&str>) -> Result<(), Refusal> {
        if self.store.get().is_none() {
            return match text {
                Some(text) => self.write(path, text),
                None => std::fs::remove_file(path).map_err(|e| {
                    error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("cannot remove {}: {e}", path.display()),
                    )
                }),
            };
        }
        let deadline = tokio::time::Instant::now() + MIRROR_WAIT;
        loop {
            let current = std::fs::read_to_string(path).ok();
            if current.as_deref() == text {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(error(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("stored in the cluster, but not yet in {} after {MIRROR_WAIT:?}; the gateway serves it once it is", path.display()),
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// `GET /api/v1/{apps,jobs}[?project=P]`.
    pub(super) fn list_definitions(&self, kind: Kind, project: Option<&str>) -> ApiResult {
        let files = match kind {
            Kind::App => self.app_files()?,
            Kind::Job => self.job_files()?,
        };
        let views: Vec<Json> = files
            .iter()
            .filter(|file| project.is_none_or(|p| p == file.project))
            .map(|file| self.view_of(kind, file))
            .collect();
        Ok(json(StatusCode::OK, &json!({ kind.plural(): views })))
    }

    /// `GET /api/v1/{apps,jobs}/{name}`, with its version as `ETag`.
    pub(super) fn get_definition(&self, kind: Kind, name: &str) -> ApiResult {
        let file = self.find_of(kind, name)?;
        Ok(self.answer(kind, StatusCode::OK, &file))
    }

    /// `POST /api/v1/{apps,jobs}`.
    pub(super) async fn create(&self, kind: Kind, spec: Json) -> ApiResult {
        let file = self.create_definition(kind, &spec).await?;
        Ok(self.answer(kind, StatusCode::CREATED, &file))
    }

    /// `PATCH /api/v1/{apps,jobs}/{name}`.
    pub(super) async fn update(
        &self,
        kind: Kind,
        name: &str,
        if_match: Option<&str>,
        patch: Json,
    ) -> ApiResult {
        let file = self.update_definition(kind, name, if_match, &patch).await?;
        Ok(self.answer(kind, StatusCode::OK, &file))
    }

    /// A definition as the API shows it, with its version as `ETag`.
    fn answer(
        &self,
        kind: Kind,
        status: StatusCode,
        file: &DefinitionFile,
    ) -> Response<Full<Bytes>> {
        versioned(
            status,
            &self.view_of(kind, file),
            &document::version(&file.text),
        )
    }

    fn view_of(&self, kind: Kind, file: &DefinitionFile) -> Json {
        match kind {
            Kind::App => self.view(file),
            Kind::Job => self.job_view(file),
        }
    }

    /// The directory of `kind`'s files.
    fn dir_of(&self, kind: Kind) -> PathBuf {
        match kind {
            Kind::App => self.apps_dir(),
            Kind::Job => self.jobs_dir(),
        }
    }

    /// The file of `kind` named `name`, or 404.
    pub(super) fn find_of(&self, kind: Kind, name: &str) -> Result<DefinitionFile, Refusal> {
        match kind {
            Kind::App => self.find(name),
            Kind::Job => self.find_job(name),
        }
    }

    /// Writes a new file from `spec` (its `name` names the file); refused if the name is
    /// taken, the project unknown or the file invalid.
    pub(super) async fn create_definition(
        &self,
        kind: Kind,
        spec: &Json,
    ) -> Result<DefinitionFile, Refusal> {
        let noun = kind.noun();
        let Some(name) = spec.get("name").and_then(Json::as_str).map(str::to_string) else {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!("the {noun} needs a \"name\" (lower-case letters, digits and '-')"),
            ));
        };
        if !is_file_name(&name) {
            return Err(error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("{name:?} is not {} name: use lower-case letters, digits and '-', starting with a letter", kind.a()),
            ));
        }
        let text = document::from_json(spec).map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
        let _writing = self.writes.lock().await;
        let project = project_of(&text);
        if !self.project_exists(&project)? {
            return Err(error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("unknown project {project:?}: create it first (tidegate project create {project})"),
            ));
        }
        if self.find_of(kind, &name).is_ok() {
            return Err(error(
                StatusCode::CONFLICT,
                format!(
                    "{} named {name:?} exists; update it, or delete it first",
                    kind.a()
                ),
            ));
        }
        let dir = self.dir_of(kind);
        std::fs::create_dir_all(&dir).map_err(|e| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot make {}: {e}", dir.display()),
            )
        })?;
        let path = dir.join(format!("{name}.toml"));
        if path.exists() {
            return Err(error(
                StatusCode::CONFLICT,
                format!(
                    "{} exists ({} file with another name inside)",
                    path.display(),
                    kind.a()
                ),
            ));
        }
        self.check(&path, Some(&text))?;
        self.share(kind, name.as_str(), Some(&text)).await?;
        self.settle(&path, Some(&text)).await?;
        self.apply_now().await;
        Ok(DefinitionFile {
            path,
            project,
            name,
            text,
        })
    }

    /// Applies a JSON merge patch to the file of `name`, if it is still at `if_match`.
    pub(super) async fn update_definition(
        &self,
        kind: Kind,
        name: &str,
        if_match: Option<&str>,
        patch: &Json,
    ) -> Result<DefinitionFile, Refusal> {
        if patch
            .get("name")
            .is_some_and(|new| new.as_str() != Some(name))
        {
            return Err(error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "{} cannot be renamed; create one with the new name and delete this one",
                    kind.a()
                ),
            ));
        }
        let _writing = self.writes.lock().await;
        let file = self.find_of(kind, name)?;
        check_version(&file, if_match)?;
        let text =
            document::patch(&file.text, patch).map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
        self.check(&file.path, Some(&text))?;
        self.share(kind, &file.name, Some(&text)).await?;
        self.settle(&file.path, Some(&text)).await?;
        self.apply_now().await;
        Ok(DefinitionFile {
            project: project_of(&text),
            text,
            ..file
        })
    }

    /// Removes the file of `name` (if it is still at `if_match` and nothing depends on it).
    pub(super) async fn delete_definition(
        &self,
        kind: Kind,
        name: &str,
        if_match: Option<&str>,
    ) -> Result<(), Refusal> {
        let _writing = self.writes.lock().await;
        let file = self.find_of(kind, name)?;
        check_version(&file, if_match)?;
        let current = self.config.load_full();
        if let Err(errors) = check_definition_file(&current.source, &current, &file.path, None) {
            return Err(invalid(&errors));
        }
        self.share(kind, &file.name, None).await?;
        self.settle(&file.path, None).await?;
        self.apply_now().await;
        Ok(())
    }
}
