"""Webhook settings of a key, its signing secret, and a job's deliveries."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared import queue
from shared.config import get_settings
from shared.errors import NotFound
from shared.models import ApiKey, Job, WebhookEvent
from shared.schemas import (
    WebhookAttemptPublic,
    WebhookEventPublic,
    WebhookSecret,
    WebhookSettings,
)
from shared.webhooks import check_url, new_secret, parse_events


def get_settings_of(key: ApiKey) -> WebhookSettings:
    """The key's default webhook."""
    return WebhookSettings(url=key.webhook_url, events=key.webhook_events)


def set_settings_of(session: Session, key: ApiKey, body: WebhookSettings) -> WebhookSettings:
    """Set (or, with ``url: null``, clear) the key's default webhook."""
    if body.url:
        check_url(body.url, get_settings().webhook_allow_private)
    key.webhook_url = body.url or None
    key.webhook_events = ",".join(parse_events(body.events)) if body.events else None
    session.commit()
    return get_settings_of(key)


def rotate_secret(session: Session, key: ApiKey) -> WebhookSecret:
    """Replace the key's signing secret; deliveries from now on use the new one."""
    key.webhook_secret = new_secret()
    session.commit()
    return WebhookSecret(secret=key.webhook_secret)


def _public(event: WebhookEvent) -> WebhookEventPublic:
    return WebhookEventPublic(
        id=event.id,
        type=event.type,
        url=event.url,
        status=event.status,
        payload=event.payload,
        created_at=event.created_at,
        attempts=[
            WebhookAttemptPublic(
                status_code=a.status_code,
                latency_ms=a.latency_ms,
                error=a.error,
                created_at=a.created_at,
            )
            for a in event.attempts
        ],
    )


def list_deliveries(session: Session, job: Job) -> list[WebhookEventPublic]:
    """Every event of the job, oldest first, with its attempts."""
    events = session.scalars(
        select(WebhookEvent)
        .where(WebhookEvent.job_id == job.id)
        .order_by(WebhookEvent.created_at, WebhookEvent.id)
    )
    return [_public(e) for e in events]


def redeliver(session: Session, job: Job, event_id: str) -> WebhookEventPublic:
    """Send an event again (same webhook-id, so receivers can drop duplicates)."""
    event = session.get(WebhookEvent, event_id)
    if event is None or event.job_id != job.id:
        raise NotFound(f"no webhook event {event_id} for job {job.id}")
    event.status = "pending"
    session.commit()
    queue.enqueue_webhooks([event.id])
    return _public(event)
