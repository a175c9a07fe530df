// The monitoring panel: GET /v1/monitoring drawn with Plotly (uses $, api, pct, num of app.js).
"use strict";
const PSI_LIMIT = 0.2;
const plain = { displayModeBar: false };

function drawDrift(window) {
  const bins = window.score_bins;
  Plotly.react("drift-score-chart", [
    { type: "bar", name: "training", x: bins.map((b) => b.bin), y: bins.map((b) => b.reference) },
    { type: "bar", name: "served", x: bins.map((b) => b.bin), y: bins.map((b) => b.served) },
  ], { margin: { t: 10, b: 70 }, barmode: "group", yaxis: { tickformat: ".0%" },
       xaxis: { title: { text: "probability bin" } }, legend: { orientation: "h" } }, plain);
  const top = window.features.slice(0, 10).reverse();
  Plotly.react("drift-features-chart", [{
    type: "bar", orientation: "h", x: top.map((f) => f.psi), y: top.map((f) => f.feature),
    marker: { color: top.map((f) => (f.psi > PSI_LIMIT ? "#d62728" : "#1f77b4")) },
  }], { margin: { t: 10, l: 200 }, shapes: [{ type: "line", x0: PSI_LIMIT, x1: PSI_LIMIT,
        yref: "paper", y0: 0, y1: 1, line: { color: "#d62728", dash: "dash" } }] }, plain);
}

function drawPerformance(perf) {
  const bands = perf.bands;
  Plotly.react("calibration-chart", [
    { type: "scatter", mode: "lines", name: "perfect", x: [0, 1], y: [0, 1],
      line: { color: "#aaa", dash: "dot" } },
    { type: "scatter", mode: "markers+lines", name: "realised",
      x: bands.map((b) => b.predicted), y: bands.map((b) => b.realised),
      text: bands.map((b) => `scores ${b.band}: ${b.leads} leads`),
      marker: { size: bands.map((b) => 6 + Math.min(20, Math.sqrt(b.leads))) } },
  ], { margin: { t: 10 }, xaxis: { title: { text: "predicted" }, tickformat: ".0%" },
       yaxis: { title: { text: "realised" }, tickformat: ".0%" }, legend: { orientation: "h" } },
  plain);
  const weeks = perf.weeks;
  Plotly.react("precision-chart", [
    { type: "scatter", name: "realised", x: weeks.map((w) => w.period),
      y: weeks.map((w) => w.precision) },
    { type: "scatter", name: "expected", x: weeks.map((w) => w.period),
      y: weeks.map((w) => w.expected_precision), line: { dash: "dash" } },
  ], { margin: { t: 10 }, yaxis: { tickformat: ".0%", rangemode: "tozero" },
       legend: { orientation: "h" } }, plain);
}

function showChampions(rows) {
  $("champions").innerHTML = "";
  for (const c of rows) {
    const tr = document.createElement("tr");
    for (const v of [c.version, c.since.replace("T", " ").slice(0, 19), c.reason,
                     c.holdout_roc_auc ?? "-", c.champion ? "serving" : ""]) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.appendChild(td);
    }
    $("champions").appendChild(tr);
  }
}

async function loadMonitoring() {
  const params = new URLSearchParams();
  if ($("monitor-start").value) params.set("start", $("monitor-start").value);
  if ($("monitor-end").value) params.set("end", $("monitor-end").value);
  $("verdict").textContent = "loading...";
  try {
    const r = await api("/v1/monitoring?" + params.toString());
    const v = r.verdict;
    $("monitor-model").textContent = `${r.model} v${r.version ?? "-"}`;
    $("verdict").textContent = v.actions.length ? "to do: " + v.actions.join(", ")
                                                : "nothing to do";
    $("verdict").className = v.actions.length ? "error" : "muted";
    $("verdict-reasons").innerHTML = "";
    for (const reason of v.reasons) {
      const li = document.createElement("li");
      li.textContent = reason;
      $("verdict-reasons").appendChild(li);
    }
    const from = r.start.slice(0, 10), to = r.end.slice(0, 10);
    $("monitor-window").textContent = `showing as_of ${from} to ${to} (before ${to})`;
    $("served").textContent = r.window ? r.window.served : "0";
    $("score-psi").textContent = r.window ? num(r.window.score_psi, 3) : "-";
    if (r.window && r.window.score_bins.length) {
      drawDrift(r.window);
    } else {
      const why = `no data yet: no scores logged as of ${from} to ${to}`;
      emptyChart("drift-score-chart", why);
      emptyChart("drift-features-chart", why);
    }
    const o = r.performance ? r.performance.overall : null;
    $("realised-precision").textContent = o ? pct(o.precision) : "-";
    $("expected-precision").textContent = o ? pct(o.expected_precision) : "-";
    if (r.performance && r.performance.bands.length) {
      drawPerformance(r.performance);
    } else {
      const why = r.window ? "no data yet: no score in this window has reached its horizon " +
        "with its outcome reported (POST /v1/outcomes)" :
        `no data yet: no scores logged as of ${from} to ${to}`;
      emptyChart("calibration-chart", why);
      emptyChart("precision-chart", why);
    }
    showChampions(r.champions);
  } catch (e) {
    $("verdict").textContent = e.message;
    $("verdict").className = "error";
  }
}

// After Connect: the report needs the monitor scope (admin includes it); a key without it is
// told so here rather than refused by the server.
async function monitoringOnConnect() {
  const scopes = state.key.scopes;
  if (scopes.includes("monitor") || scopes.includes("admin")) return loadMonitoring();
  const why = `the key ${state.key.name} cannot read monitoring: it needs the monitor scope ` +
    "(admin includes it): propensity keys create --scope monitor --name NAME";
  $("verdict").textContent = why;
  $("verdict").className = "muted";
  for (const id of ["drift-score-chart", "drift-features-chart", "calibration-chart",
                    "precision-chart"]) emptyChart(id, why);
}

$("monitor-load").addEventListener("click", loadMonitoring);
