"""`lumiere submit`: send a film to a Lumière API, optionally wait for it and download it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import IO, Any

import click
import httpx
from tqdm import tqdm

from cli.options import SUBMIT_FIELDS, given, option_flags
from cli.stack import running_stack
from shared.config import get_settings


class _Counting:
    """A file wrapper that advances a progress bar as the upload reads it."""

    def __init__(self, file: IO[bytes], bar: tqdm) -> None:
        self.file, self.bar = file, bar

    def read(self, size: int = -1) -> bytes:
        data = self.file.read(size)
        self.bar.update(len(data))
        return data


def _fail(response: httpx.Response) -> None:
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail") or response.json().get("title")
        except ValueError:
            detail = response.text[:300]
        raise click.ClickException(f"{response.status_code}: {detail}")


@click.command()
@click.argument("film", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@option_flags(SUBMIT_FIELDS)
@click.option("--wait", is_flag=True, help="Follow the job to the end with a progress bar.")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --wait: download the result here.",
)
@click.option("--api", "api_url", help="API base URL (default LUMIERE_API_URL or local).")
@click.option("--key", "api_key", help="API key (default LUMIERE_API_KEY).")
def submit(
    film: Path,
    wait: bool,
    output: Path | None,
    api_url: str | None,
    api_key: str | None,
    **options: Any,
) -> None:
    """Upload FILM to Lumière and print the job id (with --wait: follow it to the end)."""
    settings = running_stack(get_settings())
    base = (api_url or settings.api_url or f"http://127.0.0.1:{settings.port}").rstrip("/")
    key = api_key or settings.api_key
    if not key:
        raise click.ClickException("no API key: pass --key or set LUMIERE_API_KEY")
    chosen = given(options)
    audio_file = Path(chosen.pop("audio_file")) if "audio_file" in chosen else None
    fields = {k: f"{v:g}" if isinstance(v, float) else str(v) for k, v in chosen.items()}
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, headers=headers, timeout=httpx.Timeout(60, read=600)) as api:
        size = film.stat().st_size + (audio_file.stat().st_size if audio_file else 0)
        with (
            film.open("rb") as f,
            tqdm(total=size, unit="B", unit_scale=True, desc="upload", disable=None) as bar,
        ):
            files: dict[str, Any] = {"file": (film.name, _Counting(f, bar))}
            soundtrack = audio_file.open("rb") if audio_file else None
            try:
                if soundtrack is not None and audio_file is not None:
                    files["audio"] = (audio_file.name, _Counting(soundtrack, bar))
                response = api.post("/v1/jobs", data=fields, files=files)
            finally:
                if soundtrack is not None:
                    soundtrack.close()
        _fail(response)
        job = response.json()
        click.echo(f"job {job['id']} {job['status']}", err=True)
        if wait:
            job = _follow(api, job["id"])
            if job["status"] != "succeeded":
                raise click.ClickException(f"job {job['status']}: {job.get('error')}")
            if output is not None:
                _download(api, job["id"], output)
        click.echo(job["id"])


def _follow(api: httpx.Client, job_id: str) -> dict[str, Any]:
    with tqdm(total=1.0, desc="restore", bar_format="{l_bar}{bar}| {postfix}", disable=None) as bar:
        while True:
            response = api.get(f"/v1/jobs/{job_id}")
            _fail(response)
            job: dict[str, Any] = response.json()
            bar.n = job["progress"]
            eta, place = job.get("eta_seconds"), job.get("queue_position")
            bar.set_postfix_str(
                job["stage"]
                + (f", {place - 1} job(s) ahead" if place else "")
                + (f", ETA {eta:.0f} s" if eta is not None else "")
            )
            if job["status"] in ("succeeded", "failed", "cancelled"):
                return job
            time.sleep(1)


def _download(api: httpx.Client, job_id: str, output: Path) -> None:
    response = api.get(f"/v1/jobs/{job_id}/result")
    if response.status_code != 307:
        _fail(response)
    with httpx.stream("GET", response.headers["location"], timeout=600) as download:
        _fail(download)
        with output.open("wb") as out:
            for block in download.iter_bytes():
                out.write(block)
    click.echo(f"saved {output}", err=True)
