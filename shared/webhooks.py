"""Webhooks: Standard Webhooks signing, the SSRF guard, and recording events to deliver.

Receivers verify with any Standard Webhooks library: the signature is
``v1,`` + base64(HMAC-SHA256(secret, f"{webhook-id}.{webhook-timestamp}.{body}")).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import secrets
import socket
import time
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from shared.errors import InvalidInput
from shared.models import ApiKey, Job, WebhookEvent

EVENTS = ("job.started", "job.progress", "job.succeeded", "job.failed", "job.cancelled")
DEFAULT_EVENTS = ("job.started", "job.succeeded", "job.failed", "job.cancelled")


def new_secret() -> str:
    """A signing secret in the Standard Webhooks form: ``whsec_`` + base64 of 24 bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for this message."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers (plus the content type)."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret, msg_id, ts, body),
    }


def parse_events(raw: str | None) -> tuple[str, ...]:
    """``"job.succeeded,job.failed"`` → a checked tuple; empty means the default set."""
    if not raw:
        return DEFAULT_EVENTS
    events = tuple(e.strip() for e in raw.split(",") if e.strip())
    unknown = [e for e in events if e not in EVENTS]
    if unknown:
        raise InvalidInput(f"webhook_events: unknown {unknown}; choose from {', '.join(EVENTS)}")
    return events


def check_url(url: str, allow_private: bool) -> None:
    """Refuse URLs that are not http(s) or that resolve to a private, loopback or link-local
    address (unless ``allow_private``): a webhook must not reach inside our network."""
    if any(ord(c) < 32 or ord(c) == 127 for c in url):
        raise InvalidInput("webhook_url: control characters are not allowed")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"webhook_url: {url!r} is not an http(s) URL")
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, proto=socket.IPPROTO_TCP)
    except socket.gaierror:
        raise InvalidInput(f"webhook_url: cannot resolve {parts.hostname!r}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if (
            address.is_private
            or address.is_loopback
            or address.is_link_local
            or address.is_reserved
            or address.is_multicast
            or address.is_unspecified
        ):
            raise InvalidInput(
                f"webhook_url: {parts.hostname} resolves to {address}, a private address; "
                "an operator can allow these with LUMIERE_WEBHOOK_ALLOW_PRIVATE=1"
            )


def target(job: Job, key: ApiKey) -> tuple[str | None, tuple[str, ...]]:
    """Where and which events this job's webhooks go: the job's own, else the key's."""
    if job.webhook_url:
        return job.webhook_url, parse_events(job.webhook_events)
    if key.webhook_url:
        return key.webhook_url, parse_events(key.webhook_events)
    return None, ()


def record(session: Session, job: Job, event: str, data: dict[str, Any]) -> str | None:
    """Store an event for delivery if the job wants it; returns its id, to enqueue after commit."""
    key = session.get(ApiKey, job.api_key_id)
    if key is None:
        return None
    url, wanted = target(job, key)
    if url is None or event not in wanted:
        return None
    msg_id = "msg_" + secrets.token_hex(12)
    payload = {
        "type": event,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "data": {"job_id": job.id, **data},
    }
    session.add(WebhookEvent(id=msg_id, job_id=job.id, type=event, url=url, payload=payload))
    session.flush()
    return msg_id


def body_of(event: WebhookEvent) -> bytes:
    """The exact bytes that are signed and sent."""
    return json.dumps(event.payload, separators=(",", ":"), sort_keys=True).encode()
