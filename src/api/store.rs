//! Where definitions written through the API are kept besides the local file: with several
//! gateway replicas, in the cluster (`replicas::definitions`), so every replica serves them.

use std::future::Future;
use std::pin::Pin;

/// A shared store of app and job definitions.
pub trait DefinitionStore: Send + Sync {
    /// Stores `text` as the definition `name` of `kind` ("app" or "job").
    fn put<'a>(
        &'a self,
        kind: &'a str,
        name: &'a str,
        text: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

    /// Removes the definition `name` of `kind`.
    fn delete<'a>(
        &'a self,
        kind: &'a str,
        name: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;
}
