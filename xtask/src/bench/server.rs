//! `cargo xtask bench server`: throughput, latency, memory and reap time of
//! the release-built `llama-server`, against the original Python server's
//! anchors measured on the same machine type.
//!
//! Load comes from `wrk -t1 -c16` (the tool and settings the anchors were
//! measured with); setup traffic and the requests timed during a reap come
//! from a small blocking HTTP/1.1 client here. The live matrix's budgets
//! (history memory, a collection round, `/api/v1/matrix`) are measured by
//! the release-built `matrix_bench` example of llama-server. Everything goes
//! to loopback. Results and the method go to `docs/benchmarks/server.md`.

use std::{
    fmt::Write as _,
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use llama_testkit::free_port;

use crate::cmd;

mod stores;

/// The original server's figures (wrk -t1 -c16, 10 s, same machine type).
mod anchor {
    pub const REG_ONE: (f64, f64) = (2000.0, 2500.0);
    pub const REG_RANDOM: (f64, f64) = (200.0, 230.0);
    pub const CONFIG_RPS: (f64, f64) = (52.0, 66.0);
    pub const CONFIG_P50_MS: (f64, f64) = (240.0, 290.0);
    pub const LIST_RPS: (f64, f64) = (25.0, 31.0);
    pub const RSS_10K_MB: f64 = 130.0;
    /// The original's reap (O(n²) duplicate check) held its lock this long
    /// at 10,000 probes.
    pub const REAP_10K_S: (f64, f64) = (31.0, 42.0);
}

const GOAL_FACTOR: f64 = 20.0;

/// A running server, killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(bin: &Path, extra: &[&str]) -> Result<Server> {
        let port = free_port();
        let child = Command::new(bin)
            .args([
                "-i",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "--max-entries",
                "5000000",
                // The benchmark measures the registry, not its guards: one
                // client address registers groups of up to 10,000.
                "--register-rate",
                "0",
                "--max-group-members",
                "5000000",
                "--max-groups",
                "5000000",
                // The registered addresses are made up (10.0.0.0/8): the
                // server must not try to scrape them.
                "--collect",
                "false",
            ])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let server = Server { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(mut c) = Conn::open(port)
                && c.request("GET", "/api/v1/interval", None).is_ok()
            {
                return Ok(server);
            }
            thread::sleep(Duration::from_millis(50));
        }
        bail!("llama-server did not come up on port {port}")
    }

    fn rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .ok_or_else(|| anyhow!("no VmRSS"))
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A keep-alive HTTP/1.1 connection (enough for this server's answers,
/// which always carry Content-Length).
struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    fn open(port: u16) -> Result<Conn> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Conn {
            reader: BufReader::new(s),
        })
    }

    fn request(&mut self, method: &str, path: &str, body: Option<&str>) -> Result<(u16, Vec<u8>)> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: bench\r\n");
        if let Some(b) = body {
            let _ = write!(
                req,
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            );
        }
        req.push_str("\r\n");
        if let Some(b) = body {
            req.push_str(b);
        }
        self.reader.get_mut().write_all(req.as_bytes())?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("bad status line {line:?}"))?;
        let mut len = 0usize;
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse()?;
            }
        }
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body)?;
        Ok((status, body))
    }
}

fn reg_body(ip: &str, short: &str, group: &str, keepalive: u64) -> String {
    format!(
        r#"{{"port":8100,"ip":"{ip}","group":"{group}","keepalive":{keepalive},"tags":{{"version":"0.1.0","probe_shortname":"{short}","probe_name":"{short}.example.com","location":"rack-{group}"}}}}"#
    )
}

/// Registers probes `ips` (with shortnames = ips) over 4 connections.
fn populate(port: u16, probes: &[(String, String)], keepalive: u64) -> Result<Duration> {
    let started = Instant::now();
    let chunks: Vec<&[(String, String)]> = probes.chunks(probes.len().div_ceil(4).max(1)).collect();
    thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                s.spawn(move || -> Result<()> {
                    let mut c = Conn::open(port)?;
                    for (ip, group) in chunk {
                        let (status, body) = c.request(
                            "POST",
                            "/api/v1/register",
                            Some(&reg_body(ip, ip, group, keepalive)),
                        )?;
                        if status != 200 {
                            bail!("register {ip}: {status} {}", String::from_utf8_lossy(&body));
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow!("populate thread panicked"))??;
        }
        Ok(())
    })?;
    Ok(started.elapsed())
}

/// `10.<a>.<b>.<c>` for probe `i` of block `block`.
fn ip_of(block: u32, i: u32) -> String {
    format!("10.{}.{}.{}", block, i / 250, i % 250 + 1)
}

struct WrkResult {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

fn parse_latency_ms(s: &str) -> Option<f64> {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
    let v: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => v / 1000.0,
        "ms" => v,
        "s" => v * 1000.0,
        "m" => v * 60_000.0,
        _ => return None,
    })
}

fn wrk(url: &str, script: &str, secs: u64, conns: u32) -> Result<WrkResult> {
    let path = std::env::temp_dir().join(format!("llama-bench-{}.lua", std::process::id()));
    std::fs::write(&path, script)?;
    let out = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{conns}"),
            &format!("-d{secs}s"),
            "--latency",
            "-s",
        ])
        .arg(&path)
        .arg(url)
        .output()
        .context("running wrk (apt-get install -y wrk)")?;
    let _ = std::fs::remove_file(&path);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    let mut r = WrkResult {
        rps: 0.0,
        p50_ms: 0.0,
        p99_ms: 0.0,
        errors: 0,
    };
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v] => r.rps = v.parse()?,
            ["50%", v] => r.p50_ms = parse_latency_ms(v).unwrap_or(0.0),
            ["99%", v] => r.p99_ms = parse_latency_ms(v).unwrap_or(0.0),
            ["Non-2xx", "or", "3xx", "responses:", v] => r.errors += v.parse::<u64>()?,
            ["Socket", "errors:", rest @ ..] => {
                r.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    if r.rps == 0.0 {
        bail!("could not read wrk's output:\n{text}");
    }
    Ok(r)
}

const REG_ONE_LUA: &str = r#"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"port":8100,"ip":"10.0.0.1","keepalive":3600,"tags":{"version":"0.1.0","probe_shortname":"one","probe_name":"one.example.com","location":"rack-1"}}'
"#;

const REG_RANDOM_LUA: &str = r#"
math.randomseed(os.time())
wrk.headers["Content-Type"] = "application/json"
request = function()
  local ip = string.format("10.%d.%d.%d", math.random(0, 255), math.random(0, 255), math.random(1, 254))
  local body = '{"port":8100,"ip":"' .. ip .. '","keepalive":3600,"tags":{"version":"0.1.0","probe_shortname":"' .. ip .. '","probe_name":"' .. ip .. '.example.com","location":"rack-1"}}'
  return wrk.format("POST", "/api/v1/register", nil, body)
end
"#;

/// Random requesters of group g0 (probes 10.100.x.y).
const CONFIG_LUA: &str = r#"
math.randomseed(os.time())
request = function()
  local m = math.random(0, 999)
  local ip = string.format("10.100.%d.%d", math.floor(m / 250), m % 250 + 1)
  return wrk.format("GET", "/api/v1/config/g0?llamaport=8100&srcip=" .. ip)
end
"#;

const LIST_LUA: &str = "wrk.method = \"GET\"\n";

#[derive(Default)]
struct Figures {
    reg_one: f64,
    reg_one_errors: u64,
    reg_random: f64,
    reg_random_errors: u64,
    random_entries: u64,
    config: Option<WrkResult>,
    config_single: Option<WrkResult>,
    config_bytes: usize,
    list: Option<WrkResult>,
    list_bytes: usize,
    rss_empty_kib: u64,
    rss_10k_kib: u64,
    rss_100k_base_kib: u64,
    rss_100k_kib: u64,
    populate_100k: Duration,
    reap_removed: u64,
    reap_s: f64,
    reap_longest_lock_ms: f64,
    reg_during_reap: Vec<Duration>,
}

fn json_number(body: &[u8], key: &str) -> Option<f64> {
    let text = std::str::from_utf8(body).ok()?;
    let at = text.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &text[at..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
}

fn prom_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Phase 1: registrations per second, one probe and random IPs.
fn bench_registrations(bin: &Path, secs: u64, f: &mut Figures) -> Result<()> {
    let server = Server::start(bin, &["--reap-interval", "3600"])?;
    let url = server.url("/api/v1/register");
    let one = wrk(&url, REG_ONE_LUA, secs, 16)?;
    (f.reg_one, f.reg_one_errors) = (one.rps, one.errors);
    println!(
        "registrations/s, one probe re-registering: {:.0} ({} errors)",
        one.rps, one.errors
    );
    let random = wrk(&url, REG_RANDOM_LUA, secs, 16)?;
    (f.reg_random, f.reg_random_errors) = (random.rps, random.errors);
    let (_, body) = Conn::open(server.port)?.request("GET", "/metrics.json", None)?;
    f.random_entries = json_number(&body, "probe_count_active").unwrap_or(0.0) as u64;
    println!(
        "registrations/s, random source IPs: {:.0} ({} errors; registry grew to {} entries)",
        random.rps, random.errors, f.random_entries
    );
    Ok(())
}

/// Phase 2: 10,000 probes in 10 groups of 1,000: RSS, config, list.
fn bench_reads(bin: &Path, secs: u64, f: &mut Figures) -> Result<()> {
    let server = Server::start(bin, &["--reap-interval", "3600"])?;
    thread::sleep(Duration::from_millis(300));
    f.rss_empty_kib = server.rss_kib()?;
    let probes: Vec<(String, String)> = (0..10)
        .flat_map(|g| (0..1000).map(move |i| (ip_of(100 + g, i), format!("g{g}"))))
        .collect();
    populate(server.port, &probes, 86_400)?;
    thread::sleep(Duration::from_millis(300));
    f.rss_10k_kib = server.rss_kib()?;
    println!(
        "RSS: {} KiB empty, {} KiB with 10,000 probes",
        f.rss_empty_kib, f.rss_10k_kib
    );
    let mut c = Conn::open(server.port)?;
    let (status, body) = c.request(
        "GET",
        "/api/v1/config/g0?llamaport=8100&srcip=10.100.0.1",
        None,
    )?;
    if status != 200 {
        bail!("config: {status}");
    }
    f.config_bytes = body.len();
    let (_, body) = c.request("GET", "/api/v1/list", None)?;
    f.list_bytes = body.len();
    let cfg_url = server.url("/");
    let config = wrk(&cfg_url, CONFIG_LUA, secs, 16)?;
    println!(
        "config (1,000-member group, 10,000 registered), 16 connections: {:.0}/s, p50 {:.2} ms, p99 {:.2} ms ({} errors)",
        config.rps, config.p50_ms, config.p99_ms, config.errors
    );
    let single = wrk(&cfg_url, CONFIG_LUA, secs.min(5), 1)?;
    println!(
        "config, 1 connection: {:.0}/s, p50 {:.2} ms, p99 {:.2} ms",
        single.rps, single.p50_ms, single.p99_ms
    );
    let list = wrk(&server.url("/api/v1/list"), LIST_LUA, secs, 16)?;
    println!(
        "list (10,000 probes, {} KiB), 16 connections: {:.0}/s, p50 {:.2} ms ({} errors)",
        f.list_bytes / 1024,
        list.rps,
        list.p50_ms,
        list.errors
    );
    f.config = Some(config);
    f.config_single = Some(single);
    f.list = Some(list);
    Ok(())
}

/// Phase 3: 100,000 probes: RSS, then one reap removing all of them while a
/// client keeps registering and timing each registration.
fn bench_reap(bin: &Path, reap_interval: u64, f: &mut Figures) -> Result<()> {
    let server = Server::start(bin, &["--reap-interval", &reap_interval.to_string()])?;
    let started = Instant::now();
    thread::sleep(Duration::from_millis(300));
    f.rss_100k_base_kib = server.rss_kib()?;
    let probes: Vec<(String, String)> = (0..100u32)
        .flat_map(|g| (0..1000).map(move |i| (ip_of(g, i), format!("g{}", g % 10))))
        .collect();
    // Keepalive 1 s: all expire well before the first reap.
    f.populate_100k = populate(server.port, &probes, 1)?;
    thread::sleep(Duration::from_millis(300));
    f.rss_100k_kib = server.rss_kib()?;
    println!(
        "RSS with 100,000 probes: {} KiB (populated in {:.1} s)",
        f.rss_100k_kib,
        f.populate_100k.as_secs_f64()
    );
    if started.elapsed() + Duration::from_secs(2) > Duration::from_secs(reap_interval) {
        bail!("populating took too long to catch the first reap; raise the reap interval");
    }
    // Register (one connection, timing each call) until the reap is reported.
    let mut c = Conn::open(server.port)?;
    let mut m = Conn::open(server.port)?;
    let deadline = started + Duration::from_secs(reap_interval + 60);
    let mut n = 0u32;
    loop {
        let t = Instant::now();
        let body = reg_body(&ip_of(200, n % 50_000), &format!("live{n}"), "live", 3600);
        let (status, _) = c.request("POST", "/api/v1/register", Some(&body))?;
        f.reg_during_reap.push(t.elapsed());
        if status != 200 {
            bail!("registration during reap: {status}");
        }
        n += 1;
        if n.is_multiple_of(50) {
            let (_, body) = m.request("GET", "/metrics.json", None)?;
            let removed = json_number(&body, "probe_count_removed").unwrap_or(0.0) as u64;
            if removed > 0 {
                f.reap_removed = removed;
                f.reap_s = json_number(&body, "clean_runtime").unwrap_or(0.0);
                break;
            }
        }
        if Instant::now() > deadline {
            bail!("no reap observed");
        }
    }
    let (_, prom) = m.request("GET", "/metrics", None)?;
    let prom = String::from_utf8_lossy(&prom);
    f.reap_longest_lock_ms =
        prom_value(&prom, "llama_reap_longest_lock_seconds").unwrap_or(0.0) * 1e3;
    println!(
        "reap removing {} probes: {:.1} ms (longest lock hold {:.2} ms)",
        f.reap_removed,
        f.reap_s * 1e3,
        f.reap_longest_lock_ms
    );
    Ok(())
}

fn ratio(ours: f64, anchor: (f64, f64)) -> String {
    format!("{:.0}–{:.0}×", ours / anchor.1, ours / anchor.0)
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

fn percentile(v: &[Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let mut s = v.to_vec();
    s.sort();
    s[((s.len() - 1) as f64 * p).round() as usize]
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The live matrix's budgets: runs the release-built `matrix_bench`
/// example and returns its Markdown table.
fn bench_matrix(quick: bool) -> Result<String> {
    cmd::run(
        Command::new(env!("CARGO"))
            .args([
                "build",
                "--release",
                "-p",
                "llama-server",
                "--example",
                "matrix_bench",
            ])
            .current_dir(cmd::workspace_root()),
    )?;
    let mut bench = Command::new(cmd::target_dir().join("release/examples/matrix_bench"));
    if quick {
        bench.arg("--quick");
    }
    let out = bench.stderr(Stdio::inherit()).output()?;
    if !out.status.success() {
        bail!("matrix_bench failed");
    }
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{table}");
    Ok(table)
}

const MATRIX_METHOD: &str = "\
- Built with `cargo build --release -p llama-server --example matrix_bench` and run as one process on 2 cores (the synthetic agents, the scraper and the HTTP client share them, so every figure includes the load the others put on the machine).
- Group `big`: 300 members registered on 127.0.1.1–127.0.2.50 with 4 tags each (`location`: 12 values). Member 7's row and column lose 30 % (those samples keep their 4 per-flow entries); every other path loses nothing.
- History: 360 rounds (an hour of 10 s intervals, 60 with `--quick`) of 90,000 path reports recorded in simulated time into a history with the default budget (`--history-max-bytes`, 256 MiB), the window pruned after every round as the scraper does. \"Accounted\" is what the history counts against its budget (buffer capacities plus a fixed cost per path and agent); RSS growth is the process's `VmRSS` before and after, for comparison; bytes per path-sample = accounted bytes / samples held.
- Collection: 300 HTTP servers in the process, one per member address, each answering `/influxdata` after a 1 ms sleep with the real agent's rendering (`llama_agent::api::influx::render`) of 300 paths with 9 tags and 4 flows each. One round = `Scraper::round` without InfluxDB: every fetch (256 at a time), the typed parse, and the recording into the history. Baseline: the same 300 fetches by a plain concurrent client that reads and drops the bodies.
- API: the server's router on 127.0.0.1, requests one after another on one keep-alive connection (reqwest), 100 each (30 with `--quick`); p50 and p99 of the wall time of request + body. Baselines in the same run: `/api/v1/interval` (the HTTP floor) and `/api/v1/list/big` (the 300 entries).
";

/// A table row of a throughput against the original's `anchor` range
/// (`anchor_text` as the table shows it): ours, the ratio and whether the
/// goal (at least [`GOAL_FACTOR`] times the original's best) is met.
fn throughput_row(md: &mut String, figure: &str, anchor_text: &str, ours: f64, anchor: (f64, f64)) {
    let _ = writeln!(
        md,
        "| {figure} | {anchor_text} | {ours:.0} | {} | {} |",
        ratio(ours, anchor),
        verdict(ours >= GOAL_FACTOR * anchor.1)
    );
}

fn report(f: &Figures, secs: u64, quick: bool, load_before: &str) -> String {
    let cfg = f
        .config
        .as_ref()
        .map_or((0.0, 0.0, 0.0), |r| (r.rps, r.p50_ms, r.p99_ms));
    let single = f
        .config_single
        .as_ref()
        .map_or((0.0, 0.0, 0.0), |r| (r.rps, r.p50_ms, r.p99_ms));
    let list = f.list.as_ref().map_or((0.0, 0.0), |r| (r.rps, r.p50_ms));
    let per_probe_10k = (f.rss_10k_kib.saturating_sub(f.rss_empty_kib)) as f64 * 1024.0 / 10_000.0;
    let per_probe_100k =
        (f.rss_100k_kib.saturating_sub(f.rss_100k_base_kib)) as f64 * 1024.0 / 100_000.0;
    let machine = Command::new("uname")
        .arg("-srm")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let cpus = thread::available_parallelism().map_or(0, |n| n.get());
    let mut md = String::new();
    let _ = writeln!(md, "# llama-server benchmark\n");
    let _ = writeln!(
        md,
        "Produced by `cargo xtask bench server{}`; {cpus} CPUs, {machine}. Load average (1/5/15 min) {load_before} before, {} after: the machine is shared, so figures vary by tens of percent between runs.\n",
        if quick { " --quick" } else { "" },
        loadavg()
    );
    let _ = writeln!(md, "## Results\n");
    let _ = writeln!(
        md,
        "Goals: at least {GOAL_FACTOR}× every throughput of the original, config p50 under 5 ms, under 2 KiB of RSS per probe.\n"
    );
    let _ = writeln!(md, "| figure | original anchor | ours | ratio | goal |");
    let _ = writeln!(md, "|---|---|---|---|---|");
    for (figure, anchor_text, ours, anchor) in [
        (
            "registrations/s, one probe re-registering",
            "2,000–2,500",
            f.reg_one,
            anchor::REG_ONE,
        ),
        (
            "registrations/s, random source IPs",
            "200–230",
            f.reg_random,
            anchor::REG_RANDOM,
        ),
        (
            "config of a 1,000-member group (10,000 registered), requests/s",
            "52–66",
            cfg.0,
            anchor::CONFIG_RPS,
        ),
    ] {
        throughput_row(&mut md, figure, anchor_text, ours, anchor);
    }
    let _ = writeln!(
        md,
        "| config, p50 latency at 16 connections | 240–290 ms | {:.2} ms | {:.0}–{:.0}× lower | {} (< 5 ms) |",
        cfg.1,
        anchor::CONFIG_P50_MS.0 / cfg.1.max(1e-9),
        anchor::CONFIG_P50_MS.1 / cfg.1.max(1e-9),
        verdict(cfg.1 < 5.0)
    );
    let _ = writeln!(
        md,
        "| config, p99 latency at 16 connections | – | {:.2} ms | | |",
        cfg.2
    );
    let _ = writeln!(
        md,
        "| config, 1 connection: requests/s, p50, p99 | – | {:.0}/s, {:.2} ms, {:.2} ms | | |",
        single.0, single.1, single.2
    );
    throughput_row(
        &mut md,
        "`/api/v1/list` with 10,000 probes, requests/s",
        "25–31",
        list.0,
        anchor::LIST_RPS,
    );
    let _ = writeln!(
        md,
        "| RSS with 10,000 probes | 130 MB | {:.1} MB ({:.0} bytes/probe over empty) | {:.0}× smaller | {} (< 2 KiB/probe) |",
        f.rss_10k_kib as f64 / 1024.0,
        per_probe_10k,
        anchor::RSS_10K_MB / (f.rss_10k_kib as f64 / 1024.0).max(1e-9),
        verdict(per_probe_10k < 2048.0)
    );
    let _ = writeln!(
        md,
        "| RSS with 100,000 probes | – | {:.1} MB ({:.0} bytes/probe over empty) | | {} (< 2 KiB/probe) |",
        f.rss_100k_kib as f64 / 1024.0,
        per_probe_100k,
        verdict(per_probe_100k < 2048.0)
    );
    let _ = writeln!(
        md,
        "| reap of 100,000 expired probes | lock held {:.0}–{:.0} s at 10,000 | {:.1} ms total, longest lock hold {:.2} ms ({} removed) | lock hold {:.0}× shorter at 10× the probes | |",
        anchor::REAP_10K_S.0,
        anchor::REAP_10K_S.1,
        f.reap_s * 1e3,
        f.reap_longest_lock_ms,
        f.reap_removed,
        anchor::REAP_10K_S.0 * 1e3 / f.reap_longest_lock_ms.max(1e-6)
    );
    let _ = writeln!(
        md,
        "| registration latency during that reap (max / p99, {} calls) | every endpoint frozen | {:.2} ms / {:.2} ms | | |",
        f.reg_during_reap.len(),
        percentile(&f.reg_during_reap, 1.0).as_secs_f64() * 1e3,
        percentile(&f.reg_during_reap, 0.99).as_secs_f64() * 1e3
    );
    let _ = writeln!(
        md,
        "\nSizes: the config is {} KiB, the list {} KiB. Errors (non-2xx or socket) seen by wrk: registrations {} + {}, config {}, list {}. The random-IP run left {} entries in the registry.\n",
        f.config_bytes / 1024,
        f.list_bytes / 1024,
        f.reg_one_errors,
        f.reg_random_errors,
        f.config.as_ref().map_or(0, |r| r.errors),
        f.list.as_ref().map_or(0, |r| r.errors),
        f.random_entries
    );
    let _ = writeln!(md, "## Method\n");
    let _ = writeln!(
        md,
        "- `cargo build --release -p llama-server`; each phase starts a fresh server on 127.0.0.1 (`RUST_LOG=warn`, `--max-entries 5000000`, `--register-rate 0`, `--max-group-members 5000000`, `--max-groups 5000000`, `--collect false`: the registered addresses are made up, so nothing is scraped). Client and server share the machine's {cpus} cores, as the anchors did."
    );
    let _ = writeln!(
        md,
        "- Throughput and latency: `wrk -t1 -c16 -d{secs}s --latency` (the anchors' tool and settings), Lua scripts in `xtask/src/bench/server.rs`. Latencies are wrk's percentiles."
    );
    let _ = writeln!(
        md,
        "- Registrations: a POST with 4 tags. \"One probe\" re-registers `10.0.0.1:8100`; \"random source IPs\" sends a random `ip` in 10.0.0.0/8 each time, so most calls create an entry and the registry grows during the run."
    );
    let _ = writeln!(
        md,
        "- Config and list: 10,000 probes in 10 groups of 1,000 (4 tags each) registered first; config requests name a random member of group `g0` as requester (`srcip` + `llamaport`), so every answer differs. The 1-connection run shows the per-request cost without queueing."
    );
    let _ = writeln!(
        md,
        "- RSS: `VmRSS` of the server process after registering 10,000 (and, on a fresh server, 100,000) probes over 4 keep-alive connections; per-probe figures subtract the empty server's RSS."
    );
    let _ = writeln!(
        md,
        "- Reap: the 100,000 probes register with keepalive 1 s; the server's first reap (`--reap-interval`) removes them all while one connection keeps registering and timing each call. Reap duration and longest lock hold come from `/metrics.json` (`clean_runtime`) and `/metrics` (`llama_reap_longest_lock_seconds`)."
    );
    let _ = writeln!(
        md,
        "- Anchors: the original Python server on this machine type, `wrk -t1 -c16`, 10 s; its reap figure is the 31–42 s lock hold at 10,000 probes."
    );
    md
}

/// Runs the server benchmark; `quick` shortens every run.
pub fn run(quick: bool) -> Result<()> {
    if Command::new("wrk").arg("-v").output().is_err() {
        bail!("wrk is not installed (apt-get install -y wrk)");
    }
    let bin = cmd::build_release("llama-server")?;
    let secs = if quick { 3 } else { 10 };
    let load_before = loadavg();
    let mut f = Figures::default();
    bench_registrations(&bin, secs, &mut f)?;
    bench_reads(&bin, secs, &mut f)?;
    bench_reap(&bin, if quick { 12 } else { 20 }, &mut f)?;
    let matrix = bench_matrix(quick)?;
    let stores = stores::run(&bin, quick)?;
    let mut md = report(&f, secs, quick, &load_before);
    md.push_str(&format!(
        "\n## Live matrix\n\nBudgets: `/api/v1/matrix` of a 300-member group (90,000 paths) p50 < 20 ms; one collection round of 300 agents answering in 1 ms < 2 s of wall time; the history within its byte budget with 300 members for an hour of 10 s intervals.\n\n{matrix}\n### Method\n\n{MATRIX_METHOD}"
    ));
    md.push_str(&format!(
        "\n## Stores: memory and Redis, one and two replicas\n\nBudgets: Redis store at least 10,000 registrations/s per replica with Redis on the same machine; the config of a 1,000-member group p50 < 10 ms; 10,000 agents re-registering every 60 s under 5 % of a core per replica.\n\n{stores}\n### Method\n\n{}",
        stores::METHOD
    ));
    let out = cmd::workspace_root().join("docs/benchmarks/server.md");
    std::fs::write(&out, &md)?;
    println!("\n{md}\nwritten to {}", out.display());
    Ok(())
}
