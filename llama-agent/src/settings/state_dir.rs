//! Where the agent keeps its state (the last good config per group).
//!
//! Default `/var/lib/llama` (the packaged, root-run daemon); when that is not
//! writable (an unprivileged user, a read-only container root), fall back to
//! `$XDG_STATE_HOME/llama`, then `~/.local/state/llama`. An explicit
//! `--state-dir` never falls back: a path the operator chose that cannot be
//! written is a deployment error and is refused at start-up.

use std::path::{Path, PathBuf};

/// The packaged default.
pub const DEFAULT: &str = "/var/lib/llama";

/// Why an explicitly requested state directory cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("--state-dir / LLAMA_STATE_DIR {path:?} is not a writable directory: {source}")]
pub struct Error {
    path: PathBuf,
    source: std::io::Error,
}

/// Resolve the state directory. `Ok(None)` means no candidate was writable:
/// the agent then runs without persistence (and says so) rather than refusing
/// to probe at all.
pub fn resolve(explicit: Option<&Path>) -> Result<Option<PathBuf>, Error> {
    if let Some(path) = explicit {
        return usable(path)
            .map(|()| Some(path.to_owned()))
            .map_err(|source| Error {
                path: path.to_owned(),
                source,
            });
    }
    Ok(
        candidates(std::env::var_os("XDG_STATE_HOME"), std::env::var_os("HOME"))
            .into_iter()
            .find(|p| usable(p).is_ok()),
    )
}

/// The default and its fallbacks, in order of preference. Relative XDG paths
/// are ignored, as the XDG spec requires.
fn candidates(
    xdg_state_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Vec<PathBuf> {
    let mut out = vec![PathBuf::from(DEFAULT)];
    if let Some(xdg) = xdg_state_home
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
    {
        out.push(xdg.join("llama"));
    }
    if let Some(home) = home.map(PathBuf::from).filter(|p| p.is_absolute()) {
        out.push(home.join(".local/state/llama"));
    }
    out
}

/// Create the directory if needed and prove it is writable by creating and
/// removing a file (permission bits alone lie under read-only mounts).
fn usable(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(format!(".llama-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(&probe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_order_and_relative_xdg_ignored() {
        let c = candidates(Some("/x/state".into()), Some("/home/u".into()));
        assert_eq!(
            c,
            vec![
                PathBuf::from(DEFAULT),
                PathBuf::from("/x/state/llama"),
                PathBuf::from("/home/u/.local/state/llama")
            ]
        );
        let c = candidates(Some("rel".into()), None);
        assert_eq!(c, vec![PathBuf::from(DEFAULT)]);
    }

    #[test]
    fn explicit_unwritable_dir_is_an_error() {
        // A path below a regular file can never be created.
        let file = std::env::temp_dir().join(format!("llama-sd-file-{}", std::process::id()));
        std::fs::write(&file, b"x").unwrap();
        let err = resolve(Some(&file.join("sub"))).unwrap_err();
        assert!(
            err.to_string().contains("not a writable directory"),
            "{err}"
        );
        std::fs::remove_file(&file).unwrap();
    }

    #[test]
    fn explicit_writable_dir_is_created() {
        let dir = std::env::temp_dir().join(format!("llama-sd-ok-{}/a/b", std::process::id()));
        assert_eq!(resolve(Some(&dir)).unwrap(), Some(dir.clone()));
        assert!(dir.is_dir());
        std::fs::remove_dir_all(dir.parent().unwrap().parent().unwrap()).unwrap();
    }
}
