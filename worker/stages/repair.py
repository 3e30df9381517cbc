"""Repair: old-film damage mended on the source frames, before upscaling (cheap at source
size, and the networks would sharpen it otherwise).

The parts run in this order, each on the previous one's frames: deinterlace (everything
after wants whole frames), deflicker, degrain (FFDNet, ``worker.stages.denoise``), dust and
scratches (after degraining: the grain no longer hides small specks), stabilise (last: its
resampling would soften grain and specks into their neighbours). Each part is a generator
over a stretch of consecutive frames with a fixed reach in frames either side (``REACH``),
so a chunk that decodes ``RepairPlan.context`` frames beyond its edges makes exactly the
frames an unchunked run makes.

``analyse`` measures a sample of the film (a few runs of consecutive frames spread over it);
``decide`` turns the options and those findings into the ``RepairPlan`` every chunk of the
film runs: ``auto`` is decided once per film, and only where the evidence is clear, so a
clean film passes through unchanged.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from shared.options import JobOptions
from worker.models.ffdnet_arch import FFDNet
from worker.stages import deflicker, interlace, weave
from worker.stages.denoise import denoise, estimate_noise, sigma_for
from worker.stages.dust import DustSettings, despeckled
from worker.stages.interlace import FIELD_ORDERS, deinterlaced, is_combed

# What ``auto`` asks before it turns a part on (measured on a sample; see bench_repair):
# half the sampled frames combed; flicker of two grey levels RMS (clean footage: 0.2-2.2,
# the highest a camera's drifting exposure); a defect in every other frame
# on average, with two frames in five having one (the fastest clean footage measured: 0.36
# a frame, in a fifth of them); weave of a pixel RMS (a small object crossing a still, flat
# shot drags a whole-frame correlation and read 0.5 px; the benchmark's gate weave reads about
# 2). Grain: denoise.sigma_for.
AUTO_COMBED = 0.5
AUTO_FLICKER = 2.0
AUTO_DEFECTS = 0.5
AUTO_DUSTY = 0.4
AUTO_WEAVE = 1.0
# ... and flicker and weave must step as damage new in every frame does (a correlation of
# consecutive steps near -0.5; a hand-held camera's sway or drifting exposure: 0 or more).
AUTO_STEPS = -0.15
# Grain left for the dust detector after FFDNet (σ in grey levels).
DENOISED_NOISE = 1.0
# The sample: this many runs of consecutive frames, spread evenly over the film; grain and
# combing are judged on whole frames, the rest at most ANALYSIS_WIDTH wide (a speck that
# averaging hides is not evidence enough anyway).
SAMPLE_RUNS = 5
SAMPLE_LENGTH = 16
ANALYSIS_WIDTH = 480
# Findings are kept with the film they measure (worker.jobs) under a name made from this,
# the code of the modules that measure (worker.film_repair.analysis_version) and the
# libraries' versions: raise it when what is found changes without that code changing.
ANALYSIS_VERSION = 1


@dataclass(frozen=True)
class Findings:
    """What the analysis of a film's sample found: grain σ and flicker in 8-bit grey levels
    (RMS), weave in px (RMS), one-frame defects per frame, the share of frames combed."""

    frames: int = 0
    noise: float = 0.0
    flicker: float = 0.0
    weave: float = 0.0
    # How flicker and weave step from frame to frame (temporal.step_correlation): about
    # -0.5 for damage new in every frame, 0 or more for a camera's drift or sway.
    flicker_steps: float = 0.0
    weave_steps: float = 0.0
    defects: float = 0.0
    # The share of the judged frames with a defect: dust is on most frames of a dirty print.
    dusty: float = 0.0
    combed: float = 0.0
    field_order: str = "tff"
    # The film's frame rate, for defects per minute.
    fps: float = 0.0

    @property
    def defects_per_minute(self) -> float:
        """One-frame defects per minute of film, estimated from the sample."""
        return self.defects * (self.fps or 24.0) * 60

    @classmethod
    def from_dict(cls, data: Any) -> Findings:
        """Findings from ``asdict``'s output: every field, each of its type (an int for a
        float); ``ValueError`` for anything else."""
        kinds = {name: type(value) for name, value in asdict(cls()).items()}
        if not isinstance(data, dict) or set(data) != set(kinds):
            raise ValueError(f"not findings: {data!r:.200}")
        for name, kind in kinds.items():
            value = data[name]
            allowed = (int, float) if kind is float else (kind,)
            if isinstance(value, bool) or not isinstance(value, allowed):
                raise ValueError(f"findings' {name} is {value!r:.50}")
        return cls(**{name: kinds[name](data[name]) for name in kinds})


@dataclass(frozen=True)
class RepairPlan:
    """What repair does to every frame of one film (``degrain``: FFDNet's σ, 0 for none)."""

    deinterlace: str | None = None
    deflicker: bool = False
    degrain: float = 0.0
    dust: bool = False
    stabilise: bool = False
    found: Findings = field(default_factory=Findings)

    @property
    def active(self) -> bool:
        """Whether any part runs."""
        return bool(
            self.deinterlace or self.deflicker or self.degrain or self.dust or self.stabilise
        )

    @property
    def context(self) -> int:
        """Frames each output frame depends on either side: the sum of the parts' reaches."""
        return sum(reach for name, reach in REACH.items() if getattr(self, name))

    @property
    def dust_noise(self) -> float:
        """The grain σ the dust detector sees (less after degraining)."""
        return min(self.found.noise, DENOISED_NOISE) if self.degrain else self.found.noise

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (what the job stores and reports)."""
        data = asdict(self)
        data["found"] = {
            k: round(v, 3) if isinstance(v, float) else v for k, v in data["found"].items()
        }
        data["degrain"] = round(self.degrain, 3)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RepairPlan:
        """Rebuild a plan from ``to_dict``'s output."""
        return cls(**{**data, "found": Findings(**data.get("found", {}))})


# The parts, by option name.
PARTS = ("deinterlace", "deflicker", "degrain", "dust", "stabilise")
# Frames either side each part looks at.
REACH = {
    "deinterlace": 1,
    "deflicker": deflicker.RADIUS,
    "degrain": 0,
    "dust": 1,
    "stabilise": weave.RADIUS,
}


def degrained(
    frames: Iterable[torch.Tensor], sigma: float, network: FFDNet
) -> Iterator[torch.Tensor]:
    """Each frame denoised by FFDNet at ``sigma`` (luma σ in grey levels)."""
    for frame in frames:
        yield denoise(frame, sigma, network)


def repaired(
    frames: Iterable[torch.Tensor], plan: RepairPlan, network: FFDNet | None = None
) -> Iterator[torch.Tensor]:
    """The frames (1, 3, H, W) of a stretch of film, repaired as ``plan`` says, in order
    (``network``: FFDNet, when the plan degrains)."""
    stream: Iterator[torch.Tensor] = iter(frames)
    if plan.deinterlace:
        stream = deinterlaced(stream, plan.deinterlace)
    if plan.deflicker:
        stream = deflicker.deflickered(stream)
    if plan.degrain:
        if network is None:
            raise ValueError("degraining needs the FFDNet network")
        stream = degrained(stream, plan.degrain, network)
    if plan.dust:
        stream = (f for f, _ in despeckled(stream, DustSettings(plan.dust_noise)))
    if plan.stabilise:
        stream = weave.stabilised(stream)
    return stream


def repair(frames: torch.Tensor, plan: RepairPlan, network: FFDNet | None = None) -> torch.Tensor:
    """Repair (T, 3, H, W) consecutive frames."""
    if not plan.active:
        return frames
    return torch.cat(list(repaired(frames.split(1), plan, network)))


def wanted_parts(options: JobOptions) -> frozenset[str]:
    """The parts the options do not turn off (the film is measured for those)."""
    return frozenset(name for name in PARTS if getattr(options, name) != "off")


@dataclass
class _Tally:
    """Sums over the sample's runs."""

    frames: int = 0
    combed: int = 0
    votes: float = 0.0
    noise: list[float] = field(default_factory=list)
    flicker: float = 0.0  # sum of squares × frames
    weave: float = 0.0
    flicker_steps: float = 0.0  # sum of correlation × frames
    weave_steps: float = 0.0
    defects: int = 0
    dusty: int = 0
    judged: int = 0


def _measure_run(run: torch.Tensor, tally: _Tally, parts: frozenset[str]) -> None:
    """Add one run of consecutive frames (T, 3, H, W) to the tally; ``parts``: the repair
    parts (option names) to measure for."""
    frames = list(run.split(1))
    n = len(frames)
    # One frame of the run: the grain is a property of the stock, not of a frame.
    noise = estimate_noise(frames[n // 2])
    combed = sum(is_combed(f, noise) for f in frames) if "deinterlace" in parts else 0
    if combed:
        votes = sum(interlace.top_first_vote(a, b) for a, b in itertools.pairwise(frames))
        tally.votes += votes
        if combed * 2 >= n:
            # Measure the rest on whole frames, as the repair will see them.
            frames = list(deinterlaced(frames, "tff" if votes >= 0 else "bff"))
    tally.frames += n
    tally.combed += combed
    tally.noise.append(noise)
    # The rest is judged at most ANALYSIS_WIDTH wide (weave in the film's own pixels).
    frames, scale = _smaller(frames)
    if "stabilise" in parts:
        jitter, pattern = weave.weave_signature(frames)
        tally.weave += (jitter * scale) ** 2 * n
        tally.weave_steps += pattern * n
        if jitter * scale >= AUTO_WEAVE and pattern <= AUTO_STEPS:
            # Weave moves picture in and out of the frame's parts: it is no flicker.
            frames = list(weave.stabilised(frames))
    if "deflicker" in parts:
        amplitude, pattern = deflicker.flicker_signature(frames)
        tally.flicker += amplitude**2 * n
        tally.flicker_steps += pattern * n
    if "dust" in parts:
        found = despeckled(frames, DustSettings(noise / scale), mend=False)
        counts = [count for _, count in found]
        tally.defects += sum(counts)
        tally.dusty += sum(count > 0 for count in counts)
        tally.judged += max(n - 2, 0)


def _smaller(frames: list[torch.Tensor]) -> tuple[list[torch.Tensor], float]:
    """The frames area-averaged to at most ANALYSIS_WIDTH wide, and by how much."""
    h, w = frames[0].shape[-2:]
    if w <= ANALYSIS_WIDTH:
        return frames, 1.0
    size = (max(1, round(h * ANALYSIS_WIDTH / w)), ANALYSIS_WIDTH)
    return [F.interpolate(f.float(), size=size, mode="area") for f in frames], w / ANALYSIS_WIDTH


@contextmanager
def one_thread() -> Iterator[None]:
    """Torch's CPU ops on this thread run on one core, then as before.

    The analysis is hundreds of small ops (frames at most ANALYSIS_WIDTH wide, thumbnails,
    masks), too small to gain from threads; on cores shared with other work each op's
    threads wait for one another, and it measured 2-10× slower at 854×480. The setting is
    this thread's (OpenMP's): threads already using torch keep theirs (one first using it
    meanwhile would start with one). What is found does not change (to the last bit on the
    benchmark's clips: the ops work per pixel or on small sets)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def analyse(
    runs: Iterable[torch.Tensor],
    field_order: str | None = None,
    parts: Iterable[str] = PARTS,
    fps: float = 0.0,
) -> Findings:
    """Measure a film from runs of consecutive frames (T, 3, H, W) taken across it, for the
    repair ``parts`` (option names; the grain is always measured). ``field_order`` is the
    file's own claim, used when the picture shows no combing to judge by."""
    tally = _Tally()
    wanted = frozenset(parts)
    with one_thread():
        for run in runs:
            _measure_run(run, tally, wanted)
    if not tally.frames:
        return Findings()
    order = field_order if field_order in FIELD_ORDERS else "tff"
    if tally.combed:
        order = "tff" if tally.votes >= 0 else "bff"
    return Findings(
        frames=tally.frames,
        noise=float(np.median(tally.noise)),
        flicker=math.sqrt(tally.flicker / tally.frames),
        weave=math.sqrt(tally.weave / tally.frames),
        flicker_steps=tally.flicker_steps / tally.frames,
        weave_steps=tally.weave_steps / tally.frames,
        defects=tally.defects / max(tally.judged, 1),
        dusty=tally.dusty / max(tally.judged, 1),
        combed=tally.combed / tally.frames,
        field_order=order or "tff",
        fps=fps,
    )


def _chosen(option: str, evidence: bool) -> bool:
    return option == "on" or (option == "auto" and evidence)


def degrain_sigma(option: str, noise: float) -> float:
    """FFDNet's σ for the ``degrain`` option and the film's grain: 0 for none (``auto``
    leaves grain under ``worker.stages.denoise.AUTO_THRESHOLD`` alone)."""
    if option == "off":
        return 0.0
    return float(sigma_for(option, noise))


def decide(options: JobOptions, found: Findings) -> RepairPlan:
    """The plan for a film: each part on when asked, or on ``auto`` when the sample shows
    its damage clearly."""
    combed = _chosen(options.deinterlace, found.combed >= AUTO_COMBED)
    return RepairPlan(
        deinterlace=found.field_order if combed else None,
        deflicker=_chosen(
            options.deflicker,
            found.flicker >= AUTO_FLICKER and found.flicker_steps <= AUTO_STEPS,
        ),
        degrain=degrain_sigma(options.degrain, found.noise),
        dust=_chosen(options.dust, found.defects >= AUTO_DEFECTS and found.dusty >= AUTO_DUSTY),
        stabilise=_chosen(
            options.stabilise, found.weave >= AUTO_WEAVE and found.weave_steps <= AUTO_STEPS
        ),
        found=found,
    )


def sample_starts(frames: int) -> list[int]:
    """Where the sample's runs start (frame indices), evenly over a film of ``frames``."""
    length = min(SAMPLE_LENGTH, frames)
    if frames <= SAMPLE_RUNS * length:  # a short film: runs side by side, each frame once
        return list(range(0, frames - length + 1, length)) if frames else []
    last = frames - length
    return [round(k * last / (SAMPLE_RUNS - 1)) for k in range(SAMPLE_RUNS)]


def summary(plan: RepairPlan) -> str:
    """One line: what repair does to the film and what it found."""
    found = plan.found
    parts = []
    if plan.deinterlace:
        parts.append(f"deinterlace ({plan.deinterlace})")
    if plan.deflicker:
        parts.append(f"deflicker (flicker {found.flicker:.1f})")
    if plan.degrain:
        parts.append(f"degrain σ {plan.degrain:.1f} (grain {found.noise:.1f})")
    if plan.dust:
        parts.append(f"dust (~{found.defects_per_minute:.0f}/min)")
    if plan.stabilise:
        parts.append(f"stabilise (weave {found.weave:.2f} px)")
    return ", ".join(parts) or "nothing to repair"
