"""CRMs calling the scorer: HubSpot's custom workflow action and Salesforce's Outbound Message.

`signatures` checks that a request comes from HubSpot, `soap` reads a Salesforce envelope
with a parser that refuses entities and DTDs, `records` turns a CRM record into a lead to
score or an outcome by the same field rules and stage mapping as `propensity import`, and
`store` keeps what was answered (a callback, a notification) so a retry changes nothing.
The HTTP shell is `serving/routes/crm.py`.
"""
