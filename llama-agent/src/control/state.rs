//! The persisted last good config: `<state_dir>/config-<group>.yaml`.
//!
//! Written atomically (temporary file, fsync, rename, fsync of the directory)
//! so a crash or power cut mid-write leaves either the old config or the new
//! one, never a truncated file that would be refused at the next start.
//! A kill during the write leaves the temporary file
//! (`config-<group>.yaml.tmp.<pid>`); [`remove_stale_temporaries`] clears
//! those at the next start.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use tracing::{info, warn};

use super::error::Error;

/// What a temporary file's name has between the state file's name and the
/// writer's process id.
const TMP_MARK: &str = ".yaml.tmp.";

/// Removes the temporary files that writers killed mid-write left in `dir`:
/// those of processes that no longer run, and this process's own (after a
/// restart in a container the agent often has the same pid, and it has
/// written nothing yet). A live process's file is left alone: another agent
/// may share the directory for another group. Best effort, logged.
pub fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(pid) = name
            .starts_with("config-")
            .then(|| name.rsplit_once(TMP_MARK))
            .flatten()
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != me && Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => {
                info!(file = %entry.path().display(), "removed a temporary state file left by an interrupted write")
            }
            Err(e) => {
                warn!(file = %entry.path().display(), error = %e, "cannot remove a stale temporary state file")
            }
        }
    }
}

/// The state file of one group.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// The file for `group` in `dir`. The group name is percent-encoded
    /// (everything but ASCII letters, digits, `-` and `_`), so any group name
    /// maps to a distinct, harmless file name (`a/b`, `..`, spaces).
    pub fn new(dir: &Path, group: &str) -> Self {
        let mut name = String::from("config-");
        for b in group.bytes() {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                name.push(char::from(b));
            } else {
                name.push_str(&format!("%{b:02X}"));
            }
        }
        name.push_str(".yaml");
        Self {
            path: dir.join(name),
        }
    }

    /// Where the file lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The persisted config, `None` when there is none yet.
    pub fn load(&self) -> Result<Option<String>, Error> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Replace the persisted config atomically.
    pub fn store(&self, text: &str) -> Result<(), Error> {
        let io = |source| Error::Io {
            path: self.path.clone(),
            source,
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let tmp = self
            .path
            .with_extension(format!("{}{}", &TMP_MARK[1..], std::process::id()));
        let result = (|| {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            // Make the rename itself durable.
            std::fs::File::open(dir)?.sync_all()
        })();
        if result.is_err() {
            // Best effort: do not leave temporary files behind on a full disk.
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_become_safe_distinct_file_names() {
        let dir = Path::new("/s");
        let name = |g| StateFile::new(dir, g).path().to_owned();
        assert_eq!(name("default"), Path::new("/s/config-default.yaml"));
        assert_eq!(name("wan_eu-1"), Path::new("/s/config-wan_eu-1.yaml"));
        assert_eq!(name("a/b"), Path::new("/s/config-a%2Fb.yaml"));
        assert_eq!(name(".."), Path::new("/s/config-%2E%2E.yaml"));
        assert_ne!(name("a b"), name("a_b"));
    }

    #[test]
    fn store_load_round_trip_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::new(dir.path(), "g");
        assert_eq!(f.load().unwrap(), None);
        f.store("a: 1\n").unwrap();
        f.store("b: 2\n").unwrap();
        assert_eq!(f.load().unwrap().as_deref(), Some("b: 2\n"));
        // Only the state file remains: no temporary files.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("config-g.yaml")]);
    }

    #[test]
    fn stale_temporaries_of_dead_and_own_pids_are_removed_and_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::new(dir.path(), "g");
        f.store("kept\n").unwrap();
        let put = |name: &str| std::fs::write(dir.path().join(name), "x").unwrap();
        // pid_max is at most 2^22: this process can never exist.
        put("config-g.yaml.tmp.2147483647");
        put(&format!("config-g.yaml.tmp.{}", std::process::id()));
        put("config-g.yaml.tmp.1"); // init: alive
        put("notes.yaml.tmp.2147483647"); // not ours
        remove_stale_temporaries(dir.path());
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "config-g.yaml",
                "config-g.yaml.tmp.1",
                "notes.yaml.tmp.2147483647"
            ]
        );
        assert_eq!(f.load().unwrap().as_deref(), Some("kept\n"));
    }

    #[test]
    fn store_into_missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::new(&dir.path().join("absent"), "g");
        assert!(matches!(f.store("x"), Err(Error::Io { .. })));
    }
}
