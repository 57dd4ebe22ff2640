//! `tidegate app logs|events|traffic` and `tidegate revision list|get`: what an app is doing,
//! and where its traffic goes.

use http::Method;
use serde_json::json;

use super::client::{CliError, Client};
use super::table::{self, text};
use super::{Output, RevisionCommand};

/// `app logs`: every instance's output, or one instance's, its last `tail` lines; with
/// `follow`, then what they write next, until interrupted.
pub async fn logs(
    client: &Client,
    name: &str,
    instance: Option<&str>,
    tail: Option<usize>,
    follow: bool,
) -> Result<(), CliError> {
    let mut path = format!("/api/v1/apps/{name}/logs?");
    if let Some(instance) = instance {
        path.push_str(&format!("instance={instance}&"));
    }
    if let Some(tail) = tail {
        path.push_str(&format!("tail={tail}&"));
    }
    if follow {
        path.push_str("follow=true");
        return client.stream(&path).await;
    }
    let answer = client.call(Method::GET, &path, None, None).await?;
    print!("{}", answer.text);
    Ok(())
}

/// `app events`: what happened to the app, oldest first.
pub async fn events(client: &Client, output: Output, name: &str) -> Result<(), CliError> {
    let path = format!("/api/v1/apps/{name}/events");
    let events = client.call(Method::GET, &path, None, None).await?.body;
    if output == Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&events).unwrap_or_default()
        );
        return Ok(());
    }
    let rows: Vec<Vec<String>> = events["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| vec![text(&e["time"]), text(&e["reason"]), text(&e["message"])])
        .collect();
    table::print(&["TIME", "REASON", "MESSAGE"], &rows);
    Ok(())
}

/// `app traffic NAME REVISION=PERCENT[,TAG]...`: replaces the app's traffic split.
pub async fn traffic(client: &Client, name: &str, targets: &[String]) -> Result<(), CliError> {
    let mut split = Vec::new();
    for target in targets {
        let (revision, rest) = target.split_once('=').ok_or_else(|| {
            CliError::Refused(format!(
                "{target}: expected REVISION=PERCENT[,TAG] (REVISION may be `latest`)"
            ))
        })?;
        let (percent, tag) = match rest.split_once(',') {
            Some((percent, tag)) => (percent, Some(tag)),
            None => (rest, None),
        };
        let percent: u32 = percent
            .parse()
            .map_err(|_| CliError::Refused(format!("{target}: {percent:?} is not a percentage")))?;
        let mut entry = json!({ "revision": revision, "percent": percent });
        if let Some(tag) = tag {
            entry["tag"] = json!(tag);
        }
        split.push(entry);
    }
    let patch = json!({ "traffic": split });
    let path = format!("/api/v1/apps/{name}");
    let current = client.call(Method::GET, &path, None, None).await?;
    client
        .call(Method::PATCH, &path, Some(&patch), current.etag.as_deref())
        .await?;
    println!("traffic of {name} set; `tidegate app get {name}` shows it applied");
    Ok(())
}

/// `revision list --app NAME` and `revision get NAME`.
pub async fn revision(
    client: &Client,
    output: Output,
    command: RevisionCommand,
) -> Result<(), CliError> {
    match command {
        RevisionCommand::List { app } => {
            let path = format!("/api/v1/apps/{app}/revisions");
            let list = client.call(Method::GET, &path, None, None).await?.body;
            if output == Output::Json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&list).unwrap_or_default()
                );
                return Ok(());
            }
            super::show::print_revisions(&list["revisions"]);
        }
        RevisionCommand::Get { name } => {
            let app = name.rsplit_once('-').map(|(app, _)| app).ok_or_else(|| {
                CliError::Refused(format!("{name:?} is not a revision name (APP-NNNNN)"))
            })?;
            let path = format!("/api/v1/apps/{app}/revisions/{name}");
            let revision = client.call(Method::GET, &path, None, None).await?.body;
            println!(
                "{}",
                serde_json::to_string_pretty(&revision).unwrap_or_default()
            );
        }
    }
    Ok(())
}
