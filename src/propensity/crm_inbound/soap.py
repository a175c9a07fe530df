"""Salesforce Outbound Messages: the SOAP `notifications` envelope in, `notificationsResponse`
out.

The envelope (Salesforce's outbound messaging WSDL, namespace
`http://soap.sforce.com/2005/09/outbound`) holds `OrganizationId`, `ActionId`, and up to 100
`Notification`s, each an `Id` (of the notification: a retry carries the same one) and an
`sObject` whose `xsi:type` names the object (`sf:Lead`) and whose children are the fields the
admin chose. It is read with defusedxml, which refuses a DTD, an entity declaration and an
external reference before expanding anything: a billion-laughs body or an `<!ENTITY x SYSTEM
"file:///etc/passwd">` is refused in microseconds, at the size of its text. The body is
capped before parsing (`max_bytes`): 100 notifications of 50 fields fit in ~500 kB.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

OUTBOUND = "{http://soap.sforce.com/2005/09/outbound}"
XSI = "{http://www.w3.org/2001/XMLSchema-instance}"
MAX_NOTIFICATIONS = 100
ACK = (b'<?xml version="1.0" encoding="UTF-8"?>'
       b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
       b"<soapenv:Body><notificationsResponse xmlns=\"http://soap.sforce.com/2005/09/outbound\">"
       b"<Ack>true</Ack></notificationsResponse></soapenv:Body></soapenv:Envelope>")
"""The answer that tells Salesforce every notification is taken: it stops retrying them."""


class EnvelopeError(ValueError):
    """The body is not an outbound message this server reads (the message says why)."""


@dataclass(frozen=True)
class Notification:
    id: str
    object_type: str
    """`Lead`, `Opportunity`, ...: the sObject's xsi:type without its prefix."""
    fields: dict[str, str | None]
    """Field API name -> text (None for `xsi:nil`)."""


@dataclass(frozen=True)
class OutboundMessage:
    organization_id: str
    action_id: str
    notifications: list[Notification]


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _text(parent: Element, name: str, where: str) -> str:
    node = parent.find(OUTBOUND + name)
    if node is None or not (node.text or "").strip():
        raise EnvelopeError(f"{where}: no {name}")
    return (node.text or "").strip()


def parse(body: bytes, max_bytes: int) -> OutboundMessage:
    """The message in `body`; EnvelopeError for anything else (too large, an entity or a DTD,
    not XML, not a `notifications` envelope, a notification without an Id or sObject)."""
    if len(body) > max_bytes:
        raise EnvelopeError(f"the body has {len(body):,} bytes; at most {max_bytes:,} "
                            "(PROPENSITY_SALESFORCE_MAX_BYTES)")
    try:
        root = fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise EnvelopeError(f"refused: {type(exc).__name__} (DTDs, entities and external "
                            "references are not read)") from None
    except ParseError as exc:
        raise EnvelopeError(f"not well-formed XML: {exc}") from None
    found = root.find(f".//{OUTBOUND}notifications")
    if found is None:
        raise EnvelopeError("no notifications element in the namespace "
                            "http://soap.sforce.com/2005/09/outbound")
    items = found.findall(OUTBOUND + "Notification")
    if len(items) > MAX_NOTIFICATIONS:
        raise EnvelopeError(f"{len(items)} notifications; an outbound message holds at most "
                            f"{MAX_NOTIFICATIONS}")
    notes = []
    for i, item in enumerate(items):
        where = f"Notification[{i}]"
        sobject = item.find(OUTBOUND + "sObject")
        if sobject is None:
            raise EnvelopeError(f"{where}: no sObject")
        kind = _local(sobject.get(XSI + "type", "")).split(":")[-1]
        if not kind:
            raise EnvelopeError(f"{where}: the sObject has no xsi:type")
        fields: dict[str, str | None] = {}
        for child in sobject:
            nil = child.get(XSI + "nil", "").lower() == "true"
            fields[_local(child.tag)] = None if nil else (child.text or "").strip()
        notes.append(Notification(_text(item, "Id", where), kind, fields))
    return OutboundMessage(_text(found, "OrganizationId", "notifications"),
                           _text(found, "ActionId", "notifications"), notes)


def same_org(org_id: str, allowed: list[str]) -> bool:
    """Salesforce ids come in 15 (case-sensitive) and 18 characters (3 more for a
    case-insensitive check): the first 15 name the org."""
    return any(org_id[:15] == a.strip()[:15] for a in allowed if a.strip())
