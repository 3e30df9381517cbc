"""``lumiere process``: restore one film offline with the same stage code as the workers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click

# Heavy imports (torch, av) happen inside the command: the API image imports this module
# to build the CLI and has neither installed.


@click.command("process")
@click.argument("source", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--scale", type=float, help="Resize by this factor (e.g. 2, 4).")
@click.option("--width", type=int, help="Output width; alone, the height keeps the aspect.")
@click.option("--height", type=int, help="Output height; alone, the width keeps the aspect.")
@click.option(
    "--fps", help="Target frame rate: 60, 59.94, 50, 30000/1001… (default: source timing)."
)
@click.option(
    "--upscaler",
    default="faithful",
    show_default=True,
    help="faithful (waifu2x photo), detailed (Real-ESRGAN x4plus), basicvsr (video SR from "
    "neighbouring frames; best on a GPU), a model name, or lanczos (classical baseline).",
)
@click.option(
    "--interpolator",
    default="motion",
    show_default=True,
    help="motion (flow + occlusion-aware splatting), or blend / repeat (baselines).",
)
@click.option(
    "--fit",
    type=click.Choice(["sar", "pad", "crop"]),
    default="sar",
    show_default=True,
    help="With --width and --height of another shape: keep the shape in the sample aspect "
    "(sar), letterbox (pad) or fill and trim (crop).",
)
@click.option(
    "--denoise",
    type=click.IntRange(-1, 3),
    help="Denoise level of the upscaler (-1 none … 3 strong).",
)
@click.option(
    "--repeats",
    type=click.Choice(["drop", "keep"]),
    default="drop",
    show_default=True,
    help="With --fps: drop frames a transfer repeated on a cycle and interpolate from the "
    "unique ones at their original times, or keep every frame.",
)
@click.option(
    "--codec",
    type=click.Choice(["h264", "h265", "ffv1", "prores"]),
    default="h264",
    show_default=True,
)
@click.option("--crf", type=int, help="Quality for H.264/H.265 (lower is better; default 18/20).")
@click.option("--preset", default="medium", show_default=True, help="x264/x265 speed preset.")
@click.option(
    "--container",
    type=click.Choice(["mp4", "mkv", "mov"]),
    help="Output container (default: from OUTPUT's suffix).",
)
@click.option(
    "--audio",
    "audio_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Soundtrack file to replace (or --audio-mode add) the film's sound.",
)
@click.option(
    "--audio-mode",
    type=click.Choice(["keep", "replace", "add", "none"]),
    help="What to do with sound (default: keep, or replace when --audio is given).",
)
@click.option("--chunk-seconds", type=float, help="Chunk length in seconds (default: settings).")
@click.option("--batch", type=int, default=4, show_default=True, help="Frames upscaled at once.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), help="Where stages run.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def process(
    source: Path,
    output: Path,
    scale: float | None,
    width: int | None,
    height: int | None,
    fps: str | None,
    upscaler: str,
    interpolator: str,
    fit: str,
    denoise: int | None,
    repeats: str,
    codec: str,
    crf: int | None,
    preset: str,
    container: str | None,
    audio_file: str | None,
    audio_mode: str | None,
    chunk_seconds: float | None,
    batch: int,
    device: str | None,
    quiet: bool,
) -> None:
    """Upscale and interpolate SOURCE into OUTPUT, keeping (or adding) its sound."""
    from tqdm import tqdm

    from shared.config import get_settings
    from shared.errors import LumiereError
    from shared.logs import configure_logging
    from worker.pipeline import Options, pick_device, process_file

    if audio_file and audio_mode in ("keep", "none"):
        raise click.UsageError(f"--audio makes no sense with --audio-mode {audio_mode}")
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    # FFmpeg's log stays off (PyAV's default), which also keeps its chatter off the progress
    # bar. Never set a level here: that installs a Python log callback, and a decoder thread
    # that logs then waits for the GIL the decoding thread holds (a deadlock we hit in tests).
    options = Options(
        scale=scale,
        width=width,
        height=height,
        fps=fps,
        upscaler=upscaler,
        interpolator=interpolator,
        denoise=denoise,
        fit=fit,
        repeats=repeats,
        codec=codec,
        crf=crf,
        preset=preset,
        container=container,
        audio=audio_mode or ("replace" if audio_file else "keep"),
        audio_file=audio_file,
        chunk_seconds=chunk_seconds or settings.chunk_seconds,
        batch=batch,
    )
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
    click.echo(
        f"{result.path}: {result.frames_out} frames from {result.frames_in} "
        f"in {result.seconds:.1f} s ({result.frames_out / max(result.seconds, 1e-9):.1f} fps)"
    )
