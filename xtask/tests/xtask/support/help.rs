//! The dist binaries' own description of themselves: environment variable
//! names and option defaults from `--help`.

use std::collections::BTreeSet;

use llama_testkit::dist::{self, Arch};

/// What one binary's `--help` (and its subcommands') says.
pub struct Help {
    pub env: BTreeSet<String>,
    pub text: String,
}

/// Runs the x86_64 dist `binary` with `--help` and each subcommand's `--help`.
pub fn help(binary: &str) -> Help {
    let run = |args: &[&str]| {
        let out = dist::command(Arch::X86_64, binary)
            .args(args)
            .output()
            .expect("run --help");
        assert!(out.status.success(), "{binary} {args:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut text = run(&["--help"]);
    let commands: Vec<String> = text
        .split("Commands:")
        .nth(1)
        .and_then(|t| t.split("Options:").next())
        .unwrap_or("")
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|c| c != "help")
        .collect();
    for c in commands {
        text.push_str(&run(&[&c, "--help"]));
    }
    let env = text
        .split("[env: ")
        .skip(1)
        .filter_map(|s| s.split('=').next().map(str::to_owned))
        .collect();
    Help { env, text }
}

impl Help {
    /// The `[default: …]` of the option whose flags include `flag`.
    pub fn default_of(&self, flag: &str) -> Option<String> {
        let mut block = String::new();
        let mut found = None;
        for line in self.text.lines().chain(["-"]) {
            if line.trim_start().starts_with('-') {
                if block.split(&[' ', ','][..]).any(|w| w == flag) {
                    found = block
                        .split("[default: ")
                        .nth(1)
                        .and_then(|d| d.split(']').next())
                        .map(str::to_owned);
                    break;
                }
                block.clear();
            }
            block.push_str(line);
            block.push(' ');
        }
        found
    }
}

pub fn binaries_available(test: &str) -> bool {
    dist::available(test, &[Arch::X86_64])
}
