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
    io::Write,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{
    Client, ClientBuilder, Locator,
    actions::{InputSource, MOUSE_BUTTON_LEFT, MouseActions, PointerAction},
    elements::Element,
};
use llama_testkit::{
    ChildGuard, Lan, cannot_run, eventually_every, eventually_ok, http_get_ok, http_request,
    lan::SERVER_PORT, privileged, wait_until, workspace_binary,
};
use serde_json::{Value, json};

const HUB_IP: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 1);
/// The server in the hub namespace.
const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(HUB_IP), SERVER_PORT);
const GROUP: &str = "ui";
const HOSTS: u8 = 3;
/// The host whose link drops 30 % of the UDP packets it sends.
const LOSSY: &str = "h2";
/// Generous bounds for a loaded 2-core machine.
const SETTLE: Duration = Duration::from_secs(120);
const UI: Duration = Duration::from_secs(60);
/// How often the page is checked: each check is a browser round trip.
const EVERY: Duration = Duration::from_millis(500);

/// Whether chromium and chromedriver are installed (`cargo xtask test`
/// installs them); without them the test skips, or fails under CI.
fn browser_available() -> bool {
    let missing: Vec<&str> = ["chromium", "chromedriver"]
        .into_iter()
        .filter(|c| Command::new(c).arg("--version").output().is_err())
        .collect();
    missing.is_empty()
        || cannot_run(
            "ui_browser",
            &format!(
                "{} not installed (apt-get install chromium chromium-driver); run `cargo xtask test`",
                missing.join(" and ")
            ),
        )
}

struct Lab {
    lan: Lan,
    _server: ChildGuard,
    agents: Vec<Option<ChildGuard>>,
    _state: tempfile::TempDir,
}

impl Lab {
    fn new() -> Self {
        let lan = Lan::new(HUB_IP, HOSTS).expect("hub and host namespaces");
        let state = tempfile::tempdir().expect("state dir");
        // A dense rate so that a 2 s interval measures loss to a few percent.
        // The test registers 250 members from the hub's one address.
        let config = "reap_interval: 1\ncollector:\n  port_count: 4\n  cps: 10.0\n  timeout_ms: 500\nlimits:\n  register_rate: 0\n";
        let cmd = lan
            .server_command(
                Path::new(env!("CARGO_BIN_EXE_llama-server")),
                state.path(),
                config,
                2,
            )
            .expect("server config");
        let server = lan.hub.spawn(cmd).expect("start llama-server");
        let agent_bin = workspace_binary("llama-agent");
        let mut agents = Vec::new();
        let mut rules = String::from(
            "table bridge llt_ui {\n  chain forward {\n    type filter hook forward priority 0; policy accept;\n",
        );
        for (i, host) in (1..=HOSTS).zip(&lan.hosts) {
            let name = format!("h{i}");
            if name == LOSSY {
                // Only UDP (probes and replies) that h2 sends: its row and
                // its column lose 30 %; registration (TCP) stays reliable.
                rules.push_str(&format!(
                    "    iifname \"{}\" meta l4proto udp numgen random mod 100 < 30 drop\n",
                    host.veth.b
                ));
            }
            let mut cmd = Command::new(&agent_bin);
            cmd.args([
                "run",
                "--server",
                &format!("http://{SERVER}"),
                "--group",
                GROUP,
            ])
            .args(["--ip", &host.ip.to_string(), "--probe-shortname", &name])
            .args(["--probe-name", &format!("browser test {name}")])
            .args([
                "--tags",
                &format!("{{\"location\": \"{}\"}}", if i == 3 { "b" } else { "a" }),
            ])
            .args([
                "--interface",
                &host.veth.a,
                "--register-interval",
                "2",
                "--poll-interval",
                "1",
            ])
            .arg("--state-dir")
            .arg(state.path().join(&name))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
            agents.push(Some(host.ns.spawn(cmd).expect("start llama-agent")));
        }
        rules.push_str("  }\n}\n");
        let mut nft = lan.hub.command("nft");
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
            lan,
            _server: server,
            agents,
            _state: state,
        }
    }
}

/// The server's matrix (from a thread inside the hub namespace).
fn server_matrix() -> Option<Value> {
    let body = http_get_ok(SERVER, &format!("/api/v1/matrix?group={GROUP}"))?;
    serde_json::from_str(&body).ok()
}

/// Every cell of the 3 × 3 matrix has probes, and the lossy host shows loss.
fn settled(m: &Value) -> bool {
    let n = usize::from(HOSTS);
    let sent = &m["cells"]["sent"];
    m["sources"].as_array().is_some_and(|s| s.len() == n)
        && (0..n).all(|r| (0..n).all(|c| sent[r][c].as_u64().is_some_and(|v| v > 0)))
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

/// The element `locator` finds.
async fn element(c: &Client, locator: Locator<'_>) -> Element {
    c.find(locator)
        .await
        .unwrap_or_else(|e| panic!("{locator:?}: {e}"))
}

/// The text of the element `locator` finds.
async fn text_of(c: &Client, locator: Locator<'_>) -> String {
    let text = element(c, locator).await.text().await;
    text.unwrap_or_else(|e| panic!("text of {locator:?}: {e}"))
}

/// Clicks the element `locator` finds.
async fn click_on(c: &Client, locator: Locator<'_>) {
    let click = element(c, locator).await.click().await;
    click.unwrap_or_else(|e| panic!("click {locator:?}: {e}"));
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
        let answer = http_request(SERVER, "POST", "/api/v1/register", Some(&body));
        assert!(matches!(answer, Some((200, _))), "{answer:?}");
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
    c.goto(&format!("http://{SERVER}/?group={GROUP}"))
        .await
        .expect("open the page");
    eventually_every("the page", UI, EVERY, || async {
        painted(c).await.filter(|p| p.rows.len() == 3)
    })
    .await;
    kill_h3();
    let grey = eventually_every("h3's row to turn grey", UI, EVERY, || async {
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
    assert!(
        text_of(c, Locator::Css("#row-labels .lbl.stale"))
            .await
            .starts_with("h3 ("),
        "h3's label shows its age"
    );
    // 50 members in the member view: cells of at least 12 px.
    let (by, rows, size) = eventually_every("the 50-member group", UI, EVERY, || async {
        c.goto(&format!("http://{SERVER}/?group=fifty"))
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
    let (by, rows, _) = eventually_every("the 201-member group", UI, EVERY, || async {
        c.goto(&format!("http://{SERVER}/?group=wide")).await.ok()?;
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
    let c = eventually_every("chromedriver", UI, EVERY, || {
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
        c.goto(&format!("http://{SERVER}/?group={GROUP}"))
            .await
            .expect("open the page");
        // 1. Loss: the lossy host's row and column, and nothing else.
        let loss = eventually_ok(
            "the page to colour h2's row and column (only) as lossy",
            UI,
            EVERY,
            || async {
                match painted(&c).await {
                    Some(p) if p.legend == "loss" && p.rows.len() == usize::from(HOSTS) => {
                        loss_shows_on_the_lossy_host_only(&p).map(|()| p)
                    }
                    other => Err(format!("not drawn yet: {other:?}")),
                }
            },
        )
        .await;
        assert_eq!(loss.rows, ["h1", "h2", "h3"]);
        assert_eq!(loss.cols, ["h1", "h2", "h3"]);
        // 2. The metric switch recolours the cells.
        click_on(&c, Locator::Css("#metrics button[data-metric='rtt']")).await;
        let rtt = eventually_every("the RTT colours", UI, EVERY, || async {
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
        let legend = text_of(&c, Locator::Id("legend")).await;
        assert!(legend.contains("mean RTT (ms)"), "{legend}");
        // 3. A click on h1 → h2 opens that path with a non-empty series.
        click_cell(&c, &rtt, "h1", LOSSY).await;
        let title = eventually_every("the path view", UI, EVERY, || async {
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
        let flows = text_of(&c, Locator::Css("#path-body")).await;
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
        click_on(&c, Locator::Css("#metrics button[data-metric='loss']")).await;
        eventually_every("loss colours again and six samples", UI, EVERY, || async {
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
    lab.lan.hub.run(|| {
        wait_until("a complete matrix from the server", SETTLE, || {
            server_matrix().is_some_and(|m| settled(&m))
        });
    });
    let port = 9515;
    let mut driver = Command::new("chromedriver");
    driver.args([&format!("--port={port}"), "--allowed-ips=127.0.0.1"]);
    driver.stdout(Stdio::null()).stderr(Stdio::null());
    // Inside the hub namespace, with the browsers it starts.
    let _driver = lab.lan.hub.spawn(driver).expect("start chromedriver");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_owned();
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let shot = target.join("ui-browser/live-matrix.png");
    lab.lan.hub.run(|| {
        register_members("fifty", 50);
        register_members("wide", 201);
    });
    let mut h3 = lab.agents[2].take();
    lab.lan.hub.run(|| {
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
