"""Writing a batch to a CRM through its official client, and what came of each record.

A 429 (or a 503) is waited out as its `Retry-After` says, a 5xx retried with a growing pause:
both by urllib3's `Retry` in the client's own connection pool, so every request the client
makes is covered. A record the CRM refuses is returned with the CRM's reason; a batch that
still fails once the retries are spent, or that the CRM refuses whole (a 4xx: a wrong token,
a field that does not exist), stops the push (`PushStopped`): its cursor stays where it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from urllib3.util.retry import Retry

from propensity.problems import PropensityError
from propensity.push.records import Outgoing

SALESFORCE_API = "62.0"
RETRIED = (429, 500, 502, 503, 504)


class PushStopped(PropensityError):
    """A batch the CRM would not take: the push stops, to be resumed by running it again."""


@dataclass(frozen=True)
class Retries:
    """How hard a batch is tried: `attempts` retries; a 5xx waits backoff x 2^n seconds (at
    most `longest`); a 429 waits what its Retry-After says."""

    attempts: int = 10
    backoff: float = 0.5
    longest: float = 60.0

    def urllib3(self) -> Retry:
        return Retry(total=self.attempts, status_forcelist=RETRIED, allowed_methods=None,
                     backoff_factor=self.backoff, backoff_max=self.longest,
                     respect_retry_after_header=True, raise_on_status=False)


class Writer(Protocol):
    batch_size: int

    def write(self, batch: Sequence[Outgoing]) -> dict[str, str]:
        """Write a batch; the records refused, each with the CRM's reason."""
        ...


class HubSpotWriter:
    """POST /crm/v3/objects/{object}/batch/update, 100 records a call (HubSpot's limit); a
    207 answer names the refused ids in each error's `context.ids`."""

    batch_size = 100

    def __init__(self, token: str, object_type: str = "contacts",
                 base_url: str = "https://api.hubapi.com", retries: Retries = Retries()
                 ) -> None:
        from hubspot import HubSpot

        self.object_type = object_type
        self.client = HubSpot(access_token=token, host=base_url.rstrip("/"),
                              retry=retries.urllib3())

    def write(self, batch: Sequence[Outgoing]) -> dict[str, str]:
        from hubspot.crm.objects import (
            BatchInputSimplePublicObjectBatchInput,
            SimplePublicObjectBatchInput,
        )
        from hubspot.crm.objects.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        body = BatchInputSimplePublicObjectBatchInput(inputs=[
            SimplePublicObjectBatchInput(id=o.record_id, properties=o.values) for o in batch])
        try:
            answer: Any = self.client.crm.objects.batch_api.update(self.object_type, body)
        except ApiException as exc:
            raise PushStopped(f"HubSpot refused a batch of {len(batch)} {self.object_type} "
                              f"(HTTP {exc.status}): {error_message(exc.body or exc.reason)}"
                              ) from None
        except HTTPError as exc:  # connection refused, reset, timed out: after the retries
            raise PushStopped(f"HubSpot did not answer: {exc}") from None
        done = {str(r.id) for r in answer.results or ()}
        refused: dict[str, str] = {}
        for error in getattr(answer, "errors", None) or ():
            for i in (error.context or {}).get("ids", ()):
                refused[str(i)] = f"{error.category}: {error.message}"
        return {o.record_id: refused.get(o.record_id, "not in HubSpot's answer")
                for o in batch if o.record_id not in done}


class SalesforceWriter:
    """PATCH /services/data/vXX.X/composite/sobjects, 200 records a call, allOrNone false:
    one result per record, in the order sent."""

    batch_size = 200

    def __init__(self, instance_url: str, session_id: str, object_type: str = "Lead",
                 retries: Retries = Retries(), version: str = SALESFORCE_API) -> None:
        import requests
        from requests.adapters import HTTPAdapter
        from simple_salesforce import Salesforce

        session = requests.Session()
        session.mount("https://", HTTPAdapter(max_retries=retries.urllib3()))
        self.object_type = object_type
        self.client = Salesforce(instance_url=instance_url, session_id=session_id,
                                 version=version, session=session)

    def write(self, batch: Sequence[Outgoing]) -> dict[str, str]:
        from requests import RequestException
        from simple_salesforce.exceptions import SalesforceError

        records = [{"attributes": {"type": self.object_type}, "id": o.record_id, **o.values}
                   for o in batch]
        try:
            answer = self.client.restful("composite/sobjects", method="PATCH",
                                         json={"allOrNone": False, "records": records})
        except SalesforceError as exc:
            raise PushStopped(f"Salesforce refused a batch of {len(batch)} {self.object_type} "
                              f"records (HTTP {exc.status}): {error_message(exc.content)}"
                              ) from None
        except RequestException as exc:  # unreachable, TLS refused: after the retries
            raise PushStopped(f"Salesforce did not answer: {exc}") from None
        if not isinstance(answer, list) or len(answer) != len(batch):
            raise PushStopped(f"Salesforce answered a batch of {len(batch)} with "
                              f"{len(answer) if isinstance(answer, list) else 'no'} results")
        return {o.record_id: "; ".join(f"{e.get('statusCode')}: {e.get('message')}"
                                       for e in r.get("errors") or ()) or "refused"
                for o, r in zip(batch, answer, strict=True) if not r.get("success")}


def error_message(body: object) -> str:
    """The first message of an error body (HubSpot's object, Salesforce's list), else the
    body itself, cut short."""
    import json

    if isinstance(body, str | bytes):
        try:
            body = json.loads(body)
        except ValueError:
            return str(body)[:200]
    if isinstance(body, list) and body and isinstance(body[0], dict):
        body = body[0]
    if isinstance(body, dict) and "message" in body:
        return str(body["message"])[:200]
    return str(body)[:200]
