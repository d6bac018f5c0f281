//! Embeds the XDP object when `cargo xtask build-ebpf` has built it.
//!
//! The eBPF object needs nightly and bpf-linker, which a Raspberry Pi build host
//! may not have, so the agent must also build without it. This script looks for
//! the object (`$LLAMA_EBPF_OBJECT`, else `<target>/bpfel-unknown-none/release/llama-ebpf`,
//! where `<target>` is `$CARGO_TARGET_DIR` or the workspace's `target/`). If it is
//! there, it is copied into OUT_DIR and the `llama_xdp_embedded` cfg is set, so
//! the agent `include_bytes!`es it; otherwise the agent is userspace-only.
//! Targets other than x86_64 and aarch64 never embed it.
use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo::rustc-check-cfg=cfg(llama_xdp_embedded)");
    println!("cargo::rustc-check-cfg=cfg(llama_xdp_unsupported_arch)");
    println!("cargo::rerun-if-env-changed=LLAMA_EBPF_OBJECT");
    println!("cargo::rerun-if-env-changed=CARGO_TARGET_DIR");

    // The XDP reflector ships for x86_64 and aarch64 only (both load the same
    // `bpfel` object). Elsewhere (32-bit ARM such as a Raspberry Pi OS
    // install) the agent is userspace-only, whatever object is lying around.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if !matches!(arch.as_str(), "x86_64" | "aarch64") {
        println!("cargo::rustc-cfg=llama_xdp_unsupported_arch");
        return;
    }

    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let object = match env::var_os("LLAMA_EBPF_OBJECT") {
        Some(path) => PathBuf::from(path),
        None => {
            let target = env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .map(|t| {
                    if t.is_absolute() {
                        t
                    } else {
                        manifest_dir.join("..").join(t)
                    }
                })
                .unwrap_or_else(|| manifest_dir.join("../target"));
            target.join("bpfel-unknown-none/release/llama-ebpf")
        }
    };
    // A missing path makes cargo rerun this script on every build, which is what
    // we want: the object appearing later must be picked up.
    println!("cargo::rerun-if-changed={}", object.display());

    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo")).join("llama-ebpf.o");
    match fs::read(&object) {
        Ok(bytes) if bytes.starts_with(b"\x7fELF") => {
            fs::write(&out, bytes).expect("write OUT_DIR/llama-ebpf.o");
            println!("cargo::rustc-cfg=llama_xdp_embedded");
        }
        Ok(_) => println!(
            "cargo::warning={} is not an ELF object; building a userspace-only agent",
            object.display()
        ),
        Err(_) => {
            // Not an error: userspace-only build. `cargo xtask build-ebpf` adds XDP.
        }
    }
}
