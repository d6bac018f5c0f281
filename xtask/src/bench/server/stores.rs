//! The registry stores side by side: the in-memory store, one replica on
//! Redis, and two replicas on the same Redis, each loaded with 11,000
//! agents (100 groups of 100 and one group of 1,000) in the same run.
//!
//! Per setup: registrations/s (wrk re-registering random agents of the
//! population, the steady state), the config of the 1,000-member group
//! (p50/p99 at 16 connections and at 1), Redis memory per entry, and the
//! CPU one replica spends on the fleet's steady load (every agent
//! registering every 60 s and polling its config every 30 s, paced).

use std::{
    fmt::Write as _,
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use llama_testkit::free_port;

use super::{Conn, Server, WrkResult, populate, wrk};

/// Groups of 100 and the big group.
const SMALL_GROUPS: u32 = 100;
const SMALL_SIZE: u32 = 100;
const BIG_SIZE: u32 = 1000;
/// The steady load of the fleet, per second: one registration per agent
/// per 60 s, one config poll per agent per 30 s.
const REG_PERIOD_S: f64 = 60.0;
const POLL_PERIOD_S: f64 = 30.0;

/// A throwaway `redis-server` on a loopback port, killed on drop.
struct Redis {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Redis {
    fn start() -> Result<Redis> {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("llama-bench-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting redis-server (apt-get install -y redis-server)")?;
        let redis = Redis { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while redis.cli(&["PING"]).as_deref() != Some("PONG") {
            if Instant::now() > deadline {
                bail!("redis-server did not answer on port {port}");
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(redis)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .ok()?;
        Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// `used_memory` from `INFO memory`.
    fn used_memory(&self) -> Result<u64> {
        let info = self.cli(&["INFO", "memory"]).unwrap_or_default();
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| anyhow!("no used_memory in INFO: {info}"))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The 11,000 agents: (ip, group).
fn population() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for g in 0..SMALL_GROUPS {
        for i in 0..SMALL_SIZE {
            out.push((
                format!("10.{}.{}.{}", 10 + g / 100, g % 100, i + 1),
                format!("s{g}"),
            ));
        }
    }
    for i in 0..BIG_SIZE {
        out.push((format!("10.200.{}.{}", i / 250, i % 250 + 1), "big".into()));
    }
    out
}

/// wrk: re-register a random agent of the population.
const REREGISTER_LUA: &str = r#"
math.randomseed(os.time())
wrk.headers["Content-Type"] = "application/json"
request = function()
  local ip, group
  if math.random(0, 10) < 10 then
    local g = math.random(0, 99)
    ip = string.format("10.%d.%d.%d", 10 + math.floor(g / 100), g % 100, math.random(1, 100))
    group = "s" .. g
  else
    local m = math.random(0, 999)
    ip = string.format("10.200.%d.%d", math.floor(m / 250), m % 250 + 1)
    group = "big"
  end
  local body = '{"port":8100,"ip":"' .. ip .. '","group":"' .. group .. '","keepalive":3600,"tags":{"version":"0.1.0","probe_shortname":"' .. ip .. '","probe_name":"' .. ip .. '.example.com","location":"rack-' .. group .. '"}}'
  return wrk.format("POST", "/api/v1/register", nil, body)
end
"#;

/// wrk: the config of a random member of the big group.
const BIG_CONFIG_LUA: &str = r#"
math.randomseed(os.time())
request = function()
  local m = math.random(0, 999)
  local ip = string.format("10.200.%d.%d", math.floor(m / 250), m % 250 + 1)
  return wrk.format("GET", "/api/v1/config/big?llamaport=8100&srcip=" .. ip)
end
"#;

/// One setup's figures.
struct Figures {
    name: &'static str,
    reg_rps: f64,
    reg_errors: u64,
    config: WrkResult,
    config_single: WrkResult,
    bytes_per_entry: Option<f64>,
    steady_cpu: f64,
    steady_errors: u64,
    reg_cpu: f64,
    reg_errors_steady: u64,
    populate: Duration,
}

/// CPU seconds (user + system) of process `pid` so far.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command: utime and stime are the 12th
    // and 13th of those (14 and 15 overall).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11..13)
        .ok_or_else(|| anyhow!("short /proc stat"))?
        .iter()
        .map(|v| v.parse::<f64>().unwrap_or(0.0))
        .sum();
    // USER_HZ is 100 on Linux.
    Ok(ticks / 100.0)
}

/// The fleet's steady load for `secs` against `servers` (round robin),
/// paced over 4 connections: registrations, and with `polls` the config
/// polls too; returns (the first server's CPU share of one core, errors).
fn steady(servers: &[&Server], secs: u64, polls: bool) -> Result<(f64, u64)> {
    let agents = population();
    let poll_rate = if polls {
        agents.len() as f64 / POLL_PERIOD_S
    } else {
        0.0
    };
    let per_s = agents.len() as f64 / REG_PERIOD_S + poll_rate;
    let total = (per_s * secs as f64) as usize;
    let cpu_before = cpu_seconds(servers[0].child.id())?;
    let started = Instant::now();
    let errors: u64 = thread::scope(|s| -> Result<u64> {
        let workers: Vec<_> = (0..4usize)
            .map(|w| {
                let agents = &agents;
                let port = servers[w % servers.len()].port;
                s.spawn(move || -> Result<u64> {
                    let mut c = Conn::open(port)?;
                    let mut errors = 0;
                    let mut k = w;
                    while k < total {
                        // Request k is due at k / per_s seconds.
                        let due = started + Duration::from_secs_f64(k as f64 / per_s);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            thread::sleep(wait);
                        }
                        let (ip, group) = &agents[(k * 7919) % agents.len()];
                        // One registration per two polls, as the periods say.
                        let (status, _) = if !polls || k % 3 == 0 {
                            c.request(
                                "POST",
                                "/api/v1/register",
                                Some(&super::reg_body(ip, ip, group, 3600)),
                            )?
                        } else {
                            c.request(
                                "GET",
                                &format!("/api/v1/config/{group}?llamaport=8100&srcip={ip}"),
                                None,
                            )?
                        };
                        if status != 200 {
                            errors += 1;
                        }
                        k += 4;
                    }
                    Ok(errors)
                })
            })
            .collect();
        let mut errors = 0;
        for w in workers {
            errors += w.join().map_err(|_| anyhow!("load thread panicked"))??;
        }
        Ok(errors)
    })?;
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(servers[0].child.id())? - cpu_before;
    Ok((cpu / wall, errors))
}

fn measure(
    name: &'static str,
    servers: &[&Server],
    redis: Option<&Redis>,
    secs: u64,
) -> Result<Figures> {
    let agents = population();
    let before = redis.map(Redis::used_memory).transpose()?;
    let populate_time = populate(servers[0].port, &agents, 3600)?;
    let bytes_per_entry = match (redis, before) {
        (Some(r), Some(b)) => {
            Some((r.used_memory()?.saturating_sub(b)) as f64 / agents.len() as f64)
        }
        _ => None,
    };
    // Registrations: every replica loaded at once, the rates summed.
    let results: Vec<Result<WrkResult>> = thread::scope(|s| {
        let runs: Vec<_> = servers
            .iter()
            .map(|srv| {
                let url = srv.url("/api/v1/register");
                s.spawn(move || wrk(&url, REREGISTER_LUA, secs, 16))
            })
            .collect();
        runs.into_iter()
            .map(|r| {
                r.join()
                    .unwrap_or_else(|_| Err(anyhow!("wrk thread panicked")))
            })
            .collect()
    });
    let mut reg_rps = 0.0;
    let mut reg_errors = 0;
    for r in results {
        let r = r?;
        reg_rps += r.rps;
        reg_errors += r.errors;
    }
    let url = servers[servers.len() - 1].url("/api/v1/config/big");
    let config = wrk(&url, BIG_CONFIG_LUA, secs, 16)?;
    let config_single = wrk(&url, BIG_CONFIG_LUA, secs, 1)?;
    let (steady_cpu, steady_errors) = steady(servers, secs.max(5) * 2, true)?;
    let (reg_cpu, reg_errors_steady) = steady(servers, secs.max(5) * 2, false)?;
    Ok(Figures {
        name,
        reg_rps,
        reg_errors,
        config,
        config_single,
        bytes_per_entry,
        steady_cpu,
        steady_errors,
        reg_cpu,
        reg_errors_steady,
        populate: populate_time,
    })
}

/// Runs the three setups and returns the report section (Markdown).
pub fn run(bin: &Path, quick: bool) -> Result<String> {
    let secs = if quick { 3 } else { 10 };
    let mut all = Vec::new();
    {
        let server = Server::start(bin, &[])?;
        all.push(measure("memory, 1 server", &[&server], None, secs)?);
    }
    {
        let redis = Redis::start()?;
        let url = redis.url();
        let server = Server::start(bin, &["--store", &url])?;
        all.push(measure("Redis, 1 replica", &[&server], Some(&redis), secs)?);
    }
    {
        let redis = Redis::start()?;
        let url = redis.url();
        let a = Server::start(bin, &["--store", &url])?;
        let b = Server::start(bin, &["--store", &url])?;
        all.push(measure("Redis, 2 replicas", &[&a, &b], Some(&redis), secs)?);
    }
    Ok(report(&all))
}

fn report(all: &[Figures]) -> String {
    let mut md = String::new();
    md.push_str("| figure | ");
    md.push_str(&all.iter().map(|f| f.name).collect::<Vec<_>>().join(" | "));
    md.push_str(" |\n|---|");
    md.push_str(&"---|".repeat(all.len()));
    md.push('\n');
    let mut row = |figure: &str, cell: &dyn Fn(&Figures) -> String| {
        let _ = write!(md, "| {figure} |");
        for f in all {
            let _ = write!(md, " {} |", cell(f));
        }
        md.push('\n');
    };
    row("registering 11,000 agents (4 connections), s", &|f| {
        format!("{:.2}", f.populate.as_secs_f64())
    });
    row(
        "re-registrations/s, all replicas (wrk, 16 connections each)",
        &|f| format!("{:.0} ({} errors)", f.reg_rps, f.reg_errors),
    );
    row(
        "config of the 1,000-member group, 16 connections: req/s, p50, p99",
        &|f| {
            format!(
                "{:.0}/s, {:.2} ms, {:.2} ms",
                f.config.rps, f.config.p50_ms, f.config.p99_ms
            )
        },
    );
    row("same, 1 connection: req/s, p50, p99", &|f| {
        format!(
            "{:.0}/s, {:.2} ms, {:.2} ms",
            f.config_single.rps, f.config_single.p50_ms, f.config_single.p99_ms
        )
    });
    row("Redis memory per entry", &|f| {
        f.bytes_per_entry
            .map_or("–".into(), |b| format!("{b:.0} bytes"))
    });
    row(
        "CPU of one replica, the fleet re-registering every 60 s (183/s in all)",
        &|f| {
            format!(
                "{:.1} % of a core ({} errors)",
                f.reg_cpu * 100.0,
                f.reg_errors_steady
            )
        },
    );
    row(
        "same, plus every agent polling its config every 30 s (550/s in all)",
        &|f| {
            format!(
                "{:.1} % of a core ({} errors)",
                f.steady_cpu * 100.0,
                f.steady_errors
            )
        },
    );
    md
}

/// How the section was measured.
pub const METHOD: &str = "\
- Each setup starts fresh: `llama-server` (release build) with the in-memory store; one replica with `--store redis://127.0.0.1:<port>` on a `redis-server` (Debian's, no persistence) on the same machine; two replicas on one such Redis. Server, Redis and load share the 2 cores.
- Population: 11,000 agents, 100 groups of 100 and one group (`big`) of 1,000, 4 tags each, registered over 4 keep-alive connections to the first replica.
- Re-registrations: `wrk -t1 -c16` per replica at once (10 s; 3 s with `--quick`), each request re-registering a random agent of the population (the steady state: no new entries); rates summed over the replicas.
- Config: `wrk` against the last replica, requester a random member of `big` (the config lists 999 targets), at 16 connections and at 1.
- Redis memory per entry: `used_memory` (`INFO memory`) after registering the population minus before, divided by 11,000.
- Steady load, paced over 4 connections spread over the replicas for 20 s each: every agent registering every 60 s (183 requests/s in all), then the same plus every agent polling its config every 30 s (550 requests/s in all; a third of them registrations). CPU is the user + system time of the first replica's process over the wall time (from `/proc/<pid>/stat`); with two replicas each gets half the requests.
";
