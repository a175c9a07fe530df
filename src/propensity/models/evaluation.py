"""How good a model is, in the numbers revenue teams and data scientists both use.

Ranking (ROC AUC, PR AUC, lift and gain by decile, precision/recall in the top 10/20/30%),
probability quality (log loss, Brier, expected calibration error over equal-width and over
equal-mass bins, predicted vs realised rate per decile, a reliability curve) and
what the model leans on (gain and mean |SHAP|), for the model and each baseline on one holdout.
"""

from __future__ import annotations

import html
import json
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

TOP_SHARES = (0.1, 0.2, 0.3)


def rank_auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count a half, as in `roc_auc_score`): the
    same number, several times faster, for loops over many columns (`training.leaky_columns`
    checks every column of every training). `y` holds both classes."""
    from scipy.stats import rankdata

    pos = np.asarray(y) == 1
    n_pos = int(pos.sum())
    n_neg = pos.size - n_pos
    ranks = rankdata(score)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Mean |observed rate - mean prediction| over equal-width bins, weighted by bin size."""
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            total += sel.mean() * abs(y[sel].mean() - p[sel].mean())
    return float(total)


def equal_mass_ece(y: np.ndarray, p: np.ndarray, bins: int = 15) -> float:
    """ECE over `bins` groups of equal size by predicted probability. At a 2% base rate nearly
    every lead falls in the first equal-width bin, which then hides how wrong the scores are
    within it; equal-mass bins put as many leads in every bin."""
    order = np.argsort(p, kind="stable")
    total = 0.0
    for group in np.array_split(order, bins):
        if group.size:
            total += group.size * abs(y[group].mean() - p[group].mean())
    return float(total / len(y)) if len(y) else float("nan")


def equal_mass_ece_floor(p_true: np.ndarray, p: np.ndarray, bins: int = 15) -> float:
    """The `equal_mass_ece` against known true probabilities `p_true` that a model calibrated
    on its own features would still show, from the bins' sampling alone: within a bin the
    truth scatters around the model's p (the model cannot see what only the truth knows, here
    a lead's hidden intent), so a bin of n leads misses by about sd(p_true - p) / sqrt(n),
    and a mean absolute miss is sqrt(2 / pi) of that. An ECE near this floor is the judging's
    noise, which only more leads judged can lower; above it, the model is off."""
    order = np.argsort(p, kind="stable")
    total = 0.0
    for group in np.array_split(order, bins):
        if group.size > 1:
            total += np.sqrt(2 / np.pi) * np.sqrt(group.size) * float(
                np.std(p_true[group] - p[group], ddof=1))
    return float(total / len(p)) if len(p) else float("nan")


def deciles(y: np.ndarray, p: np.ndarray) -> pd.DataFrame:
    """Leads sorted by score into ten equal groups: predicted and realised rate, lift and
    cumulative gain per decile."""
    order = np.argsort(-p, kind="stable")
    ys = y[order]
    groups = np.array_split(np.arange(len(ys)), 10)
    base = y.mean() if len(y) else np.nan
    rows = []
    cum = 0
    for i, g in enumerate(groups, 1):
        hits = int(ys[g].sum())
        cum += hits
        rate = hits / len(g) if len(g) else np.nan
        rows.append({"decile": i, "leads": len(g), "converted": hits,
                     "predicted": float(p[order][g].mean()) if len(g) else np.nan,
                     "rate": rate, "lift": rate / base if base else np.nan,
                     "cumulative_gain": cum / y.sum() if y.sum() else np.nan})
    return pd.DataFrame(rows)


def metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    y = np.asarray(y).astype(int)
    p = np.clip(np.asarray(p, dtype="float64"), 1e-6, 1 - 1e-6)
    out = {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p),
        "ece_equal_mass": equal_mass_ece(y, p),
        "base_rate": float(y.mean()),
        "mean_prediction": float(p.mean()),
        "rows": float(len(y)),
    }
    order = np.argsort(-p, kind="stable")
    top = order[:max(1, round(0.1 * len(y)))]
    out["top_decile_predicted"] = float(p[top].mean())
    out["top_decile_realised"] = float(y[top].mean())
    for share in TOP_SHARES:
        k = max(1, round(share * len(y)))
        hits = y[order[:k]].sum()
        out[f"precision_top_{int(share * 100)}"] = float(hits / k)
        out[f"recall_top_{int(share * 100)}"] = float(hits / y.sum()) if y.sum() else 0.0
    return out


def reliability(y: np.ndarray, p: np.ndarray, bins: int = 10) -> pd.DataFrame:
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    frame = pd.DataFrame({"bin": idx, "y": y, "p": p})
    return frame.groupby("bin").agg(mean_prediction=("p", "mean"), observed_rate=("y", "mean"),
                                    rows=("y", "size")).reset_index()


def evaluation_report(y: np.ndarray, predictions: dict[str, np.ndarray],
                      importance: pd.DataFrame | None = None,
                      warnings: list[str] | None = None) -> dict[str, Any]:
    """Everything about one holdout, as plain data (the JSON artifact)."""
    model = next(iter(predictions))
    return {
        "holdout_rows": len(y),
        "metrics": {name: metrics(y, p) for name, p in predictions.items()},
        "deciles": deciles(y, predictions[model]).to_dict("records"),
        "reliability": reliability(y, predictions[model]).to_dict("records"),
        "importance": [] if importance is None else importance.head(40).to_dict("records"),
        "warnings": warnings or [],
    }


def figures(report: dict[str, Any]) -> list[go.Figure]:
    """Lift, cumulative gain, reliability and mean |SHAP|: for the HTML page and notebooks."""
    dec = pd.DataFrame(report["deciles"])
    rel = pd.DataFrame(report["reliability"])
    imp = pd.DataFrame(report["importance"])
    lift = go.Figure(go.Bar(x=dec["decile"], y=dec["lift"]))
    lift.update_layout(title="Lift by decile (1 = highest scores)", xaxis_title="decile",
                       yaxis_title="lift")
    gain = go.Figure([go.Scatter(x=[0, *(dec["decile"] / 10)],
                                 y=[0, *dec["cumulative_gain"]], name="model"),
                      go.Scatter(x=[0, 1], y=[0, 1], name="random", line={"dash": "dash"})])
    gain.update_layout(title="Cumulative gain", xaxis_title="share of leads called",
                       yaxis_title="share of buyers reached")
    relf = go.Figure([go.Scatter(x=rel["mean_prediction"], y=rel["observed_rate"],
                                 mode="lines+markers", name="model"),
                      go.Scatter(x=[0, 1], y=[0, 1], name="perfect", line={"dash": "dash"})])
    relf.update_layout(title="Reliability", xaxis_title="mean predicted probability",
                       yaxis_title="observed rate")
    out = [lift, gain, relf]
    if len(imp):
        top = imp.head(20).iloc[::-1]
        out.append(go.Figure(go.Bar(x=top["mean_abs_shap"], y=top["feature"],
                                    orientation="h")).update_layout(
            title="Mean |SHAP| (top 20)", height=600, margin={"l": 220}))
    return out


def metrics_table(report: dict[str, Any]) -> pd.DataFrame:
    """Model and baselines side by side, one row each."""
    return pd.DataFrame(report["metrics"]).T


def report_html(report: dict[str, Any], title: str) -> str:
    """Self-contained page: metrics table, lift, gain, reliability, importance."""
    body = "".join(f.to_html(full_html=False, include_plotlyjs=(i == 0))
                   for i, f in enumerate(figures(report)))
    warn = "".join(f"<p style='color:#b00'><b>warning:</b> {html.escape(w)}</p>"
                   for w in report["warnings"])
    imp = pd.DataFrame(report["importance"])
    return ("<!doctype html><html><head><meta charset='utf-8'><title>"
            f"{html.escape(title)}</title></head><body style='font-family:sans-serif'>"
            f"<h1>{html.escape(title)}</h1>{warn}"
            f"<p>holdout rows: {report['holdout_rows']:,}</p>"
            + metrics_table(report).to_html(float_format=lambda v: f"{v:.4f}") + body
            + "<h2>importance</h2>" + imp.to_html(index=False) + "</body></html>")


def dumps(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, default=float)
