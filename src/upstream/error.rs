//! Why a request could not be sent to an instance or answered by it, and the one rule for
//! sending it again.

use crate::stall::Stalled;

/// A failed attempt to send a request to an instance or read its response head.
#[derive(Debug, thiserror::Error)]
#[error("{cause}")]
pub struct UpstreamError {
    pub cause: Cause,
    /// The attempt ran on a pooled connection (one that may have been closed while idle).
    pub reused: bool,
    /// How far the attempt got before it failed.
    pub stage: Stage,
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    /// No connection could be opened.
    #[error("{0}")]
    Connect(String),
    /// The connection failed or closed, or the instance's answer was not HTTP.
    #[error("{0}")]
    Reset(String),
    /// The client's request body failed on its way: the client's fault, not the instance's.
    #[error("{0}")]
    ClientBody(ClientBodyFault),
}

/// How far an attempt got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Nothing of the request reached the instance.
    Unsent,
    /// The request went out (in part or whole) and no byte of a response came back.
    NoResponse,
    /// Part of the response came back.
    Responding,
}

/// How a client's request body failed on its way to an instance.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyFault {
    /// No byte for `client_body_timeout`.
    #[error("{0}")]
    Stalled(Stalled),
    /// The body was malformed (a bad chunk, say).
    #[error("{0}")]
    Malformed(String),
    /// The client went away (closed its connection, reset its stream) before the body ended.
    #[error("{0}")]
    Gone(String),
}

impl UpstreamError {
    pub fn connect(cause: impl Into<String>) -> Self {
        UpstreamError {
            cause: Cause::Connect(cause.into()),
            reused: false,
            stage: Stage::Unsent,
        }
    }

    pub fn reset(cause: impl Into<String>, reused: bool, stage: Stage) -> Self {
        UpstreamError {
            cause: Cause::Reset(cause.into()),
            reused,
            stage,
        }
    }

    pub fn client_body(fault: ClientBodyFault) -> Self {
        UpstreamError {
            cause: Cause::ClientBody(fault),
            reused: false,
            stage: Stage::NoResponse,
        }
    }

    /// Whether the request may go out once more on a new connection. Only a pooled
    /// connection that turned out closed qualifies (an instance closes idle connections when
    /// it likes, and the close can cross the request on the wire); then a request that never
    /// left may always be sent again, and one that left without any answer only if its method
    /// is idempotent (RFC 9110 9.2.2). A fresh connection that fails says something about the
    /// instance, and is not retried.
    pub fn may_retry(&self, idempotent: bool) -> bool {
        self.reused
            && matches!(self.cause, Cause::Reset(_))
            && match self.stage {
                Stage::Unsent => true,
                Stage::NoResponse => idempotent,
                Stage::Responding => false,
            }
    }
}

/// The innermost cause of an error chain, which is where the useful words are
/// ("Connection refused (os error 111)" rather than "client error (Connect)").
pub fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_reused_connection_closed_before_an_answer_is_retried() {
        let closed = |reused, stage| UpstreamError::reset("closed", reused, stage);
        assert!(closed(true, Stage::Unsent).may_retry(false));
        assert!(closed(true, Stage::NoResponse).may_retry(true));
        assert!(!closed(true, Stage::NoResponse).may_retry(false), "POST");
        assert!(!closed(true, Stage::Responding).may_retry(true));
        assert!(!closed(false, Stage::Unsent).may_retry(true), "fresh");
        assert!(!UpstreamError::connect("refused").may_retry(true));
        let body = UpstreamError::client_body(ClientBodyFault::Gone("eof".into()));
        assert!(!body.may_retry(true));
    }
}
