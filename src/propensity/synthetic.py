"""A synthetic CRM export with a known truth, for demos, tests and honest model checks.

Each lead has a hidden intent. Its journey is a continuous-time Markov chain over the funnel
stages (exponential time in each stage; at the end of it, advance with a probability that
grows with intent, sometimes skipping a stage, or drop out), and it emits engagement events
at a rate and in a mix that also follow intent. Because the chain is Markov, the exact
probability that a lead converts within a horizon, given its intent and current stage, is a
matrix exponential (`truth_probability`): no model that sees only the export can beat it, so
it is the ceiling a model's AUC is measured against. Customers keep receiving onboarding
events after they buy: a leakage trap that point-in-time features must not fall into.

Everything is vectorised over leads (a loop of at most four funnel steps), so a million
leads with twenty million events take well under the three minutes the foundation allows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from scipy.linalg import expm

from propensity.contract import DEFAULT_STAGES, TERMINAL_STAGES, Manifest
from propensity.tables import CrmExport

TRUTH_FILE = "truth.parquet"
TRUTH_HORIZONS = (30, 60, 90, 180)
"""Days for which the truth holds each lead's P(converted by then), counted from creation."""

SOURCES = {"organic_search": 0.3, "paid_search": 0.0, "social": -0.5, "email": 0.1,
           "referral": 0.8, "event": 0.4, "direct": 0.2, "partner": 0.6}
SOURCE_SHARE = [0.22, 0.2, 0.15, 0.12, 0.07, 0.08, 0.1, 0.06]
PERSONA_EFFECT = {"end_user": -0.2, "champion": 0.5, "executive": 0.3, "unknown": -0.4}
JOB_FUNCTIONS = {"marketing": 0.1, "sales": 0.2, "it": 0.3, "finance": 0.0, "operations": 0.0,
                 "student": -1.2, "other": -0.3}
INDUSTRIES = {"software": 0.5, "finance": 0.3, "retail": -0.1, "manufacturing": 0.0,
              "healthcare": 0.1, "education": -0.4, "media": -0.2, "logistics": 0.1}
COUNTRIES = ["US", "GB", "DE", "FR", "BR", "IN", "CA", "AU", "NL", "ES"]
COUNTRY_SHARE = [0.35, 0.12, 0.1, 0.07, 0.08, 0.1, 0.06, 0.05, 0.04, 0.03]
PRODUCTS = ["core", "analytics", "enterprise"]

# event type: (base weight, sensitivity to intent, channel)
EVENT_TYPES: dict[str, tuple[float, float, str]] = {
    "email_open": (0.30, 0.0, "email"),
    "email_click": (0.10, 0.3, "email"),
    "page_view": (0.25, 0.1, "web"),
    "pricing_page_view": (0.04, 0.9, "web"),
    "content_download": (0.06, 0.3, "web"),
    "webinar_registered": (0.03, 0.4, "webinar"),
    "webinar_attended": (0.015, 0.6, "webinar"),
    "form_submit": (0.03, 0.5, "web"),
    "demo_request": (0.01, 1.2, "web"),
    "trial_signup": (0.01, 1.0, "product"),
    "meeting": (0.015, 1.0, "sales"),
    "call": (0.03, 0.6, "sales"),
    "chat": (0.02, 0.4, "web"),
    "email_bounce": (0.015, -0.8, "email"),
    "unsubscribe": (0.01, -1.0, "email"),
}
ONBOARDING_TYPES = ["onboarding_email", "product_login", "support_ticket"]

INDUSTRY_PACE = {"software": -0.25, "finance": 0.25, "retail": -0.15, "manufacturing": 0.3,
                 "healthcare": 0.35, "education": 0.15, "media": -0.2, "logistics": 0.05}
"""Log of the factor on every stage's mean time, by industry: regulated buyers are slower."""
SOURCE_PACE = {"organic_search": 0.0, "paid_search": 0.1, "social": 0.2, "email": 0.05,
               "referral": -0.35, "event": -0.15, "direct": 0.0, "partner": -0.2}
SIZE_PACE = 0.2
"""Log pace per decade of employees above 100: larger companies decide more slowly."""
INDUSTRY_AMOUNT = {"software": 0.2, "finance": 0.45, "retail": -0.2, "manufacturing": 0.1,
                   "healthcare": 0.25, "education": -0.45, "media": -0.1, "logistics": 0.0}
"""Log-amount effect of the account's industry on a deal."""
PRODUCT_AMOUNT = {"core": 0.0, "analytics": 0.3, "enterprise": 0.8}
EXECUTIVE_AMOUNT = 0.3
"""Log-amount effect of an executive lead; `COMMITTEE_AMOUNT` x the account's share of
executives and champions among its leads adds the buying committee's seniority."""
COMMITTEE_AMOUNT = 0.6
AMOUNT_CENTRE = -0.55
"""Shifts the log amount so the median deal stays where it was before these effects."""

STAGE_OFFSET = np.array([0.4, 0.5, 0.0, 0.6])
"""Log-odds of advancing from each stage at intent 0."""
SKIP_PROBABILITY = 0.08
STAGE_EVENT_RATE = np.array([0.45, 0.65, 0.8, 0.9])
"""Events per day in each stage for a lead of intent 0 (scaled by exp(0.5 * intent))."""


@dataclass(frozen=True)
class SyntheticConfig:
    n_leads: int = 5000
    seed: int = 7
    start: str = "2024-01-01"
    end: str = "2026-01-01"
    """The export is taken at `end`: anything later has not happened yet."""
    account_share: float = 0.75
    leads_per_account: float = 4.0
    n_owners: int = 25
    intent_noise: float = 0.9
    """Spread of the part of intent that attributes do not explain (only events reveal it)."""
    stage_mean_days: tuple[float, float, float, float] = (12.0, 16.0, 21.0, 30.0)
    """Mean time in lead, mql, sql and opportunity before the next step (advance or drop)."""
    intent_offset: float = -0.6
    """Intent of a lead with no favourable attribute: lower means fewer buyers."""
    noise_columns: int = 0
    """Lead columns of pure noise, each with `noise_levels` levels (a few common, most rare):
    a model that memorises levels learns nothing true from them."""
    noise_levels: int = 500
    shift_at: str | None = None
    """From this day on the world changes (what monitoring must notice): a campaign makes
    `shift_source` the source of `shift_source_share` of new leads, and a site redesign sends
    every lead in the funnel to `shift_event` `shift_event_rate` more times a day. Drawn from
    a random stream of its own: leads created before the shift keep the unshifted export's
    attributes, and what happens before the shift keeps its distribution (not its draws)."""
    shift_source: str = "referral"
    shift_source_share: float = 0.45
    shift_event: str = "pricing_page_view"
    shift_event_rate: float = 0.5
    segment_pace: float = 1.0
    """Scale of the segment effects on time to convert (`INDUSTRY_PACE`, `SOURCE_PACE`,
    `SIZE_PACE`): each lead's stage times are its config means x exp(scale x its segment's
    log pace). 0 gives every lead the same clock."""
    amount_sigma: float = 0.5
    """Spread (log scale) of a deal's amount around its median, which follows firmographics,
    product and persona mix (`deal_log_median`)."""


def stress_config(n_leads: int = 30_000, seed: int = 7) -> SyntheticConfig:
    """The export that exposed a model fitted on a third of its history: four years, leads
    that take months to decide (so they stay open across many snapshots and age far beyond
    what early snapshots show), about 2% converting within 90 days, and noise columns with
    hundreds of levels."""
    return SyntheticConfig(n_leads=n_leads, seed=seed, start="2022-01-01", end="2026-01-01",
                           stage_mean_days=(60.0, 75.0, 90.0, 100.0), intent_offset=-2.2,
                           intent_noise=1.1, noise_columns=4, noise_levels=800)


LONG_LIVED_T = "2025-10-01"
"""Where the long-lived profile is meant to be cut: a year of history before it, the 90 days
after it to judge the scores by."""


def long_lived_config(n_leads: int = 20_000, seed: int = 7,
                      start: str = "2024-10-01") -> SyntheticConfig:
    """The usual B2B shape: a year of history before `LONG_LIVED_T` (and 90 days after it),
    leads that stay open for 6-12 months before they are dropped, about 2% of the leads open at
    a snapshot buying within 90 days, accounts with several leads each, and noise columns. A
    fold that drops every held lead's other snapshots loses nearly all of its non-buyers here.
    An earlier `start` gives the same world a longer history (the forecast's backtest needs
    quarters with enough buyers before them; the leads are spread over the longer span)."""
    return SyntheticConfig(n_leads=n_leads, seed=seed, start=start, end="2026-01-01",
                           account_share=0.85, leads_per_account=6.0,
                           stage_mean_days=(300.0, 120.0, 90.0, 60.0), intent_offset=-0.7,
                           intent_noise=1.0, noise_columns=3, noise_levels=300)


PROFILES = {"default": SyntheticConfig, "stress": stress_config,
            "long-lived": long_lived_config}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _pick(rng: np.random.Generator, options: list[str], n: int,
          p: list[float] | None = None) -> np.ndarray:
    return rng.choice(len(options), size=n, p=p)


def _dict_array(codes: np.ndarray, labels: list[str] | np.ndarray,
                valid: np.ndarray | None = None) -> pa.DictionaryArray:
    mask = None if valid is None else ~valid
    return pa.DictionaryArray.from_arrays(
        pa.array(codes.astype("int32"), mask=mask), pa.array(list(labels), pa.string())
    )


def _timestamps(days: np.ndarray, epoch_us: int, valid: np.ndarray | None = None) -> pa.Array:
    """Days since the epoch to UTC timestamps, rounded to the second; `valid` masks nulls."""
    us = epoch_us + np.round(np.nan_to_num(days) * 86_400).astype("int64") * 1_000_000  # to s
    return pa.array(us, pa.timestamp("us", tz="UTC"), mask=None if valid is None else ~valid)


@dataclass
class _Clock:
    """The export's time frame in days since `start`: its end and the day the world shifts
    (the end when it never does), with the epoch in microseconds for the timestamps."""
    epoch_us: int
    horizon: float
    shift_day: float


def _clock(config: SyntheticConfig) -> _Clock:
    epoch = pd.Timestamp(config.start, tz="UTC")
    horizon = (pd.Timestamp(config.end, tz="UTC") - epoch).total_seconds() / 86_400
    shift_day = horizon if config.shift_at is None else (
        pd.Timestamp(config.shift_at, tz="UTC") - epoch).total_seconds() / 86_400
    return _Clock(int(epoch.value // 1000), horizon, shift_day)


@dataclass
class _Accounts:
    """The accounts' firmographics and the part of intent they give their leads."""
    n: int
    industry: np.ndarray
    employees: np.ndarray
    revenue: np.ndarray
    country: np.ndarray
    fit: np.ndarray


def _accounts(rng: np.random.Generator, config: SyntheticConfig) -> _Accounts:
    n_acc = max(1, round(config.n_leads * config.account_share / config.leads_per_account))
    industry = _pick(rng, list(INDUSTRIES), n_acc)
    employees = np.maximum(1, np.round(np.exp(rng.normal(4.5, 1.5, n_acc)))).astype("int64")
    revenue = np.round(employees * np.exp(rng.normal(11.5, 0.6, n_acc)), -3)
    acc_country = _pick(rng, COUNTRIES, n_acc, COUNTRY_SHARE)
    acc_fit = (np.array(list(INDUSTRIES.values()))[industry]
               + 0.25 * (np.log10(employees) - 2.0) + rng.normal(0, 0.5, n_acc))
    return _Accounts(n_acc, industry, employees, revenue, acc_country, acc_fit)


@dataclass
class _Leads:
    """The leads' attributes (as codes) and their hidden intent."""
    created: np.ndarray
    has_acc: np.ndarray
    account: np.ndarray
    persona: np.ndarray
    source: np.ndarray
    campaign_k: np.ndarray
    job: np.ndarray
    free_email: np.ndarray
    owner: np.ndarray
    product: np.ndarray
    country: np.ndarray
    intent: np.ndarray


def _shift_sources(shift_rng: np.random.Generator, config: SyntheticConfig,
                   source: np.ndarray, later: np.ndarray) -> None:
    """The campaign after the shift: `shift_source` becomes the source of its share of the
    leads created from then on, the other sources keeping their relative shares."""
    if later.any():
        k = list(SOURCES).index(config.shift_source)
        share = np.array(SOURCE_SHARE) * (1 - config.shift_source_share) / (1 - SOURCE_SHARE[k])
        share[k] = config.shift_source_share
        source[later] = shift_rng.choice(len(SOURCES), int(later.sum()), p=share)


def _leads(rng: np.random.Generator, shift_rng: np.random.Generator, config: SyntheticConfig,
           clock: _Clock, acc: _Accounts) -> _Leads:
    """Every lead's attributes, drawn in a fixed order (the seed's draws), and its intent:
    what its attributes explain plus noise only its events reveal."""
    n = config.n_leads
    created = np.sort(rng.uniform(0, clock.horizon, n))
    has_acc = rng.random(n) < config.account_share
    account = np.where(has_acc, rng.integers(0, acc.n, n), -1)
    persona = np.where(
        has_acc, rng.choice(3, n, p=[0.55, 0.28, 0.17]), rng.choice([0, 3], n, p=[0.5, 0.5]))
    source = _pick(rng, list(SOURCES), n, SOURCE_SHARE)
    _shift_sources(shift_rng, config, source, created >= clock.shift_day)
    campaign_k = rng.integers(0, 4, n)
    campaign_eff = rng.normal(0, 0.3, (len(SOURCES), 4))
    job = _pick(rng, list(JOB_FUNCTIONS), n, [0.18, 0.15, 0.2, 0.1, 0.12, 0.1, 0.15])
    free_email = rng.random(n) < np.where(has_acc, 0.1, 0.6)
    owner = rng.integers(0, config.n_owners, n)
    product = _pick(rng, PRODUCTS, n, [0.6, 0.3, 0.1])
    country = np.where(has_acc, acc.country[np.maximum(account, 0)],
                       _pick(rng, COUNTRIES, n, COUNTRY_SHARE))
    intent = (
        config.intent_offset
        + np.array(list(SOURCES.values()))[source]
        + np.array(list(PERSONA_EFFECT.values()))[persona]
        + np.where(has_acc, acc.fit[np.maximum(account, 0)], -0.3)
        + np.array(list(JOB_FUNCTIONS.values()))[job]
        + campaign_eff[source, campaign_k]
        - 0.5 * free_email
        + rng.normal(0, config.intent_noise, n)
    )
    return _Leads(created, has_acc, account, persona, source, campaign_k, job, free_email,
                  owner, product, country, intent)


@dataclass
class _Journeys:
    """Where each lead's chain ended (stage, time of its last move), the stage rows it wrote
    (lead, stage code, time; sorted by lead then time) and the segments it spent in the
    funnel (lead, stage, start, duration) that emit its events."""
    converted: np.ndarray
    converted_at: np.ndarray
    sh_lead: np.ndarray
    sh_stage: np.ndarray
    sh_time: np.ndarray
    g_lead: np.ndarray
    g_stage: np.ndarray
    g_start: np.ndarray
    dur: np.ndarray


def _journeys(rng: np.random.Generator, config: SyntheticConfig, horizon: float,
              created: np.ndarray, intent: np.ndarray, pace: np.ndarray) -> _Journeys:
    """The journey: at most four steps of the chain, every lead still alive at once."""
    n = created.size
    stage = np.zeros(n, dtype="int64")
    t = created.copy()
    alive = np.ones(n, dtype=bool)
    seg_lead, seg_stage, seg_start, seg_stop = [], [], [], []
    row_lead, row_stage, row_time = [], [], []
    ended_at = np.full(n, np.nan)
    for _ in range(4):
        idx = np.flatnonzero(alive)
        if idx.size == 0:
            break
        s = stage[idx]
        exit_t = t[idx] + rng.exponential(np.asarray(config.stage_mean_days)[s]) * pace[idx]
        seg_lead.append(idx)
        seg_stage.append(s)
        seg_start.append(t[idx])
        seg_stop.append(np.minimum(exit_t, horizon))
        censored = exit_t >= horizon
        advance = rng.random(idx.size) < _sigmoid(intent[idx] + STAGE_OFFSET[s])
        skip = (rng.random(idx.size) < SKIP_PROBABILITY) & (s <= 2)
        nxt = np.where(advance, s + 1 + skip, -1)
        done = ~censored
        # -1 = dropped: 'lost' from opportunity, 'disqualified' before
        row_lead.append(idx[done])
        row_stage.append(np.where(nxt[done] >= 0, nxt[done], np.where(s[done] == 3, 6, 5)))
        row_time.append(exit_t[done])
        moved = done & (nxt >= 0)
        stage[idx[moved]] = nxt[moved]
        t[idx[moved]] = exit_t[moved]
        stopped = idx[done & ((nxt < 0) | (nxt == 4))]
        ended_at[stopped] = exit_t[done & ((nxt < 0) | (nxt == 4))]
        alive[idx[censored | (nxt < 0) | (nxt == 4)]] = False
    converted = stage == 4
    sh_lead = np.concatenate(row_lead)
    sh_stage = np.concatenate(row_stage)
    sh_time = np.concatenate(row_time)
    order = np.lexsort((sh_time, sh_lead))
    g_start = np.concatenate(seg_start)
    return _Journeys(converted, np.where(converted, t, np.nan),
                     sh_lead[order], sh_stage[order], sh_time[order],
                     np.concatenate(seg_lead), np.concatenate(seg_stage), g_start,
                     np.concatenate(seg_stop) - g_start)


def _funnel_events(rng: np.random.Generator, shift_rng: np.random.Generator,
                   config: SyntheticConfig, shift_day: float, j: _Journeys,
                   intent: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Engagement events while the lead is in the funnel (lead, day, type), with the site
    redesign's extra events after the shift from their own stream."""
    rate = STAGE_EVENT_RATE[j.g_stage] * np.exp(0.5 * intent[j.g_lead])
    counts = rng.poisson(rate * j.dur)
    ev_seg = np.repeat(np.arange(j.g_lead.size), counts)
    ev_lead = j.g_lead[ev_seg]
    ev_time = j.g_start[ev_seg] + rng.random(ev_seg.size) * j.dur[ev_seg]
    ev_type = _event_types(rng, intent[ev_lead])
    if config.shift_at is not None:
        start = np.maximum(j.g_start, shift_day)
        overlap = np.maximum(0.0, j.g_start + j.dur - start)
        extra = shift_rng.poisson(config.shift_event_rate * overlap)
        x_seg = np.repeat(np.arange(j.g_lead.size), extra)
        ev_lead = np.concatenate([ev_lead, j.g_lead[x_seg]])
        ev_time = np.concatenate([ev_time, start[x_seg]
                                  + shift_rng.random(x_seg.size) * overlap[x_seg]])
        ev_type = np.concatenate([ev_type, np.full(x_seg.size,
                                                   list(EVENT_TYPES).index(config.shift_event))])
    return ev_lead, ev_time, ev_type


def _onboarding_events(rng: np.random.Generator, horizon: float,
                       j: _Journeys) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """After purchase: onboarding traffic (the leakage trap), up to the export's end."""
    cust = np.flatnonzero(j.converted)
    n_onb = rng.poisson(8, cust.size)
    onb_lead = np.repeat(cust, n_onb)
    onb_time = j.converted_at[onb_lead] + rng.uniform(0, 45, onb_lead.size)
    keep = onb_time < horizon
    onb_lead, onb_time = onb_lead[keep], onb_time[keep]
    onb_type = len(EVENT_TYPES) + rng.integers(0, len(ONBOARDING_TYPES), onb_lead.size)
    return onb_lead, onb_time, onb_type


def _events_table(rng: np.random.Generator, parts: list[tuple[np.ndarray, ...]],
                  lead_ids: np.ndarray, epoch_us: int) -> pa.Table:
    """Every event, sorted by lead then time, with its channel and (for page views) a
    value."""
    all_lead = np.concatenate([p[0] for p in parts])
    all_time = np.concatenate([p[1] for p in parts])
    all_type = np.concatenate([p[2] for p in parts])
    order = np.lexsort((all_time, all_lead))
    all_lead, all_time, all_type = all_lead[order], all_time[order], all_type[order]
    type_names = [*EVENT_TYPES, *ONBOARDING_TYPES]
    channel_of = np.array([EVENT_TYPES[k][2] for k in EVENT_TYPES] + ["product"] * 3)
    channels = sorted(set(channel_of))
    channel_code = np.array([channels.index(c) for c in channel_of])[all_type]
    is_view = np.isin(all_type, [type_names.index("page_view"),
                                 type_names.index("pricing_page_view")])
    value = np.where(is_view, np.round(np.exp(rng.normal(3.5, 1.0, all_type.size))), np.nan)
    return pa.table({
        "lead_id": _dict_array(all_lead, lead_ids),
        "occurred_at": _timestamps(all_time, epoch_us),
        "event_type": _dict_array(all_type, type_names),
        "channel": _dict_array(channel_code, channels),
        "value": pa.array(value, from_pandas=True),
    })


def _noise_columns(rng: np.random.Generator, config: SyntheticConfig) -> dict[str, pa.Array]:
    """Lead columns of pure noise: a few common levels, a long tail of rare ones."""
    noise = {}
    for k in range(config.noise_columns):
        weights = 1.0 / np.arange(1, config.noise_levels + 1) ** 0.7
        level = rng.choice(config.noise_levels, config.n_leads, p=weights / weights.sum())
        noise[f"noise_{k + 1}"] = _dict_array(level, [f"n{k + 1}_{i}" for i in range(
            config.noise_levels)])
    return noise


def _leads_table(leads: _Leads, lead_ids: np.ndarray, acc_ids: np.ndarray, owners: list[str],
                 epoch_us: int, noise: dict[str, pa.Array]) -> pa.Table:
    src_names = list(SOURCES)
    campaigns = [f"{s}_{k}" for s in src_names for k in range(4)]
    return pa.table({
        "lead_id": pa.array(lead_ids),
        "created_at": _timestamps(leads.created, epoch_us),
        "source": _dict_array(leads.source, src_names),
        "campaign": _dict_array(leads.source * 4 + leads.campaign_k, campaigns),
        "account_id": pa.array(acc_ids[np.maximum(leads.account, 0)], mask=~leads.has_acc),
        "persona": _dict_array(leads.persona, list(PERSONA_EFFECT)),
        "owner_id": _dict_array(leads.owner, owners),
        "product": _dict_array(leads.product, PRODUCTS),
        "country": _dict_array(leads.country, COUNTRIES),
        "job_function": _dict_array(leads.job, list(JOB_FUNCTIONS)),
        "email_domain": _dict_array(leads.free_email.astype(int), ["business", "free"]),
        **noise,
    })


def _accounts_table(acc: _Accounts, acc_ids: np.ndarray) -> pa.Table:
    return pa.table({
        "account_id": pa.array(acc_ids),
        "industry": _dict_array(acc.industry, list(INDUSTRIES)),
        "employees": pa.array(acc.employees),
        "annual_revenue": pa.array(acc.revenue),
        "country": _dict_array(acc.country, COUNTRIES),
    })


def _truth_table(config: SyntheticConfig, lead_ids: np.ndarray, intent: np.ndarray,
                 j: _Journeys, pace: np.ndarray, amount_mu: np.ndarray,
                 epoch_us: int) -> pa.Table:
    """The hidden truth per lead, with what `truth_probability` needs besides intent in its
    metadata."""
    n = intent.size
    at_creation = np.zeros(n, dtype="int64")
    by_horizon = {f"p_by_{h}": pa.array(truth_probability(intent, at_creation, h,
                                                           config.stage_mean_days, pace))
                  for h in TRUTH_HORIZONS}
    truth = pa.table({
        "lead_id": pa.array(lead_ids),
        "intent": pa.array(intent),
        "p_convert": pa.array(truth_probability(intent, np.zeros(n, dtype="int64"), None,
                                                config.stage_mean_days)),
        "converted": pa.array(j.converted),
        "converted_at": _timestamps(np.nan_to_num(j.converted_at), epoch_us,
                                    valid=j.converted),
        "pace": pa.array(pace),
        **by_horizon,
        "amount_log_median": pa.array(amount_mu),
        "expected_amount": pa.array(np.exp(amount_mu + config.amount_sigma ** 2 / 2)),
    })
    return truth.replace_schema_metadata({
        "stage_mean_days": json.dumps(list(config.stage_mean_days)),
        "amount_sigma": json.dumps(config.amount_sigma)})


def generate_export(config: SyntheticConfig) -> tuple[dict[str, pa.Table], pa.Table]:
    """All tables of the export (as Arrow tables) and the ground truth per lead.

    One random stream draws everything in a fixed order (accounts, leads, journeys, events,
    onboarding, event values, noise columns, opportunity amounts): the same seed gives the
    same bytes. The shift draws from a stream of its own."""
    rng = np.random.default_rng(config.seed)
    n = config.n_leads
    clock = _clock(config)
    acc = _accounts(rng, config)
    shift_rng = np.random.default_rng([config.seed, 1])
    leads = _leads(rng, shift_rng, config, clock, acc)
    pace = segment_pace(leads.source, acc.industry, acc.employees, leads.account,
                        config.segment_pace)
    amount_mu = deal_log_median(acc.industry, acc.employees, leads.account, leads.persona,
                                leads.product)
    j = _journeys(rng, config, clock.horizon, leads.created, leads.intent, pace)
    funnel = _funnel_events(rng, shift_rng, config, clock.shift_day, j, leads.intent)
    onboarding = _onboarding_events(rng, clock.horizon, j)
    lead_ids = np.char.add("L", np.char.zfill(np.arange(1, n + 1).astype(str), 7))
    acc_ids = np.char.add("A", np.char.zfill(np.arange(1, acc.n + 1).astype(str), 6))
    owners = [f"rep_{i + 1:02d}" for i in range(config.n_owners)]
    events = _events_table(rng, [funnel, onboarding], lead_ids, clock.epoch_us)
    noise = _noise_columns(rng, config)
    stage_history = pa.table({
        "lead_id": _dict_array(j.sh_lead, lead_ids),
        "stage": _dict_array(j.sh_stage, [*DEFAULT_STAGES, *TERMINAL_STAGES]),
        "entered_at": _timestamps(j.sh_time, clock.epoch_us),
    })
    opportunities = _opportunities(rng, j.sh_lead, j.sh_stage, j.sh_time, amount_mu,
                                   config.amount_sigma, leads.account, leads.owner,
                                   leads.product, lead_ids, acc_ids, owners, clock.epoch_us)
    tables = {"leads": _leads_table(leads, lead_ids, acc_ids, owners, clock.epoch_us, noise),
              "accounts": _accounts_table(acc, acc_ids), "events": events,
              "stage_history": stage_history, "opportunities": opportunities}
    truth = _truth_table(config, lead_ids, leads.intent, j, pace, amount_mu, clock.epoch_us)
    return tables, truth


def read_truth(directory: Path) -> tuple[pd.DataFrame, tuple[float, ...]]:
    """A generated export's hidden truth, and the stage means its chain ran with."""
    table = pq.read_table(Path(directory) / TRUTH_FILE)
    meta = table.schema.metadata or {}
    means = json.loads(meta.get(b"stage_mean_days", b"null")) or SyntheticConfig.stage_mean_days
    return table.to_pandas().set_index("lead_id"), tuple(means)


@dataclass(frozen=True)
class TruthComparison:
    """Scores of the leads open at T beside the exact probabilities the generator used."""

    leads: int
    base_rate: float
    truth_auc: float
    model_auc: float
    truth_log_loss: float
    model_log_loss: float

    def line(self) -> str:
        return (f"{self.leads:,} leads open at T, base rate {self.base_rate:.4f}: ROC AUC truth "
                f"{self.truth_auc:.4f}, model {self.model_auc:.4f}; log loss truth "
                f"{self.truth_log_loss:.4f}, model {self.model_log_loss:.4f}")


def truth_rows(directory: Path, full: CrmExport, scored: pd.DataFrame, as_of: pd.Timestamp,
               horizon_days: int) -> pd.DataFrame:
    """`scored` (lead_id, probability as of T) with what the full export says happened next
    (`converted`) and the probability the generator used (`truth`): per lead, so a slice of
    the scores (the top decile) can be judged by its expected rate as well as its realised one."""
    from propensity.funnel.journeys import build_journeys
    from propensity.snapshots import lead_entities

    outcome = lead_entities(full, [as_of], horizon_days, journeys=build_journeys(full))[[
        "lead_id", "stage_index", "converted"]]
    rows = scored.merge(outcome, on="lead_id")
    intent, means = read_truth(directory)
    known = intent.loc[rows["lead_id"]]
    rows["truth"] = truth_probability(known["intent"].to_numpy(), rows["stage_index"].to_numpy(),
                                      horizon_days, means,
                                      known["pace"].to_numpy() if "pace" in known else None)
    return rows


def account_truth(directory: Path, full: CrmExport, as_of: pd.Timestamp,
                  horizon_days: int) -> pd.DataFrame:
    """Per account open at T (account_id, truth): the generator's probability that it buys in
    (T, T + horizon]. Its leads' chains are independent given their intents, so it is one
    minus the product of each lead's chance not to convert in the window: a lead open at T
    from its stage at T, a lead created inside the window from creation for the days left;
    a lead already dropped cannot. What a model that sees only the export cannot beat on
    accounts (the leads still to come are known to it only as a base rate)."""
    from propensity.funnel.journeys import build_journeys
    from propensity.snapshots import account_entities, lead_entities

    intent, means = read_truth(directory)
    journeys = build_journeys(full)
    leads = full.leads.assign(account_id=full.leads["account_id"].astype("str").where(
        full.leads["account_id"].notna())).set_index("lead_id")
    open_ = lead_entities(full, [as_of], horizon_days, labelled=False, journeys=journeys)
    window_end = as_of + pd.Timedelta(days=horizon_days)
    created = leads["created_at"]
    new = leads.index[(created > as_of) & (created <= window_end)]
    days = ((window_end - created.loc[new]).dt.total_seconds() / 86_400).to_numpy()
    ids = np.concatenate([open_["lead_id"].to_numpy(dtype=object), new.to_numpy(dtype=object)])
    known = intent.loc[ids]
    p = truth_probability(known["intent"].to_numpy(),
                          np.concatenate([open_["stage_index"].to_numpy(),
                                          np.zeros(new.size, dtype="int64")]),
                          np.concatenate([np.full(len(open_), float(horizon_days)), days]),
                          means, known["pace"].to_numpy())
    stay = pd.Series(np.log1p(-np.minimum(p, 1 - 1e-12)), index=leads.loc[ids, "account_id"])
    no_buy = np.exp(stay[stay.index.notna()].groupby(level=0).sum())
    accounts = account_entities(full, [as_of], horizon_days, labelled=False,
                                journeys=journeys)["account_id"]
    return pd.DataFrame({"account_id": accounts.to_numpy(),
                         "truth": 1 - no_buy.reindex(accounts).fillna(1.0).to_numpy()})


def compare_with_truth(directory: Path, full: CrmExport, scored: pd.DataFrame,
                       as_of: pd.Timestamp, horizon_days: int) -> TruthComparison:
    """Judge `scored` (lead_id, probability as of T, from the export cut at T) with what the
    full export says happened next and with the truth behind it: the best any model can do."""
    from sklearn.metrics import log_loss, roc_auc_score

    rows = truth_rows(directory, full, scored, as_of, horizon_days)
    y = rows["converted"].to_numpy()
    p, p_true = rows["probability"].to_numpy(), rows["truth"].to_numpy()
    return TruthComparison(leads=len(rows), base_rate=float(y.mean()),
                           truth_auc=float(roc_auc_score(y, p_true)),
                           model_auc=float(roc_auc_score(y, p)),
                           truth_log_loss=float(log_loss(y, p_true)),
                           model_log_loss=float(log_loss(y, p)))


def segment_pace(source: np.ndarray, industry: np.ndarray, employees: np.ndarray,
                 account: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Each lead's clock factor from its segment (source, industry, size): no random draw, so
    every other draw of the export is what it was without it."""
    has = account >= 0
    acc = np.maximum(account, 0)
    log_pace = np.array(list(SOURCE_PACE.values()))[source] + np.where(
        has, np.array(list(INDUSTRY_PACE.values()))[industry[acc]]
        + SIZE_PACE * (np.log10(employees[acc]) - 2.0), 0.0)
    return np.exp(scale * log_pace)


def deal_log_median(industry: np.ndarray, employees: np.ndarray, account: np.ndarray,
                    persona: np.ndarray, product: np.ndarray) -> np.ndarray:
    """Log of each lead's median deal amount: company size and industry, the product, an
    executive lead, and the account's share of executives and champions among its leads."""
    has = account >= 0
    acc = np.maximum(account, 0)
    size = np.where(has, employees[acc], 20)
    senior = np.isin(persona, [1, 2]).astype("float64")  # champion, executive
    n_acc = employees.size
    leads_of = np.bincount(acc[has], minlength=n_acc)
    senior_of = np.bincount(acc[has], weights=senior[has], minlength=n_acc)
    share = np.where(has, senior_of[acc] / np.maximum(leads_of[acc], 1), 0.0)
    return (np.log(2_000 + 30 * size) + AMOUNT_CENTRE
            + np.where(has, np.array(list(INDUSTRY_AMOUNT.values()))[industry[acc]], 0.0)
            + np.array(list(PRODUCT_AMOUNT.values()))[product]
            + EXECUTIVE_AMOUNT * (persona == 2) + COMMITTEE_AMOUNT * share)


def _event_types(rng: np.random.Generator, intent: np.ndarray) -> np.ndarray:
    """Event type per event; the mix shifts toward buying signals as intent grows."""
    base = np.array([v[0] for v in EVENT_TYPES.values()])
    sens = np.array([v[1] for v in EVENT_TYPES.values()])
    edges = np.linspace(-4, 4, 33)
    bins = np.clip(np.digitize(intent, edges), 0, len(edges))
    out = np.empty(intent.size, dtype="int64")
    order = np.argsort(bins, kind="stable")
    bounds = np.searchsorted(bins[order], np.arange(len(edges) + 2))
    for b in range(len(edges) + 1):
        idx = order[bounds[b]:bounds[b + 1]]
        if idx.size == 0:
            continue
        centre = edges[min(max(b - 1, 0), len(edges) - 1)]
        w = base * np.exp(sens * centre)
        out[idx] = rng.choice(len(base), idx.size, p=w / w.sum())
    return out


def _opportunities(
    rng: np.random.Generator, sh_lead: np.ndarray, sh_stage: np.ndarray, sh_time: np.ndarray,
    amount_mu: np.ndarray, amount_sigma: float, account: np.ndarray, owner: np.ndarray,
    product: np.ndarray, lead_ids: np.ndarray, acc_ids: np.ndarray, owners: list[str],
    epoch_us: int,
) -> pa.Table:
    """One opportunity per lead that entered the opportunity stage, closed by what came next;
    its amount is log-normal around the lead's `deal_log_median`, drawn when it opens (so an
    open opportunity's amount is what it will be won for)."""
    opp_rows = np.flatnonzero(sh_stage == 3)
    lead = sh_lead[opp_rows]
    created = sh_time[opp_rows]
    nxt = np.full(lead.size, -1)
    closed = np.full(lead.size, np.nan)
    has_next = (opp_rows + 1 < sh_lead.size)
    follow = np.where(has_next, opp_rows + 1, opp_rows)
    same = has_next & (sh_lead[follow] == lead)
    nxt[same] = sh_stage[follow][same]
    closed[same] = sh_time[follow][same]
    status = np.where(nxt == 4, 1, np.where(nxt == 6, 2, 0))  # open, won, lost
    acc = account[lead]
    amount = np.round(np.exp(rng.normal(amount_mu[lead], amount_sigma)), 2)
    ids = np.char.add("O", np.char.zfill(np.arange(1, lead.size + 1).astype(str), 7))
    is_closed = status > 0
    return pa.table({
        "opportunity_id": pa.array(ids),
        "lead_id": pa.array(lead_ids[lead]),
        "account_id": pa.array(acc_ids[np.maximum(acc, 0)], mask=acc < 0),
        "created_at": _timestamps(created, epoch_us),
        "closed_at": _timestamps(closed, epoch_us, valid=is_closed),
        "amount": pa.array(amount),
        "status": _dict_array(status, ["open", "won", "lost"]),
        "owner_id": _dict_array(owner[lead], owners),
        "product": _dict_array(product[lead], PRODUCTS),
    })


def _generator_matrix(intent: np.ndarray, stage_mean_days: tuple[float, ...]) -> np.ndarray:
    """Rate matrices (n, 6, 6) over lead, mql, sql, opportunity, customer, dropped."""
    n = intent.size
    q = np.zeros((n, 6, 6))
    for s in range(4):
        lam = 1.0 / stage_mean_days[s]
        p_adv = _sigmoid(intent + STAGE_OFFSET[s])
        skip = SKIP_PROBABILITY if s <= 2 else 0.0
        q[:, s, s + 1] += lam * p_adv * (1 - skip)
        if skip:
            q[:, s, s + 2] += lam * p_adv * skip
        q[:, s, 5] = lam * (1 - p_adv)
        q[:, s, s] = -lam
    return q


def _exp_to_customer(a: np.ndarray) -> np.ndarray:
    """Column 'customer' of exp(a) for upper-triangular rate matrices a (n, 6, 6) whose
    diagonal is distinct over lead..customer: Parlett's recurrence, vectorised over leads
    (scipy's expm takes seconds per thousand leads)."""
    n = a.shape[0]
    f = np.zeros((n, 5, 5))
    d = np.diagonal(a, axis1=1, axis2=2)[:, :5]
    for i in range(5):
        f[:, i, i] = np.exp(d[:, i])
    for gap in range(1, 5):
        for i in range(5 - gap):
            j = i + gap
            total = a[:, i, j] * (f[:, j, j] - f[:, i, i])
            for k in range(i + 1, j):
                total += a[:, i, k] * f[:, k, j] - f[:, i, k] * a[:, k, j]
            f[:, i, j] = total / (d[:, j] - d[:, i])
    return f[:, :, 4]


def truth_probability(intent: np.ndarray, stage: np.ndarray,
                      horizon_days: float | np.ndarray | None,
                      stage_mean_days: tuple[float, ...] = SyntheticConfig.stage_mean_days,
                      pace: np.ndarray | None = None) -> np.ndarray:
    """Exact P(convert within horizon | intent, current stage, pace); None = ever; an array
    gives each lead its own horizon. The chain is memoryless, so the time a lead has already
    spent in its stage does not matter; a lead's pace stretches its clock, so its horizon
    counts as horizon / pace on the config's."""
    intent = np.asarray(intent, dtype="float64")
    stage = np.asarray(stage, dtype="int64")
    out = np.zeros(intent.size)
    if horizon_days is None:
        # absorption probability: product of advance odds along the chain (with skips)
        reach = np.zeros((intent.size, 5))
        for start in range(4):
            reach[:, :] = 0
            reach[:, start] = 1
            for s in range(start, 4):
                p_adv = _sigmoid(intent + STAGE_OFFSET[s])
                skip = SKIP_PROBABILITY if s <= 2 else 0.0
                reach[:, s + 1] += reach[:, s] * p_adv * (1 - skip)
                if skip:
                    reach[:, s + 2] += reach[:, s] * p_adv * skip
            sel = stage == start
            out[sel] = reach[sel, 4]
        out[stage >= 4] = 1.0
        return out
    q = _generator_matrix(intent, stage_mean_days)
    clock = np.broadcast_to(np.asarray(horizon_days, dtype="float64"), intent.shape)
    if pace is not None:
        clock = clock / np.asarray(pace, dtype="float64")
    a = q * clock[:, None, None]
    rows = np.clip(stage, 0, 5)
    if len(set(stage_mean_days)) == len(stage_mean_days):
        out = _exp_to_customer(a)[np.arange(intent.size), np.minimum(rows, 4)]
    else:  # equal stage rates: the closed form divides by their difference
        out = expm(a)[np.arange(intent.size), rows, 4]
    out[stage >= 4] = 1.0
    return out


def write_export(tables: dict[str, pa.Table], truth: pa.Table, out_dir: Path,
                 fmt: str = "parquet") -> None:
    """Write the tables, a manifest, and the truth in a file no pipeline reads."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        for stale in (out_dir / f"{name}.csv", out_dir / f"{name}.parquet"):
            stale.unlink(missing_ok=True)
        if fmt == "parquet":
            pq.write_table(table, out_dir / f"{name}.parquet")
        else:
            plain = pa.table({c: (table[c].cast(pa.string())
                                  if pa.types.is_dictionary(table[c].type) else table[c])
                              for c in table.column_names})
            pacsv.write_csv(plain, out_dir / f"{name}.csv")
    pq.write_table(truth, out_dir / TRUTH_FILE)
    Manifest(
        source="propensity generate (synthetic)",
        notes=[f"{TRUTH_FILE} holds each lead's hidden intent and true conversion probability;"
               " no pipeline reads it"],
    ).write(out_dir)


def write_synthetic(out_dir: Path, n_leads: int = 5000, seed: int = 7,
                    fmt: str = "parquet", profile: str = "default") -> Path:
    """Generate and write a synthetic export in one call (what notebooks and demos need)."""
    tables, truth = generate_export(PROFILES[profile](n_leads=n_leads, seed=seed))
    write_export(tables, truth, Path(out_dir), fmt=fmt)
    return Path(out_dir)
