"""Deliver one webhook event: sign, POST with a short timeout, store the attempt.

Network errors and 5xx answers are retried with exponential backoff (by the task); a 4xx
means the receiver refuses the message, so it is not retried.
"""

from __future__ import annotations

import enum
import time

import httpx

from shared.config import get_settings
from shared.db import session_scope
from shared.errors import InvalidInput
from shared.logs import get_logger
from shared.models import ApiKey, Job, WebhookAttempt, WebhookEvent
from shared.webhooks import body_of, check_url, headers

log = get_logger(__name__)


class Outcome(enum.StrEnum):
    """What became of one attempt."""

    DELIVERED = "delivered"
    RETRY = "retry"
    FAILED = "failed"


def deliver(event_id: str) -> Outcome:
    """Try to deliver ``event_id`` once and record the attempt."""
    settings = get_settings()
    with session_scope() as session:
        event = session.get(WebhookEvent, event_id)
        if event is None or event.status != "pending":
            return Outcome.DELIVERED
        job = session.get(Job, event.job_id)
        key = session.get(ApiKey, job.api_key_id) if job else None
        if key is None:
            return Outcome.FAILED
        url, body = event.url, body_of(event)
        signed = headers(key.webhook_secret, event.id, body)
        attempts = len(event.attempts)
    status_code: int | None = None
    error: str | None = None
    started = time.perf_counter()
    try:
        # Checked again at send time: DNS may have changed since the job was created.
        check_url(url, settings.webhook_allow_private)
        response = httpx.post(
            url,
            content=body,
            headers=signed,
            timeout=settings.webhook_timeout_s,
            follow_redirects=False,
        )
        status_code = response.status_code
    except InvalidInput as err:
        error = str(err)
    except httpx.HTTPError as err:
        error = f"{type(err).__name__}: {err}"[:500]
    latency = (time.perf_counter() - started) * 1000
    if status_code is not None and 200 <= status_code < 300:
        outcome = Outcome.DELIVERED
    elif (status_code is None and error and "private address" not in error) or (
        status_code is not None and status_code >= 500
    ):
        last = attempts + 1 >= settings.webhook_max_attempts
        outcome = Outcome.FAILED if last else Outcome.RETRY
    else:
        outcome = Outcome.FAILED
    with session_scope() as session:
        session.add(
            WebhookAttempt(
                event_id=event_id,
                status_code=status_code,
                latency_ms=round(latency, 1),
                error=error,
            )
        )
        event = session.get(WebhookEvent, event_id)
        if event is not None and outcome != Outcome.RETRY:
            event.status = outcome.value
    log.info(
        "webhook.attempt",
        event_id=event_id,
        status_code=status_code,
        error=error,
        outcome=outcome.value,
    )
    return outcome


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based): base·2^(n-1), at most 1 h."""
    return min(3600.0, get_settings().webhook_retry_base_s * 2 ** (attempt - 1))
