"""Per-key request limits, configurable, answered with 429 and Retry-After."""

from __future__ import annotations

import httpx

from shared.config import Settings
from shared.models import new_id
from tests.conftest import Processes, extra_api, make_key


def test_a_key_over_its_rate_limit_gets_429(
    service_env: dict[str, str], processes: Processes, settings: Settings
) -> None:
    # Fresh keys: the count is per key across every API process, in Redis.
    api_key, other_key = make_key(settings, "limited"), make_key(settings, "unlimited")
    env = {**service_env, "LUMIERE_RATE_LIMIT_PER_MINUTE": "5"}
    with extra_api(processes, env, "api-limited.log") as base:
        mine = {"Authorization": f"Bearer {api_key}"}
        responses = [httpx.get(f"{base}/v1/jobs", headers=mine) for _ in range(12)]
        codes = [r.status_code for r in responses]
        # Five per minute: at most five 200s per window (the window may roll over once).
        assert codes[0] == 200 and codes.count(200) <= 10 and 429 in codes, codes
        refused = next(r for r in responses if r.status_code == 429)
        assert 1 <= int(refused.headers["retry-after"]) <= 61
        assert refused.headers["content-type"] == "application/problem+json"
        # Another key has a budget of its own, and polls for jobs it does not have count
        # too: the 404 is an answer like any other.
        theirs = {"Authorization": f"Bearer {other_key}"}
        assert httpx.get(f"{base}/v1/jobs", headers=theirs).status_code == 200
        polls = [httpx.get(f"{base}/v1/jobs/{new_id()}", headers=theirs) for _ in range(12)]
        codes = [r.status_code for r in polls]
        assert codes[0] == 404 and 429 in codes, codes
