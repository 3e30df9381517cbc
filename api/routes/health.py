"""Liveness, readiness and the state of every dependency."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from shared.config import get_settings
from shared.health import dependencies

router = APIRouter(tags=["health"])

# Workers are not needed to accept jobs (they wait in the queue), so they don't gate readiness.
REQUIRED = ("database", "redis", "storage")


@router.get("/healthz")
def healthz() -> dict[str, Any]:
    """The API process is alive; reports the state of each dependency without failing on it."""
    deps = dependencies(get_settings())
    ok = all(deps[name]["ok"] for name in REQUIRED)
    return {"status": "ok" if ok else "degraded", "dependencies": deps}


@router.get("/readyz")
def readyz() -> JSONResponse:
    """503 unless the database, the broker and the store all answer; says which one failed.
    Answers within ``CHECK_DEADLINE_S`` (2 s) even while a dependency hangs."""
    deps = dependencies(get_settings())
    down = [name for name in REQUIRED if not deps[name]["ok"]]
    body = {"status": "ready" if not down else "unavailable", "down": down, "dependencies": deps}
    return JSONResponse(body, status_code=503 if down else 200)
