"""The scorer: a thin FastAPI layer over `propensity` (scores, reasons, funnel, score log).

Folders name the architecture: `routes/` for HTTP, `config.py` for settings, `deps.py` for
dependencies, `db.py` + `migrations/` for the SQL schema, `scorelog.py`, `auth.py`,
`model_store.py` for the champions in memory.
"""
