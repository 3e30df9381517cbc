"""The ``lumiere`` command: run the stack, a worker, the API, or process one file offline."""

from __future__ import annotations

import click


@click.group()
def main() -> None:
    """Lumière: restore old films — upscale, interpolate, add sound."""
