// The live matrix page: polls /api/v1/matrix (cheap: the server answers
// 304 while nothing changed), draws the heatmap on a canvas, and shows one
// path's last hour from /api/v1/path when a cell is clicked. The selection
// (group, metric, grouping, path) lives in the URL so a view can be shared.
"use strict";

const POLL_MS = 2000;
// A cell is "bad" in the summaries from this much loss, percent.
const BAD_LOSS = 1;
// Beyond this many members a group opens grouped by a tag.
const MAX_MEMBER_VIEW = 200;
const PREFERRED_TAGS = ["location", "site", "region", "datacenter", "dc", "zone", "rack"];

const $ = (id) => document.getElementById(id);
const state = {
  group: "",
  metric: "loss",
  by: null, // null: not chosen (the page picks); "": members
  src: "",
  dst: "",
  groups: [],
  matrix: null,
  etag: null,
  receivedAt: 0,
  layout: null,
  pathTimer: null,
};

// ---- colour scales ------------------------------------------------------

const LOSS_STOPS = [
  [0, [26, 152, 80]],
  [0.5, [145, 207, 96]],
  [1, [254, 224, 139]],
  [5, [252, 141, 89]],
  [20, [215, 48, 39]],
  [100, [127, 0, 0]],
];
// RTT in ms on a log scale.
const RTT_STOPS = [
  [0.01, [255, 255, 204]],
  [0.1, [161, 218, 180]],
  [1, [65, 182, 196]],
  [10, [44, 127, 184]],
  [100, [37, 52, 148]],
  [1000, [8, 29, 88]],
];
const STALE = [189, 189, 189];
const NO_DATA = [240, 240, 240];

function interpolate(stops, v, pos) {
  if (v <= stops[0][0]) return stops[0][1];
  for (let i = 1; i < stops.length; i++) {
    const [x1, c1] = stops[i];
    const [x0, c0] = stops[i - 1];
    if (v <= x1) {
      const t = (pos(v) - pos(x0)) / (pos(x1) - pos(x0));
      return c0.map((c, k) => Math.round(c + (c1[k] - c) * t));
    }
  }
  return stops[stops.length - 1][1];
}

function colour(metric, v) {
  if (v === null || v === undefined) return NO_DATA;
  if (metric === "loss") return interpolate(LOSS_STOPS, v, (x) => x);
  return interpolate(RTT_STOPS, Math.max(v, 0.01), (x) => Math.log10(x));
}

const rgb = (c) => `rgb(${c[0]},${c[1]},${c[2]})`;

function fmt(metric, v) {
  if (v === null || v === undefined) return "–";
  if (metric === "loss") return `${v < 10 ? v.toFixed(1) : v.toFixed(0)}%`;
  if (v < 1) return `${(v * 1000).toFixed(0)} µs`;
  return `${v < 10 ? v.toFixed(2) : v.toFixed(1)} ms`;
}

function fmtAge(s) {
  if (s === null || s === undefined) return "never";
  s = Math.round(s);
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  return `${Math.round(s / 3600)}h`;
}

// ---- URL state --------------------------------------------------------

function readUrl() {
  const q = new URLSearchParams(location.search);
  state.group = q.get("group") || "";
  state.metric = q.get("metric") || "loss";
  state.by = q.has("by") ? q.get("by") : null;
  state.src = q.get("src") || "";
  state.dst = q.get("dst") || "";
}

function writeUrl() {
  const q = new URLSearchParams();
  if (state.group) q.set("group", state.group);
  if (state.metric !== "loss") q.set("metric", state.metric);
  if (state.by !== null) q.set("by", state.by);
  if (state.src && state.dst) {
    q.set("src", state.src);
    q.set("dst", state.dst);
  }
  const url = `${location.pathname}?${q}`;
  if (url !== location.pathname + location.search) history.replaceState(null, "", url);
}

// ---- data --------------------------------------------------------------

async function getJson(url) {
  const r = await fetch(url, { cache: "no-cache" });
  const body = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
  if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
  return { body, etag: r.headers.get("ETag") };
}

async function loadGroups() {
  const { body } = await getJson("/api/v1/groups");
  state.groups = body.groups;
  const sel = $("group");
  sel.replaceChildren(
    ...body.groups.map((g) => new Option(`${g.name} (${g.members})`, g.name)),
  );
  if (!state.groups.some((g) => g.name === state.group)) {
    state.group = state.groups.length ? state.groups[0].name : "";
  }
  sel.value = state.group;
  const g = state.groups.find((x) => x.name === state.group);
  if (g && state.by === null && g.members > MAX_MEMBER_VIEW) {
    state.by =
      PREFERRED_TAGS.find((t) => g.tags.includes(t)) ||
      g.tags.find((t) => !["probe_name", "probe_shortname", "version"].includes(t)) ||
      "";
  }
  const by = $("by");
  by.replaceChildren(new Option("members", ""), ...(g ? g.tags : []).map((t) => new Option(`by ${t}`, t)));
  by.value = state.by || "";
}

let polls = 0;
async function poll() {
  try {
    const known = state.groups.some((g) => g.name === state.group);
    if (!known || polls++ % 15 === 0) await loadGroups();
    if (!state.group) {
      showEmpty("No agent has registered yet.");
    } else {
      const q = new URLSearchParams({ group: state.group, metric: state.metric });
      if (state.by) q.set("by", state.by);
      const { body, etag } = await getJson(`/api/v1/matrix?${q}`);
      const changed = etag !== state.etag || !state.matrix;
      if (changed) {
        state.etag = etag;
        state.matrix = body;
        state.receivedAt = Date.now() / 1000;
      }
      draw();
      if (changed && state.src && state.dst && !body.by) loadPath(false);
    }
    writeUrl();
    setStatus();
  } catch (e) {
    $("status").textContent = `error: ${e.message}`;
    $("status").className = "stale";
    state.groups = [];
  }
}

function setStatus() {
  const m = state.matrix;
  if (!m) return;
  const since = Date.now() / 1000 - state.receivedAt;
  const rows = m.sources.length;
  const stale = m.sources.reduce((n, s) => n + (s.stale === true ? 1 : s.stale || 0), 0);
  $("status").textContent =
    `${rows} ${m.by ? `${m.by} values` : "members"} · interval ${m.interval} s · ` +
    (stale ? `${stale} stale · ` : "") + `checked ${fmtAge(since)} ago`;
  $("status").className = stale ? "stale" : "";
}

// ---- drawing ------------------------------------------------------------

function showEmpty(text) {
  $("empty").hidden = false;
  $("empty").textContent = text;
  $("heatmap").hidden = true;
}

function cellAt(r, c) {
  const m = state.matrix;
  const v = m.cells.value[r][c];
  const sent = m.cells.sent[r][c];
  if (sent === null) return null;
  return { value: v, sent, lost: m.cells.lost[r][c], age: m.cells.age[r][c] };
}

function isStale(m, r, c, cell) {
  const src = m.sources[r];
  const age = cell.age + (Date.now() / 1000 - state.receivedAt);
  return src.stale === true || age > 2 * m.interval + 1;
}

function drawLegend(metric, unit) {
  const w = 220, h = 12;
  const cv = document.createElement("canvas");
  cv.width = w;
  cv.height = h;
  const ctx = cv.getContext("2d");
  const lo = metric === "loss" ? 0 : Math.log10(0.01);
  const hi = metric === "loss" ? 100 : Math.log10(1000);
  // The loss scale is drawn on a square-root axis so the low percents show.
  for (let x = 0; x < w; x++) {
    const t = x / (w - 1);
    const v = metric === "loss" ? 100 * t * t : 10 ** (lo + (hi - lo) * t);
    ctx.fillStyle = rgb(colour(metric, v));
    ctx.fillRect(x, 0, 1, h);
  }
  const ticks = metric === "loss" ? "0 · 1 · 5 · 20 · 100 %" : "10 µs · 1 ms · 1 s";
  const name = $("metrics").querySelector(`[data-metric="${metric}"]`).textContent;
  $("legend").replaceChildren(
    Object.assign(document.createElement("span"), { textContent: `${name} (${unit})` }),
    cv,
    Object.assign(document.createElement("span"), { textContent: ticks }),
    Object.assign(document.createElement("span"), {
      innerHTML: `<span class="swatch" style="background:${rgb(STALE)}"></span> stale (age shown) ` +
        `<span class="swatch" style="background:${rgb(NO_DATA)}"></span> no data`,
    }),
  );
  $("legend").dataset.metric = metric;
}

function label(parent, text, style, cls, title) {
  const d = document.createElement("div");
  d.className = `lbl ${cls || ""}`;
  d.textContent = text;
  Object.assign(d.style, style);
  if (title) d.title = title;
  parent.appendChild(d);
  return d;
}

function draw() {
  const m = state.matrix;
  document.querySelectorAll("#metrics button").forEach((b) =>
    b.classList.toggle("on", b.dataset.metric === m.metric));
  drawLegend(m.metric, m.unit);
  const n = m.sources.length;
  if (!n) return showEmpty(`Group ${m.group} has no members.`);
  $("empty").hidden = true;
  $("heatmap").hidden = false;
  // Fit the matrix into the view: 50 members stay readable (≥ 12 px cells).
  const room = Math.max(300, $("view").clientWidth - 260);
  const size = Math.max(4, Math.min(56, Math.floor(room / n)));
  const font = Math.max(7, Math.min(12, size - 2));
  const dpr = window.devicePixelRatio || 1;
  const cv = $("cells");
  cv.width = n * size * dpr;
  cv.height = n * size * dpr;
  cv.style.width = `${n * size}px`;
  cv.style.height = `${n * size}px`;
  const ctx = cv.getContext("2d");
  ctx.scale(dpr, dpr);
  ctx.font = `${Math.max(7, Math.min(14, size / 3.2))}px sans-serif`;
  ctx.textAlign = "center";
  ctx.textBaseline = "middle";
  const rowBad = new Array(n).fill(0), rowSeen = new Array(n).fill(0);
  const colBad = new Array(n).fill(0), colSeen = new Array(n).fill(0);
  for (let r = 0; r < n; r++) {
    for (let c = 0; c < n; c++) {
      const cell = cellAt(r, c);
      let fill = NO_DATA, text = null;
      if (cell) {
        const stale = isStale(m, r, c, cell);
        fill = stale ? STALE : colour(m.metric, cell.value);
        if (stale && size >= 16) text = fmtAge(cell.age + Date.now() / 1000 - state.receivedAt);
        else if (size >= 40) text = fmt(m.metric, cell.value);
        const self = !m.by && r === c;
        if (!stale && !self && cell.sent > 0) {
          rowSeen[r]++;
          colSeen[c]++;
          if ((100 * cell.lost) / cell.sent >= BAD_LOSS) {
            rowBad[r]++;
            colBad[c]++;
          }
        }
      }
      ctx.fillStyle = rgb(fill);
      ctx.fillRect(c * size, r * size, size - (size > 6 ? 1 : 0), size - (size > 6 ? 1 : 0));
      if (text) {
        // Below the middle: the cell's colour stays readable at its centre.
        const light = fill[0] * 0.3 + fill[1] * 0.6 + fill[2] * 0.1 > 140;
        ctx.fillStyle = light ? "#263238" : "#ffffff";
        ctx.fillText(text, c * size + size / 2, r * size + size * 0.72);
      }
    }
  }
  const labelW = 150;
  const rows = $("row-labels"), cols = $("col-labels"), rs = $("row-sums"), cs = $("col-sums");
  [rows, cols, rs, cs].forEach((e) => e.replaceChildren());
  rows.style.width = `${labelW}px`;
  rows.style.height = `${n * size}px`;
  rs.style.width = "110px";
  rs.style.height = `${n * size}px`;
  cols.style.height = "110px";
  cols.style.width = `${n * size}px`;
  cs.style.width = `${n * size}px`;
  cs.style.height = size >= 14 ? "20px" : "0";
  const axisTitle = (a) => {
    const what = m.by ? `${a.members} members, ${a.stale} stale` : `${a.ip}${a.stale ? " — stale" : ""}`;
    return `${a.name || "(none)"} — ${what}; last scraped ${fmtAge(a.age)} ago${a.error ? ` (${a.error})` : ""}`;
  };
  m.sources.forEach((a, r) => {
    const stale = a.stale === true || (m.by && a.stale === a.members);
    const cls = stale ? "stale" : rowBad[r] ? "bad" : "";
    const name = (a.name || "(none)") + (stale ? ` (${fmtAge(a.age)})` : "");
    const common = { top: `${r * size}px`, height: `${size}px`, lineHeight: `${size}px`, fontSize: `${font}px` };
    label(rows, name, { ...common, width: `${labelW - 4}px` }, cls, axisTitle(a)).dataset.row = r;
    if (size >= 8) {
      label(rs, rowSeen[r] ? `${rowBad[r]}/${rowSeen[r]} bad` : "", common, rowBad[r] ? "bad" : "",
        `${a.name}: loss to ${rowBad[r]} of ${rowSeen[r]} destinations`);
    }
  });
  m.destinations.forEach((a, c) => {
    const stale = a.stale === true || (m.by && a.stale === a.members);
    const cls = stale ? "stale" : colBad[c] ? "bad" : "";
    const common = { left: `${c * size}px`, width: `${size}px`, fontSize: `${font}px` };
    label(cols, a.name || "(none)", { ...common, maxHeight: "106px", lineHeight: `${size}px` }, cls,
      axisTitle(a)).dataset.col = c;
    if (size >= 14) label(cs, colSeen[c] ? `${colBad[c]}` : "", common, colBad[c] ? "bad" : "",
      `${a.name}: reported bad by ${colBad[c]} of ${colSeen[c]} sources`);
  });
  state.layout = { size, n };
  summarize(m, rowBad, rowSeen, colBad, colSeen);
}

function summarize(m, rowBad, rowSeen, colBad, colSeen) {
  const items = [];
  const what = m.by ? "sources" : "sources";
  m.destinations.forEach((a, c) => {
    if (colBad[c]) items.push([colBad[c] / colSeen[c], `${a.name || "(none)"} reported bad by ${colBad[c]} of ${colSeen[c]} ${what}`]);
  });
  m.sources.forEach((a, r) => {
    if (rowBad[r]) items.push([rowBad[r] / rowSeen[r], `${a.name || "(none)"} sees loss to ${rowBad[r]} of ${rowSeen[r]} destinations`]);
  });
  const stale = m.sources.filter((a) => a.stale === true);
  items.sort((a, b) => b[0] - a[0]);
  // The hosts most paths agree on; one bad path each (the other end's
  // fault, usually) is left to the row and column counts.
  const strong = items.filter(([share]) => share >= 0.25);
  const list = (strong.length ? strong : items.slice(0, 5)).slice(0, 12).map(([, t]) => Object.assign(document.createElement("li"), { textContent: t, className: "bad" }));
  stale.slice(0, 8).forEach((a) => list.push(Object.assign(document.createElement("li"), {
    textContent: `${a.name} is stale: last scraped ${fmtAge(a.age)} ago${a.error ? ` (${a.error})` : ""}`,
  })));
  if (!list.length) list.push(Object.assign(document.createElement("li"), { textContent: `no loss ≥ ${BAD_LOSS}% on any path` }));
  $("summary-list").replaceChildren(...list);
}

// ---- interaction --------------------------------------------------------

function cellUnder(ev) {
  if (!state.layout || !state.matrix) return null;
  const rect = $("cells").getBoundingClientRect();
  const c = Math.floor((ev.clientX - rect.left) / state.layout.size);
  const r = Math.floor((ev.clientY - rect.top) / state.layout.size);
  if (r < 0 || c < 0 || r >= state.layout.n || c >= state.layout.n) return null;
  return { r, c };
}

$("cells").addEventListener("mousemove", (ev) => {
  const hit = cellUnder(ev);
  const tip = $("tooltip");
  if (!hit) return (tip.hidden = true);
  const m = state.matrix;
  const cell = cellAt(hit.r, hit.c);
  const s = m.sources[hit.r], d = m.destinations[hit.c];
  let text = `${s.name} → ${d.name}`;
  if (cell) {
    const age = cell.age + Date.now() / 1000 - state.receivedAt;
    text += `\n${m.metric}: ${fmt(m.metric, cell.value)}\nsent ${cell.sent}, lost ${cell.lost}\nage ${fmtAge(age)}`;
  } else text += "\nno data";
  tip.textContent = text;
  tip.hidden = false;
  const view = $("view").getBoundingClientRect();
  tip.style.left = `${ev.clientX - view.left + 14}px`;
  tip.style.top = `${ev.clientY - view.top + 14}px`;
});
$("cells").addEventListener("mouseleave", () => ($("tooltip").hidden = true));

$("cells").addEventListener("click", (ev) => {
  const hit = cellUnder(ev);
  if (!hit) return;
  const m = state.matrix;
  if (m.by) {
    showGroupedCell(m, hit.r, hit.c);
    return;
  }
  state.src = m.sources[hit.r].id;
  state.dst = m.destinations[hit.c].id;
  writeUrl();
  loadPath(true);
});

function showGroupedCell(m, r, c) {
  const cell = cellAt(r, c);
  const s = m.sources[r], d = m.destinations[c];
  $("path").hidden = false;
  $("path-title").textContent = `${m.by}: ${s.name || "(none)"} → ${d.name || "(none)"}`;
  const p = document.createElement("p");
  p.className = "facts";
  p.textContent = cell
    ? `${fmt(m.metric, cell.value)} over ${cell.sent} probes (${cell.lost} lost) between ${s.members} and ${d.members} members.`
    : "no data";
  const b = Object.assign(document.createElement("button"), { textContent: "show the members" });
  b.onclick = () => {
    state.by = "";
    $("by").value = "";
    state.etag = null;
    poll();
  };
  $("path-body").replaceChildren(p, b);
}

function sparkline(cls, name, times, values, unit, t0, t1) {
  const div = document.createElement("div");
  div.className = `spark ${cls}`;
  const shown = values.filter((v) => v !== null);
  const max = Math.max(...shown, unit === "%" ? 1 : 0.001);
  const last = shown.length ? shown[shown.length - 1] : null;
  const head = document.createElement("div");
  head.className = "name";
  head.append(
    Object.assign(document.createElement("span"), { textContent: name }),
    Object.assign(document.createElement("span"), {
      textContent: `last ${last === null ? "–" : unit === "%" ? fmt("loss", last) : fmt("rtt", last)} · max ${unit === "%" ? fmt("loss", max) : fmt("rtt", max)}`,
    }),
  );
  const svgNs = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNs, "svg");
  svg.setAttribute("viewBox", "0 0 300 48");
  svg.setAttribute("preserveAspectRatio", "none");
  const pts = [];
  times.forEach((t, i) => {
    if (values[i] === null) return;
    const x = t1 > t0 ? ((t - t0) / (t1 - t0)) * 300 : 300;
    const y = 46 - (values[i] / max) * 44;
    pts.push(`${x.toFixed(1)},${y.toFixed(1)}`);
  });
  // A single sample still shows as a short line.
  if (pts.length === 1) pts.unshift(`${Math.max(0, parseFloat(pts[0]) - 4)},${pts[0].split(",")[1]}`);
  const line = document.createElementNS(svgNs, "polyline");
  line.setAttribute("points", pts.join(" "));
  svg.appendChild(line);
  svg.dataset.points = String(shown.length);
  div.append(head, svg);
  return div;
}

async function loadPath(user) {
  if (!state.src || !state.dst || !state.group) return;
  const q = new URLSearchParams({ group: state.group, src: state.src, dst: state.dst });
  try {
    const { body } = await getJson(`/api/v1/path?${q}`);
    renderPath(body);
  } catch (e) {
    if (user) {
      $("path").hidden = false;
      $("path-title").textContent = `${state.src} → ${state.dst}`;
      $("path-body").textContent = `error: ${e.message}`;
    }
  }
}

function renderPath(p) {
  const s = p.samples;
  $("path").hidden = false;
  $("path").dataset.samples = String(s.time.length);
  $("path-title").textContent = `${p.src.name} → ${p.dst.name}`;
  // The time axis spans the samples there are (up to the window) until now.
  const t1 = p.now;
  const t0 = s.time.length ? Math.min(s.time[0] - s.span[0], t1 - 10 * p.interval) : t1 - p.window;
  const facts = document.createElement("p");
  facts.className = "facts";
  const sent = s.sent.reduce((a, b) => a + b, 0), lost = s.lost.reduce((a, b) => a + b, 0);
  facts.textContent = `${s.time.length} samples over the last ${fmtAge(t1 - t0)}: ` +
    `${sent} probes, ${lost} lost (${fmt("loss", sent ? (100 * lost) / sent : null)}). ` +
    `${p.src.ip} → ${p.dst.ip}` + (p.src.stale ? ` · source stale (${p.src.error || fmtAge(p.src.age)})` : "");
  const parts = [
    facts,
    sparkline("loss", "loss", s.time, s.loss, "%", t0, t1),
    sparkline("rtt", "mean RTT", s.time, s.rtt, "ms", t0, t1),
    sparkline("rtt", "p99 RTT", s.time, s.p99, "ms", t0, t1),
    sparkline("rtt", "jitter", s.time, s.jitter, "ms", t0, t1),
  ];
  p.flows.forEach((f) => parts.push(
    sparkline("flow", `flow ${f.flow} loss (source port ${f.src_port || "?"})`, s.time, f.loss, "%", t0, t1)));
  $("path-body").replaceChildren(...parts);
}

$("path-close").addEventListener("click", () => {
  $("path").hidden = true;
  state.src = state.dst = "";
  writeUrl();
});

$("metrics").addEventListener("click", (ev) => {
  const metric = ev.target.dataset && ev.target.dataset.metric;
  if (!metric) return;
  state.metric = metric;
  state.etag = null;
  poll();
});

$("group").addEventListener("change", () => {
  state.group = $("group").value;
  state.by = null;
  state.src = state.dst = "";
  state.etag = null;
  state.matrix = null;
  $("path").hidden = true;
  loadGroups().then(poll);
});

$("by").addEventListener("change", () => {
  state.by = $("by").value;
  state.etag = null;
  $("path").hidden = true;
  poll();
});

window.addEventListener("resize", () => state.matrix && draw());

readUrl();
poll();
setInterval(poll, POLL_MS);
setInterval(setStatus, 1000);
