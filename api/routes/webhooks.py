"""/v1/webhooks and /v1/jobs/{id}/webhooks: signed callbacks and their delivery log."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import KeyDep, SessionDep
from api.services import jobs as jobs_service
from api.services import webhooks as service
from shared.schemas import WebhookEventPublic, WebhookSecret, WebhookSettings

router = APIRouter(tags=["webhooks"])


@router.get("/v1/webhooks", response_model=WebhookSettings)
def get_default(key: KeyDep) -> WebhookSettings:
    """The webhook used by your jobs that name none of their own."""
    return service.get_settings_of(key)


@router.put("/v1/webhooks", response_model=WebhookSettings)
def set_default(body: WebhookSettings, key: KeyDep, session: SessionDep) -> WebhookSettings:
    """Set your default webhook URL and events (`url: null` turns it off)."""
    return service.set_settings_of(session, key, body)


@router.get("/v1/webhooks/secret", response_model=WebhookSecret)
def get_secret(key: KeyDep) -> WebhookSecret:
    """The `whsec_…` secret your deliveries are signed with (Standard Webhooks)."""
    return WebhookSecret(secret=key.webhook_secret)


@router.post("/v1/webhooks/secret", response_model=WebhookSecret)
def rotate_secret(key: KeyDep, session: SessionDep) -> WebhookSecret:
    """Rotate the signing secret."""
    return service.rotate_secret(session, key)


@router.get("/v1/jobs/{job_id}/webhooks", response_model=list[WebhookEventPublic])
def list_deliveries(job_id: str, key: KeyDep, session: SessionDep) -> list[WebhookEventPublic]:
    """Every event of the job and every attempt to deliver it (status code, latency, error)."""
    return service.list_deliveries(session, jobs_service.get_job(session, key, job_id))


@router.post("/v1/jobs/{job_id}/webhooks/{event_id}/redeliver", response_model=WebhookEventPublic)
def redeliver(job_id: str, event_id: str, key: KeyDep, session: SessionDep) -> WebhookEventPublic:
    """Send an event again."""
    return service.redeliver(session, jobs_service.get_job(session, key, job_id), event_id)
