"""The README's API examples run as written, in order, against a real `lumiere up`.

Every ```sh block of the README that talks to the API is taken as it stands; the only change
is the port (the README's 8000 may be taken on a test machine). The blocks run in one bash
session with `set -euo pipefail`, in a directory holding the files they name (train.mp4,
score.flac, film.mov) beside `lumiere up`'s `data/`.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx

from tests.clips import make_audio, make_clip
from tests.conftest import REPO
from tests.e2e.up import lumiere_up
from worker.media.probe import probe

README_PORT = "127.0.0.1:8000"


def api_examples(readme: str) -> list[str]:
    """The README's sh blocks that call the local API: those using `$API`, and curls of its
    address (not `make run`, whose comment names it, nor the deployment's)."""
    blocks = re.findall(r"^```sh\n(.*?)^```", readme, flags=re.DOTALL | re.MULTILINE)
    return [b for b in blocks if "$API" in b or b.startswith(f"curl -s http://{README_PORT}")]


def test_the_readme_examples_run_as_written(tmp_path: Path) -> None:
    blocks = api_examples((REPO / "README.md").read_text())
    assert len(blocks) >= 5, "the README's API examples went missing"
    make_clip(tmp_path / "train.mp4", width=64, height=48, fps=16, seconds=1)
    make_audio(tmp_path / "score.flac", seconds=1.5, codec="flac")
    make_clip(tmp_path / "film.mov", width=64, height=48, fps=24, seconds=1, audio="aac")
    # The webhook example names example.org, which this machine may not resolve.
    with lumiere_up(tmp_path, LUMIERE_WEBHOOK_ALLOW_PRIVATE="1") as up:
        (tmp_path / "data").symlink_to(up.data)
        script = "\n".join(b.replace(README_PORT, f"127.0.0.1:{up.port}") for b in blocks)
        done = subprocess.run(
            ["bash", "-c", f"set -euo pipefail\n{script}"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        said = done.stdout + done.stderr
        assert done.returncode == 0, said[-4000:]
        # Every answer was a success or a refusal the example expects, never a 5xx.
        assert not re.search(r'"status":\s*5\d\d', said), said[-4000:]
        metrics = httpx.get(f"{up.base}/metrics").text
        assert re.search(r'lumiere_http_responses_total\{class="5xx"\} 0\.0', metrics)
    restored = probe(tmp_path / "restored.mp4")
    assert (restored.width, restored.height) == (256, 192)
    assert round(float(restored.fps)) == 60
