//! `cargo xtask test-vm` when a guest goes wrong: a guest that hangs ends
//! the run within the boot timeout with its console's last lines, and
//! neither that nor Ctrl-C in the middle of a boot leaves qemu, the tap or
//! the namespace behind. Drives the xtask binary with its hidden
//! `--hung-guest` (an x86_64 guest whose `/init` never starts the agent),
//! using the dist binaries already built and Debian's kernel (fetched and
//! cached by xtask).

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use llama_testkit::{
    dist::{self, Arch},
    privileged,
};

use crate::support::tool_available;

/// The boot timeout given to the run that must time out: far above the few
/// seconds an emulated guest needs to reach its `/init` here.
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

/// Bound on the whole run: the first run also fetches the kernel package.
const RUN_BOUND: Duration = Duration::from_secs(600);

/// Bound on each wait for something to go away.
const GONE_BOUND: Duration = Duration::from_secs(60);

#[test]
fn a_hung_guest_times_out_and_ctrl_c_leaves_nothing_behind() {
    let test = "test_vm::hung_guest";
    if !privileged(test)
        || !dist::available(test, &[Arch::X86_64])
        || !tool_available(test, "qemu-system-x86_64", "`cargo xtask test` installs it")
    {
        return;
    }

    // A guest that never gets its agent up: the run fails on its own, in
    // bounded time, saying why and showing the console.
    let mut run = HungRun::start(BOOT_TIMEOUT);
    let status = run.wait(RUN_BOUND);
    let out = run.output();
    assert!(!status.success(), "a hung guest passed:\n{out}");
    let guest = run
        .guest()
        .unwrap_or_else(|| panic!("no qemu line:\n{out}"));
    assert!(
        out.contains(&format!(
            "no `reflector running` on the guest's console within {BOOT_TIMEOUT:?}"
        )),
        "{out}"
    );
    assert!(
        out.contains("llama-vm: hanging on purpose") && out.contains("console lines ("),
        "the console's tail is missing:\n{out}"
    );
    guest.assert_gone(&out);

    // Ctrl-C while the guest runs: xtask dies of it and takes qemu, the
    // tap and the namespace with it.
    let mut run = HungRun::start(Duration::from_secs(3600));
    let guest = run.wait_for_guest(RUN_BOUND);
    let deadline = Instant::now() + RUN_BOUND;
    while !std::fs::read_to_string(&guest.console)
        .unwrap_or_default()
        .contains("llama-vm: hanging on purpose")
    {
        assert!(
            Instant::now() < deadline,
            "the guest never reached its /init:\n{}",
            run.output()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        netns_exists(&guest.namespace),
        "namespace {} missing while the guest runs",
        guest.namespace
    );
    let pid = nix::unistd::Pid::from_raw(run.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    let status = run.wait(GONE_BOUND);
    assert!(!status.success(), "xtask ignored SIGINT:\n{}", run.output());
    guest.assert_gone(&run.output());
}

/// `xtask test-vm --hung-guest` running, its stderr collected.
struct HungRun {
    child: Child,
    output: Arc<Mutex<String>>,
}

impl HungRun {
    fn start(boot_timeout: Duration) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args([
                "test-vm",
                "--arch",
                "x86_64",
                "--hung-guest",
                "--boot-timeout",
                &boot_timeout.as_secs().to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start xtask");
        let output = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let output = Arc::clone(&output);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut out = output.lock().expect("output");
                    out.push_str(&line);
                    out.push('\n');
                }
            });
        }
        Self { child, output }
    }

    fn output(&self) -> String {
        self.output.lock().expect("output").clone()
    }

    /// Waits for xtask to exit; kills it and fails after `bound`.
    fn wait(&mut self, bound: Duration) -> ExitStatus {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for xtask") {
                // Let the readers take the last lines.
                std::thread::sleep(Duration::from_millis(200));
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("xtask still running after {bound:?}:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The guest xtask started, once it has said so.
    fn wait_for_guest(&mut self, bound: Duration) -> Guest {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(guest) = self.guest() {
                return guest;
            }
            if let Some(status) = self.child.try_wait().expect("wait for xtask") {
                panic!(
                    "xtask ended ({status}) before starting qemu:\n{}",
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no qemu after {bound:?}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn guest(&self) -> Option<Guest> {
        self.output().lines().find_map(Guest::parse)
    }
}

impl Drop for HungRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What xtask says when it starts a guest: `<arch> <mode>: qemu pid N in
/// namespace NS, console PATH`.
struct Guest {
    qemu: i32,
    namespace: String,
    console: std::path::PathBuf,
}

impl Guest {
    fn parse(line: &str) -> Option<Self> {
        let rest = line.split_once(": qemu pid ")?.1;
        let (pid, rest) = rest.split_once(" in namespace ")?;
        let (namespace, console) = rest.split_once(", console ")?;
        Some(Self {
            qemu: pid.parse().ok()?,
            namespace: namespace.to_owned(),
            console: console.into(),
        })
    }

    /// qemu has exited and the namespace (with the tap inside) is gone.
    fn assert_gone(&self, out: &str) {
        let deadline = Instant::now() + GONE_BOUND;
        while process_alive(self.qemu) || netns_exists(&self.namespace) {
            assert!(
                Instant::now() < deadline,
                "left behind: qemu {} alive: {}, namespace {} exists: {}\n{out}",
                self.qemu,
                process_alive(self.qemu),
                self.namespace,
                netns_exists(&self.namespace)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Whether `pid` runs (a zombie waiting for its reaper has exited).
fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}
