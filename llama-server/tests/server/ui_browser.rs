//! The live matrix page in a real browser: Debian's chromium, driven over
//! WebDriver (chromedriver), against the real `llama-server` fed by three
//! real `llama-agent`s in network namespaces, with 30 % random UDP loss
//! injected on one host's link. What a person would check: the lossy
//! host's row and column are coloured as lossy and the other cells are not;
//! switching the metric recolours the cells; clicking a cell opens that
//! path's view with a non-empty series; the selection is in the URL; an
//! agent that dies turns its row grey; 50 members stay readable and a
//! group of more than 200 opens grouped by location. A
//! screenshot of the page goes to `target/ui-browser/live-matrix.png` (and,
//! with `LLAMA_UPDATE_SCREENSHOT=1`, to `docs/images/live-matrix.png`).
//!
//! Everything runs in namespaces this test creates: the server on a bridge
//! in the hub namespace, chromedriver and chromium in the hub namespace too.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{
    Client, ClientBuilder, Locator,
    actions::{InputSource, MOUSE_BUTTON_LEFT, MouseActions, PointerAction},
};
use llama_testkit::{ChildGuard, NetNs, Veth, privileged, privileged_required};
use serde_json::{Value, json};

const HUB_IP: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 1);
const GROUP: &str = "ui";
const HOSTS: u8 = 3;
/// The host whose link drops 30 % of the UDP packets it sends.
const LOSSY: &str = "h2";
/// Generous bounds for a loaded 2-core machine.
const SETTLE: Duration = Duration::from_secs(120);
const UI: Duration = Duration::from_secs(60);

fn host_ip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 203, 0, 10 + i)
}

/// The `llama-agent` binary next to this test's target directory (the
/// workspace's test run builds it), built on demand when missing.
fn agent_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = dir.join("llama-agent");
    if !bin.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(cargo)
            .args(["build", "--package", "llama-agent"])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building llama-agent failed");
    }
    bin
}

/// Whether chromium and chromedriver are installed (`cargo xtask test`
/// installs them); without them the test skips, or fails under CI.
fn browser_available() -> bool {
    let missing: Vec<&str> = ["chromium", "chromedriver"]
        .into_iter()
        .filter(|c| Command::new(c).arg("--version").output().is_err())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!(
        "{} not installed (apt-get install chromium chromium-driver)",
        missing.join(" and ")
    );
    assert!(
        !privileged_required(),
        "ui_browser: {why} (CI=true forbids skipping)"
    );
    eprintln!("SKIPPED ui_browser: {why}; run `cargo xtask test`");
    false
}

/// A minimal HTTP/1.0 GET from the calling thread's namespace.
fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())
}

struct Lab {
    hub: NetNs,
    _hosts: Vec<(NetNs, Veth)>,
    _server: ChildGuard,
    agents: Vec<Option<ChildGuard>>,
    _state: tempfile::TempDir,
}

impl Lab {
    fn new() -> Self {
        let hub = NetNs::new().expect("hub namespace");
        hub.ip(&["link", "add", "br0", "type", "bridge"])
            .expect("bridge");
        hub.add_addr("br0", &format!("{HUB_IP}/24"))
            .expect("bridge address");
        hub.ip(&["link", "set", "br0", "up"]).expect("bridge up");
        let state = tempfile::tempdir().expect("state dir");
        let config = state.path().join("server.yaml");
        // A dense rate so that a 2 s interval measures loss to a few percent.
        std::fs::write(
            &config,
            "reap_interval: 1\ncollector:\n  port_count: 4\n  cps: 10.0\n  timeout_ms: 500\n",
        )
        .expect("server config");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_llama-server"));
        cmd.arg("--config").arg(&config);
        cmd.args([
            "--host",
            &HUB_IP.to_string(),
            "--port",
            "5000",
            "--interval",
            "2",
        ]);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let server = hub.spawn(cmd).expect("start llama-server");
        let agent_bin = agent_binary();
        let mut hosts = Vec::new();
        let mut agents = Vec::new();
        let mut rules = String::from(
            "table bridge llt_ui {\n  chain forward {\n    type filter hook forward priority 0; policy accept;\n",
        );
        for i in 1..=HOSTS {
            let ns = NetNs::new().expect("host namespace");
            let veth = Veth::new(&ns, &hub).expect("veth");
            ns.add_addr(&veth.a, &format!("{}/24", host_ip(i)))
                .expect("address");
            hub.ip(&["link", "set", &veth.b, "master", "br0"])
                .expect("enslave");
            let name = format!("h{i}");
            if name == LOSSY {
                // Only UDP (probes and replies) that h2 sends: its row and
                // its column lose 30 %; registration (TCP) stays reliable.
                rules.push_str(&format!(
                    "    iifname \"{}\" meta l4proto udp numgen random mod 100 < 30 drop\n",
                    veth.b
                ));
            }
            let mut cmd = Command::new(&agent_bin);
            cmd.args([
                "run",
                "--server",
                &format!("http://{HUB_IP}:5000"),
                "--group",
                GROUP,
            ])
            .args(["--ip", &host_ip(i).to_string(), "--probe-shortname", &name])
            .args(["--probe-name", &format!("browser test {name}")])
            .args([
                "--tags",
                &format!("{{\"location\": \"{}\"}}", if i == 3 { "b" } else { "a" }),
            ])
            .args([
                "--interface",
                &veth.a,
                "--register-interval",
                "2",
                "--poll-interval",
                "1",
            ])
            .arg("--state-dir")
            .arg(state.path().join(&name))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
            agents.push(Some(ns.spawn(cmd).expect("start llama-agent")));
            hosts.push((ns, veth));
        }
        rules.push_str("  }\n}\n");
        let mut nft = hub.command("nft");
        nft.args(["-f", "-"]).stdin(Stdio::piped());
        let mut child = nft.spawn().expect("run nft");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(rules.as_bytes())
            .expect("rules");
        assert!(
            child.wait().expect("nft").success(),
            "nft refused:\n{rules}"
        );
        Lab {
            hub,
            _hosts: hosts,
            _server: server,
            agents,
            _state: state,
        }
    }
}

/// The server's matrix (from a thread inside the hub namespace).
fn server_matrix() -> Option<Value> {
    let body = http_get(
        SocketAddr::from((HUB_IP, 5000)),
        &format!("/api/v1/matrix?group={GROUP}"),
    )?;
    serde_json::from_str(&body).ok()
}

/// Every cell of the 3 × 3 matrix has probes, and the lossy host shows loss.
fn settled(m: &Value) -> bool {
    let n = usize::from(HOSTS);
    let sent = &m["cells"]["sent"];
    m["sources"].as_array().is_some_and(|s| s.len() == n)
        && (0..n).all(|r| (0..n).all(|c| sent[r][c].as_u64().is_some_and(|v| v > 0)))
}

async fn poll<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The colour the page painted in every cell (a quarter in from its top
/// left corner, clear of the value written in large cells), as seen on its
/// canvas, with the row and column names read from the page's labels.
const READ_CELLS: &str = r#"
const rows = [...document.querySelectorAll('#row-labels .lbl')].map(e => e.textContent.split(' ')[0]);
const cols = [...document.querySelectorAll('#col-labels .lbl')].map(e => e.textContent);
const cv = document.getElementById('cells');
if (!rows.length || rows.length !== cols.length || !cv.width) return null;
const ctx = cv.getContext('2d');
const sx = cv.width / cols.length, sy = cv.height / rows.length;
const px = [];
for (let r = 0; r < rows.length; r++) {
  const row = [];
  for (let c = 0; c < cols.length; c++) {
    const d = ctx.getImageData(Math.floor((c + 0.25) * sx), Math.floor((r + 0.25) * sy), 1, 1).data;
    row.push([d[0], d[1], d[2]]);
  }
  px.push(row);
}
return { rows, cols, px, legend: document.getElementById('legend').dataset.metric || '' };
"#;

#[derive(Debug, Clone, PartialEq)]
struct Painted {
    rows: Vec<String>,
    cols: Vec<String>,
    px: Vec<Vec<[i64; 3]>>,
    legend: String,
}

async fn painted(c: &Client) -> Option<Painted> {
    let v = c.execute(READ_CELLS, vec![]).await.ok()?;
    if v.is_null() {
        return None;
    }
    let names = |k: &str| -> Vec<String> {
        v[k].as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let px = v["px"]
        .as_array()?
        .iter()
        .map(|row| {
            row.as_array()
                .map(|cells| {
                    cells
                        .iter()
                        .map(|p| [0, 1, 2].map(|k| p[k].as_i64().unwrap_or(0)))
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect();
    Some(Painted {
        rows: names("rows"),
        cols: names("cols"),
        px,
        legend: v["legend"].as_str().unwrap_or("").to_owned(),
    })
}

/// On the loss scale, red minus green grows with loss: ≥ 140 from about
/// 12 % (lossy), ≤ 111 up to 5 % (clean) — the demo's own thresholds.
fn lossy(p: [i64; 3]) -> bool {
    p[0] - p[1] >= 140
}
fn clean(p: [i64; 3]) -> bool {
    p[0] - p[1] <= 111
}

/// Whether the loss colours mark exactly the lossy host's row and column.
fn loss_shows_on_the_lossy_host_only(p: &Painted) -> Result<(), String> {
    let mut wrong = Vec::new();
    for (r, src) in p.rows.iter().enumerate() {
        for (c, dst) in p.cols.iter().enumerate() {
            let px = p.px[r][c];
            let expect_lossy = src != dst && (src == LOSSY || dst == LOSSY);
            let ok = if expect_lossy { lossy(px) } else { clean(px) };
            if !ok {
                wrong.push(format!(
                    "{src}->{dst} {px:?} (expected {})",
                    if expect_lossy { "lossy" } else { "clean" }
                ));
            }
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join(", "))
    }
}

async fn click_cell(c: &Client, p: &Painted, src: &str, dst: &str) {
    let r = p.rows.iter().position(|n| n == src).expect("row") as f64;
    let col = p.cols.iter().position(|n| n == dst).expect("column") as f64;
    let canvas = c.find(Locator::Id("cells")).await.expect("canvas");
    let size = c
        .execute(
            "const e = document.getElementById('cells'); return [e.clientWidth, e.clientHeight];",
            vec![],
        )
        .await
        .expect("canvas size");
    let (w, h) = (
        size[0].as_f64().unwrap_or(0.0),
        size[1].as_f64().unwrap_or(0.0),
    );
    let n = p.rows.len() as f64;
    let (x, y) = ((col + 0.5) * w / n - w / 2.0, (r + 0.5) * h / n - h / 2.0);
    let mouse = MouseActions::new("mouse".into())
        .then(PointerAction::MoveToElement {
            element: canvas,
            duration: None,
            x,
            y,
        })
        .then(PointerAction::Down {
            button: MOUSE_BUTTON_LEFT,
        })
        .then(PointerAction::Up {
            button: MOUSE_BUTTON_LEFT,
        });
    c.perform_actions(mouse).await.expect("click");
}

/// The grey of stale cells.
const STALE: [i64; 3] = [189, 189, 189];

/// Registers `n` members without agents in `group`, over HTTP from the
/// hub namespace (locations l0, l1, l2 in turn).
fn register_members(group: &str, n: usize) {
    for i in 0..n {
        let body = json!({
            "port": 8100,
            "ip": format!("10.99.{}.{}", i / 250, i % 250 + 1),
            "group": group,
            "tags": {"version": "0.1.0", "probe_shortname": format!("m{i}"),
                     "probe_name": format!("m{i}.example.com"), "location": format!("l{}", i % 3)}
        })
        .to_string();
        let mut s = TcpStream::connect(SocketAddr::from((HUB_IP, 5000))).expect("connect");
        write!(
            s,
            "POST /api/v1/register HTTP/1.0\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .expect("register");
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("answer");
        assert!(
            answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200"),
            "{answer}"
        );
    }
}

/// The layout the page chose: (grouping select value, rows, cell size px).
async fn layout(c: &Client) -> Option<(String, usize, f64)> {
    let v = c
        .execute(
            "const rows = document.querySelectorAll('#row-labels .lbl').length;
             const cv = document.getElementById('cells');
             return [document.getElementById('by').value, rows, rows ? cv.clientWidth / rows : 0];",
            vec![],
        )
        .await
        .ok()?;
    Some((
        v[0].as_str()?.to_owned(),
        v[1].as_u64()? as usize,
        v[2].as_f64()?,
    ))
}

/// An agent stops: its row turns grey with its age; then the bigger groups.
async fn stale_and_big_groups(c: &Client, kill_h3: impl FnOnce()) {
    c.goto(&format!("http://{HUB_IP}:5000/?group={GROUP}"))
        .await
        .expect("open the page");
    poll("the page", UI, || async {
        painted(c).await.filter(|p| p.rows.len() == 3)
    })
    .await;
    kill_h3();
    let grey = poll("h3's row to turn grey", UI, || async {
        let p = painted(c).await?;
        let h3 = p.rows.iter().position(|n| n == "h3")?;
        p.px[h3].iter().all(|px| *px == STALE).then_some(p)
    })
    .await;
    let h1 = grey.rows.iter().position(|n| n == "h1").expect("h1");
    assert!(
        grey.px[h1].iter().all(|px| *px != STALE),
        "only the dead agent's row is stale"
    );
    let label = c
        .find(Locator::Css("#row-labels .lbl.stale"))
        .await
        .expect("a stale row label");
    assert!(
        label.text().await.expect("text").starts_with("h3 ("),
        "h3's label shows its age"
    );
    // 50 members in the member view: cells of at least 12 px.
    let (by, rows, size) = poll("the 50-member group", UI, || async {
        c.goto(&format!("http://{HUB_IP}:5000/?group=fifty"))
            .await
            .ok()?;
        layout(c).await.filter(|l| l.1 == 50)
    })
    .await;
    assert_eq!(by, "", "50 members: the member view");
    assert!(
        size >= 12.0,
        "readable cells at 50 x 50: {size} px ({rows} rows)"
    );
    // More than 200: grouped by location by default.
    let (by, rows, _) = poll("the 201-member group", UI, || async {
        c.goto(&format!("http://{HUB_IP}:5000/?group=wide"))
            .await
            .ok()?;
        layout(c).await.filter(|l| l.0 == "location" && l.1 == 3)
    })
    .await;
    assert_eq!((by.as_str(), rows), ("location", 3));
    let url = c.current_url().await.expect("url");
    assert!(
        url.query_pairs().any(|(k, v)| k == "by" && v == "location"),
        "{url}"
    );
}

async fn drive(chromedriver: u16, screenshot: &Path, kill_h3: impl FnOnce()) {
    let profile = tempfile::tempdir().expect("browser profile");
    let caps = json!({
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1400,900",
                format!("--user-data-dir={}", profile.path().display()),
            ]
        }
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!()
    };
    let url = format!("http://127.0.0.1:{chromedriver}");
    let c = poll("chromedriver", UI, || {
        let caps = caps.clone();
        let url = url.clone();
        async move {
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps)
                .connect(&url)
                .await
                .ok()
        }
    })
    .await;
    let result = async {
        c.goto(&format!("http://{HUB_IP}:5000/?group={GROUP}"))
            .await
            .expect("open the page");
        // 1. Loss: the lossy host's row and column, and nothing else.
        let deadline = Instant::now() + UI;
        let loss = loop {
            let verdict = match painted(&c).await {
                Some(p) if p.legend == "loss" && p.rows.len() == usize::from(HOSTS) => {
                    loss_shows_on_the_lossy_host_only(&p).map(|()| p)
                }
                other => Err(format!("not drawn yet: {other:?}")),
            };
            match verdict {
                Ok(p) => break p,
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "the page did not colour h2's row and column (only) as lossy within {UI:?}: {e}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        assert_eq!(loss.rows, ["h1", "h2", "h3"]);
        assert_eq!(loss.cols, ["h1", "h2", "h3"]);
        // 2. The metric switch recolours the cells.
        c.find(Locator::Css("#metrics button[data-metric='rtt']"))
            .await
            .expect("rtt button")
            .click()
            .await
            .expect("click rtt");
        let rtt = poll("the RTT colours", UI, || async {
            painted(&c).await.filter(|p| p.legend == "rtt")
        })
        .await;
        let h2 = rtt.rows.iter().position(|n| n == LOSSY).expect("h2");
        let h1 = rtt.cols.iter().position(|n| n == "h1").expect("h1");
        assert_ne!(
            rtt.px[h2][h1], loss.px[h2][h1],
            "switching the metric changes the cell"
        );
        for row in &rtt.px {
            for px in row {
                assert!(!lossy(*px), "no loss colour on the RTT scale: {px:?}");
            }
        }
        let legend = c
            .find(Locator::Id("legend"))
            .await
            .expect("legend")
            .text()
            .await
            .expect("text");
        assert!(legend.contains("mean RTT (ms)"), "{legend}");
        // 3. A click on h1 → h2 opens that path with a non-empty series.
        click_cell(&c, &rtt, "h1", LOSSY).await;
        let title = poll("the path view", UI, || async {
            let path = c.find(Locator::Id("path")).await.ok()?;
            let samples: u64 = path.attr("data-samples").await.ok()??.parse().ok()?;
            let title = c
                .find(Locator::Id("path-title"))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            (samples > 0).then_some(title)
        })
        .await;
        assert_eq!(title, "h1 → h2");
        // Each sparkline: how many samples it plots, if its line is drawn
        // (a visible stroke through at least two points), else 0.
        let points = c
            .execute(
                "return [...document.querySelectorAll('#path-body .spark svg')].map(s => {
                   const line = s.querySelector('polyline');
                   const drawn = line && getComputedStyle(line).stroke !== 'none'
                     && line.getAttribute('points').trim().split(' ').length >= 2;
                   return drawn ? Number(s.dataset.points) : 0;
                 });",
                vec![],
            )
            .await
            .expect("sparklines");
        let points: Vec<u64> = points
            .as_array()
            .expect("array")
            .iter()
            .filter_map(Value::as_u64)
            .collect();
        // loss, mean RTT, p99, jitter, then 4 flows.
        assert_eq!(points.len(), 8, "{points:?}");
        assert!(
            points[0] > 0 && points[1] > 0,
            "non-empty loss and RTT series: {points:?}"
        );
        let flows = c
            .find(Locator::Css("#path-body"))
            .await
            .expect("body")
            .text()
            .await
            .expect("text");
        assert!(flows.contains("flow 3 loss (source port"), "{flows}");
        // 4. The selection is in the URL.
        let url = c.current_url().await.expect("url");
        let q: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        for (k, v) in [
            ("group", "ui"),
            ("metric", "rtt"),
            ("src", "10.203.0.11:8100"),
            ("dst", "10.203.0.12:8100"),
        ] {
            assert!(
                q.contains(&(k.to_owned(), v.to_owned())),
                "{k}={v} in {url}"
            );
        }
        // Back to loss for the picture, once the path has a few samples:
        // the lossy host stands out.
        c.find(Locator::Css("#metrics button[data-metric='loss']"))
            .await
            .expect("loss button")
            .click()
            .await
            .expect("click loss");
        poll("loss colours again and six samples", UI, || async {
            let path = c.find(Locator::Id("path")).await.ok()?;
            let samples: u64 = path.attr("data-samples").await.ok()??.parse().ok()?;
            painted(&c)
                .await
                .filter(|p| p.legend == "loss" && samples >= 6)
        })
        .await;
        let png = c.screenshot().await.expect("screenshot");
        std::fs::create_dir_all(screenshot.parent().expect("dir")).expect("screenshot dir");
        std::fs::write(screenshot, &png).expect("write screenshot");
    }
    .await;
    stale_and_big_groups(&c, kill_h3).await;
    let _ = c.close().await;
    result
}

#[test]
fn the_page_shows_the_lossy_host_and_opens_its_paths() {
    if !privileged("ui_browser::the_page_shows_the_lossy_host") || !browser_available() {
        return;
    }
    let started = Instant::now();
    let mut lab = Lab::new();
    // The server must see the whole matrix before the browser looks.
    lab.hub.run(|| {
        let deadline = Instant::now() + SETTLE;
        while !server_matrix().is_some_and(|m| settled(&m)) {
            assert!(
                Instant::now() < deadline,
                "no complete matrix from the server within {SETTLE:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    let port = 9515;
    let mut driver = Command::new("chromedriver");
    driver.args([&format!("--port={port}"), "--allowed-ips=127.0.0.1"]);
    driver.stdout(Stdio::null()).stderr(Stdio::null());
    // Inside the hub namespace, with the browsers it starts.
    let _driver = lab.hub.spawn(driver).expect("start chromedriver");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_owned();
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let shot = target.join("ui-browser/live-matrix.png");
    lab.hub.run(|| {
        register_members("fifty", 50);
        register_members("wide", 201);
    });
    let mut h3 = lab.agents[2].take();
    lab.hub.run(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(drive(port, &shot, move || drop(h3.take())));
    });
    if std::env::var_os("LLAMA_UPDATE_SCREENSHOT").is_some() {
        let docs = root.join("docs/images/live-matrix.png");
        std::fs::create_dir_all(docs.parent().expect("dir")).expect("docs/images");
        std::fs::copy(&shot, &docs).expect("copy the screenshot to docs/");
    }
    eprintln!(
        "ui_browser: passed in {:?}; screenshot {}",
        started.elapsed(),
        shot.display()
    );
}
