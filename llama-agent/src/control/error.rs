//! Errors of the control loop.

use std::path::PathBuf;

/// Why a request to the server, or the handling of its answer, failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The HTTP client could not be set up (start-up only).
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
    /// No TCP connection (refused, unreachable, DNS).
    #[error("server unreachable: {0}")]
    Connect(String),
    /// The TLS handshake failed: most often a server certificate that does
    /// not chain to the trusted roots.
    #[error(
        "TLS with the server failed: {0} (an https:// server's certificate must chain to --ca-cert / LLAMA_CA_CERT, or to a public root without it)"
    )]
    Tls(String),
    /// No complete answer within the request timeout.
    #[error("server did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// Any other transport failure (connection reset mid-answer, …).
    #[error("request failed: {0}")]
    Transport(String),
    /// The server answered with an error status.
    #[error("server answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    /// The answer was too large to be a config (protects the agent's memory).
    #[error("server answer exceeds {limit} bytes")]
    TooLarge { limit: usize },
    /// The answer was not what the API promises (docs/server-api.md).
    #[error("unexpected answer from the server: {0}")]
    BadAnswer(String),
    /// Reading a config file or the state directory failed.
    #[error("{path:?}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The collector refused a config.
    #[error("config rejected: {0}")]
    Rejected(String),
    /// A blocking helper task died (a panicking sink).
    #[error("config apply task failed: {0}")]
    Task(String),
}

impl Error {
    /// A short, stable description of the kind of failure, for logging once
    /// per state change: two attempts failing the same way give the same kind.
    pub fn kind(&self) -> String {
        match self {
            Self::Client(_) => "client setup".into(),
            Self::Connect(_) => "unreachable".into(),
            Self::Tls(_) => "TLS error".into(),
            Self::Timeout(_) => "timeout".into(),
            Self::Transport(_) => "transport error".into(),
            Self::Status { status, .. } => format!("HTTP {status}"),
            Self::TooLarge { .. } => "answer too large".into(),
            Self::BadAnswer(_) => "bad answer".into(),
            Self::Io { .. } => "I/O error".into(),
            Self::Rejected(_) => "rejected".into(),
            Self::Task(_) => "task failed".into(),
        }
    }

    /// Whether the server answered at all (so it is up, if unhappy).
    pub fn server_answered(&self) -> bool {
        matches!(
            self,
            Self::Status { .. } | Self::TooLarge { .. } | Self::BadAnswer(_)
        )
    }
}
