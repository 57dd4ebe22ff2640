//! Instance identities for `project` visibility.
//!
//! Every instance the gateway starts gets a secret token in `TIDEGATE_TOKEN`; an instance
//! that calls another app through the gateway sends it back in the `X-Tidegate-Token` header.
//! The gateway knows which project each live token belongs to, so an app with
//! `visibility = "project"` admits exactly the instances of its own project, wherever their
//! requests come from. A token dies with its instance, and the header never reaches an
//! instance: the gateway removes it from every request it forwards.

use dashmap::DashMap;
use http::header::HeaderName;

/// The request header that carries an instance's token.
pub static TOKEN_HEADER: HeaderName = HeaderName::from_static("x-tidegate-token");

/// The environment variable an instance finds its token in.
pub const TOKEN_ENV: &str = "TIDEGATE_TOKEN";

/// Live instance tokens and the project each belongs to.
#[derive(Default)]
pub struct Identities {
    projects: DashMap<String, String>,
}

impl Identities {
    /// Issues a fresh token for an instance of `project`.
    pub fn issue(&self, project: &str) -> String {
        let token = crate::random::token(24);
        self.projects.insert(token.clone(), project.to_string());
        token
    }

    /// Forgets a token: its instance has ended.
    pub fn revoke(&self, token: &str) {
        self.projects.remove(token);
    }

    /// The project of the instance holding `token`, if it is live.
    pub fn project_of(&self, token: &str) -> Option<String> {
        self.projects.get(token).map(|entry| entry.value().clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_die_with_their_instance() {
        let identities = Identities::default();
        let a = identities.issue("shop");
        let b = identities.issue("shop");
        assert_ne!(a, b);
        assert_eq!(a.len(), 48);
        assert_eq!(identities.project_of(&a).as_deref(), Some("shop"));
        identities.revoke(&a);
        assert_eq!(identities.project_of(&a), None);
        assert_eq!(identities.project_of("forged"), None);
    }
}
