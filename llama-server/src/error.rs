//! Errors: the crate's one [`Error`] enum, and [`ApiError`], the JSON error
//! body (`{"error": "..."}`) every endpoint answers with when it refuses a
//! request. Handlers return `Result<_, ApiError>`; nothing in a request path
//! panics.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Serialize;

/// Everything that can go wrong in the library outside a single request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server configuration file could not be read or parsed.
    #[error("config file {path}: {reason}")]
    Config { path: String, reason: String },
    /// A listen address could not be parsed, resolved or bound.
    #[error("listen address {addr}: {reason}")]
    Listen { addr: String, reason: String },
    /// The registry refused a new entry because it holds `max_entries`.
    #[error("registry full: {max} entries (limit max_entries)")]
    Full { max: usize },
    /// The registry refused a new entry because its group holds
    /// `max_group_members`.
    #[error("group '{group}' full: {max} members (limit max_group_members)")]
    GroupFull { group: String, max: usize },
    /// The registry refused a new group because it holds `max_groups`.
    #[error("too many groups: {max} (limit max_groups)")]
    TooManyGroups { max: usize },
    /// An unauthenticated registration named the `probe_shortname` of a
    /// live entry with another id in its group.
    #[error(
        "probe_shortname '{shortname}' belongs to the live entry {holder} of group '{group}' until it expires (only a registration with the token may take it over)"
    )]
    ShortnameTaken {
        shortname: String,
        group: String,
        holder: String,
    },
    /// The shared store (Redis) failed or could not be reached.
    #[error("store unavailable: {0}")]
    Store(String),
    /// An HTTP exchange with InfluxDB, an agent or the server failed.
    #[error("{what}: {reason}")]
    Http { what: String, reason: String },
    /// A TLS certificate, key or CA file is unusable.
    #[error("TLS: {0}")]
    Tls(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Error {
    pub(crate) fn http(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Error::Http {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}

/// A refused request: a status and a message, rendered as
/// `{"error": "<message>"}` (plus `"field"` when one field is to blame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub field: Option<String>,
    /// Seconds for a `Retry-After` header (429 and 503).
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    /// Adds a `Retry-After` of `secs` seconds.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// 400 for a schema violation; the message starts with the field's name
    /// so a human reading only `error` still knows what to fix.
    pub fn field(field: impl Into<String>, problem: impl std::fmt::Display) -> Self {
        let field = field.into();
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: format!("{field}: {problem}"),
            field: Some(field),
            retry_after: None,
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn unknown_group(group: &str) -> Self {
        Self::not_found(format!("unknown group '{group}'"))
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        let status = match err {
            // The registry is full: a capacity problem of this server, which
            // may clear when the reaper runs, so a retryable 503.
            Error::Full { .. } | Error::GroupFull { .. } | Error::TooManyGroups { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::ShortnameTaken { .. } => StatusCode::CONFLICT,
            // The shared store is away: retry, maybe through another replica.
            Error::Store(_) => {
                return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, err.to_string())
                    .with_retry_after(5);
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, err.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: &self.message,
            field: self.field.as_deref(),
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}
