"""Point-in-time features: a fitted, versioned spec and the builders that obey it."""

from propensity.features.lead import build_lead_features
from propensity.features.spec import FeatureConfig, FeatureSpec, fit_feature_spec

__all__ = ["FeatureConfig", "FeatureSpec", "build_lead_features", "fit_feature_spec"]
