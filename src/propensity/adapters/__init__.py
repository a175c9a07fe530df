"""Adapters: known data sets mapped into the CRM data contract, their traps handled in the open.

Each adapter writes an export folder (tables plus `manifest.json`) and returns an
`ImportResult` that lists what it changed; anything it could not map is left for validation
to report rather than guessed.
"""

from propensity.adapters._result import ImportResult, snake_case

__all__ = ["ImportResult", "snake_case"]
