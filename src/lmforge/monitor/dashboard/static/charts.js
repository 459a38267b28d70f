// lmforge dashboard, part 1: run data (ingested incrementally from metrics.jsonl) and the charts.
// app.js (part 2) polls the API, draws the run table and the details. Loaded as classic scripts
// sharing one scope; all text from runs is inserted with textContent, never as HTML.
"use strict";

const POLL_MS = 1000;
const MAX_POINTS = 4000; // per trace; longer series are min/max-decimated so spikes stay visible
const MAX_AUTO_SELECT = 8;
const COLORS = ["#4c6ef5", "#f76707", "#2b8a3e", "#e03131", "#7048e8", "#0c8599", "#d6336c", "#5c940d",
                "#1098ad", "#f59f00"];
const TRAIN_KEYS = ["loss", "lr", "grad_norm", "tokens_per_s"];
const SYSTEM_KEYS = ["rss_mb", "cuda_allocated_mb", "cuda_reserved_mb"];

const state = {
  runs: [], known: new Set(), selected: new Set(), colorOf: {}, data: {}, detail: null, tab: "anomalies",
  dirty: true, draws: 0, reports: {}, evalSamples: {},
};
window.lmforge = state; // read by the browser test

const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
};
const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : null);

// ------------------------------------------------------------------ formatting
const anomalyKind = (a) => a.type || a.what || "anomaly";
function anomalyText(a) { // RunLogger writes `message`; other writers may only log fields
  if (a.message) return a.message;
  const skip = new Set(["step", "time", "kind", "type", "what", "severity"]);
  return Object.entries(a).filter(([k]) => !skip.has(k)).map(([k, v]) => `${k}=${v}`).join(", ");
}
function fmt(v, digits = 4) {
  if (v === null || v === undefined) return "–";
  if (Math.abs(v) >= 1e9) return (v / 1e9).toFixed(2) + "B";
  if (Math.abs(v) >= 1e6) return (v / 1e6).toFixed(2) + "M";
  if (Math.abs(v) >= 1e4) return (v / 1e3).toFixed(1) + "k";
  return Number(v.toPrecision(digits)).toString();
}
function fmtDuration(s) {
  if (s === null || s === undefined) return "–";
  if (s < 60) return `${Math.round(s)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(Math.round(s % 60)).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

// ------------------------------------------------------------------ data
function newRunData() {
  const cols = (keys) => Object.fromEntries(["step", "time", "tokens", ...keys].map((k) => [k, []]));
  return { offset: 0, t0: null, train: cols(TRAIN_KEYS), val: cols(["loss"]), system: cols(SYSTEM_KEYS),
           sets: {}, anomalies: [], samples: [], layers: [] }; // sets: one val series per held-out set (val/<name>/loss)
}

const SET_LOSS = /^val\/(.+)\/loss$/;
const SET_DASHES = ["solid", "dash", "dot", "dashdot", "longdash", "longdashdot"];
function ingestSets(d, ev, t) {
  for (const [k, v] of Object.entries(ev)) {
    const m = SET_LOSS.exec(k);
    if (!m) continue;
    if (!d.sets[m[1]]) d.sets[m[1]] = { step: [], time: [], tokens: [], loss: [] };
    const g = d.sets[m[1]];
    g.step.push(num(ev.step)); g.time.push(t); g.tokens.push(num(ev.tokens)); g.loss.push(num(v));
  }
}

function ingest(d, ev) {
  const t = num(ev.time);
  if (t !== null && (d.t0 === null || t < d.t0)) d.t0 = t;
  const push = (group, keys, values) => {
    group.step.push(num(ev.step)); group.time.push(t); group.tokens.push(num(ev.tokens));
    keys.forEach((k) => group[k].push(num(values[k])));
  };
  if (ev.kind === "train") push(d.train, TRAIN_KEYS, ev);
  else if (ev.kind === "val") {
    push(d.val, ["loss"], { loss: ev.loss !== undefined ? ev.loss : ev.val_loss });
    ingestSets(d, ev, t);
  }
  else if (ev.kind === "system") push(d.system, SYSTEM_KEYS, ev);
  else if (ev.kind === "layers") d.layers.push(ev);
  else if (ev.kind === "anomaly") d.anomalies.push(ev);
  else if (ev.kind === "sample") d.samples.push(ev);
}

async function getJSON(url) {
  const r = await fetch(url, { cache: "no-store" });
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r.json();
}

async function fetchMetrics(name) {
  if (!state.data[name]) state.data[name] = newRunData();
  for (let i = 0; i < 100; i++) { // at most 100 chunks per poll; the rest comes next poll
    const d = state.data[name];
    const r = await getJSON(`/api/runs/${encodeURIComponent(name)}/metrics?offset=${d.offset}`);
    if (r.reset) { state.data[name] = newRunData(); state.dirty = true; continue; }
    r.events.forEach((ev) => ingest(d, ev));
    if (r.events.length) state.dirty = true;
    d.offset = r.offset;
    if (!r.more) break;
  }
}

// ------------------------------------------------------------------ series helpers
function timeUnit() {
  let maxS = 0;
  for (const name of state.selected) {
    const d = state.data[name];
    if (!d || d.t0 === null) continue;
    for (const g of [d.train, d.val, d.system]) {
      const last = g.time[g.time.length - 1];
      if (last !== undefined && last !== null) maxS = Math.max(maxS, last - d.t0);
    }
  }
  if (maxS > 7200) return { div: 3600, label: "time (h)" };
  if (maxS > 120) return { div: 60, label: "time (min)" };
  return { div: 1, label: "time (s)" };
}

function tokensAt(d, step) { // cumulative tokens of the last train event at or before `step`
  const s = d.train.step, tok = d.train.tokens;
  let lo = 0, hi = s.length - 1, best = null;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (s[mid] <= step) { best = mid; lo = mid + 1; } else hi = mid - 1;
  }
  for (let i = best; i !== null && i >= 0; i--) if (tok[i] !== null) return tok[i];
  return null;
}

function xyOf(d, group, key, xmode, unit) {
  const x = [], y = [];
  const Y = group[key];
  for (let i = 0; i < Y.length; i++) {
    if (Y[i] === null) continue;
    let xv;
    if (xmode === "step") xv = group.step[i];
    else if (xmode === "time") xv = group.time[i] === null ? null : (group.time[i] - d.t0) / unit.div;
    else xv = group === d.train ? group.tokens[i] : tokensAt(d, group.step[i]);
    if (xv === null || xv === undefined) continue;
    x.push(xv); y.push(Y[i]);
  }
  return [x, y];
}

function ema(y, w) { // debiased, like TensorBoard's smoothing slider
  const out = new Array(y.length);
  let acc = 0;
  for (let i = 0; i < y.length; i++) { acc = w * acc + (1 - w) * y[i]; out[i] = acc / (1 - Math.pow(w, i + 1)); }
  return out;
}

function decimate(x, y) {
  if (x.length <= MAX_POINTS) return [x, y];
  const buckets = MAX_POINTS / 2, size = x.length / buckets, ox = [], oy = [];
  for (let b = 0; b < buckets; b++) {
    const lo = Math.floor(b * size), hi = Math.min(x.length, Math.floor((b + 1) * size));
    let mn = lo, mx = lo;
    for (let i = lo; i < hi; i++) { if (y[i] < y[mn]) mn = i; if (y[i] > y[mx]) mx = i; }
    for (const i of mn <= mx ? [mn, mx] : [mx, mn]) { ox.push(x[i]); oy.push(y[i]); }
  }
  return [ox, oy];
}

function layerOrder(a, b) { // blocks.2 before blocks.10; other groups (embeddings, head) by name around them
  const na = a.match(/^(.*?)(\d+)$/), nb = b.match(/^(.*?)(\d+)$/);
  if (na && nb && na[1] === nb[1]) return Number(na[2]) - Number(nb[2]);
  return a < b ? -1 : a > b ? 1 : 0;
}

function layerHeatmap(d, prefix) { // `layers` events -> one heat map trace: layers (y) x steps (x), log10 colour
  const names = new Set();
  for (const ev of d.layers) for (const k of Object.keys(ev)) if (k.startsWith(prefix)) names.add(k.slice(prefix.length));
  const rows = [...names].sort(layerOrder);
  if (!rows.length) return [];
  const x = d.layers.map((ev) => ev.step);
  const z = rows.map((r) => d.layers.map((ev) => { const v = num(ev[prefix + r]); return v !== null && v > 0 ? Math.log10(v) : null; }));
  const text = rows.map((r) => d.layers.map((ev) => { const v = num(ev[prefix + r]); return v === null ? "–" : v.toExponential(2); }));
  return [{ type: "heatmap", x, y: rows, z, text, colorscale: "Viridis", meta: { role: "layers" },
            colorbar: { title: { text: "log10", side: "right" }, thickness: 10 },
            hovertemplate: "%{y} @ step %{x}: %{text}<extra></extra>" }];
}

// ------------------------------------------------------------------ charts
const PLOT_CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"] };

function line(name, role, x, y, extra = {}) {
  const [dx, dy] = decimate(x, y);
  const { line: lineExtra = {}, ...rest } = extra;
  return { type: "scatter", mode: "lines", x: dx, y: dy, name, meta: { run: name, role },
           hovertemplate: `${name}<br>%{x}: %{y:.4g}<extra></extra>`, ...rest,
           line: { color: state.colorOf[name], width: 1.8, ...lineExtra } };
}

function smoothedTraces(name, x, y, smoothing) {
  if (smoothing <= 0 || y.length < 2) return [line(name, "raw", x, y)];
  return [line(name, "raw", x, y, { opacity: 0.25, line: { width: 1 }, hoverinfo: "skip", hovertemplate: null }),
          line(name, "smooth", x, ema(y, smoothing))];
}

function layout(title, xtitle, extra = {}) {
  return {
    title: { text: title, x: 0.02, xanchor: "left", font: { size: 14, color: "#1f2933" } },
    margin: { l: 58, r: 14, t: 38, b: 42 }, showlegend: false, hovermode: "closest",
    paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "#ffffff",
    font: { family: "Inter, system-ui, -apple-system, Segoe UI, sans-serif", size: 11, color: "#52606d" },
    xaxis: { title: { text: xtitle, font: { size: 11 } }, gridcolor: "#eef1f4", zeroline: false, automargin: true },
    yaxis: { gridcolor: "#eef1f4", zeroline: false, automargin: true, tickformat: ".3~g" },
    uirevision: `${state.xmode}`, // keeps the user's zoom across live updates; a new x-axis re-autoscales
    ...extra,
  };
}

function finishLayout(lay, traces) {
  if (!traces.length) {
    lay.annotations = [{ text: "no data yet", showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5,
                         font: { size: 13, color: "#9aa5b1" } }];
    lay.xaxis = { ...lay.xaxis, visible: false };
    lay.yaxis = { ...lay.yaxis, visible: false };
    return lay;
  }
  // a constant series (fixed lr, steady tokens/s) would be autoscaled into float noise or to +-1
  let lo = Infinity, hi = -Infinity;
  for (const t of traces) for (const v of t.y) if (v !== null) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  if (lay.yaxis.type !== "log" && Number.isFinite(lo) && hi - lo <= 1e-9 * Math.max(Math.abs(hi), 1e-30)) {
    const pad = Math.abs(hi) * 0.1 || 1;
    lay.yaxis = { ...lay.yaxis, range: [hi - pad, hi + pad], autorange: false };
  }
  return lay;
}

function draw() {
  const xmode = $("xaxis").value, smoothing = Number($("smoothing").value), logy = $("logy").checked;
  state.xmode = xmode;
  const unit = timeUnit();
  const xtitle = xmode === "time" ? unit.label : xmode === "tokens" ? "tokens" : "step";
  const charts = { loss: [], val: [], lr: [], grad: [], tps: [], mem: [] };
  for (const name of [...state.selected].sort()) {
    const d = state.data[name];
    if (!d) continue;
    const xy = (g, k) => xyOf(d, g, k, xmode, unit);
    const [lx, ly] = xy(d.train, "loss");
    charts.loss.push(...smoothedTraces(name, lx, ly, smoothing));
    const marks = d.anomalies.filter((a) => num(a.step) !== null).slice(-200);
    if (marks.length && lx.length) {
      const ax = [], ay = [], at = [];
      const steps = d.train.step;
      for (const a of marks) {
        let i = steps.findIndex((s) => s !== null && s >= a.step);
        if (i < 0) i = steps.length - 1;
        const xv = xmode === "step" ? a.step : xmode === "time" ? (num(a.time) - d.t0) / unit.div : tokensAt(d, a.step);
        const yv = d.train.loss[i];
        if (xv === null || yv === null || yv === undefined) continue;
        ax.push(xv); ay.push(yv); at.push(`${anomalyKind(a)} @ step ${a.step}: ${anomalyText(a)}`);
      }
      charts.loss.push({ type: "scatter", mode: "markers", x: ax, y: ay, text: at, meta: { run: name, role: "anomaly" },
                         marker: { symbol: "x-thin", size: 10, line: { width: 2, color: "#e03131" } },
                         hovertemplate: "%{text}<extra></extra>" });
    }
    const sets = Object.keys(d.sets).sort((a, b) => (a === "split" ? -1 : b === "split" ? 1 : a.localeCompare(b)));
    if (sets.length) { // one curve per held-out set, dashed by set, coloured by run: overlayable across runs
      sets.forEach((set, i) => {
        const [sx, sy] = xy(d.sets[set], "loss");
        if (sx.length) charts.val.push({ ...line(name, `set:${set}`, sx, sy, { line: { dash: SET_DASHES[i % SET_DASHES.length] },
          hovertemplate: `${name} · ${set}<br>%{x}: %{y:.4g}<extra></extra>` }), mode: "lines+markers", marker: { size: 5 },
          legendgroup: set, meta: { run: name, role: `set:${set}`, set } });
      });
    } else {
      const [vx, vy] = xy(d.val, "loss");
      if (vx.length) charts.val.push({ ...line(name, "raw", vx, vy), mode: "lines+markers", marker: { size: 6 } });
    }
    const [rx, ry] = xy(d.train, "lr");
    if (rx.length) charts.lr.push(line(name, "raw", rx, ry));
    const [gx, gy] = xy(d.train, "grad_norm");
    if (gx.length) charts.grad.push(...smoothedTraces(name, gx, gy, smoothing));
    const [tx, ty] = xy(d.train, "tokens_per_s");
    if (tx.length) charts.tps.push(...smoothedTraces(name, tx, ty, smoothing));
    const dashes = { rss_mb: "solid", cuda_allocated_mb: "dash", cuda_reserved_mb: "dot" };
    for (const k of SYSTEM_KEYS) {
      const [mx, my] = xy(d.system, k);
      if (mx.length) charts.mem.push(line(name, k, mx, my, { line: { dash: dashes[k] },
                                                               hovertemplate: `${name} ${k}<br>%{x}: %{y:.0f} MiB<extra></extra>` }));
    }
  }
  const plot = (id, traces, lay) => Plotly.react($(id), traces, finishLayout(lay, traces), PLOT_CONFIG);
  const detail = state.detail && state.data[state.detail];
  const metric = $("layers-metric").value;
  charts.layers = detail ? layerHeatmap(detail, metric) : [];
  const what = metric === "grad_norm/" ? "Gradient norm" : "Update / weight ratio";
  plot("chart-layers", charts.layers, layout(`${what} per layer — ${state.detail || "no run"} (monitor.layer_stats_every)`,
                                             "step", { yaxis: { ...layout("", "").yaxis, tickformat: "", autorange: "reversed" } }));
  plot("chart-loss", charts.loss, layout("Training loss", xtitle,
       { yaxis: { ...layout("", "").yaxis, type: logy ? "log" : "linear" }, uirevision: `${xmode}-${logy}` }));
  plot("chart-val", charts.val, layout(charts.val.some((t) => t.meta.set !== undefined)
    ? "Validation loss per set (split solid; named sets dashed)" : "Validation loss", xtitle));
  plot("chart-lr", charts.lr, layout("Learning rate", xtitle));
  plot("chart-grad", charts.grad, layout("Gradient norm", xtitle, { yaxis: { ...layout("", "").yaxis, type: "log" } }));
  const yfmt = (f) => ({ yaxis: { ...layout("", "").yaxis, tickformat: f } });
  plot("chart-tps", charts.tps, layout("Tokens / s", xtitle, yfmt("~s")));
  plot("chart-mem", charts.mem, layout("Memory (MiB) — RSS solid, CUDA allocated dashed, reserved dotted", xtitle,
                                       yfmt(",.0f")));
  state.dirty = false;
  state.draws += 1;
}
