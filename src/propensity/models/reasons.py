"""Contributions in words a marketer reads: "3 pricing page views in the last 7 days".

Contributions are per feature in log-odds of the model's margin (SHAP values for LightGBM, the
centred terms for logistic regression, their weighted sum for a blend); the largest positive
and negative ones become reasons, each with the feature's value as the lead has it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from propensity.coding import OTHER

WINDOW = re.compile(r"^n_(?P<what>.+)_(?P<w>\d+d|all)$")
PERSONA_EVENTS = re.compile(r"^account_events_(?P<who>end_user|champion|executive)_(?P<w>\d+)d$")


@dataclass(frozen=True)
class Reason:
    feature: str
    text: str
    impact: float


def _label(name: str) -> str:
    return name.replace("_", " ")


def _plural(what: str, n: float) -> str:
    label = _label(what)
    if n == 1:
        return label
    if label.endswith("y") and not label.endswith(("ay", "ey", "oy")):
        return label[:-1] + "ies"
    return label if label.endswith("s") else label + "s"


def describe(name: str, value: float, categories: dict[str, list[str]]) -> str:
    """The feature and its value, as a sentence fragment."""
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    if name in categories:
        if missing:
            return f"{_label(name)} not known"
        cats = categories[name]
        code = int(value)
        shown = cats[code] if 0 <= code < len(cats) else OTHER
        if name == "current_stage":
            return f"in stage {shown}"
        if shown == OTHER:
            return f"{_label(name)} is a rare or new value"
        return f"{_label(name)} is {shown}"
    if missing:
        if name.startswith("days_since_"):
            what = name.removeprefix("days_since_")
            return "no activity yet" if what == "last_event" else f"no {_label(what)} yet"
        return f"{_label(name)} not known"
    if m := PERSONA_EVENTS.match(name):
        n = int(value)
        who = _label(m.group("who"))
        return (f"{n} {'event' if n == 1 else 'events'} by the account's {who}s in the last "
                f"{m.group('w')} days")
    if m := WINDOW.match(name):
        what, w = m.group("what"), m.group("w")
        n = int(value)
        what = what.removeprefix("channel_") + (" touch" if what.startswith("channel_") else "")
        what = "event" if what == "events" else what
        when = "in total" if w == "all" else f"in the last {w[:-1]} days"
        return f"{n} {_plural(what, n)} {when}"
    if name.startswith("days_since_"):
        what = name.removeprefix("days_since_")
        what = "activity" if what == "last_event" else _label(what)
        return f"last {what} {value:.0f} days ago"
    simple = {
        "lead_age_days": f"lead created {value:.0f} days ago",
        "days_in_stage": f"{value:.0f} days in the current stage",
        "decayed_engagement": f"recent engagement score {value:.1f}",
        "events_per_day": f"{value:.2f} touches a day since created",
        "engagement_trend": (f"engagement {'rising' if value > 1 else 'falling'} "
                             f"({value:.1f}x the weeks before)"),
        "account_engaged_contacts": f"{value:.0f} engaged contacts at the account",
        "account_contacts": f"{value:.0f} contacts at the account",
        "account_executive_engaged": ("an executive is engaged" if value else
                                      "no executive engaged"),
        "account_champion_engaged": "a champion is engaged" if value else "no champion engaged",
        "open_opportunities": f"{value:.0f} open opportunities",
        "stage_changes": f"{value:.0f} stage changes so far",
    }
    if name in simple:
        return simple[name]
    return f"{_label(name)} {value:g}"


def explain(names: list[str], values: np.ndarray, contributions: np.ndarray,
            categories: dict[str, list[str]], top: int = 3) -> tuple[list[Reason], list[Reason]]:
    """Top positive and negative reasons of one row (contributions without the bias column)."""
    order = np.argsort(contributions, kind="stable")
    positive = [Reason(names[i], describe(names[i], values[i], categories),
                       round(float(contributions[i]), 4))
                for i in order[::-1][:top] if contributions[i] > 0]
    negative = [Reason(names[i], describe(names[i], values[i], categories),
                       round(float(contributions[i]), 4))
                for i in order[:top] if contributions[i] < 0]
    return positive, negative
