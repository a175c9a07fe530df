"""How much and when: time to convert, deal amounts, a forecast with intervals, its backtest.

- `rows`: point-in-time snapshot rows (features as of each past time, outcome times);
- `hazard`: the discrete-time hazard model and its P(converted by t) curve;
- `amount`: the deal amount (quantiles, mean) and the segment-median reference;
- `forecaster`: every model fitted as of T, and each open lead's outlook;
- `simulate`: the Monte Carlo behind the intervals;
- `inflow`: what leads not yet created should add;
- `rules`: the rule-based forecasts (stage rates, weighted pipeline);
- `report`: the forecast as of T; `backtest`: the forecast on past quarters against actuals.
"""

from propensity.forecast.forecaster import Forecaster, fit_forecaster, lead_outlook
from propensity.forecast.report import ForecastResult, forecast, forecast_from

__all__ = [
           "ForecastResult",
           "Forecaster",
           "fit_forecaster",
           "forecast",
           "forecast_from",
           "lead_outlook",
]
