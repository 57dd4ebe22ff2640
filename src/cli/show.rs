//! How `app get` and `app list` print an app by default.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::table::{self, text};

/// One word for where the app stands.
fn status_word(app: &Value) -> &'static str {
    let status = &app["status"];
    if !app["config_error"].is_null() {
        "config-error"
    } else if status.is_null() {
        "loading"
    } else if status["latest_ready"] == status["revision"] {
        "ready"
    } else if status["revisions"][0]["state"]
        .as_str()
        .is_some_and(|s| s.ends_with("failed"))
    {
        "failed"
    } else {
        "deploying"
    }
}

pub fn print_list(list: &Value) {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let rows: Vec<Vec<String>> = list["apps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|app| {
            let oldest = app["status"]["revisions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["created"].as_u64())
                .min();
            let age = oldest.map_or("-".into(), |created| {
                humantime::format_duration(Duration::from_secs(now.saturating_sub(created)))
                    .to_string()
            });
            vec![
                text(&app["name"]),
                text(&app["project"]),
                status_word(app).into(),
                text(&app["url"]),
                text(&app["status"]["revision"]),
                age,
            ]
        })
        .collect();
    table::print(
        &["NAME", "PROJECT", "STATUS", "URL", "LATEST REVISION", "AGE"],
        &rows,
    );
}

pub fn print_app(app: &Value) {
    let status = &app["status"];
    println!("Name:      {}", text(&app["name"]));
    println!("Project:   {}", text(&app["project"]));
    println!("URL:       {}", text(&app["url"]));
    println!("Status:    {}", status_word(app));
    println!("Latest:    {}", text(&status["revision"]));
    println!("Ready:     {}", text(&status["latest_ready"]));
    if let Some(issues) = app["config_error"].as_array() {
        for issue in issues {
            println!("Config:    {}", text(issue));
        }
    }
    println!("\nRevisions:");
    print_revisions(&status["revisions"]);
    println!("\nInstances:");
    let instances: Vec<Vec<String>> = status["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            vec![
                text(&i["id"]),
                text(&i["revision"]),
                text(&i["state"]),
                text(&i["in_flight"]),
                text(&i["addr"]),
            ]
        })
        .collect();
    table::print(
        &["ID", "REVISION", "STATE", "IN-FLIGHT", "ADDRESS"],
        &instances,
    );
}

/// A table of revisions as the API lists them.
pub fn print_revisions(revisions: &Value) {
    let rows: Vec<Vec<String>> = revisions
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            vec![
                text(&r["name"]),
                text(&r["state"]),
                format!("{}%", r["percent"].as_u64().unwrap_or(0)),
                r["tags"].as_array().map_or(String::new(), |t| {
                    t.iter().map(text).collect::<Vec<_>>().join(",")
                }),
                format!(
                    "{}/{}",
                    r["ready"].as_u64().unwrap_or(0),
                    r["desired"].as_u64().unwrap_or(0)
                ),
                text(&r["last_error"]),
            ]
        })
        .collect();
    table::print(
        &["NAME", "STATE", "TRAFFIC", "TAGS", "READY", "LAST ERROR"],
        &rows,
    );
}
