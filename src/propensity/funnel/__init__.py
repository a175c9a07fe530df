"""Rule-based funnel metrics: where the funnel leaks, computed once for CLI, scorer, notebooks."""

from propensity.funnel.journeys import Journeys, build_journeys
from propensity.funnel.metrics import funnel_report, group_keys
from propensity.funnel.report_types import Deals, Duration, FunnelReport, GroupFunnel, Rate, Step

__all__ = [
    "Deals", "Duration", "FunnelReport", "GroupFunnel", "Journeys", "Rate", "Step",
    "build_journeys", "funnel_report", "group_keys",
]
