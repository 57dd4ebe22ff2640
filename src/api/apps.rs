//! `/api/v1/apps`: app files read from and written to `apps_dir` (`definitions`), shown
//! with each app's URL and live status.

use http::StatusCode;
use serde_json::{json, Value as Json};

use super::definitions::Kind;
use super::document;
use super::files::DefinitionFile;
use super::reply::{json, ApiResult};
use super::Api;

impl Api {
    /// Removes the app's file, and the sources uploaded for it.
    pub(super) async fn delete_app(&self, name: &str, if_match: Option<&str>) -> ApiResult {
        self.delete_definition(Kind::App, name, if_match).await?;
        self.remove_sources(name);
        Ok(json(StatusCode::OK, &json!({ "deleted": name })))
    }

    /// An app as the API shows it: its file (as JSON), version, URL and live status.
    pub(super) fn view(&self, file: &DefinitionFile) -> Json {
        let config = self.config.load();
        let domain = &config.gateway.domain;
        let host = format!("{}.{}.{domain}", file.name, file.project);
        let url = match self.proxy.http_port.get() {
            Some(80) => format!("http://{host}/"),
            Some(port) => format!("http://{host}:{port}/"),
            None => format!("https://{host}/"),
        };
        let table = self.proxy.routes.load();
        let status = table
            .routes()
            .iter()
            .find(|route| route.spec.name == file.name)
            .map(|route| {
                let mut status = serde_json::to_value(&*route.app.status()).unwrap_or_default();
                status["traffic"] = json!(route
                    .app
                    .traffic()
                    .shares()
                    .into_iter()
                    .map(|(revision, percent)| json!({ "revision": revision, "percent": percent }))
                    .collect::<Vec<_>>());
                status
            });
        let rejected = config
            .rejected
            .iter()
            .find(|r| r.file == file.path)
            .map(|r| r.issues.iter().map(ToString::to_string).collect::<Vec<_>>());
        json!({
            "name": file.name,
            "project": file.project,
            "file": file.path.display().to_string(),
            "version": document::version(&file.text),
            "url": url,
            "spec": document::to_json(&file.text).unwrap_or(Json::Null),
            "status": status,
            "config_error": rejected,
        })
    }
}
