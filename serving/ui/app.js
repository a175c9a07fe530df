// The marketing-ops page: reads the API with the key typed above, draws with Plotly.
"use strict";
const $ = (id) => document.getElementById(id);
const state = { curve: null, recommended: null, version: null, key: null };
const pct = (v) => (v === null || v === undefined ? "-" : (100 * v).toFixed(1) + "%");
const num = (v, d = 1) => (v === null || v === undefined ? "-" : Number(v).toFixed(d));

async function api(path, options = {}, key = $("key").value) {
  let response;
  for (let ask = 0; ; ask++) {  // 202: the answer is being computed (a forecast fits models)
    if (ask === 120) throw new Error("still being computed after 120 asks: try again later");
    response = await fetch(path, {
      ...options,
      headers: { "Authorization": "Bearer " + key, "Content-Type": "application/json",
                 ...(options.headers || {}) },
    });
    if (response.status !== 202) break;
    const wait = Number(response.headers.get("Retry-After")) || 5;
    await new Promise((done) => setTimeout(done, wait * 1000));
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    throw new Error(response.status + ": " + detail);
  }
  return body;
}

function showThreshold(t) {
  $("threshold").value = t;
  const p = state.curve.points[t];
  $("threshold-value").textContent = t;
  $("mql-per-week").textContent = num(p.flagged_per_week);
  $("precision").textContent = pct(p.precision);
  $("recall").textContent = pct(p.recall);
  $("expected").textContent = num(p.expected_customers_per_week, 2);
  $("rate-below").textContent = pct(p.rate_below);
  $("lift").textContent = p.lift === null ? "-" : num(p.lift, 2) + "x";
  drawLift(t);
}

function drawLift(t) {
  const pts = state.curve.points;
  const xs = pts.map((p) => p.threshold);
  const lines = [
    { x: xs, y: pts.map((p) => p.lift), name: "lift", type: "scatter" },
    { x: xs, y: pts.map((p) => p.recall), name: "recall", yaxis: "y2", type: "scatter" },
  ];
  const shapes = [{ type: "line", x0: t, x1: t, yref: "paper", y0: 0, y1: 1,
                    line: { color: "#d62728" } }];
  if (state.recommended !== null) {
    shapes.push({ type: "line", x0: state.recommended, x1: state.recommended, yref: "paper",
                  y0: 0, y1: 1, line: { color: "#2ca02c", dash: "dash" } });
  }
  Plotly.react("lift-chart", lines, {
    margin: { t: 10, r: 40 }, shapes, xaxis: { title: { text: "threshold" } },
    yaxis: { title: { text: "lift" } },
    yaxis2: { overlaying: "y", side: "right", range: [0, 1], tickformat: ".0%",
              title: { text: "recall" } },
    legend: { orientation: "h" },
  }, { displayModeBar: false });
}

async function loadActive() {
  const active = await api("/v1/thresholds");
  state.version = active.version;  // what a save is based on: a change made since is a 409
  $("active").textContent = `active v${active.version}: MQL at ${active.mql}, ` +
    `A ${active.grade_a} / B ${active.grade_b} / C ${active.grade_c}`;
  const rows = await api("/v1/thresholds/history");
  $("history").innerHTML = "";
  for (const r of rows) {
    const tr = document.createElement("tr");
    for (const v of [r.version, r.mql, `${r.grade_a} / ${r.grade_b} / ${r.grade_c}`,
                     r.changed_by, (r.changed_at || "").replace("T", " ").slice(0, 19),
                     r.reason]) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.appendChild(td);
    }
    $("history").appendChild(tr);
  }
  return active;
}

async function loadFunnel() {
  try {
    const f = await api("/v1/funnel?by=source");
    const steps = f.overall.steps;
    Plotly.react("funnel-chart", [{
      type: "funnel", y: [steps[0].from_stage, ...steps.map((s) => s.to_stage)],
      x: [steps[0].reached, ...steps.map((s) => s.advanced)], textinfo: "value+percent initial",
    }], { margin: { t: 10, l: 100 } }, { displayModeBar: false });
    const groups = f.groups.filter((g) => g.lead_to_customer.percent !== null);
    Plotly.react("source-chart", [{
      type: "bar", x: groups.map((g) => g.group), y: groups.map((g) => g.lead_to_customer.percent),
      error_y: { type: "data", symmetric: false,
                 array: groups.map((g) => g.lead_to_customer.high - g.lead_to_customer.percent),
                 arrayminus: groups.map((g) => g.lead_to_customer.percent - g.lead_to_customer.low) },
    }], { margin: { t: 10 }, yaxis: { title: { text: "lead-to-customer %" } } },
       { displayModeBar: false });
  } catch (e) {
    $("funnel-chart").textContent = "no CRM export configured for the funnel (" + e.message + ")";
  }
}

// what an empty chart says (a CSS rule shows it while the div is empty)
function emptyChart(id, text) {
  const el = $(id);
  Plotly.purge(el);
  el.innerHTML = "";
  el.dataset.empty = text;
}

async function connect() {
  if (!$("key").value) {
    $("status").textContent = "paste an API key first";
    $("status").className = "error";
    return;
  }
  sessionStorage.setItem("propensity-key", $("key").value);
  $("hint").hidden = true;
  $("status").textContent = "loading...";
  $("status").className = "muted";
  try {
    state.curve = await api("/v1/thresholds/curve");
    $("source").textContent = state.curve.source;
    const active = await loadActive();
    const d = state.curve.distribution;
    Plotly.react("distribution-chart", [{ type: "bar", x: d.map((_, i) => i), y: d }],
                 { margin: { t: 10 }, xaxis: { title: { text: "score" } },
                   yaxis: { title: { text: "leads" } } }, { displayModeBar: false });
    showThreshold(Math.round(active.mql));
    await loadFunnel();
    state.key = await api("/v1/key");
    $("status").textContent = "connected";
    await monitoringOnConnect();
  } catch (e) {
    $("status").textContent = e.message;
    $("status").className = "error";
    $("hint").hidden = false;
  }
}

async function recommendThreshold() {
  try {
    const r = await api("/v1/thresholds/recommend", { method: "POST", body: JSON.stringify({
      reps: Number($("reps").value), leads_per_rep_per_week: Number($("per-rep").value) }) });
    state.recommended = r.threshold;
    $("recommendation").textContent = `recommended: ${r.threshold} (${r.reason}): ` +
      `${num(r.point.flagged_per_week)} MQLs a week, ${pct(r.point.precision)} buy, ` +
      `${num(r.point.expected_customers_per_week, 2)} expected customers a week`;
    $("use-recommendation").disabled = false;
    drawLift(Number($("threshold").value));
  } catch (e) {
    $("recommendation").textContent = e.message;
  }
}

async function save() {
  const admin = $("admin-key").value;
  try {
    const saved = await api("/v1/thresholds", { method: "PUT", body: JSON.stringify({
      mql: Number($("threshold").value), reason: $("reason").value,
      base_version: state.version }) }, admin);
    $("save-status").textContent = `saved as version ${saved.version}`;
    await loadActive();
  } catch (e) {
    $("save-status").textContent = e.message;
  }
}

$("connect").addEventListener("click", connect);
$("threshold").addEventListener("input", (e) => showThreshold(Number(e.target.value)));
$("recommend").addEventListener("click", recommendThreshold);
$("use-recommendation").addEventListener("click", () => showThreshold(state.recommended));
$("save").addEventListener("click", save);
const remembered = sessionStorage.getItem("propensity-key");
if (remembered) { $("key").value = remembered; connect(); }
