"""propensity: lead scoring and propensity-to-buy from a company's own CRM history.

The package is the product; the CLI, the scorer and the notebooks are thin shells over it.
Data flows CRM export -> validated tables (`contract`, `export`, `validation`) -> funnel
metrics (`funnel`) and features as of t -> model -> registry -> scorer -> score log.
"""

__version__ = "0.1.0"

import warnings

# pandera imports pyspark.pandas when pyspark is installed (the Spark engine's dependency),
# and pyspark 4.3 then warns on every command that it does not "fully" support pandas 3; the
# Spark equality tests are what say the parts used here work
warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
