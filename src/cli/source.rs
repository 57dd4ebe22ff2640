//! `--build-source DIR`: the directory packed as a tar archive and uploaded to the API
//! (`PUT /api/v1/apps/{name}/source`), which answers with where it stored it.
//!
//! The archive is deterministic (entries sorted, no times or owners, modes kept), so the
//! same tree uploads to the same stored directory and makes no new revision; `.git` is
//! left out.

use std::path::Path;

use http::Method;

use super::client::{CliError, Client};

/// Directory names never uploaded.
const LEFT_OUT: &[&str] = &[".git"];

/// Packs `dir` and uploads it as `app`'s source; returns the path the gateway stored it at.
pub async fn upload(client: &Client, app: &str, dir: &Path) -> Result<String, CliError> {
    if !dir.is_dir() {
        return Err(CliError::Refused(format!(
            "--build-source {}: not a directory",
            dir.display()
        )));
    }
    let archive = {
        let owned = dir.to_path_buf();
        tokio::task::spawn_blocking(move || pack(&owned))
            .await
            .map_err(|e| CliError::Refused(format!("packing failed: {e}")))?
            .map_err(|e| CliError::Refused(format!("--build-source {}: {e}", dir.display())))?
    };
    let answer = client
        .upload(
            Method::PUT,
            &format!("/api/v1/apps/{app}/source"),
            archive.into(),
        )
        .await?;
    answer.body["path"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| {
            CliError::Refused("the server did not say where it stored the source".into())
        })
}

/// `dir` as a deterministic tar archive.
pub fn pack(dir: &Path) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    builder.follow_symlinks(false);
    append(&mut builder, dir, Path::new(""))?;
    builder.into_inner()
}

fn append(builder: &mut tar::Builder<Vec<u8>>, dir: &Path, prefix: &Path) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let name = entry.file_name();
        if LEFT_OUT.iter().any(|left| name == *left) {
            continue;
        }
        let path = entry.path();
        let inside = prefix.join(&name);
        if entry.file_type()?.is_dir() {
            builder.append_dir(&inside, &path)?;
            append(builder, &path, &inside)?;
        } else {
            builder.append_path_with_name(&path, &inside)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_tree_packs_to_the_same_bytes_whatever_its_times() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/main.sh"), "echo hi\n").unwrap();
        std::fs::write(dir.path().join("b.txt"), "b").unwrap();
        std::fs::create_dir(dir.path().join(".git")).unwrap();
        std::fs::write(dir.path().join(".git/HEAD"), "ref").unwrap();
        let first = pack(dir.path()).unwrap();
        let file = std::fs::File::options()
            .write(true)
            .open(dir.path().join("b.txt"))
            .unwrap();
        file.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(7))
            .unwrap();
        assert_eq!(pack(dir.path()).unwrap(), first);
        let mut names: Vec<String> = tar::Archive::new(first.as_slice())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["b.txt", "src", "src/main.sh"]);
        std::fs::write(dir.path().join("b.txt"), "changed").unwrap();
        assert_ne!(pack(dir.path()).unwrap(), first);
    }
}
