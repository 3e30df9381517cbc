"""Run Lumière's processes: the API, a worker, or the whole stack on one machine (`up`)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import click

from cli.local_services import LocalStack
from cli.supervisor import Child, GaveUp, Program, Supervisor
from shared.celery_app import CHUNK_QUEUE, CONTROL_QUEUE
from shared.config import Settings, get_settings
from shared.logs import configure_logging, get_logger

log = get_logger(__name__)


def prepare(settings: Settings) -> None:
    """Migrate the database to the newest schema and make sure the bucket exists."""
    from cli import migrate
    from shared.storage import Storage

    migrate.upgrade(settings.database_url)
    Storage(settings).ensure_bucket()


def worker_argv(queues: str, concurrency: int, name: str | None = None) -> list[str]:
    """Command line of a Celery worker process serving ``queues``."""
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "shared.celery_app",
        "worker",
        "-Q",
        queues,
        "--concurrency",
        str(concurrency),
        "--loglevel",
        "INFO",
        "--without-mingle",
        "--without-gossip",
    ]
    if name:
        argv += ["-n", name]
    return argv


def api_argv(host: str, port: int, workers: int = 1) -> list[str]:
    """Command line of the API: ``workers`` uvicorn processes sharing one listening socket
    (with more than one, a supervising process restarts any that dies)."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "api.main:create_app",
        "--factory",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-access-log",
        # libuv's event loop and the C HTTP parser, by name: uvicorn would otherwise fall
        # back to asyncio's loop and h11 without a word if they were missing.
        "--loop",
        "uvloop",
        "--http",
        "httptools",
    ]


def metrics_env(directory: Path) -> dict[str, str]:
    """Environment for the API's processes to keep their Prometheus counters in files under
    ``directory`` (emptied first), so that /metrics adds up every process's counts whichever
    process answers the scrape (prometheus_client's multiprocess mode)."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return {"PROMETHEUS_MULTIPROC_DIR": str(directory)}


def _wait_http(url: str, timeout: float) -> bool:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


# Written by `lumiere up` while it runs (mode 0600: it holds the store's secret): how to
# reach its servers, for `lumiere keys`, `migrate` and `submit` in another shell.
STACK_FILE = "stack.json"
# Processes of `lumiere up`'s control worker: a long join leaves one for the next job's plan
# and the webhooks.
CONTROL_CONCURRENCY = 2


def running_stack(settings: Settings) -> Settings:
    """``settings`` completed from a `lumiere up` running on the same data directory, where
    the environment names no database; the API URL and key of that stack too."""
    data_dir = settings.data_dir.expanduser().resolve()
    path = data_dir / STACK_FILE
    if settings.database_url or not path.exists():
        return settings
    found = json.loads(path.read_text())
    key_file = data_dir / "api-key"
    if not settings.api_key and key_file.exists():
        found["api_key"] = key_file.read_text().strip()
    return settings.model_copy(update=found)


@click.command()
def up() -> None:
    """Start everything on this machine (Postgres, Redis, S3, API, a worker) until Ctrl-C.

    Each process is supervised: one that dies is restarted (cli.supervisor); the stack
    stops on Ctrl-C, on SIGTERM, or when a process keeps failing, saying which."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    data_dir = settings.data_dir.expanduser().resolve()
    (data_dir / "logs").mkdir(parents=True, exist_ok=True)
    stack = LocalStack(data_dir / "services")
    external = bool(settings.database_url and settings.redis_url and settings.s3_endpoint_url)
    if not external:
        settings = settings.model_copy(update=stack.settings())
    supervisor = Supervisor(children(settings, stack, data_dir, external))
    # SIGTERM (from a supervisor of our own) stops the stack like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        supervisor.start()
        base = f"http://{settings.host}:{settings.port}"
        if not _wait_http(f"{base}/healthz", 60):
            raise click.ClickException(f"the API did not answer on {base}")
        click.echo(f"\nLumière is up: {base}  (API docs: {base}/docs)")
        click.echo(
            f"  API key: {local_api_key(settings, data_dir)}   (also in {data_dir / 'api-key'})"
        )
        click.echo(f"  data:   {data_dir}")
        click.echo(f"  logs:   {data_dir / 'logs'}")
        click.echo("Press Ctrl-C to stop.\n")
        supervisor.watch()
    except GaveUp as err:
        raise click.ClickException(str(err)) from err
    except KeyboardInterrupt:
        click.echo("\nStopping…")
    finally:
        supervisor.stop()
        if not external:
            (data_dir / STACK_FILE).unlink(missing_ok=True)


def children(settings: Settings, stack: LocalStack, data_dir: Path, external: bool) -> list[Child]:
    """What `lumiere up` runs, in start order: the servers (unless external ones are set),
    then a step that migrates and writes stack.json, the API and a worker."""
    env = {**os.environ, "LUMIERE_DATA_DIR": str(data_dir)}
    logs = data_dir / "logs"
    found: list[Child] = []
    if not external:
        env.update(stack.env())
        services = stack.root
        for name, server in (
            ("postgres", stack.postgres),
            ("redis", stack.redis),
            ("s3", stack.s3),
        ):
            found.append(
                Child(
                    name,
                    server.start,
                    server.alive,
                    server.stop,
                    str(services / name / "server.log"),
                )
            )

    def ready() -> None:
        prepare(settings)
        # The key exists before the API answers: whoever sees the stack up can read it.
        local_api_key(settings, data_dir)
        info = {
            **(stack.settings() if not external else {}),
            "api_url": f"http://{settings.host}:{settings.port}",
        }
        _write_private(data_dir / STACK_FILE, json.dumps(info))

    found.append(Child("setup", ready, lambda: True, lambda: None))
    api = api_argv(settings.host, settings.port, settings.resolved_api_workers())
    api_env = {**env, **metrics_env(settings.metrics_dir or data_dir / "metrics")}
    found.append(Program(api, api_env, logs / "api.log").child("api"))
    # Two workers, one per queue, so that planning, joining and webhooks never wait behind
    # a long chunk: a finished job is joined at once, whatever else is queued.
    control = worker_argv(CONTROL_QUEUE, CONTROL_CONCURRENCY, "control@%h")
    found.append(Program(control, env, logs / "control.log").child("control worker"))
    chunks = worker_argv(CHUNK_QUEUE, settings.worker_concurrency, "local@%h")
    found.append(Program(chunks, env, logs / "worker.log").child("worker"))
    return found


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file only its owner can read."""
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text)


@click.command()
@click.option("--host", default=None, help="Interface to bind (default LUMIERE_HOST).")
@click.option("--port", type=int, default=None, help="Port (default LUMIERE_PORT).")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="API processes (default LUMIERE_API_WORKERS, else one per CPU core).",
)
def api(host: str | None, port: int | None, workers: int | None) -> None:
    """Run the API server (uvicorn, one process per core by default)."""
    settings = get_settings()
    # Named after this process, which becomes uvicorn's: a restarted container (pid 1 again)
    # empties its own directory instead of leaving one more behind.
    own = Path(tempfile.gettempdir()) / f"lumiere-metrics-{os.getpid()}"
    counters = settings.metrics_dir or own
    argv = api_argv(
        host or settings.host, port or settings.port, workers or settings.resolved_api_workers()
    )
    os.execve(sys.executable, argv, {**os.environ, **metrics_env(counters)})


@click.command()
@click.option(
    "--queues",
    "-Q",
    default="control,chunks",
    show_default=True,
    help="Queues to serve: `chunks` (heavy, GPU) and/or `control` (light, CPU).",
)
@click.option(
    "--concurrency",
    "-c",
    type=int,
    default=None,
    help="Processes (default LUMIERE_WORKER_CONCURRENCY; one per GPU).",
)
@click.option("--name", "-n", default=None, help="Celery node name, e.g. gpu0@%h.")
def worker(queues: str, concurrency: int | None, name: str | None) -> None:
    """Run a worker process that takes jobs from the queue."""
    settings = get_settings()
    os.execv(sys.executable, worker_argv(queues, concurrency or settings.worker_concurrency, name))


@click.command()
def migrate() -> None:
    """Upgrade the database to the newest schema and create the bucket if missing."""
    settings = running_stack(get_settings())
    configure_logging(settings.log_level, settings.log_json)
    prepare(settings)
    click.echo("database and bucket are ready")


def local_api_key(settings: Settings, data_dir: Path) -> str:
    """The key `lumiere up` prints: made once, kept in the data directory (mode 0600)."""
    from shared.db import session_scope
    from shared.keys import authenticate, create_key

    path = data_dir / "api-key"
    with session_scope(settings.database_url) as session:
        if path.exists() and authenticate(session, path.read_text().strip()):
            return path.read_text().strip()
        _, secret = create_key(session, "local")
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return secret


@click.group()
def keys() -> None:
    """Manage API keys."""


@keys.command("create")
@click.argument("name")
def create_key_command(name: str) -> None:
    """Make an API key called NAME and print it (alone on the last line; shown only once)."""
    from shared.db import session_scope
    from shared.keys import create_key

    settings = running_stack(get_settings())
    if not settings.database_url:
        raise click.ClickException(
            "no database: start the stack with `lumiere up` (same LUMIERE_DATA_DIR) or set "
            "LUMIERE_DATABASE_URL"
        )
    with session_scope(settings.database_url) as session:
        key, secret = create_key(session, name)
        click.echo(f"created API key {key.id} ({name}); keep it secret, it is not stored:")
    click.echo(secret)
