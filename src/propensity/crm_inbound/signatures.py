"""HubSpot's request signatures (v2 and v3), checked with the app's client secret.

v2 (`X-HubSpot-Signature-Version: v2`, the one custom workflow actions send): the hex SHA-256
of client secret + method + URI + body. v3 (`X-HubSpot-Signature-v3`, with
`X-HubSpot-Request-Timestamp` in milliseconds): the base64 HMAC-SHA256, keyed by the client
secret, of method + URI + body + timestamp, where the URI has a few percent-escapes decoded;
a v3 request older than five minutes is refused, so a captured request cannot be replayed
later. The URI is the one HubSpot called (scheme, host, path and query), which behind a
proxy is not the one the server sees: `public_url` says what it was.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping

V3_WINDOW_MS = 5 * 60 * 1000
"""HubSpot's window for a v3 request: older is refused."""
V3_DECODED = {"%3A": ":", "%2F": "/", "%3F": "?", "%40": "@", "%21": "!", "%24": "$",
              "%27": "'", "%28": "(", "%29": ")", "%2A": "*", "%2C": ",", "%3B": ";"}
"""The escapes HubSpot decodes in the URI before it signs (v3)."""


class SignatureError(Exception):
    """The request is not HubSpot's (or not any more): the message says which check failed."""


def v2(secret: str, method: str, uri: str, body: bytes) -> str:
    return hashlib.sha256(secret.encode() + method.encode() + uri.encode() + body).hexdigest()


def v3_uri(uri: str) -> str:
    for escape, char in V3_DECODED.items():
        uri = uri.replace(escape, char).replace(escape.lower(), char)
    return uri


def v3(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    message = method.encode() + v3_uri(uri).encode() + body + timestamp.encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def check(secret: str, method: str, uri: str, body: bytes, headers: Mapping[str, str],
          now_ms: int) -> str:
    """The signature version that passed ("v3" or "v2"); SignatureError otherwise. v3 is
    checked when present (it is the one with a timestamp); v2 only when no v3 came."""
    given = headers.get("x-hubspot-signature-v3")
    if given is not None:
        stamp = headers.get("x-hubspot-request-timestamp", "")
        if not stamp.isdigit():
            raise SignatureError("X-HubSpot-Signature-v3 without a numeric "
                                 "X-HubSpot-Request-Timestamp (milliseconds)")
        age = now_ms - int(stamp)
        if age > V3_WINDOW_MS:
            raise SignatureError(f"X-HubSpot-Request-Timestamp is {age // 1000} s old: "
                                 "older than 5 minutes is refused")
        if not hmac.compare_digest(given.encode(), v3(secret, method, uri, body, stamp).encode()):
            raise SignatureError("X-HubSpot-Signature-v3 does not match this request signed "
                                 "with the app's client secret")
        return "v3"
    version = headers.get("x-hubspot-signature-version", "").lower()
    given = headers.get("x-hubspot-signature")
    if given is None:
        raise SignatureError("no X-HubSpot-Signature-v3 or X-HubSpot-Signature header")
    if version != "v2":
        raise SignatureError(f"X-HubSpot-Signature-Version {version or 'missing'!r}: "
                             "v2 or v3 are accepted")
    if not hmac.compare_digest(given.lower().encode(), v2(secret, method, uri, body).encode()):
        raise SignatureError("X-HubSpot-Signature (v2) does not match this request signed "
                             "with the app's client secret")
    return "v2"
