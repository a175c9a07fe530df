// The forecast panel: GET /v1/forecast and GET /v1/forecast/backtest drawn with Plotly
// (uses $, api, pct, num of app.js). Nothing is computed here: the page shows the API's figures.
"use strict";
const money = (v) => (v === null || v === undefined ? "-" : Math.round(v).toLocaleString("en-US"));
const count = (v) => Number(Number(v).toFixed(1)).toString();  // 40 -> "40", 40.5 -> "40.5"
const range = (s, f = count) => `${f(s.low80)}-${f(s.high80)}`;
const range95 = (s, f = count) => `${f(s.low95)}-${f(s.high95)}`;
const flat = { displayModeBar: false };

function row(tbody, cells) {
  const tr = document.createElement("tr");
  for (const v of cells) {
    const td = document.createElement("td");
    td.textContent = v;
    tr.appendChild(td);
  }
  tbody.appendChild(tr);
}

// the 95% range (light), the 80% range (darker), the expected line, and apart (dotted) what
// leads not created yet should add
function drawBands(id, weeks, pick, apart, color, yTitle) {
  const x = weeks.map((w) => w.start);
  const span = weeks.map(pick);
  const edge = (ys, name, fill, show) => ({
    type: "scatter", mode: "lines", x, y: ys, name, line: { width: 0 }, hoverinfo: "x+y",
    fill, fillcolor: fill ? color.replace("ALPHA", name.startsWith("95") ? "0.15" : "0.35")
                          : undefined, showlegend: show });
  Plotly.react(id, [
    edge(span.map((s) => s.high95), "95% range", undefined, false),
    edge(span.map((s) => s.low95), "95% range", "tonexty", true),
    edge(span.map((s) => s.high80), "80% range", undefined, false),
    edge(span.map((s) => s.low80), "80% range", "tonexty", true),
    { type: "scatter", mode: "lines+markers", x, y: span.map((s) => s.expected),
      name: "expected", line: { color: color.replace("ALPHA", "1") } },
    { type: "scatter", mode: "lines", x, y: apart, name: "leads not created yet (apart)",
      line: { color: "#7f7f7f", dash: "dot" } },
  ], { margin: { t: 40 }, yaxis: { title: { text: yTitle }, rangemode: "tozero" },
       legend: { orientation: "h", y: 1.18 } }, flat);
}

function showForecast(f) {
  const t = f.total;
  $("forecast-as-of").textContent = `as of ${f.as_of.slice(0, 10)}, ${f.weeks} weeks`;
  $("fc-open").textContent = f.open_leads.toLocaleString("en-US");
  $("fc-customers").textContent = num(t.customers.expected);
  $("fc-customers-range").textContent = `${range(t.customers)} / ${range95(t.customers)}`;
  $("fc-revenue").textContent = money(t.revenue.expected);
  const n = f.new_leads;
  $("fc-inflow").textContent = num(n.leads_per_day);
  $("fc-new-customers").textContent = `${num(n.total_customers.expected)} ` +
    `(${range(n.total_customers)})`;
  $("fc-new-revenue").textContent = money(n.total_revenue);
  $("fc-method").textContent = f.method;
  $("forecast-rows").innerHTML = "";
  const weeks = f.rows;
  weeks.forEach((w, i) => row($("forecast-rows"), [
    w.week, w.start.slice(0, 10), num(w.customers.expected), range(w.customers),
    range95(w.customers), money(w.revenue.expected), range(w.revenue, money),
    range95(w.revenue, money), num(n.customers[i], 2)]));
  row($("forecast-rows"), [
    "total", t.start.slice(0, 10), num(t.customers.expected), range(t.customers),
    range95(t.customers), money(t.revenue.expected), range(t.revenue, money),
    range95(t.revenue, money), num(n.total_customers.expected, 2)]);
  drawBands("forecast-customers-chart", weeks, (w) => w.customers, n.customers,
            "rgba(31,119,180,ALPHA)", "customers");
  drawBands("forecast-revenue-chart", weeks, (w) => w.revenue, n.revenue,
            "rgba(44,160,44,ALPHA)", "revenue");
}

function showBacktest(b) {
  const s = b.summary;
  const mape = (v) => (v === null ? "-" : pct(v));
  $("bt-mape-model").textContent = mape(s.mape_model);
  $("bt-mape-stage").textContent = mape(s.mape_stage_rates);
  $("bt-mape-pipeline").textContent = mape(s.mape_pipeline);
  $("bt-coverage").textContent = `${pct(s.coverage80)} / ${pct(s.coverage95)}`;
  $("backtest-rows").innerHTML = "";
  for (const p of b.periods) {
    row($("backtest-rows"), [p.start, p.open_leads, p.actual, num(p.forecast),
      `${count(p.low80)}-${count(p.high80)}`, `${count(p.low95)}-${count(p.high95)}`,
      num(p.stage_rates), num(p.pipeline), money(p.actual_revenue), money(p.forecast_revenue)]);
  }
  $("backtest-skipped").textContent = b.skipped.length ? "not forecast: " + b.skipped.join("; ")
                                                       : "";
  const x = b.periods.map((p) => p.start);
  const bars = (lo, hi, width, name) => ({
    type: "scatter", mode: "markers", x, y: b.periods.map((p) => p.forecast), name,
    marker: { color: "#1f77b4", size: width > 2 ? 9 : 1 },
    error_y: { type: "data", symmetric: false, thickness: width, width: width > 2 ? 0 : 6,
               array: b.periods.map((p) => p[hi] - p.forecast),
               arrayminus: b.periods.map((p) => p.forecast - p[lo]) } });
  Plotly.react("backtest-chart", [
    bars("low95", "high95", 1.5, "forecast, 95% range"),
    bars("low80", "high80", 6, "forecast, 80% range"),
    { type: "scatter", mode: "markers", x, y: b.periods.map((p) => p.actual), name: "actual",
      marker: { color: "#000", symbol: "diamond", size: 11 } },
    { type: "scatter", mode: "markers", x, y: b.periods.map((p) => p.stage_rates),
      name: "stage rates x open leads", marker: { color: "#ff7f0e", symbol: "square", size: 9 } },
    { type: "scatter", mode: "markers", x, y: b.periods.map((p) => p.pipeline),
      name: "weighted pipeline", marker: { color: "#d62728", symbol: "x", size: 10 } },
  ], { margin: { t: 40 }, xaxis: { title: { text: "quarter start" }, type: "category" },
       yaxis: { title: { text: `customers in the ${b.weeks} weeks after` },
                rangemode: "tozero" }, legend: { orientation: "h", y: 1.15 } }, flat);
}

async function loadForecast() {
  const params = new URLSearchParams({ weeks: $("forecast-weeks").value || "13" });
  if ($("forecast-date").value) params.set("as_of", $("forecast-date").value);
  $("forecast-load").disabled = true;
  $("forecast-status").className = "muted";
  $("forecast-status").textContent = "forecasting (the first call fits the models)...";
  try {
    showForecast(await api("/v1/forecast?" + params.toString()));
    $("forecast-status").textContent = "";
  } catch (e) {
    $("forecast-status").textContent = e.message;
    $("forecast-status").className = "error";
  }
  // the backtest fits the models once per past quarter: shown when it is ready
  $("backtest-status").className = "muted";
  $("backtest-status").textContent = "backtesting (models refitted at each past quarter " +
    "start: a minute or more the first time)...";
  try {
    showBacktest(await api(`/v1/forecast/backtest?weeks=${params.get("weeks")}`));
    $("backtest-status").textContent = "ready";
  } catch (e) {
    $("backtest-status").textContent = e.message;
    $("backtest-status").className = "error";
    emptyChart("backtest-chart", "no backtest: " + e.message);
  }
  $("forecast-load").disabled = false;
}

$("forecast-load").addEventListener("click", loadForecast);
