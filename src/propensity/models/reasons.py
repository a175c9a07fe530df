"""Contributions in words a marketer reads: "3 pricing page views in the last 7 days".

Contributions are per feature in log-odds of the model's margin (SHAP values for LightGBM, the
centred terms for logistic regression, their weighted sum for a blend); the largest positive
and negative ones become reasons, each with the feature's value as the lead has it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from propensity.coding import OTHER

WINDOW = re.compile(r"^n_(?P<what>.+)_(?P<w>\d+d|all)$")
VALUE_SUM = re.compile(r"^value_sum_(?P<w>\d+)d$")
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
    if label.endswith(("ch", "sh", "x")):
        return label + "es"
    return label if label.endswith("s") else label + "s"


def _count(n: float, what: str) -> str:
    return f"{n:.0f} {_plural(what, round(n))}"


def figure(value: float) -> str:
    """A value as a reader takes it in: whole numbers and anything from 100 up without
    decimals and with thousands separators (48,000), smaller ones to two significant digits
    (1.6, 0.25): "account days since last event 1.59722" said nothing the digits added."""
    if value == round(value) or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2g}"


def _days_ago(v: float) -> str:
    """Days as a reader says them: whole days, "less than a day ago" under one."""
    return "less than a day ago" if v < 1 else f"{v:.0f} {'day' if round(v) == 1 else 'days'} ago"


_SIMPLE: dict[str, Callable[[float], str]] = {
    # one formatter per feature, called only for the feature asked about (formatting them all
    # on every call was half of the reasons' cost)
    "lead_age_days": lambda v: f"lead created {v:.0f} days ago",
    "days_in_stage": lambda v: f"{v:.0f} days in the current stage",
    "decayed_engagement": lambda v: f"recent engagement score {v:.1f}",
    "events_per_day": lambda v: f"{v:.2f} touches a day since created",
    "engagement_trend": lambda v: (f"engagement {'rising' if v > 1 else 'falling'} "
                                   f"({v:.1f}x the weeks before)"),
    "account_engaged_contacts": lambda v: f"{_count(v, 'engaged contact')} at the account",
    "account_contacts": lambda v: f"{_count(v, 'contact')} at the account",
    "account_executive_engaged": lambda v: ("an executive is engaged" if v else
                                            "no executive engaged"),
    "account_champion_engaged": lambda v: "a champion is engaged" if v else "no champion engaged",
    "open_opportunities": lambda v: _count(v, "open opportunity"),
    "open_opportunity_amount": lambda v: f"{figure(v)} in open opportunities",
    "lost_opportunities": lambda v: f"{_count(v, 'lost opportunity')} so far",
    "account_events_30d": lambda v: f"{_count(v, 'event')} at the account in the last 30 days",
    "account_days_since_last_event": lambda v: f"last activity at the account {_days_ago(v)}",
    "stage_changes": lambda v: f"{_count(v, 'stage change')} so far",
}


def _describe_category(name: str, value: float, cats: list[str], missing: bool) -> str:
    """A coded categorical feature: its value's label, a rare or new value, or not known."""
    if missing:
        return f"{_label(name)} not known"
    code = int(value)
    shown = cats[code] if 0 <= code < len(cats) else OTHER
    if name == "current_stage":
        return f"in stage {shown}"
    if shown == OTHER:
        return f"{_label(name)} is a rare or new value"
    return f"{_label(name)} is {shown}"


def _describe_missing(name: str) -> str:
    """A numeric feature with no value: a 'since' that has not happened yet, else not known."""
    if name.startswith("days_since_"):
        what = name.removeprefix("days_since_")
        return "no activity yet" if what == "last_event" else f"no {_label(what)} yet"
    if name == "account_days_since_last_event":
        return "no activity at the account yet"
    return f"{_label(name)} not known"


def _persona_events(name: str, value: float) -> str | None:
    if (m := PERSONA_EVENTS.match(name)) is None:
        return None
    n = int(value)
    who = _label(m.group("who"))
    return (f"{n} {'event' if n == 1 else 'events'} by the account's {who}s in the last "
            f"{m.group('w')} days")


def _window_count(name: str, value: float) -> str | None:
    if (m := WINDOW.match(name)) is None:
        return None
    what, w = m.group("what"), m.group("w")
    n = int(value)
    what = what.removeprefix("channel_") + (" touch" if what.startswith("channel_") else "")
    what = "event" if what == "events" else what
    when = "in total" if w == "all" else f"in the last {w[:-1]} days"
    return f"{n} {_plural(what, n)} {when}"


def _days_since(name: str, value: float) -> str | None:
    if not name.startswith("days_since_"):
        return None
    what = name.removeprefix("days_since_")
    what = "activity" if what == "last_event" else _label(what)
    return f"last {what} {_days_ago(value)}"


def _simple(name: str, value: float) -> str | None:
    simple = _SIMPLE.get(name)
    return None if simple is None else simple(value)


def _value_sum(name: str, value: float) -> str | None:
    m = VALUE_SUM.match(name)
    return None if m is None else f"event value {figure(value)} in the last {m.group('w')} days"


_NUMERIC_RULES: tuple[Callable[[str, float], str | None], ...] = (
    _persona_events,
    _window_count,
    _days_since,
    _simple,
    _value_sum,
)
"""How a numeric feature with a value reads, first rule that applies (the order matters:
a persona's event count is also a window count)."""


def describe(name: str, value: float, categories: dict[str, list[str]]) -> str:
    """The feature and its value, as a sentence fragment."""
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    if name in categories:
        return _describe_category(name, value, categories[name], missing)
    if missing:
        return _describe_missing(name)
    for rule in _NUMERIC_RULES:
        text = rule(name, value)
        if text is not None:
            return text
    return f"{_label(name)} {figure(value)}"


@lru_cache(maxsize=16)
def families(names: tuple[str, ...]) -> tuple[np.ndarray, list[list[int]]]:
    """Each feature's family, and each family's members. The counts of one event type (or
    channel) over every window and the days since its last one are one piece of evidence
    that the model's features measure several times over: a logistic part, given the 30-day
    and all-time counts and the days since, can weigh the 7-day count below zero (it was
    seen: "3 demo requests in the last 7 days" a negative reason while demo requests as a
    whole raised the lead's score). A family speaks with its members' summed contribution."""
    keys: dict[str, int] = {}
    group = np.empty(len(names), dtype="int64")
    for i, name in enumerate(names):
        if m := WINDOW.match(name):
            key = m.group("what")
        elif name.startswith("days_since_"):
            what = name.removeprefix("days_since_")
            key = "events" if what == "last_event" else what
        else:
            key = f"\x00{name}"  # a family of one
        group[i] = keys.setdefault(key, len(keys))
    members: list[list[int]] = [[] for _ in keys]
    for i, g in enumerate(group.tolist()):
        members[g].append(i)
    return group, members


def explain(names: list[str], values: np.ndarray, contributions: np.ndarray,
            categories: dict[str, list[str]], top: int = 3) -> tuple[list[Reason], list[Reason]]:
    """Top positive and negative reasons of one row (contributions without the bias column),
    one per family of features (`families`): its impact is the family's summed contribution,
    so a reason's sign is the sign of what its evidence did to the score, and its words are
    those of the member that did most of it."""
    group, members = families(tuple(names))
    net = np.bincount(group, weights=contributions, minlength=len(members))
    order = np.argsort(net, kind="stable")

    def reason(g: int) -> Reason:
        sign = 1.0 if net[g] > 0 else -1.0
        mine = members[g]
        i = mine[int(np.argmax(sign * contributions[mine]))] if len(mine) > 1 else mine[0]
        text = describe(names[i], values[i], categories)
        if sign < 0 and values[i] > 0 and WINDOW.match(names[i]):
            # the model's own verdict on this evidence: "3 demo requests" alone reads as a
            # buying signal, which is not what a negative reason says
            text += ", which this model weighs against buying"
        return Reason(names[i], text, round(float(net[g]), 4))

    positive = [reason(g) for g in order[::-1][:top].tolist() if net[g] > 0]
    negative = [reason(g) for g in order[:top].tolist() if net[g] < 0]
    return positive, negative
