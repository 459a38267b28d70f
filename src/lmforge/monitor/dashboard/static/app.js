// lmforge dashboard, part 2: polling, the run table, the details tabs. Uses charts.js (part 1).
// Every POLL_MS: /api/runs for the table, then the new metrics lines of each shown run; charts are
// redrawn only when something arrived, with Plotly.react + uirevision so a zoom survives updates.
"use strict";

const STATUS_LABEL = { running: "running", finished: "finished", crashed: "crashed", interrupted: "interrupted" };

function colorFor(name) {
  if (!state.colorOf[name]) state.colorOf[name] = COLORS[Object.keys(state.colorOf).length % COLORS.length];
  return state.colorOf[name];
}

// ------------------------------------------------------------------ run table
function renderRuns(payload) {
  $("runs-dir").textContent = payload.runs_dir;
  const runs = payload.runs;
  state.runs = runs;
  // assign colours in a stable order (oldest first) so a new run never recolours the others
  [...runs].reverse().forEach((r) => colorFor(r.name));
  const present = new Set(runs.map((r) => r.name));
  for (const name of [...state.selected]) if (!present.has(name)) { state.selected.delete(name); state.dirty = true; }
  for (const r of runs) {
    if (!state.known.has(r.name)) {
      state.known.add(r.name);
      if (state.selected.size < MAX_AUTO_SELECT) state.selected.add(r.name);
    }
  }
  const body = $("runs-body");
  body.replaceChildren();
  $("runs-empty").hidden = runs.length > 0;
  for (const r of runs) {
    const tr = el("tr");
    tr.dataset.run = r.name;
    if (state.detail === r.name) tr.classList.add("current");
    const tdSel = el("td", "sel");
    const box = el("input");
    box.type = "checkbox";
    box.checked = state.selected.has(r.name);
    box.style.accentColor = state.colorOf[r.name];
    box.title = "overlay this run on the charts";
    box.addEventListener("change", () => {
      if (box.checked) state.selected.add(r.name); else state.selected.delete(r.name);
      state.dirty = true;
      refresh();
    });
    tdSel.append(box);
    const tdName = el("td", "name");
    const sw = el("span", "swatch");
    sw.style.background = state.colorOf[r.name];
    const link = el("a", null, r.name);
    link.href = "#";
    link.addEventListener("click", (e) => { e.preventDefault(); setDetail(r.name); });
    tdName.append(sw, link);
    const tdStatus = el("td");
    const badge = el("span", `status ${r.status}`, STATUS_LABEL[r.status] || r.status);
    if (r.error) badge.title = r.error;
    tdStatus.append(badge);
    tr.append(tdSel, tdName, tdStatus,
      el("td", "num", r.step), el("td", "num", fmt(r.loss_smooth !== null ? r.loss_smooth : r.loss)),
      el("td", "num", fmt(r.best_val_loss)), el("td", "num", fmt(r.tokens)), el("td", "num", fmt(r.tokens_per_s, 3)),
      el("td", "num", fmtDuration(r.elapsed)), el("td", `num ${r.anomalies ? "warn" : ""}`, r.anomalies));
    body.append(tr);
  }
  const sel = $("detail-run");
  const names = runs.map((r) => r.name);
  if (sel.options.length !== names.length || [...sel.options].some((o, i) => o.value !== names[i])) {
    sel.replaceChildren(...names.map((n) => { const o = el("option", null, n); o.value = n; return o; }));
  }
  if (!state.detail || !names.includes(state.detail)) state.detail = names[0] || null;
  if (state.detail) sel.value = state.detail;
}

// ------------------------------------------------------------------ details
function setDetail(name) {
  state.detail = name;
  $("detail-run").value = name;
  document.querySelectorAll("#runs-body tr").forEach((tr) => tr.classList.toggle("current", tr.dataset.run === name));
  renderDetails(true);
  draw(); // the per-layer heat map follows the run in Details
  $("detail-run").scrollIntoView({ behavior: "smooth", block: "start" });
}

function table(headers, rows) {
  const t = el("table", "kv");
  const hr = el("tr");
  headers.forEach((h) => hr.append(el("th", null, h)));
  t.append(el("thead"));
  t.tHead.append(hr);
  const tb = el("tbody");
  rows.forEach((cells) => { const tr = el("tr"); cells.forEach((c) => tr.append(c instanceof Node ? c : el("td", null, c))); tb.append(tr); });
  t.append(tb);
  return t;
}

function renderValue(v) { // JSON report -> figures grid + collapsible nested sections
  if (v === null || typeof v !== "object") return el("span", "scalar", typeof v === "number" ? fmt(v, 6) : v === null ? "–" : String(v));
  if (Array.isArray(v)) {
    if (v.length && v.every((x) => x !== null && typeof x === "object" && !Array.isArray(x))) {
      const keys = [...new Set(v.slice(0, 50).flatMap((x) => Object.keys(x)))].slice(0, 8);
      return table(keys, v.slice(0, 50).map((x) => keys.map((k) => (typeof x[k] === "object" && x[k] !== null
        ? JSON.stringify(x[k]) : typeof x[k] === "number" ? fmt(x[k], 6) : String(x[k] ?? "")))));
    }
    return el("span", "scalar", v.slice(0, 50).map((x) => (typeof x === "number" ? fmt(x, 6) : JSON.stringify(x))).join(", "));
  }
  const wrap = el("div", "report");
  const grid = el("div", "figures");
  for (const [k, x] of Object.entries(v)) {
    if (x !== null && typeof x === "object") {
      const det = el("details");
      det.append(el("summary", null, k), renderValue(x));
      wrap.append(det);
    } else {
      const cell = el("div", "figure");
      cell.append(el("div", "label", k), renderValue(x));
      grid.append(cell);
    }
  }
  if (grid.children.length) wrap.prepend(grid);
  return wrap;
}

async function renderReport(which, force) {
  const name = state.detail, key = `${name}/${which}`, box = $(`tab-${which}`);
  const run = state.runs.find((r) => r.name === name);
  if (!run || !run[`has_${which}`]) {
    box.replaceChildren(el("p", "muted", `No ${which}/report.json in this run yet.`));
    return;
  }
  if (force || !state.reports[key] || Date.now() - state.reports[key].at > 5000) {
    try { state.reports[key] = { at: Date.now(), data: await getJSON(`/api/runs/${encodeURIComponent(name)}/report/${which}`) }; }
    catch (e) { box.replaceChildren(el("p", "muted", String(e))); return; }
    box.replaceChildren(renderValue(state.reports[key].data));
  }
}

async function renderConfig(name) {
  const box = $("tab-config");
  const r = await fetch(`/api/runs/${encodeURIComponent(name)}/config`, { cache: "no-store" });
  box.replaceChildren(r.ok ? el("pre", "config", await r.text()) : el("p", "muted", "No config.yaml in this run."));
}

async function renderDetails(force = false) {
  const name = state.detail, d = name && state.data[name];
  const run = state.runs.find((r) => r.name === name);
  $("detail-status").textContent = run ? `${run.status}${run.error ? " — " + run.error : ""}` : "";
  if (!d) return;
  $("n-anomalies").textContent = d.anomalies.length;
  if (state.tab === "anomalies" && (force || state.dirtyDetails)) {
    const rows = d.anomalies.slice(-200).reverse().map((a) => [
      el("td", "num", a.step), el("td", `sev ${a.severity || "warning"}`, anomalyKind(a)),
      el("td", "num", typeof a.value === "number" ? fmt(a.value) : a.value ?? ""), el("td", "msg", anomalyText(a))]);
    $("tab-anomalies").replaceChildren(rows.length ? table(["step", "kind", "value", "message"], rows)
      : el("p", "muted", "No anomalies: loss, gradients and memory look healthy."));
  }
  if (state.tab === "samples" && (force || state.dirtyDetails)) {
    if (force || !state.evalSamples[name]) {
      try { state.evalSamples[name] = (await getJSON(`/api/runs/${encodeURIComponent(name)}/samples`)).samples; }
      catch (e) { state.evalSamples[name] = []; }
    }
    const box = $("tab-samples");
    box.replaceChildren();
    const all = [...d.samples.slice(-30).reverse().map((s) => ({ ...s, src: `step ${s.step}` })),
                 ...state.evalSamples[name].map((s) => ({ ...s, src: "eval" }))];
    for (const s of all) {
      const card = el("div", "sample");
      const extra = [s.src];
      if (typeof s.fluency_ppl === "number") extra.push(`fluency ppl ${fmt(s.fluency_ppl)}`);
      if (s.rating && typeof s.rating === "object") {
        const r = Object.entries(s.rating).filter(([, v]) => v !== null).map(([k, v]) => `${k} ${v}/5`);
        if (r.length) extra.push(r.join(", "));
      }
      const head = el("div", "sample-head", extra.join(" · "));
      const body = el("pre", "sample-text");
      body.append(el("b", null, s.prompt ?? ""), document.createTextNode(s.text ?? s.completion ?? s.output ?? ""));
      card.append(head, body);
      box.append(card);
    }
    if (!all.length) box.append(el("p", "muted", "No samples yet (sample events or eval/samples.jsonl)."));
  }
  $("n-samples").textContent = d.samples.length + (state.evalSamples[name] || []).length;
  if (state.tab === "eval" || state.tab === "data") await renderReport(state.tab, force);
  if (state.tab === "config" && force) await renderConfig(name);
  state.dirtyDetails = false;
}

// ------------------------------------------------------------------ polling
function setLive(ok, msg) {
  $("live-dot").className = `dot ${ok ? "ok" : "err"}`;
  $("live-text").textContent = msg;
}

let timer = null, busy = false, again = false;
async function refresh() {
  clearTimeout(timer);
  if (busy) { again = true; return; } // one refresh at a time; a click during one queues another
  busy = true;
  try {
    renderRuns(await getJSON("/api/runs"));
    const shown = new Set(state.selected);
    if (state.detail) shown.add(state.detail);
    for (const name of shown) if (state.runs.some((r) => r.name === name)) await fetchMetrics(name);
    if (state.dirty) { draw(); state.dirtyDetails = true; }
    await renderDetails(false);
    const running = state.runs.filter((r) => r.status === "running").length;
    setLive(true, `${running ? running + " running · " : ""}updated ${new Date().toLocaleTimeString()}`);
  } catch (e) {
    setLive(false, `connection lost (${e.message}) — retrying`);
  } finally {
    busy = false;
    if (again) { again = false; timer = setTimeout(refresh, 0); }
    else if ($("live").checked) timer = setTimeout(refresh, POLL_MS);
  }
}

function init() {
  $("smoothing").addEventListener("input", () => {
    $("smoothing-value").textContent = Number($("smoothing").value).toFixed(2);
    draw();
  });
  $("xaxis").addEventListener("change", draw);
  $("logy").addEventListener("change", draw);
  $("layers-metric").addEventListener("change", draw);
  $("live").addEventListener("change", () => { if ($("live").checked) refresh(); else clearTimeout(timer); });
  $("detail-run").addEventListener("change", () => setDetail($("detail-run").value));
  document.querySelectorAll(".tab").forEach((b) => b.addEventListener("click", () => {
    state.tab = b.dataset.tab;
    document.querySelectorAll(".tab").forEach((x) => x.classList.toggle("active", x === b));
    document.querySelectorAll(".tab-body").forEach((x) => { x.hidden = x.id !== `tab-${state.tab}`; });
    renderDetails(true);
  }));
  refresh();
}

init();
