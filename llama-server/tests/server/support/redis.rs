//! A throwaway Redis for tests: `redis-server` (Debian package
//! `redis-server`) listening only on a unix socket in a temporary
//! directory, without persistence; killed on drop, restartable on the same
//! socket. Without `redis-server` the test is skipped, or fails under CI
//! (`llama_testkit::cannot_run`).

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use llama_testkit::cannot_run;

pub struct Redis {
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Redis {
    /// Starts one, or returns `None` (test skipped) when `redis-server` is
    /// missing.
    pub fn start(test: &str) -> Option<Redis> {
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            cannot_run(
                test,
                "redis-server is not installed (apt-get install -y redis-server)",
            );
            return None;
        }
        let mut redis = Redis {
            child: None,
            dir: tempfile::tempdir().unwrap(),
        };
        redis.restart();
        Some(redis)
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    /// The URL `--store` takes.
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket().display())
    }

    /// Stops it (SIGKILL): every connection breaks, nothing is kept.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(self.socket());
    }

    /// (Re)starts it on the same socket, empty.
    pub fn restart(&mut self) {
        self.kill();
        let log = std::fs::File::create(self.dir.path().join("redis.log")).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(self.socket())
            .args(["--unixsocketperm", "700", "--dir"])
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.answers() {
            if Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
                panic!("redis-server did not answer within 20 s; log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A command through `redis-cli` on the socket; its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .arg("-s")
            .arg(self.socket())
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn answers(&self) -> bool {
        self.socket().exists() && self.cli(&["PING"]) == "PONG"
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
