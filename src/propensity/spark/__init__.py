"""The Spark engine: the same jobs as the pandas engine, on a cluster.

Nothing here re-implements a feature, a label, a journey or a score. Every table is keyed by
the partition its rows belong to (a lead's account, or a hash bucket of lead ids for leads
without one), the rows of one partition are handed to the pandas code as a small `CrmExport`
(`partition.py`), and Spark only moves rows and writes results. Features of a lead depend on
its own rows and its account's, which is why this gives the pandas engine's numbers.

pyspark is imported here and in no module outside `propensity.spark`, so the pandas engine
never needs Java.
"""
