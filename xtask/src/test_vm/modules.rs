//! Which kernel modules to put in the initramfs, in the order to load
//! them: the requested ones and, first, everything they depend on, read
//! from each module's own `.modinfo` (`depends=` — what `depmod` reads).
//! Debian builds different parts of virtio into different kernels, so the
//! list is worked out from the package, not written down per kernel.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

/// `wanted` module names (`virtio_net`) resolved to files in `dir`
/// (`lib/modules/<version>`), dependencies first, each once. Names built
/// into the kernel (listed in `modules.builtin`, when the package has it)
/// are skipped.
pub fn load_order(dir: &Path, wanted: &[&str]) -> Result<Vec<PathBuf>> {
    let mut index = HashMap::new();
    collect(&dir.join("kernel"), &mut index)?;
    let builtin = fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default();
    let builtin: Vec<String> = builtin
        .lines()
        .filter_map(|l| Path::new(l).file_stem())
        .map(|s| normalise(&s.to_string_lossy()))
        .collect();
    let mut order = Vec::new();
    for name in wanted {
        visit(&normalise(name), &index, &builtin, &mut order, 0)?;
    }
    Ok(order)
}

fn visit(
    name: &str,
    index: &HashMap<String, PathBuf>,
    builtin: &[String],
    order: &mut Vec<PathBuf>,
    depth: usize,
) -> Result<()> {
    if depth > 32 {
        bail!("module dependencies nest too deep at {name}");
    }
    let Some(path) = index.get(name) else {
        if builtin.iter().any(|b| b == name) {
            return Ok(());
        }
        bail!("module {name} is neither in the package nor built in");
    };
    if order.contains(path) {
        return Ok(());
    }
    for dep in depends(path)? {
        visit(&dep, index, builtin, order, depth + 1)?;
    }
    if !order.contains(path) {
        order.push(path.clone());
    }
    Ok(())
}

/// The `depends=` list of a module's `.modinfo`.
fn depends(path: &Path) -> Result<Vec<String>> {
    let bytes = fs::read(path).with_context(|| format!("read {}", path.display()))?;
    let key = b"depends=";
    let Some(at) = bytes.windows(key.len()).position(|w| w == key) else {
        return Ok(Vec::new());
    };
    let rest = &bytes[at + key.len()..];
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    Ok(String::from_utf8_lossy(&rest[..end])
        .split(',')
        .filter(|s| !s.is_empty())
        .map(normalise)
        .collect())
}

fn collect(dir: &Path, index: &mut HashMap<String, PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, index)?;
        } else if path.extension().is_some_and(|e| e == "ko")
            && let Some(stem) = path.file_stem()
        {
            index.insert(normalise(&stem.to_string_lossy()), path);
        }
    }
    Ok(())
}

/// Module names treat `-` and `_` alike.
fn normalise(name: &str) -> String {
    name.replace('-', "_")
}
