//! Creating, patching and deleting a definition file, the same for apps and jobs: the name
//! and project checked, the text checked as `tidegate check` checks it, written atomically,
//! versions compared (`If-Match`), the live reload asked for before the answer. What is
//! particular to each kind (its view, what goes with a deleted one) stays with its handlers.

use std::path::PathBuf;

use http::StatusCode;
use serde_json::Value as Json;

use super::document;
use super::files::{check_version, is_file_name, project_of, DefinitionFile};
use super::reply::{error, invalid, Refusal};
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

    /// The noun with its article: "an app", "a job".
    fn a(self) -> &'static str {
        match self {
            Kind::App => "an app",
            Kind::Job => "a job",
        }
    }
}

impl Api {
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
        self.write(&path, &text)?;
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
        self.write(&file.path, &text)?;
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
        std::fs::remove_file(&file.path).map_err(|e| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot remove {}: {e}", file.path.display()),
            )
        })?;
        self.apply_now().await;
        Ok(())
    }
}
