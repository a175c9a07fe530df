"""The feedback loop: outcomes from the CRM, drift against each model's training reference,
realised performance and calibration over time, and the verdict on what to do about it."""
