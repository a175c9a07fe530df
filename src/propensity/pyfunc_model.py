"""The MLflow pyfunc face of a `ModelBundle`, and the file MLflow logs as the model's code.

Models-from-code: MLflow stores this file with the model and runs it to get the model object
(`set_model` below), so nothing is pickled. Scoring goes through the library's one scoring
path, the same the scorer and batch scoring use. It sits beside the registry, above `models/`:
it imports scoring, which imports `models`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import pandas as pd

from propensity.models.bundle import ModelBundle


class PropensityPyfunc(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined]
    """The pyfunc face of a `ModelBundle`: features, booster and calibrator in one callable.

    Input for a single-table model: rows of the table's columns. Input for an export model:
    one row per lead with the `leads` columns, `as_of` (default now), and optionally JSON
    columns `events`, `stage_history`, `opportunities` and `account` (attributes and
    `contacts`), plus `stage` / `stage_entered_at`: `propensity.rows` describes the shape.
    Output: the id (`lead_id`, `account_id` or the table's id column) and `probability`;
    for a lead model that ships an outlook, its columns too (`p_by_30` .. `p_by_180`,
    `expected_days`, `expected_amount`, `amount_low`, `amount_high`, `expected_revenue`:
    `scoring.with_outlook`, as `propensity score` writes them).
    """

    def load_context(self, context: Any) -> None:
        self.model = ModelBundle.load(Path(context.artifacts["bundle"]))

    def predict(self, context: Any, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        from propensity.scoring import score_rows

        return score_rows(self.model, model_input)


mlflow.models.set_model(PropensityPyfunc())
