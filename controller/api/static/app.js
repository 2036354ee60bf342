// modelctl console: polls the controller's JSON routes (docs/console.md) and draws them.
// No build step, no framework: DOM built with textContent only (no HTML from data), uPlot for charts.
// Every panel copes with a route that is missing or says `available: false`: it writes
// "not available: <reason>" and never a figure it was not given.
"use strict";

(() => {
  const POLL_MS = { status: 2000, gpus: 2000, events: 2000, series: 5000, requests: 5000, plan: 10000 };
  const LOG_TAIL = 200;
  const KEY_STORE = "modelctl-console-key";

  // ---- small helpers ------------------------------------------------------------------------

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") el.className = value;
      else if (name === "text") el.textContent = value;
      else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
      else el.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  const $ = (id) => document.getElementById(id);

  function fill(el, ...nodes) {
    el.replaceChildren(...nodes.flat().filter((n) => n !== null && n !== undefined));
  }

  function unavailable(reason) {
    return h("p", { class: "unavailable", "data-available": "false" }, `not available: ${reason}`);
  }

  function muted(text) {
    return h("p", { class: "muted" }, text);
  }

  // Fill `el` only when what it shows changed (keeps selection, scroll and focus while idle).
  function fillIfChanged(el, signature, build) {
    if (el.dataset.signature === signature) return;
    el.dataset.signature = signature;
    fill(el, build());
  }

  function fmtBytes(bytes) {
    if (bytes === null || bytes === undefined) return "–";
    const gib = bytes / 2 ** 30;
    if (gib >= 10) return `${gib.toFixed(0)} GiB`;
    if (gib >= 1) return `${gib.toFixed(1)} GiB`;
    return `${(bytes / 2 ** 20).toFixed(0)} MiB`;
  }

  function fmtNum(value, digits = 2) {
    if (value === null || value === undefined || Number.isNaN(value)) return "–";
    if (Math.abs(value) >= 100) return value.toFixed(0);
    if (Math.abs(value) >= 10) return value.toFixed(1);
    return value.toFixed(digits);
  }

  function fmtSeconds(value) {
    if (value === null || value === undefined) return "–";
    return value < 1 ? `${(value * 1000).toFixed(0)} ms` : `${value.toFixed(2)} s`;
  }

  function fmtJoules(value) {
    if (value === null || value === undefined) return "–";
    if (value >= 1e6) return `${(value / 1e6).toFixed(2)} MJ`;
    if (value >= 1e3) return `${(value / 1e3).toFixed(1)} kJ`;
    return `${fmtNum(value)} J`;
  }

  // RFC 3339 as Docker (nanoseconds) or Python (microseconds) writes it; null for unknown/zero.
  function parseTime(text) {
    if (!text) return null;
    const trimmed = String(text).replace(/(\.\d{3})\d+/, "$1");
    const ms = Date.parse(trimmed);
    return Number.isNaN(ms) || ms < Date.UTC(2000, 0, 1) ? null : ms;
  }

  // "5s", "3m", "2h", "4d" as `modelctl status` writes ages.
  function fmtAge(startedAt, now) {
    const started = parseTime(startedAt);
    if (started === null) return "–";
    const seconds = Math.max(0, Math.floor((now - started) / 1000));
    for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60]]) {
      if (seconds >= size) return `${Math.floor(seconds / size)}${unit}`;
    }
    return `${seconds}s`;
  }

  function fmtClock(text) {
    const ms = typeof text === "number" ? text : parseTime(text);
    return ms === null ? "–" : new Date(ms).toLocaleTimeString([], { hour12: false });
  }

  // ---- fetching -----------------------------------------------------------------------------

  let apiKey = sessionStorage.getItem(KEY_STORE) || "";

  function headers() {
    return apiKey ? { Authorization: `Bearer ${apiKey}` } : {};
  }

  // {ok: true, data} or {ok: false, status, reason}: the reason is what the panel shows.
  async function get(path, { text = false } = {}) {
    let resp;
    try {
      resp = await fetch(path, { cache: "no-store", headers: headers() });
    } catch (err) {
      return { ok: false, status: 0, reason: `the controller does not answer (${err.message})` };
    }
    if (resp.status === 401) askForKey();
    if (!resp.ok) return { ok: false, status: resp.status, reason: await failure(resp, path) };
    try {
      return { ok: true, data: text ? await resp.text() : await resp.json() };
    } catch (err) {
      return { ok: false, status: resp.status, reason: `${path} answered something unreadable (${err.message})` };
    }
  }

  // The route's own JSON error when it gave one; a bare 404 means this controller lacks the route.
  async function failure(resp, path) {
    let body = "";
    try {
      body = await resp.text();
    } catch {
      body = "";
    }
    let said = null;
    try {
      said = JSON.parse(body).error || null;
    } catch {
      said = null;
    }
    if (said) return `${path}: HTTP ${resp.status}: ${String(said).slice(0, 300)}`;
    if (resp.status === 404) return `${path}: HTTP 404, this controller does not serve it`;
    const text = body.trim().slice(0, 300);
    return `${path}: HTTP ${resp.status}${text ? `: ${text}` : ""}`;
  }

  function askForKey() {
    const form = $("key-form");
    if (!form.hidden) return;
    form.hidden = false;
    $("key-input").focus();
  }

  function setupKeyForm() {
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      apiKey = $("key-input").value.trim();
      sessionStorage.setItem(KEY_STORE, apiKey);
      $("key-form").hidden = true;
      $("key-input").value = "";
      refreshAll();
    });
  }

  // ---- connection line ----------------------------------------------------------------------

  function showConnection(result) {
    const el = $("connection");
    const state = result.ok ? "up" : "down";
    const text = result.ok ? "connected to the controller" : `controller not answering: ${result.reason}`;
    if (el.dataset.state !== state || el.textContent !== text) {
      el.dataset.state = state;
      el.textContent = text;
    }
    $("updated").textContent = result.ok ? `updated ${fmtClock(Date.now())}` : "retrying every 2 s";
  }

  // ---- models and replicas ------------------------------------------------------------------

  // The state's word is always written; the shape and the colour only repeat it.
  const STATES = {
    Ready: ["✓", "ok"],
    Pulling: ["⇣", "info"],
    Starting: ["◔", "info"],
    Pending: ["‖", "warn"],
    Waiting: ["…", "muted"],
    Outdated: ["↻", "warn"],
    Draining: ["↓", "muted"],
    BackingOff: ["✕", "bad"],
  };

  function badge(word, [icon, tone]) {
    return h("span", { class: "badge", "data-tone": tone }, h("span", { class: "icon", "aria-hidden": "true" }, icon), word);
  }

  function stateBadge(state) {
    return badge(state, STATES[state] || ["?", "muted"]);
  }

  function replicaKey(r) {
    return `${r.model}/${r.replica}/${r.container || r.state}`;
  }

  // A replica serving again keeps its last failure's reason: said as the past, not as its state.
  const HEALTHY = new Set(["Ready", "Outdated", "Draining"]);

  function reasonCell(r) {
    const parts = [];
    if (r.progress) parts.push(h("span", { class: "progress" }, h("span", { "aria-hidden": "true" }, "⟳ "), r.progress));
    if (r.reason) {
      const past = r.progress || HEALTHY.has(r.state);
      parts.push(h("span", { class: past ? "muted" : null }, `${r.progress ? " · " : ""}${past ? "last failure: " : ""}${r.reason}`));
    }
    return parts;
  }

  const CELLS = ["Model", "Replica", "State", "Age", "Restarts", "Endpoint", "Reason / progress", "Logs"];

  function newReplicaRow(r) {
    const cells = CELLS.map((label, i) => h("td", { "data-label": label, class: [null, "num", null, "num", "num", "mono", "reason", null][i] }));
    if (r.container) {
      cells[7].append(
        h("button", { type: "button", "aria-label": `Engine log of ${r.container}`, onclick: () => openLogs(r.container) }, "logs"),
      );
    }
    return h("tr", { "data-key": replicaKey(r) }, cells);
  }

  function setText(td, text) {
    if (td.textContent !== text) td.textContent = text;
  }

  // A model's LoRA adapters (from the endpoint table) under its name: clients name them as models.
  let adaptersOf = {};

  function modelCell(td, model) {
    const adapters = adaptersOf[model] || [];
    fillIfChanged(td, `${model}|${adapters.join(",")}`, () => [
      model,
      adapters.length ? h("div", { class: "muted", "data-role": "adapters" }, `adapters: ${adapters.join(", ")}`) : null,
    ]);
  }

  function updateReplicaRow(tr, r, now) {
    const c = tr.children;
    tr.dataset.state = r.state;
    tr.dataset.model = r.model;
    tr.dataset.replica = String(r.replica);
    tr.dataset.container = r.container || "";
    modelCell(c[0], r.model);
    setText(c[1], String(r.replica));
    if (c[2].dataset.state !== r.state) {
      c[2].dataset.state = r.state;
      fill(c[2], stateBadge(r.state));
    }
    setText(c[3], fmtAge(r.started_at, now));
    setText(c[4], String(r.restarts));
    setText(c[5], r.endpoint || "–");
    const reasonSig = `${r.state}|${r.progress || ""}|${r.reason || ""}`;
    if (c[6].dataset.signature !== reasonSig) {
      c[6].dataset.signature = reasonSig;
      fill(c[6], reasonCell(r));
    }
  }

  let statusAt = null; // when /v1/status last answered

  function renderReplicas(status) {
    const body = $("replica-rows");
    const note = document.querySelector("#replicas [data-role=note]");
    if (!status.ok) {
      const stale = body.children.length && statusAt ? `; the rows below are as of ${fmtClock(statusAt)}` : "";
      fill(note, h("span", { class: "unavailable" }, `not available: ${status.reason}${stale}`));
      body.closest("table").classList.add("stale");
      return;
    }
    statusAt = Date.now();
    body.closest("table").classList.remove("stale");
    const replicas = status.data.replicas || [];
    const models = status.data.models || [];
    adaptersOf = status.data.adapters || {};
    note.textContent = replicas.length || models.length ? "" : "No models: the watched folder holds no manifest.";
    const now = Date.now();
    const existing = new Map([...body.children].map((tr) => [tr.dataset.key, tr]));
    const wanted = replicas.map((r) => {
      const key = replicaKey(r);
      const tr = existing.get(key) || newReplicaRow(r);
      existing.delete(key);
      updateReplicaRow(tr, r, now);
      return tr;
    });
    for (const gone of existing.values()) gone.remove();
    const inOrder = wanted.every((tr, i) => body.children[i] === tr);
    if (!inOrder) wanted.forEach((tr) => body.append(tr));
    renderScaling(models, replicas, now);
    renderNotes(status.data.notes || []);
  }

  function renderScaling(models, replicas, now) {
    const onDemand = models.filter((m) => m.min_replicas !== m.max_replicas);
    const sig = JSON.stringify(onDemand) + Math.floor(now / 5000);
    fillIfChanged($("scaling"), sig, () => {
      if (!onDemand.length) return [];
      const rows = onDemand.map((m) => {
        const ready = replicas.filter((r) => r.model === m.model && r.state === "Ready").length;
        const why = m.desired === 0 ? "scaled to zero (the next request starts it)" : m.reason;
        const used = m.last_used ? `${fmtAge(m.last_used, now)} ago` : "never";
        return h("tr", {},
          h("td", {}, m.model), h("td", { class: "num" }, `${ready} / ${m.desired}`),
          h("td", { class: "num" }, `${m.min_replicas}–${m.max_replicas}`), h("td", { class: "num" }, m.in_flight),
          h("td", { class: "num" }, m.waiting), h("td", {}, used), h("td", {}, why));
      });
      const head = ["Model", "Ready / desired", "Range", "In flight", "Waiting", "Last used", "Scaling"];
      return [
        h("h3", {}, "On demand"),
        h("div", { class: "table-wrap" }, h("table", {},
          h("thead", {}, h("tr", {}, head.map((c) => h("th", { scope: "col" }, c)))), h("tbody", {}, rows))),
      ];
    });
  }

  function renderNotes(notes) {
    fillIfChanged($("notes"), JSON.stringify(notes), () => notes.map((n) => h("li", {}, n)));
  }

  // ---- manifest errors ----------------------------------------------------------------------

  function renderErrors(status) {
    const el = $("errors-body");
    if (!status.ok) {
      fillIfChanged(el, `down:${status.reason}`, () => unavailable(status.reason));
      return;
    }
    const errors = status.data.manifest_errors || [];
    const ready = (status.data.replicas || []).filter((r) => r.state === "Ready");
    const sig = JSON.stringify(errors) + ready.length;
    fillIfChanged(el, sig, () => {
      el.dataset.count = String(errors.length);
      if (!errors.length) return h("p", { class: "muted", "data-errors": "0" }, "✓ none: every manifest in the watched folder is valid");
      const models = [...new Set(ready.map((r) => r.model))];
      return [
        h("ul", { class: "errors", "data-errors": errors.length }, errors.map((text) => h("li", {}, located(text)))),
        h("p", { class: "serving-note" },
          `The last good set is still serving: ${ready.length} ready replica${ready.length === 1 ? "" : "s"}` +
            (models.length ? ` (${models.join(", ")})` : "") + ". Fix the file and it is picked up."),
      ];
    });
  }

  // "path/file.yaml:3 (document 1) field 'x': message": the place set apart from the message.
  function located(text) {
    const match = /^(.*?:\d+)(.*)$/s.exec(text) || /^(.*?\.ya?ml)(.*)$/s.exec(text);
    if (!match) return text;
    return [h("code", { class: "where" }, match[1]), match[2]];
  }

  // ---- plan preview -------------------------------------------------------------------------

  function renderPlan(plan) {
    const el = $("plan-body");
    const sig = JSON.stringify(plan);
    fillIfChanged(el, sig, () => {
      if (!plan.ok) return unavailable(plan.reason);
      const { changes, errors = [], rows = [] } = plan.data;
      const parts = [];
      if (errors.length) {
        parts.push(h("p", {}, "The folder has errors; what runs stays as it is until they are fixed:"));
        parts.push(h("ul", { class: "errors" }, errors.map((e) => h("li", {}, located(e)))));
      }
      parts.push(changes
        ? h("p", { "data-changes": "true" }, "Applying the watched folder now would:")
        : h("p", { class: "muted", "data-changes": "false" }, "✓ nothing would change: what runs matches the watched folder"));
      const shown = rows.filter((r) => changes || r.action !== "keep");
      if (shown.length) {
        parts.push(h("ul", { class: "plan-lines" }, shown.map((r) => h("li", { "data-action": r.action, title: r.detail || null }, r.line))));
      }
      return parts;
    });
  }

  // ---- GPUs ---------------------------------------------------------------------------------

  function renderGpus(gpus) {
    const el = $("gpus-body");
    fillIfChanged(el, JSON.stringify(gpus), () => {
      if (!gpus.ok) return unavailable(gpus.reason);
      if (!gpus.data.available) return unavailable(gpus.data.reason || "no GPU inventory");
      const list = gpus.data.gpus || [];
      if (!list.length) return muted("No GPUs.");
      return list.map(gpuBlock);
    });
  }

  function gpuBlock(g) {
    const total = g.memory_total || 1;
    const ours = g.ours || [];
    const pct = (bytes) => `${Math.max(0, (100 * bytes) / total).toFixed(2)}%`;
    const segments = [
      ...ours.map((o) => h("span", { class: "ours", style: `width:${pct(o.bytes)}`, title: `${o.model}-${o.replica} (${o.container}): ${fmtBytes(o.bytes)}` })),
      h("span", { class: "foreign", style: `width:${pct(g.foreign_bytes)}`, title: `foreign: ${fmtBytes(g.foreign_bytes)}` }),
    ];
    const ourBytes = ours.reduce((sum, o) => sum + o.bytes, 0);
    const summary = `memory of GPU ${g.index}: ours ${fmtBytes(ourBytes)}, foreign ${fmtBytes(g.foreign_bytes)}, free ${fmtBytes(g.memory_free)} of ${fmtBytes(g.memory_total)}`;
    const legend = [
      ...ours.map((o) => h("li", {}, h("span", { class: "swatch ours", "aria-hidden": "true" }), `${o.model}-${o.replica} ${fmtBytes(o.bytes)}`)),
      h("li", {}, h("span", { class: "swatch foreign", "aria-hidden": "true" }), `foreign (not ours) ${fmtBytes(g.foreign_bytes)}`),
      h("li", {}, h("span", { class: "swatch free", "aria-hidden": "true" }), `free ${fmtBytes(g.memory_free)}`),
    ];
    const util = g.utilization_pct === null || g.utilization_pct === undefined ? "not reported" : `${g.utilization_pct} %`;
    const power = g.power_w === null || g.power_w === undefined ? "not reported" : `${fmtNum(g.power_w, 0)} W`;
    return h("div", { class: "gpu", "data-gpu": g.index },
      h("h3", {}, `GPU ${g.index}: ${g.name}`),
      h("div", { class: "gpu-facts" },
        h("span", {}, `utilisation ${util}`), h("span", {}, `power ${power}`),
        g.energy_j === null || g.energy_j === undefined ? null : h("span", {}, `energy ${fmtJoules(g.energy_j)}`),
        h("span", {}, `used ${fmtBytes(g.memory_used)} of ${fmtBytes(g.memory_total)}`)),
      h("div", { class: "bar", role: "img", "aria-label": summary }, segments),
      h("ul", { class: "legend" }, legend));
  }

  // ---- energy -------------------------------------------------------------------------------

  function renderEnergy(status) {
    const el = $("energy-body");
    const energy = status.ok ? status.data.energy : null;
    fillIfChanged(el, JSON.stringify([status.ok, status.reason, energy]), () => {
      if (!status.ok) return unavailable(status.reason);
      if (!energy) return unavailable("this controller's /v1/status has no energy figures");
      if (!energy.available) return unavailable(energy.reason || "no energy figures");
      const models = energy.models || [];
      if (!models.length) return muted("No model runs on a GPU: energy is measured per GPU, CPU-only models have no row.");
      const head = ["Model", "J / output token", "Joules", "Output tokens", "Basis"];
      return [
        h("p", { class: "muted" }, `over the last ${Math.round(energy.window_s)} s`),
        h("div", { class: "table-wrap" }, h("table", {},
          h("thead", {}, h("tr", {}, head.map((c) => h("th", { scope: "col" }, c)))),
          h("tbody", {}, models.map((m) => h("tr", { "data-model": m.model },
            h("td", {}, m.model), h("td", { class: "num" }, m.joules_per_token === null ? "– (no tokens)" : fmtNum(m.joules_per_token, 3)),
            h("td", { class: "num" }, fmtJoules(m.joules)), h("td", { class: "num" }, m.output_tokens), h("td", {}, m.basis)))))),
      ];
    });
  }

  // ---- charts -------------------------------------------------------------------------------

  const METRICS = [
    { id: "requests", title: "Requests/s", unit: "/s", series: [["requests_per_s", "requests/s"]] },
    { id: "ttft", title: "Time to first token", unit: "s", series: [["ttft_p50_s", "p50"], ["ttft_p95_s", "p95"]] },
    { id: "tokens", title: "Output tokens/s", unit: "tok/s", series: [["output_tokens_per_s", "tokens/s"]] },
    { id: "queue", title: "Queue depth", unit: "", series: [["queue_depth", "queued"], ["in_flight", "in flight"]] },
    { id: "errors", title: "Errors/s", unit: "/s", series: [["errors_per_s", "errors/s"]] },
    { id: "energy", title: "Energy per token", unit: "J", series: [["joules_per_token", "J/token"]], optional: true },
  ];
  const charts = new Map(); // "model/metric" -> {plot, figure, observer}
  let lastSeries = null;

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function countPoints(data) {
    let n = 0;
    for (let i = 0; i < data[0].length; i++) if (data.slice(1).some((s) => s[i] !== null && s[i] !== undefined)) n++;
    return n;
  }

  function latest(values) {
    for (let i = values.length - 1; i >= 0; i--) if (values[i] !== null && values[i] !== undefined) return values[i];
    return null;
  }

  function plotOptions(metric, width) {
    const colours = [cssVar("--ours-1"), cssVar("--ours-2")];
    const axis = { stroke: cssVar("--muted"), grid: { stroke: cssVar("--grid") }, ticks: { stroke: cssVar("--grid") } };
    const clock = (u, splits) => splits.map((t) => new Date(t * 1000).toLocaleTimeString([], { hour12: false }));
    return {
      width,
      height: 150,
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
      axes: [{ ...axis, space: 70, values: clock }, { ...axis, size: 48 }],
      legend: { show: metric.series.length > 1 },
      cursor: { drag: { x: false, y: false } },
      series: [
        {},
        ...metric.series.map(([, label], i) => ({
          label, stroke: colours[i % 2], width: 2, dash: i ? [6, 4] : undefined, spanGaps: false,
          points: { size: 4 },
        })),
      ],
    };
  }

  function chartData(model, metric) {
    return [model.t || [], ...metric.series.map(([field]) => (model[field] || []).map((v) => (v === undefined ? null : v)))];
  }

  function latestText(metric, data) {
    const values = metric.series.map(([, label], i) => [label, latest(data[i + 1])]);
    if (values.every(([, v]) => v === null)) return "no data yet";
    const fmt = (v) => (metric.unit === "s" ? fmtSeconds(v) : `${fmtNum(v)}${metric.unit ? ` ${metric.unit}` : ""}`);
    return values.map(([label, v]) => (values.length > 1 ? `${label} ${fmt(v)}` : fmt(v))).join(" · ");
  }

  function newChart(modelName, metric, data) {
    const plotEl = h("div", { class: "plot", "aria-hidden": "true" });
    const figure = h("figure", { class: "chart", "data-model": modelName, "data-metric": metric.id },
      h("figcaption", {}, h("span", {}, metric.title), h("span", { class: "latest" })), plotEl);
    const entry = { figure, plotEl, plot: null, observer: null };
    if (window.uPlot) {
      requestAnimationFrame(() => {
        entry.plot = new window.uPlot(plotOptions(metric, Math.max(plotEl.clientWidth, 200)), entry.pending || data, plotEl);
        entry.observer = new ResizeObserver(() => entry.plot.setSize({ width: Math.max(plotEl.clientWidth, 200), height: 150 }));
        entry.observer.observe(plotEl);
      });
    } else {
      plotEl.append(h("p", { class: "unavailable" }, "chart not available: uPlot did not load"));
    }
    return entry;
  }

  function updateChart(entry, metric, data) {
    const points = countPoints(data);
    entry.figure.dataset.points = String(points);
    entry.figure.querySelector(".latest").textContent = latestText(metric, data);
    entry.figure.setAttribute("aria-label", `${metric.title}: ${latestText(metric, data)} (${points} points)`);
    if (entry.plot) entry.plot.setData(data);
    else entry.pending = data;
  }

  function dropCharts(keep) {
    for (const [key, entry] of charts) {
      if (keep.has(key)) continue;
      if (entry.observer) entry.observer.disconnect();
      if (entry.plot) entry.plot.destroy();
      entry.figure.remove();
      charts.delete(key);
    }
  }

  function renderCharts(series) {
    lastSeries = series;
    const el = $("charts-body");
    const problem = !series.ok ? series.reason : !series.data.available ? series.data.reason || "no series" : null;
    if (problem !== null) {
      dropCharts(new Set());
      fillIfChanged(el, `x:${problem}`, () => unavailable(problem));
      return;
    }
    const models = series.data.models || {};
    const names = Object.keys(models).sort();
    if (!names.length) {
      dropCharts(new Set());
      fillIfChanged(el, "empty", () => muted("No model has figures yet: they start with the gateway's first scrape."));
      return;
    }
    if (el.dataset.signature !== "charts") {
      el.dataset.signature = "charts";
      fill(el);
    }
    const keep = new Set();
    for (const name of names) {
      let group = el.querySelector(`.model-charts[data-model="${CSS.escape(name)}"]`);
      if (!group) {
        group = h("div", { class: "model-charts", "data-model": name }, h("h3", {}, name), h("div", { class: "chart-grid" }));
        el.append(group);
      }
      const grid = group.querySelector(".chart-grid");
      for (const metric of METRICS) {
        const data = chartData(models[name], metric);
        if (metric.optional && !charts.has(`${name}/${metric.id}`) && countPoints(data) === 0) continue;
        const key = `${name}/${metric.id}`;
        keep.add(key);
        let entry = charts.get(key);
        if (!entry) {
          entry = newChart(name, metric, data);
          charts.set(key, entry);
          grid.append(entry.figure);
        }
        updateChart(entry, metric, data);
      }
    }
    dropCharts(keep);
    for (const group of el.querySelectorAll(".model-charts")) if (!names.includes(group.dataset.model)) group.remove();
    el.querySelector(".window-note")?.remove();
    el.prepend(h("p", { class: "muted window-note" }, `one point per ${Math.round(series.data.step_s)} s over ${Math.round(series.data.window_s / 60)} min, from the gateway's metrics`));
  }

  // Colours come from CSS variables: a switch between light and dark redraws every chart.
  function onSchemeChange() {
    dropCharts(new Set());
    $("charts-body").dataset.signature = "";
    if (lastSeries) renderCharts(lastSeries);
  }

  // ---- events -------------------------------------------------------------------------------

  const EVENT_KINDS = {
    created: ["+", "info"], ready: ["✓", "ok"], crashed: ["✕", "bad"], rolled: ["↻", "warn"],
    drained: ["↓", "muted"], deleted: ["−", "muted"], evicted: ["⇤", "warn"], pending: ["‖", "warn"],
    backoff: ["↺", "bad"],
  };
  let events = [];
  let eventsAfter = null;

  async function pollEvents() {
    const result = await get(eventsAfter === null ? "/v1/events" : `/v1/events?after=${eventsAfter}`);
    if (result.ok) {
      const { last, events: fresh = [] } = result.data;
      if (eventsAfter !== null && last < eventsAfter) {
        events = []; // a restarted controller counts from the start again
        eventsAfter = null;
        return pollEvents();
      }
      events = [...events, ...fresh.filter((e) => eventsAfter === null || e.seq > eventsAfter)].slice(-200);
      eventsAfter = last;
    }
    renderEvents(result);
  }

  function renderEvents(result) {
    const el = $("events-body");
    const sig = result.ok ? `ok:${eventsAfter}:${events.length}` : `x:${result.reason}`;
    fillIfChanged(el, sig, () => {
      if (!result.ok) return unavailable(result.reason);
      if (!events.length) return muted("No events yet.");
      const head = ["Time", "Event", "Replica", "Reason"];
      return h("div", { class: "table-wrap scroll-y" }, h("table", {},
        h("thead", {}, h("tr", {}, head.map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, [...events].reverse().map((e) => h("tr", { "data-kind": e.kind, "data-seq": e.seq },
          h("td", { title: e.time, class: "nowrap" }, fmtClock(e.time)),
          h("td", {}, badge(e.kind, EVENT_KINDS[e.kind] || ["•", "muted"])),
          h("td", { title: e.container || null, class: "nowrap" }, `${e.model}-${e.replica}`),
          h("td", { class: "reason" }, e.reason || ""))))));
    });
  }

  // ---- last requests ------------------------------------------------------------------------

  function statusBadge(code) {
    if (code >= 200 && code < 300) return badge(String(code), ["✓", "ok"]);
    if (code === 429 || code === 503) return badge(String(code), ["‖", "warn"]);
    return badge(String(code), ["✕", "bad"]);
  }

  function renderRequests(result) {
    const el = $("requests-body");
    fillIfChanged(el, JSON.stringify(result), () => {
      if (!result.ok) return unavailable(result.reason);
      if (!result.data.available) return unavailable(result.data.reason || "no request log");
      const models = result.data.models || {};
      const names = Object.keys(models).sort();
      if (!names.length) return muted("No requests yet.");
      const head = ["Time", "API", "Status", "Tokens in → out", "Latency", "First byte", "Replica", "Key"];
      return names.map((name) => h("div", { class: "model-requests", "data-model": name },
        h("h3", {}, name),
        h("div", { class: "table-wrap scroll-y" }, h("table", {},
          h("thead", {}, h("tr", {}, head.map((c) => h("th", { scope: "col" }, c)))),
          h("tbody", {}, models[name].map((r) => h("tr", { "data-status": r.status },
            h("td", { title: r.time }, fmtClock(r.time)), h("td", {}, r.api), h("td", {}, statusBadge(r.status)),
            h("td", { class: "num" }, `${r.prompt_tokens ?? "–"} → ${r.output_tokens ?? "–"}`),
            h("td", { class: "num" }, fmtSeconds(r.latency_s)), h("td", { class: "num" }, fmtSeconds(r.ttfb_s)),
            h("td", { class: "mono" }, r.replica), h("td", {}, r.key ?? "–"))))))));
    });
  }

  // ---- logs dialog --------------------------------------------------------------------------

  let logsFor = null;

  async function openLogs(container) {
    logsFor = container;
    const dialog = $("logs");
    $("logs-h").textContent = `Engine log: ${container}`;
    if (!dialog.open) dialog.showModal();
    await loadLogs();
  }

  async function loadLogs() {
    const container = logsFor;
    $("logs-status").textContent = "loading…";
    const result = await get(`/v1/replicas/${encodeURIComponent(container)}/logs?tail=${LOG_TAIL}`, { text: true });
    if (container !== logsFor) return;
    const pre = $("logs-text");
    if (result.ok) {
      pre.textContent = result.data || "(the container wrote nothing yet)";
      $("logs-status").textContent = `last ${LOG_TAIL} lines, fetched ${fmtClock(Date.now())}`;
      pre.scrollTop = pre.scrollHeight;
    } else {
      pre.textContent = "";
      $("logs-status").textContent = `not available: ${result.reason}`;
    }
  }

  function setupLogs() {
    $("logs-close").addEventListener("click", () => $("logs").close());
    $("logs-refresh").addEventListener("click", loadLogs);
  }

  // ---- polling ------------------------------------------------------------------------------

  async function pollStatus() {
    const status = await get("/v1/status");
    showConnection(status);
    renderReplicas(status);
    renderErrors(status);
    renderEnergy(status);
  }

  const POLLERS = {
    status: pollStatus,
    gpus: async () => renderGpus(await get("/v1/gpus")),
    events: pollEvents,
    series: async () => renderCharts(await get("/v1/console/series")),
    requests: async () => renderRequests(await get("/v1/console/requests")),
    plan: async () => renderPlan(await get("/v1/plan")),
  };
  const timers = {};
  const running = {};

  // One poll of each route at a time; a hidden tab polls five times slower.
  function schedule(name) {
    const run = async () => {
      if (running[name]) return;
      running[name] = true;
      try {
        await POLLERS[name]();
      } catch (err) {
        console.error(`console: ${name}:`, err);
      } finally {
        running[name] = false;
      }
      clearTimeout(timers[name]);
      timers[name] = setTimeout(run, document.hidden ? POLL_MS[name] * 5 : POLL_MS[name]);
    };
    clearTimeout(timers[name]);
    timers[name] = setTimeout(run, 0);
  }

  function refreshAll() {
    for (const name of Object.keys(POLLERS)) schedule(name);
  }

  document.addEventListener("DOMContentLoaded", () => {
    setupKeyForm();
    setupLogs();
    matchMedia("(prefers-color-scheme: dark)").addEventListener("change", onSchemeChange);
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) refreshAll();
    });
    refreshAll();
  });
})();
