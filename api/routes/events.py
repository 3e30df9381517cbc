"""/v1/jobs/{id}/events: Server-Sent Events with the job's status and progress as they change."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.deps import KeyDep, SessionDep, read_in_thread
from api.services import jobs as service
from shared.db import session_factory
from shared.schemas import JobPublic

router = APIRouter(tags=["jobs"])

POLL_S = 0.5
KEEPALIVE_S = 15
FINAL = ("succeeded", "failed", "cancelled")


@router.get(
    "/v1/jobs/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "`event: job` messages, each a JobPublic",
        }
    },
)
async def job_events(
    job_id: str, request: Request, key: KeyDep, session: SessionDep
) -> StreamingResponse:
    """Stream the job as it changes (`event: job`, data = the job); ends when it finishes."""
    # 404 before streaming; the request's connection goes back to the pool at once, not
    # when the stream ends. Each poll below reads the database as it is, wherever the job
    # changes, so a stream served by any API process sees every change.
    await read_in_thread(session, service.get_job, session, key, job_id)
    base = str(request.base_url).rstrip("/")

    def load() -> JobPublic:
        with session_factory()() as fresh:
            return service.public(fresh, service.get_job(fresh, key, job_id), base)

    async def stream() -> AsyncIterator[str]:
        last: tuple[object, ...] | None = None
        sequence = 0
        quiet_since = time.monotonic()
        while not await request.is_disconnected():
            job = await run_in_threadpool(load)
            state = (job.status, job.stage, job.progress, job.chunks_done, job.error)
            if state != last:
                last = state
                sequence += 1
                quiet_since = time.monotonic()
                yield f"id: {sequence}\nevent: job\ndata: {job.model_dump_json()}\n\n"
                if job.status in FINAL:
                    return
            elif time.monotonic() - quiet_since > KEEPALIVE_S:
                quiet_since = time.monotonic()
                yield ": keep-alive\n\n"
            await asyncio.sleep(POLL_S)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
