"""Scores back into the CRM: `propensity push hubspot|salesforce` (docs/crm.md, "Scores back").

`plan` turns a model's scores of the open leads into records and values (it needs the
models), `records` holds what a record is, `writers` writes a batch through each CRM's
official client, `run` walks a plan with its cursor in the database.
"""
