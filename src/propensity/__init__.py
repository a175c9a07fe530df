"""propensity: lead scoring and propensity-to-buy from a company's own CRM history.

The package is the product; the CLI, the scorer and the notebooks are thin shells over it.
Data flows CRM export -> validated tables (`contract`, `export`, `validation`) -> funnel
metrics (`funnel`) and features as of t -> model -> registry -> scorer -> score log.
"""

__version__ = "0.1.0"
