"""Property-based API tests: Schemathesis generates requests from the live OpenAPI spec.

Every documented operation is called with generated valid and invalid data and a valid key;
no answer may be a 5xx, and every answer the spec describes must match its schema.

Schemathesis's own pytest integration (`schemathesis.pytest.from_fixture`) needs the schema at
collection time or pokes at pytest internals that pytest 9 removed (`Function._nodeid`), so
this test drives it directly: one Hypothesis run per operation and generation mode, with
`operation.as_strategy()`; every failure is collected, then all are reported together.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import httpx
import hypothesis
import schemathesis
from hypothesis import HealthCheck, Phase, given
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from shared.config import Settings
from tests.clips import make_clip
from tests.conftest import make_key, wait_job

MAX_EXAMPLES = 25
# An event stream stays open until its job ends, so it cannot be called like the others;
# its refusals (401, 404) are checked in test_security.py and its stream in test_webhooks.py.
EXCLUDED = ("/v1/jobs/{job_id}/events",)


def _fuzz(
    operation: schemathesis.APIOperation,
    mode: GenerationMode,
    auth: dict[str, str],
    calls: dict[str, int],
    label: str,
    answers: Counter[str],
    path_parameters: dict[str, str] | None = None,
) -> None:
    """Call ``operation`` with up to MAX_EXAMPLES generated cases; raise on the first failure."""

    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,  # the same requests every run: a failure is reproducible
        database=None,  # no .hypothesis/ folder in the repository
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(mode, path_parameters=path_parameters))
    def call(case: schemathesis.Case) -> None:
        calls[label] += 1
        response = case.call_and_validate(
            headers=auth,
            checks=[not_a_server_error, response_schema_conformance],
            timeout=30,
        )
        answers[f"{label} {response.status_code}"] += 1

    call()


def _has_inputs(operation: schemathesis.APIOperation) -> bool:
    """Whether the operation takes anything a negative case could get wrong."""
    parts = (operation.path_parameters, operation.query, operation.headers, operation.body)
    return any(len(part) for part in parts)


def _finished_job(api_url: str, key: str, folder: Path) -> str:
    """A succeeded job of ``key``: generated ids only ever meet 404s, this one meets 200s."""
    clip = make_clip(folder / "a.mp4", seconds=0.3)
    with httpx.Client(
        base_url=api_url, headers={"Authorization": f"Bearer {key}"}, timeout=60
    ) as http:
        with clip.path.open("rb") as f:
            created = http.post(
                "/v1/jobs",
                files={"file": ("a.mp4", f)},
                data={"upscaler": "lanczos", "interpolator": "blend", "scale": "1"},
            )
        assert created.status_code == 201, created.text
        job = wait_job(http, created.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    return str(job["id"])


def test_api_never_answers_5xx_and_matches_its_schema(
    api_url: str, worker: str, settings: Settings, tmp_path: Path
) -> None:
    owner = make_key(settings, "schemathesis-owner")
    job_id = _finished_job(api_url, owner, tmp_path)
    schema = schemathesis.openapi.from_url(f"{api_url}/openapi.json").exclude(path=list(EXCLUDED))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 14, [op.label for op in operations]
    failures: dict[str, str] = {}
    calls: dict[str, int] = {}
    answers: Counter[str] = Counter()
    started = time.monotonic()
    for operation in operations:
        # A key per operation: the per-key rate limit must not turn the run into 429s.
        auth = {"Authorization": f"Bearer {make_key(settings, 'schemathesis')}"}
        modes = [GenerationMode.POSITIVE]
        if _has_inputs(operation):  # /healthz has nothing to make invalid
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:
            label = f"{operation.label} [{mode.value}]"
            calls[label] = 0

            try:
                _fuzz(operation, mode, auth, calls, label, answers)
            except (Exception, BaseExceptionGroup) as err:  # collected: all failures shown
                failures[label] = f"{type(err).__name__}: {err}"[:3000]
        # The same operation on a real job, so 200 answers are checked against their schemas
        # too (not DELETE: it would leave a 404 for the rest).
        if "{job_id}" in operation.path and operation.method.upper() != "DELETE":
            label = f"{operation.label} [positive, real job]"
            calls[label] = 0
            try:
                _fuzz(
                    operation,
                    GenerationMode.POSITIVE,
                    {"Authorization": f"Bearer {owner}"},
                    calls,
                    label,
                    answers,
                    path_parameters={"job_id": job_id},
                )
            except (Exception, BaseExceptionGroup) as err:
                failures[label] = f"{type(err).__name__}: {err}"[:3000]
    elapsed = time.monotonic() - started
    print(
        f"schemathesis {schemathesis.__version__}: {sum(calls.values())} calls in {elapsed:.0f} s"
    )
    for label, count in sorted(answers.items()):
        print(f"  {count:3} x {label}")
    assert not failures, "\n\n".join(f"{k}\n{v}" for k, v in failures.items())
    assert all(n > 0 for n in calls.values()), calls


def test_the_spec_documents_every_public_route(api_url: str) -> None:
    spec = httpx.get(f"{api_url}/openapi.json", timeout=10).json()
    paths = set(spec["paths"])
    expected = {
        "/healthz",
        "/readyz",
        "/v1/jobs",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/result",
        "/v1/jobs/{job_id}/preview/{which}",
        "/v1/jobs/{job_id}/cancel",
        "/v1/jobs/{job_id}/retry",
        "/v1/jobs/{job_id}/events",
        "/v1/jobs/{job_id}/webhooks",
        "/v1/jobs/{job_id}/webhooks/{event_id}/redeliver",
        "/v1/uploads",
        "/v1/uploads/{upload_id}/complete",
        "/v1/webhooks",
        "/v1/webhooks/secret",
    }
    assert expected <= paths, expected - paths
    # The multipart film upload is documented (through openapi_extra), so it is generated too.
    create = spec["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(create)
