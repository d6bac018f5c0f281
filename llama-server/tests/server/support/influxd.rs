//! A throwaway InfluxDB 1.x for tests: `influxd` (Debian package `influxdb`)
//! started on free loopback ports with its data in a temporary directory,
//! killed and cleaned up on drop. Without `influxd` the test is skipped, or
//! fails under CI (`llama_testkit::cannot_run`).

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use llama_testkit::{cannot_run, free_port};

pub struct Influxd {
    child: Child,
    dir: PathBuf,
    pub http: SocketAddr,
    /// The admin user and password of an instance with authentication on.
    admin: Option<(String, String)>,
}

impl Influxd {
    /// Starts one, or returns `None` (test skipped) when `influxd` is missing.
    pub async fn start(test: &str) -> Option<Influxd> {
        Self::start_with(test, None).await
    }

    /// Starts one with authentication on and `admin` (user, password) as
    /// its admin user.
    pub async fn start_with_auth(test: &str, admin: (&str, &str)) -> Option<Influxd> {
        Self::start_with(test, Some((admin.0.to_owned(), admin.1.to_owned()))).await
    }

    async fn start_with(test: &str, admin: Option<(String, String)>) -> Option<Influxd> {
        if Command::new("influxd").arg("version").output().is_err() {
            cannot_run(
                test,
                "influxd is not installed (apt-get install -y influxdb)",
            );
            return None;
        }
        let dir = std::env::temp_dir().join(format!(
            "llama-influxd-{}-{}",
            std::process::id(),
            test.replace("::", "-")
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let rpc = free_port();
        let config = format!(
            r#"reporting-disabled = true
bind-address = "127.0.0.1:{rpc}"
[meta]
  dir = "{d}/meta"
  logging-enabled = false
[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  query-log-enabled = false
[http]
  enabled = true
  bind-address = "{http}"
  log-enabled = false
  auth-enabled = {auth}
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
"#,
            d = dir.display(),
            auth = admin.is_some(),
        );
        let conf = dir.join("influxdb.conf");
        std::fs::write(&conf, config).unwrap();
        let log = std::fs::File::create(dir.join("influxd.log")).unwrap();
        let child = Command::new("influxd")
            .arg("-config")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{test}: cannot start influxd: {e}"));
        let influxd = Influxd {
            child,
            dir,
            http,
            admin: admin.clone(),
        };
        influxd.wait_ready().await;
        if let Some((user, pass)) = &admin {
            // With no user yet, InfluxDB lets anyone create the first admin.
            let q = format!("CREATE USER \"{user}\" WITH PASSWORD '{pass}' WITH ALL PRIVILEGES");
            influxd.query("", &q).await;
        }
        Some(influxd)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.http)
    }

    async fn wait_ready(&self) {
        let client = crate::support::http();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(format!("{}/ping", self.url())).send().await
                && r.status().as_u16() == 204
            {
                return;
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.join("influxd.log")).unwrap_or_default();
                panic!("influxd did not answer /ping within 60 s; log:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs an InfluxQL query and returns the JSON answer.
    pub async fn query(&self, db: &str, q: &str) -> serde_json::Value {
        let mut url = reqwest::Url::parse(&format!("{}/query", self.url())).unwrap();
        url.query_pairs_mut()
            .append_pair("db", db)
            .append_pair("q", q);
        let mut request = crate::support::http().post(url);
        if let Some((user, pass)) = &self.admin {
            request = request.basic_auth(user, Some(pass));
        }
        let r = request.send().await.unwrap();
        assert!(r.status().is_success(), "query {q}: {}", r.status());
        r.json().await.unwrap()
    }

    /// The rows of the first series of a query (empty when none).
    pub async fn rows(&self, db: &str, q: &str) -> Vec<Vec<serde_json::Value>> {
        let v = self.query(db, q).await;
        let mut rows = Vec::new();
        if let Some(series) = v["results"][0]["series"].as_array() {
            for s in series {
                for row in s["values"].as_array().unwrap() {
                    rows.push(row.as_array().unwrap().clone());
                }
            }
        }
        rows
    }
}

impl Drop for Influxd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
