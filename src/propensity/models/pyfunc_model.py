"""The file MLflow logs as the model's code (models-from-code: nothing is pickled)."""

import mlflow

from propensity.models.registry import PropensityPyfunc

mlflow.models.set_model(PropensityPyfunc())
