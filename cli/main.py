"""The ``lumiere`` command: run the stack, a worker, the API, or process one file offline."""

from __future__ import annotations

import click

from cli.models import models
from cli.process import process
from cli.stack import api, keys, migrate, up, worker
from cli.submit import submit


@click.group()
def main() -> None:
    """Lumière: restore old films — upscale, interpolate, add sound."""


for command in (up, api, worker, migrate, keys, submit, process, models):
    main.add_command(command)
