"""The deployment files agree with the code: settings, queues, time limits, GPUs, lock files.

Checked without a Docker engine: the compose files are read with PyYAML (and filled in from
their example env files the way Compose does), and scripts/check-deploy.sh runs
`docker-compose config` and hadolint.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from shared.celery_app import CHUNK_QUEUE, CONTROL_QUEUE, app
from shared.config import Settings

REPO = Path(__file__).resolve().parents[2]
# Each compose file with the example env file a new user copies to .env beside it.
COMPOSE = {
    "docker-compose.yml": ".env.example",
    "docker-compose.workers.yml": "workers.env.example",
}
DOCKERFILES = ("Dockerfile.api", "Dockerfile.worker")
PREFIX = "LUMIERE_"
VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def read(name: str) -> str:
    return (REPO / name).read_text()


def env_file(name: str) -> dict[str, str]:
    """KEY=VALUE lines of an env file, comments and blank lines skipped."""
    pairs = {}
    for line in read(name).splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, $$."""

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        value = env.get(name)
        if op in (":?", "?") and (value is None or (op == ":?" and not value)):
            raise AssertionError(f"${{{name}}} is required: {arg}")
        if op == ":-" and not value:
            return arg
        if op == "-" and value is None:
            return arg
        return value or ""

    placeholder = "\0"
    return VARIABLE.sub(substitute, text.replace("$$", placeholder)).replace(placeholder, "$")


def compose(name: str, resolved: bool = False) -> dict[str, Any]:
    """A compose file as data: raw, or filled in from its example env file."""
    text = read(name)
    if resolved:
        text = interpolate(text, env_file(COMPOSE[name]))
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment, whether written as a mapping or as KEY=VALUE items."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): str(v) for k, v in env.items()}


def workers(data: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], list[str]]]:
    """(name, service, argv) of every service that runs a Celery worker."""
    for name, service in data["services"].items():
        argv = [str(a) for a in service.get("command") or []]
        if argv[:1] == ["celery"] and "worker" in argv:
            yield name, service, argv


def option(argv: list[str], *flags: str) -> str | None:
    for i, arg in enumerate(argv[:-1]):
        if arg in flags:
            return argv[i + 1]
    return None


def gpu_ids(service: dict[str, Any]) -> list[str] | None:
    """The GPUs a service reserves, or None when it reserves none."""
    devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices")
    if not devices:
        return None
    assert all("gpu" in d["capabilities"] for d in devices)
    return [str(i) for d in devices for i in d.get("device_ids", [])]


def is_setting(variable: str) -> bool:
    # Settings reads LUMIERE_<field> case-insensitively.
    name = variable.lower().removeprefix(PREFIX.lower())
    return variable.upper().startswith(PREFIX) and name in Settings.model_fields


def test_every_lumiere_variable_is_a_setting() -> None:
    """Every LUMIERE_* name the compose files, env examples and images set is a Settings field."""
    found: dict[str, set[str]] = {}
    for name, example in COMPOSE.items():
        text = read(name)
        for service in compose(name)["services"].values():
            for key in environment(service):
                if key.upper().startswith(PREFIX):
                    found.setdefault(key, set()).add(name)
        for match in VARIABLE.finditer(text):
            if match["name"].upper().startswith(PREFIX):
                found.setdefault(match["name"], set()).add(name)
        for key in env_file(example):
            if key.upper().startswith(PREFIX):
                found.setdefault(key, set()).add(example)
    for dockerfile in DOCKERFILES:
        for key in re.findall(r"\b(LUMIERE_\w+)=", read(dockerfile)):
            found.setdefault(key, set()).add(dockerfile)

    assert {"LUMIERE_DATABASE_URL", "LUMIERE_REDIS_URL", "LUMIERE_MODELS_DIR"} <= set(found)
    unknown = {key: sorted(where) for key, where in found.items() if not is_setting(key)}
    assert not unknown, f"not fields of shared.config.Settings: {unknown}"


def test_compose_values_are_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Filled in from the example env, each service's settings validate, on the right device."""
    for key in list(os.environ):  # only the compose file's values count
        if key.upper().startswith(PREFIX):
            monkeypatch.delenv(key)
    for name in COMPOSE:
        data = compose(name, resolved=True)
        worker_names = {service_name for service_name, _, _ in workers(data)}
        for service_name, service in data["services"].items():
            env = environment(service)
            if not any(key.startswith(PREFIX) for key in env):
                continue  # postgres, redis, minio
            where = f"{name}: {service_name}"
            fields = {k.lower().removeprefix(PREFIX.lower()): v for k, v in env.items()}
            settings = Settings.model_validate(fields)
            assert settings.database_url.startswith("postgresql+psycopg://"), where
            assert settings.redis_url.startswith("redis://"), where
            if gpu_ids(service) is not None:
                assert settings.device == "cuda", f"{where} reserves a GPU"
            elif service_name in worker_names:
                assert settings.device == "cpu", f"{where} has no GPU"


def test_queues_are_served_and_gpus_do_only_chunks() -> None:
    """Workers serve known queues; GPU ones only chunks; every profile choice serves both."""
    known = {CHUNK_QUEUE, CONTROL_QUEUE}
    for name in COMPOSE:
        data = compose(name, resolved=True)
        served: dict[str, set[str]] = {}
        for service_name, service, argv in workers(data):
            queues = set((option(argv, "-Q", "--queues") or "").split(","))
            assert queues <= known, f"{name}: {service_name} serves {queues - known}"
            if gpu_ids(service) is not None:
                assert queues == {CHUNK_QUEUE}, f"{name}: {service_name} would idle its GPU"
            for profile in service.get("profiles") or [""]:
                served.setdefault(profile, set()).update(queues)
        if name == "docker-compose.yml":
            # A host runs the services without a profile plus `gpu` or `cpu`.
            for choice in ("gpu", "cpu"):
                assert served[""] | served[choice] == known, f"{name} with profile {choice}"
        else:
            assert set().union(*served.values()) == known, name


def image_command(dockerfile: str) -> list[str]:
    """The CMD of a Dockerfile, written in JSON form."""
    match = re.search(r"^CMD (\[.*?\])$", read(dockerfile).replace("\\\n", ""), re.M | re.S)
    assert match, f"{dockerfile} has no JSON-form CMD"
    argv = json.loads(match[1])
    assert isinstance(argv, list)
    return [str(a) for a in argv]


def test_one_process_per_gpu_and_limits_under_the_visibility_timeout() -> None:
    """One Celery process per GPU, prefetch 1, soft < hard time limit < Redis visibility."""
    visibility = app.conf.broker_transport_options["visibility_timeout"]
    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.task_acks_late
    commands = [("Dockerfile.worker", True, image_command("Dockerfile.worker"))]
    for name in COMPOSE:
        for service_name, service, argv in workers(compose(name, resolved=True)):
            commands.append((f"{name}: {service_name}", gpu_ids(service) is not None, argv))
    assert len(commands) > 5
    for where, gpu, argv in commands:
        if gpu:
            assert option(argv, "-c", "--concurrency") == "1", where
        soft = float(option(argv, "--soft-time-limit") or "nan")
        hard = float(option(argv, "--time-limit") or "nan")
        assert 0 < soft < hard < visibility, where
        # The image's health check pings celery@<hostname>: no other node name.
        assert option(argv, "-n", "--hostname") is None, where


def test_each_gpu_worker_gets_its_own_gpu() -> None:
    """gpuN reserves GPU N and nothing else; no two services share a GPU."""
    for name in COMPOSE:
        data = compose(name, resolved=True)
        ids: dict[str, list[str]] = {}
        for service_name, service in data["services"].items():
            reserved = gpu_ids(service)
            if reserved is not None:
                ids[service_name] = reserved
        assert ids, f"{name} has no GPU worker"
        assert all(len(v) == 1 for v in ids.values()), ids
        flat = [v[0] for v in ids.values()]
        assert len(flat) == len(set(flat)), f"{name}: GPUs shared: {ids}"
        for service_name, (gpu,) in ids.items():
            if re.fullmatch(r"gpu\d+", service_name):
                assert gpu == service_name.removeprefix("gpu")


def locked(name: str) -> dict[str, str]:
    """name -> version of a lock file; every entry pinned with == and carrying a hash."""
    pins: dict[str, str] = {}
    text = read(f"requirements/{name}").replace("\\\n", " ")
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement, *hashes = line.split("--hash=")
        req = Requirement(requirement.strip())
        (spec,) = req.specifier
        assert spec.operator == "==" and hashes, f"{name}: {line[:60]} is not pinned with hashes"
        pins[canonicalize_name(req.name)] = spec.version
    return pins


def test_lock_files_match_pyproject() -> None:
    """The locks satisfy pyproject; the API lock has no torch; the worker's torch is the pin."""
    project = tomllib.loads(read("pyproject.toml"))["project"]
    api, worker = locked("api.txt"), locked("worker.txt")
    for lock, requirements in (
        (api, project["dependencies"]),
        (worker, project["dependencies"] + project["optional-dependencies"]["worker"]),
    ):
        for line in requirements:
            req = Requirement(line)
            version = lock.get(canonicalize_name(req.name))
            assert version is not None, f"{req.name} is not locked: run requirements/compile.sh"
            assert req.specifier.contains(version), f"{req.name}=={version} breaks {line}"
    assert {"torch", "av", "opencv-python-headless", "numpy"}.isdisjoint(api)
    assert worker["torch"] == "2.13.0"
    assert {k: worker[k] for k in api} == api, "the images share every common version"
    assert "setuptools" in locked("build.txt")


def test_images_run_as_non_root_with_health_checks() -> None:
    """Both Dockerfiles end as a numeric non-root user and declare a health check."""
    for dockerfile in DOCKERFILES:
        instructions = [
            line.split()[0] for line in read(dockerfile).splitlines() if line[:1].isupper()
        ]
        users = re.findall(r"^USER\s+(\S+)", read(dockerfile), re.MULTILINE)
        assert users and users[-1].split(":")[0] not in {"0", "root"}, dockerfile
        assert users[-1].split(":")[0].isdigit(), dockerfile
        assert "RUN" not in instructions[instructions.index("USER") :], dockerfile
        assert "HEALTHCHECK" in instructions, dockerfile


def test_check_deploy_script_passes() -> None:
    """docker-compose config on both compose files and hadolint on both Dockerfiles."""
    env = dict(os.environ)
    # hadolint comes with the dev extra, in the same bin/ as this Python.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run(
        [str(REPO / "scripts" / "check-deploy.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("ok: ") == 3, done.stdout
