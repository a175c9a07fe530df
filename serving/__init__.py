"""The scorer: a thin FastAPI layer over `propensity` (scores, reasons, funnel, score log).

Folders name the architecture: `routes/` for HTTP, `config.py` for settings, `deps.py` for
dependencies, `scorelog.py` (the writer thread), `model_store.py` for the champions in memory.
The SQL schema, API keys and threshold store are the library's (`propensity.database`,
`propensity.api_keys`, `propensity.threshold_store`): the CLI manages them without a server.
"""
