"""The API reports the real state of its dependencies, and a real worker answers tasks."""

from __future__ import annotations

import os
import signal
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from cli.local_services import LocalStack, free_port
from shared.celery_app import create_celery
from shared.config import Settings
from shared.health import CHECK_DEADLINE_S, NO_ANSWER
from tests.conftest import Processes, extra_api


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page, by name and labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


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
        # /metrics still answers: what Redis would tell is left out, the rest is there.
        metrics = httpx.get(f"{base}/metrics", timeout=10)
        assert metrics.status_code == 200
        assert "lumiere_jobs{" in metrics.text and "lumiere_http_responses_total{" in metrics.text
        assert "lumiere_queue_messages" not in metrics.text
        assert "lumiere_workers_alive" not in metrics.text


def test_readyz_answers_in_time_while_the_store_is_frozen(api_url: str, stack: LocalStack) -> None:
    assert httpx.get(f"{api_url}/readyz", timeout=10).status_code == 200
    assert stack.s3.proc is not None
    pid = stack.s3.proc.pid
    # Frozen, not dead: connections are accepted and never answered. Other tests share this
    # store, so it thaws in a few seconds whatever happens.
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        frozen = httpx.get(f"{api_url}/readyz", timeout=10)
        elapsed = time.monotonic() - started
        # Asked again while the first check still hangs: no second one piles up behind it.
        started = time.monotonic()
        again = httpx.get(f"{api_url}/readyz", timeout=10)
        elapsed_again = time.monotonic() - started
    finally:
        os.kill(pid, signal.SIGCONT)
    assert elapsed < 3, f"/readyz took {elapsed:.1f} s with the store frozen"
    assert elapsed_again < 3, f"/readyz took {elapsed_again:.1f} s the second time"
    for response in (frozen, again):
        assert response.status_code == 503, response.text
        body = response.json()
        assert body["down"] == ["storage"], body
        storage = body["dependencies"]["storage"]
        assert storage["ok"] is False and storage["error"].startswith(NO_ANSWER), storage
        assert storage["latency_ms"] >= CHECK_DEADLINE_S * 1000 * 0.9, storage
    # Thawed, the store answers the check that was waiting, and the API is ready again.
    deadline = time.monotonic() + 15
    while httpx.get(f"{api_url}/readyz", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "/readyz did not recover after the store thawed"
        time.sleep(0.2)


def test_metrics_count_responses_by_class_and_report_the_work(api_url: str, worker: str) -> None:
    before = _samples(httpx.get(f"{api_url}/metrics", timeout=10).text)
    assert httpx.get(f"{api_url}/v1/jobs", timeout=10).status_code == 401
    after = _samples(httpx.get(f"{api_url}/metrics", timeout=10).text)
    classes = {
        labels: v for (name, labels), v in after.items() if name == "lumiere_http_responses_total"
    }
    assert set(classes) == {(("class", c),) for c in ("2xx", "3xx", "4xx", "5xx")}, classes
    key = ("lumiere_http_responses_total", (("class", "4xx"),))
    assert after[key] >= before[key] + 1
    for status in ("queued", "running", "succeeded", "failed", "cancelled"):
        assert ("lumiere_jobs", (("status", status),)) in after
    for status in ("pending", "running", "done", "failed"):
        assert ("lumiere_chunks", (("status", status),)) in after
    for queue in ("control", "chunks"):
        assert after[("lumiere_queue_messages", (("queue", queue),))] >= 0
    assert after[("lumiere_workers_alive", ())] >= 1


def test_a_worker_without_its_weights_is_reported_unhealthy(
    api_url: str, service_env: dict[str, str], processes: Processes, tmp_path
) -> None:
    from cli.stack import worker_argv

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
