//! The build context of the InfluxDB 1.x image: Debian's `influxd`, the
//! shared libraries `ldd` says it loads, and Debian's configuration, so the
//! compose example has a database without pulling an image from a registry.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};

use crate::cmd;

const INFLUXD: &str = "/usr/bin/influxd";
const CONFIG: &str = "/etc/influxdb/influxdb.conf";

pub fn prepare_context(context: &Path) -> Result<()> {
    let _ = fs::remove_dir_all(context);
    let rootfs = context.join("rootfs");
    for (dir, mode) in [("tmp", 0o1777), ("var/lib/influxdb", 0o755)] {
        let dir = rootfs.join(dir);
        fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode))?;
    }
    let mut files = vec![PathBuf::from(INFLUXD), PathBuf::from(CONFIG)];
    files.extend(shared_libraries(Path::new(INFLUXD))?);
    for file in files {
        let dest = rootfs.join(file.strip_prefix("/").unwrap_or(&file));
        fs::create_dir_all(dest.parent().expect("under rootfs"))?;
        // fs::copy follows symlinks: the image gets the library itself.
        fs::copy(&file, &dest)
            .with_context(|| format!("copy {} into the image context", file.display()))?;
    }
    Ok(())
}

/// The absolute paths of the libraries (and loader) `binary` needs.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = cmd::output(Command::new("ldd").arg(binary))
        .with_context(|| format!("`ldd {}` failed", binary.display()))?;
    Ok(parse_ldd(&out))
}

fn parse_ldd(out: &str) -> Vec<PathBuf> {
    out.lines()
        .filter_map(|line| {
            // `libc.so.6 => /lib/…/libc.so.6 (0x…)` or `/lib64/ld-linux….so.2 (0x…)`;
            // the vDSO has no file.
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ldd_output() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f3c)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f3d)\n";
        assert_eq!(
            parse_ldd(out),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
    }
}
