"""``lumiere process``: restore one film offline with the same stage code as the workers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from cli.options import PROCESS_FIELDS, given, option_flags
from shared.options import Options

# Heavy imports (torch, av) happen inside the command: the API image imports this module
# to build the CLI and has neither installed.


@click.command("process")
@click.argument("source", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@option_flags(PROCESS_FIELDS)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), help="Where stages run.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option(
    "--report",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the quality report (JSON) here, the least confident moments' pictures beside "
    "it in REPORT-moments/.",
)
def process(
    source: Path, output: Path, device: str | None, quiet: bool, report: Path | None, **values: Any
) -> None:
    """Upscale and interpolate SOURCE into OUTPUT, keeping (or adding) its sound."""
    from tqdm import tqdm

    from shared.config import get_settings
    from shared.errors import LumiereError
    from shared.logs import configure_logging
    from worker.pipeline import pick_device, process_file

    chosen = given(values)
    if chosen.get("audio_file") and chosen.get("audio") in ("keep", "none"):
        raise click.UsageError(f"--audio makes no sense with --audio-mode {chosen['audio']}")
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    # FFmpeg's log stays off (PyAV's default), which also keeps its chatter off the progress
    # bar. Never set a level here: that installs a Python log callback, and a decoder thread
    # that logs then waits for the GIL the decoding thread holds (a deadlock we hit in tests).
    try:
        options = Options(**chosen)
    except ValidationError as err:
        raise click.UsageError(str(err)) from None
    bar: tqdm | None = None

    def on_plan(plans: Sequence[object], total: int) -> None:
        nonlocal bar
        bar = tqdm(total=total, unit="frame", disable=quiet, desc=output.name, leave=False)

    def on_progress(done: int) -> None:
        if bar is not None:
            bar.update(done - bar.n)

    try:
        result = process_file(
            source,
            output,
            options,
            on_progress=on_progress,
            on_plan=on_plan,
            device=pick_device(device or settings.device),
        )
    except LumiereError as err:
        raise click.ClickException(str(err)) from None
    except KeyboardInterrupt:
        raise click.Abort() from None
    finally:
        if bar is not None:
            bar.close()
    if report is not None:
        write_report(result, options.upscaler, report)
    click.echo(
        f"{result.path}: {result.frames_out} frames from {result.frames_in} "
        f"in {result.seconds:.1f} s ({result.frames_out / max(result.seconds, 1e-9):.1f} fps)"
    )
    if result.repair is not None and result.repair.found.frames:
        from worker.stages.repair import summary

        click.echo(f"repair: {summary(result.repair)}")


def write_report(result: Any, upscaler: str, path: Path) -> None:
    """The film's report as the service makes it, its moments' pictures in a folder beside."""
    import json

    from worker.report import merge
    from worker.stages.upscale import model_facts

    folder = path.with_name(f"{path.stem}-moments")
    folder.mkdir(parents=True, exist_ok=True)
    for chunk in result.chunks:
        for name, jpeg in chunk.report.thumbnails().items():
            (folder / name).write_bytes(jpeg)
    repair = result.repair.to_dict() if result.repair is not None else None
    merged = merge([c.report_dict() for c in result.chunks], model_facts(upscaler), repair)
    for moment in merged["low_confidence"]:
        moment["thumbnail"] = f"{folder.name}/{moment['thumbnail']}"
    path.write_text(json.dumps(merged, indent=1))
