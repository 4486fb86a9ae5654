//! Who may send to a broker: the seam the ingress calls once it has parsed a request's events and
//! before it writes any of them. The decision itself (tokens, EventPolicy, the default mode) lives
//! in `kinetic-auth`; the ingress only maps the answer to 401 or 403, never to 503.

use cloudevents::Event;

/// Decides whether a request's events may enter a broker.
#[async_trait::async_trait]
pub trait Admission: Send + Sync {
    /// `authorization` is the request's `Authorization` header, if any. Every event of a batch is
    /// judged; one refused event refuses the request.
    async fn admit(
        &self,
        namespace: &str,
        broker: &str,
        authorization: Option<&str>,
        events: &[Event],
    ) -> Result<(), Denied>;
}

/// Why a request may not enter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No token where one is needed (401, `WWW-Authenticate: Bearer`).
    NoToken(String),
    /// A token that does not verify (401, `error="invalid_token"`).
    InvalidToken(String),
    /// A verified sender that no policy allows, or an event the policy's filters refuse (403).
    Forbidden(String),
}
