"""The API reports the real state of its dependencies, and a real worker answers tasks."""

from __future__ import annotations

import time

import httpx

from shared.celery_app import create_celery
from shared.config import Settings
from shared.local_services import free_port
from tests.conftest import Processes, extra_api


def test_healthz_reports_every_dependency(api_url: str, worker: str) -> None:
    response = httpx.get(f"{api_url}/healthz", timeout=10)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    deps = body["dependencies"]
    for name in ("database", "redis", "storage"):
        assert deps[name]["ok"] is True, deps[name]
        assert deps[name]["latency_ms"] >= 0
    assert deps["workers"]["ok"] is True
    node = next(w for w in deps["workers"]["workers"] if w["hostname"] == worker)
    assert node["device"] in ("cpu", "cuda")


def test_readyz_is_ready_when_everything_answers(api_url: str) -> None:
    response = httpx.get(f"{api_url}/readyz", timeout=10)
    assert response.status_code == 200
    assert response.json()["down"] == []


def test_a_real_worker_runs_a_task_through_redis(settings: Settings, worker: str) -> None:
    app = create_celery(settings)
    result = app.send_task("lumiere.control.ping")
    assert isinstance(result.get(timeout=30), str)


def test_readyz_names_the_dependency_that_is_down(
    service_env: dict[str, str], processes: Processes
) -> None:
    # An API process pointed at a Redis port where nothing listens.
    env = {**service_env, "LUMIERE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    with extra_api(processes, env, "api-no-redis.log") as base:
        response = httpx.get(f"{base}/readyz", timeout=10)
        assert response.status_code == 503
        assert response.json()["down"] == ["redis"]
        health = httpx.get(f"{base}/healthz", timeout=10).json()
        assert health["status"] == "degraded"
        assert health["dependencies"]["database"]["ok"] is True


def test_a_worker_without_its_weights_is_reported_unhealthy(
    api_url: str, service_env: dict[str, str], processes: Processes, tmp_path
) -> None:
    from shared.stack import worker_argv

    env = {**service_env, "LUMIERE_MODELS_DIR": str(tmp_path / "no-models")}
    name = "weightless@localhost"
    proc = processes.start(worker_argv("control", 1, name), env, "worker-weightless.log")
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            workers = httpx.get(f"{api_url}/healthz", timeout=10).json()["dependencies"]["workers"]
            mine = [w for w in workers["workers"] if w["hostname"] == name]
            if mine:
                break
            time.sleep(0.5)
        assert mine, "the worker never sent a heartbeat"
        assert mine[0]["models"]["ok"] is False
        assert "lumiere models fetch" in mine[0]["models"]["error"]
        assert workers["ok"] is False and name in workers["error"]
    finally:
        proc.terminate()
        proc.wait(30)
