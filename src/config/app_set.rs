//! Which app files apply: each file stands or falls on its own.
//!
//! One bad app file used to refuse the whole reload, so a typo in one app blocked every other
//! app's changes, and nothing but the log said that the file on disk was not what ran. Now
//! every file is validated alone, then the apps are checked against each other (names,
//! hosts). A file that fails keeps its app's previous spec, if it had one, and is listed in
//! [`Config::rejected`] with its issues; every other file applies.
//!
//! Conflicts between files are settled in favour of what already runs: specs that did not
//! change, and the kept specs of rejected files, claim their names and hosts first; a changed
//! or new file that collides with them is the one rejected. Without a previous config (the
//! first load) files claim in name order, so the first file wins, as before.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::error::ConfigIssue;
use super::model::{AppSpec, Config, HostPattern};

/// An app or job file that could not be applied, and what serves in its place.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedFile {
    pub file: PathBuf,
    /// Whether it is a job file (an app and a job may share a name).
    pub job: bool,
    /// The app (or job) the file defines (its `name`, else the file's stem).
    pub app: String,
    pub issues: Vec<ConfigIssue>,
    /// The previous spec keeps serving; `false`: the app (job) is not served.
    pub kept_previous: bool,
}

/// One app file after validating it alone.
pub struct FileOutcome {
    pub file: PathBuf,
    /// The app it defines, for the listing of a rejected file.
    pub app: String,
    pub result: Result<AppSpec, Vec<ConfigIssue>>,
}

/// The apps that serve (sorted by name) and the files rejected, given each file's outcome
/// and the config that serves now.
pub fn assemble(
    outcomes: Vec<FileOutcome>,
    previous: Option<&Config>,
) -> (Vec<Arc<AppSpec>>, Vec<RejectedFile>) {
    let previous_of = |file: &PathBuf| {
        previous.and_then(|config| config.apps.iter().find(|app| app.file == *file).cloned())
    };
    let mut claims = Claims::default();
    let mut apps = Vec::new();
    let mut rejected = Vec::new();
    let mut changed = Vec::new();
    let mut incumbents = Vec::new();
    for outcome in outcomes {
        let before = previous_of(&outcome.file);
        match outcome.result {
            Ok(spec) if before.as_deref() == Some(&spec) => {
                incumbents.push(before.expect("compared equal"))
            }
            Ok(spec) => changed.push((spec, before)),
            Err(issues) => {
                rejected.push(RejectedFile {
                    job: false,
                    file: outcome.file,
                    app: outcome.app,
                    issues,
                    kept_previous: before.is_some(),
                });
                incumbents.extend(before);
            }
        }
    }
    for spec in incumbents {
        // Specs that served together before do not collide; should one, it is dropped
        // rather than served twice.
        if claims.check(&spec).is_empty() {
            claims.insert(&spec);
            apps.push(spec);
        }
    }
    for (spec, before) in changed {
        let issues = claims.check(&spec);
        if issues.is_empty() {
            claims.insert(&spec);
            apps.push(Arc::new(spec));
            continue;
        }
        let kept = before.filter(|before| claims.check(before).is_empty());
        if let Some(kept) = &kept {
            claims.insert(kept);
            apps.push(Arc::clone(kept));
        }
        rejected.push(RejectedFile {
            job: false,
            file: spec.file.clone(),
            app: spec.name.clone(),
            issues,
            kept_previous: kept.is_some(),
        });
    }
    apps.sort_by(|a, b| a.name.cmp(&b.name));
    rejected.sort_by(|a, b| a.file.cmp(&b.file));
    (apps, rejected)
}

/// Names and hosts taken so far, and by which app file.
#[derive(Default)]
struct Claims {
    names: HashMap<String, PathBuf>,
    hosts: HashMap<HostPattern, (String, PathBuf)>,
}

impl Claims {
    /// What `spec` would collide with.
    fn check(&self, spec: &AppSpec) -> Vec<ConfigIssue> {
        let issue = |field: &str, message: String| ConfigIssue {
            file: spec.file.clone(),
            field: field.to_string(),
            message,
        };
        if let Some(first) = self.names.get(&spec.name) {
            let message = format!(
                "app {:?} is already defined in {}",
                spec.name,
                first.display()
            );
            return vec![issue("name", message)];
        }
        all_hosts(spec)
            .filter_map(|host| {
                let (owner, owner_file) = self.hosts.get(&host)?;
                Some(issue(
                    "hosts",
                    format!(
                        "host {host} is already routed to app {owner:?} ({})",
                        owner_file.display()
                    ),
                ))
            })
            .collect()
    }

    fn insert(&mut self, spec: &AppSpec) {
        self.names.insert(spec.name.clone(), spec.file.clone());
        for host in all_hosts(spec) {
            self.hosts
                .insert(host, (spec.name.clone(), spec.file.clone()));
        }
    }
}

/// An app's hosts and the hosts of its traffic tags.
fn all_hosts(spec: &AppSpec) -> impl Iterator<Item = HostPattern> + '_ {
    let tags = spec
        .traffic
        .iter()
        .filter_map(|target| target.tag.as_ref())
        .map(|(_, host)| HostPattern::Exact(host.clone()));
    spec.hosts.iter().cloned().chain(tags)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{validate_files, RawApp, RawGatewayFile};

    fn app(upstream: &str, hosts: &str) -> String {
        format!("project = \"p\"\nruntime = \"static\"\nhosts = [{hosts}]\n[static]\nupstreams = [\"{upstream}\"]\n")
    }

    /// Validates app files given as (name, text) against `previous`.
    fn load(files: &[(&str, &str)], previous: Option<&Config>) -> Config {
        let raw: RawGatewayFile = toml::from_str("[gateway]").unwrap();
        let apps: Vec<(PathBuf, Result<RawApp, ConfigIssue>)> = files
            .iter()
            .map(|(name, text)| {
                let file = PathBuf::from(format!("apps/{name}.toml"));
                let parsed = toml::from_str(text).map_err(|error| ConfigIssue {
                    file: file.clone(),
                    field: String::new(),
                    message: error.to_string(),
                });
                (file, parsed)
            })
            .collect();
        validate_files(Path::new("tidegate.toml"), &raw, &apps, previous).unwrap()
    }

    fn names(config: &Config) -> Vec<&str> {
        config.apps.iter().map(|app| app.name.as_str()).collect()
    }

    #[test]
    fn a_file_that_fails_alone_keeps_its_previous_spec_and_others_apply() {
        let before = load(
            &[
                ("a", &app("127.0.0.1:1", "")),
                ("b", &app("127.0.0.1:1", "")),
            ],
            None,
        );
        let after = load(
            &[
                ("a", "runtime = 3"),
                ("b", &app("127.0.0.1:2", "")),
                ("c", "["),
            ],
            Some(&before),
        );
        assert_eq!(names(&after), ["a", "b"]);
        assert_eq!(after.apps[0], before.apps[0], "a keeps its previous spec");
        assert_ne!(after.apps[1], before.apps[1], "b's change applies");
        let rejected: Vec<_> = after
            .rejected
            .iter()
            .map(|r| (r.app.as_str(), r.kept_previous))
            .collect();
        assert_eq!(rejected, [("a", true), ("c", false)]);
    }

    #[test]
    fn a_changed_file_that_takes_a_host_in_use_is_the_one_rejected() {
        let before = load(
            &[
                ("a", &app("127.0.0.1:1", "")),
                ("z", &app("127.0.0.1:1", "\"shared.example\"")),
            ],
            None,
        );
        // a (first in name order) now claims z's host: z, unchanged, keeps it.
        let after = load(
            &[
                ("a", &app("127.0.0.1:2", "\"shared.example\"")),
                ("z", &app("127.0.0.1:1", "\"shared.example\"")),
            ],
            Some(&before),
        );
        assert_eq!(names(&after), ["a", "z"]);
        assert_eq!(after.apps[0], before.apps[0], "a runs its previous spec");
        assert_eq!(after.rejected.len(), 1);
        let issue = after.rejected[0].issues[0].to_string();
        assert!(
            issue.contains("a.toml: hosts: host shared.example is already routed to app \"z\""),
            "{issue}"
        );

        // Without a previous config the first file in name order wins, as before.
        let fresh = load(
            &[
                ("a", &app("127.0.0.1:2", "\"shared.example\"")),
                ("z", &app("127.0.0.1:1", "\"shared.example\"")),
            ],
            None,
        );
        assert_eq!(names(&fresh), ["a"]);
        assert_eq!(fresh.rejected[0].app, "z");
    }
}
