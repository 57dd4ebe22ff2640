//! The management API's bearer token: from `admin_token_file`, or generated once into the
//! state directory (mode 0600) so a local CLI finds it. Never logged, only its file's path.

use std::path::{Path, PathBuf};

use crate::config::GatewaySettings;

/// Where a generated token is kept, under the state directory.
pub const GENERATED: &str = "admin-token";

/// A bearer token, compared in constant time.
pub struct Token(String);

impl Token {
    /// The configured token file's contents, or the generated token (made on first start).
    /// Returns the token and the file it came from.
    pub fn load(settings: &GatewaySettings) -> std::io::Result<(Token, PathBuf)> {
        if let Some(file) = &settings.admin_token_file {
            let text = std::fs::read_to_string(file).map_err(|error| {
                std::io::Error::new(
                    error.kind(),
                    format!("cannot read admin_token_file {}: {error}", file.display()),
                )
            })?;
            let token = text.trim();
            if token.len() < 16 {
                return Err(std::io::Error::other(format!(
                    "admin_token_file {} must hold a token of at least 16 characters",
                    file.display()
                )));
            }
            return Ok((Token(token.to_string()), file.clone()));
        }
        let file = settings.state_dir.join(GENERATED);
        Ok((Token(read_or_generate(&file)?), file))
    }

    /// Whether an `Authorization` header value carries this token.
    pub fn admits(&self, authorization: Option<&[u8]>) -> bool {
        authorization
            .and_then(|value| value.strip_prefix(b"Bearer "))
            .is_some_and(|presented| self.matches(presented))
    }

    /// Whether `presented` is the token (the console's login form).
    pub fn matches(&self, presented: &[u8]) -> bool {
        super::session::same_secret(presented, self.0.as_bytes())
    }
}

fn read_or_generate(file: &Path) -> std::io::Result<String> {
    match std::fs::read_to_string(file) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_string()),
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    let token = crate::random::token(32);
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    crate::secret_file::write(file, format!("{token}\n").as_bytes())?;
    tracing::info!(file = %file.display(), "generated the management API token");
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_is_kept_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state").join(GENERATED);
        let first = read_or_generate(&file).unwrap();
        assert_eq!(first.len(), 64);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            read_or_generate(&file).unwrap(),
            first,
            "kept across restarts"
        );
        let token = Token(first.clone());
        assert!(token.admits(Some(format!("Bearer {first}").as_bytes())));
        assert!(!token.admits(Some(b"Bearer wrong")));
        assert!(
            !token.admits(Some(first.as_bytes())),
            "needs the Bearer scheme"
        );
        assert!(!token.admits(None));
    }
}
