//! The registration token: a secret the server may require on
//! `POST /api/v1/register` and `DELETE /api/v1/register/<id>`, sent as
//! `Authorization: Bearer <token>`. It is never logged: `Debug` prints a
//! placeholder, so settings and configs can be debug-printed safely.

use std::{fmt, path::Path};

/// A bearer token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

/// Why a token cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the registration token is empty")]
    Empty,
    #[error("the registration token must be printable ASCII without spaces (an HTTP header value)")]
    NotHeaderSafe,
    #[error("cannot read the registration token file {path:?}: {source}")]
    File {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl Token {
    /// A token from text; surrounding whitespace (a file's trailing newline)
    /// is ignored.
    pub fn new(text: &str) -> Result<Self, TokenError> {
        let t = text.trim();
        if t.is_empty() {
            return Err(TokenError::Empty);
        }
        if !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::NotHeaderSafe);
        }
        Ok(Self(t.to_owned()))
    }

    /// The token in a file (so it stays out of the process list and unit
    /// files).
    pub fn from_file(path: &Path) -> Result<Self, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::File {
            path: path.to_owned(),
            source,
        })?;
        Self::new(&text)
    }

    /// The secret itself, for the header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret_and_whitespace_is_trimmed() {
        let t = Token::new("  s3cret-value\n").unwrap();
        assert_eq!(t.expose(), "s3cret-value");
        assert!(!format!("{t:?}").contains("s3cret"));
        assert!(matches!(Token::new(" \n"), Err(TokenError::Empty)));
        assert!(matches!(Token::new("a b"), Err(TokenError::NotHeaderSafe)));
    }
}
