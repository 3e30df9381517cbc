"""`make bench`: every benchmark in turn, with its default settings (`python -m bench NAME…`
runs only those named: any of ``ORDER``)."""

from __future__ import annotations

import importlib
import sys

ORDER = (
    "fidelity",
    "repeats",
    "repair",
    "denoise",
    "preview",
    "upload",
    "api",
    "pipeline",
    "upscale",
    "interpolate",
    "gpu",
)


def main() -> None:
    """Run the benchmarks named on the command line, or all of them."""
    names = sys.argv[1:] or list(ORDER)
    unknown = sorted(set(names) - set(ORDER))
    if unknown:
        raise SystemExit(f"unknown benchmarks {unknown}; choose from {', '.join(ORDER)}")
    for name in names:
        print(f"\n=== bench_{name} ===", flush=True)
        module = importlib.import_module(f"bench.bench_{name}")
        sys.argv = [f"bench_{name}"]
        module.main()


if __name__ == "__main__":
    main()
