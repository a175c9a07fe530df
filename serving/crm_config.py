"""The scorer's settings for CRMs that call it (`serving/routes/crm.py`), mixed into
`ServingSettings`: each is read from its PROPENSITY_ variable like the others."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr


class CrmInboundSettings(BaseModel):
    hubspot_client_secret: SecretStr | None = None
    """The HubSpot app's client secret (PROPENSITY_HUBSPOT_CLIENT_SECRET): requests to
    /v1/crm/hubspot/action are signed with it. Unset, that endpoint refuses every request."""
    crm_public_url: str | None = None
    """The scorer's URL as the CRM calls it (PROPENSITY_CRM_PUBLIC_URL, e.g.
    https://scorer.example.com): HubSpot signs that URL, which behind a proxy or a load
    balancer is not the one the server sees. Unset, the request's own URL is used."""
    crm_mapping_file: Path | None = None
    """The TOML stage and field mapping `propensity import --mapping` reads
    (PROPENSITY_CRM_MAPPING_FILE): leads from the CRM are mapped as the import mapped them."""
    crm_max_in_flight: int = 64
    """HubSpot actions a worker scores at once; past it a 429 with Retry-After asks HubSpot
    to come back (it retries a 429, never another 4xx)."""
    hubspot_access_token: SecretStr | None = None
    """The token the scorer completes blocked actions with (PROPENSITY_HUBSPOT_ACCESS_TOKEN:
    the app's OAuth access token for the portal, or a private app's). Unset, no action is
    ever answered BLOCK (a saturated scorer answers 429 to all)."""
    hubspot_base_url: str = "https://api.hubapi.com"
    """Where HubSpot's API is (PROPENSITY_HUBSPOT_BASE_URL): EU portals, or a stand-in."""
    crm_block_hours: float = 24.0
    """How long HubSpot keeps a blocked action waiting for its completion
    (`hs_expiration_duration`); a completion not sent by then is not sent at all."""
    crm_complete_seconds: float = 1.0
    """How often each worker looks for blocked actions to score and complete."""
    salesforce_org_ids: list[str] = Field(default_factory=list)
    """Salesforce organisations whose outbound messages are read
    (PROPENSITY_SALESFORCE_ORG_IDS, a JSON list of 15- or 18-character ids): any other is
    refused (403). Empty, every outbound message is refused."""
    salesforce_max_bytes: int = 1024 * 1024
    """An outbound message body larger than this is refused (400) before it is parsed."""
    salesforce_lead_field: str = "Lead__c"
    """The Opportunity field that names its lead (PROPENSITY_SALESFORCE_LEAD_FIELD): a won or
    lost opportunity becomes an outcome of that lead."""
