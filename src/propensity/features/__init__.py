"""Point-in-time features: one definition (`definitions.py`), two executors (`batch.py` over an
export, `online.py` for one lead), a fitted and versioned vocabulary (`spec.py`)."""

from propensity.features.batch import build_lead_features
from propensity.features.definitions import FeaturePlan
from propensity.features.spec import FeatureConfig, FeatureSpec, fit_feature_spec

__all__ = ["FeatureConfig", "FeaturePlan", "FeatureSpec", "build_lead_features",
           "fit_feature_spec"]
