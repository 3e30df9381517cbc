#!/usr/bin/env bash
# Regenerate the images' lock files from pyproject.toml (run after changing dependencies):
#   requirements/api.txt     the base dependencies only (the API image: no torch)
#   requirements/worker.txt  base + the `worker` extra (torch==2.13.0 from PyPI, a CUDA build)
#   requirements/build.txt   setuptools, to install the project itself with --no-build-isolation
# Resolved for the images' platform (CPython 3.11, Linux x86_64, glibc 2.28+), whatever machine
# runs this, with sha256 hashes so `pip install --require-hashes` refuses anything else. The
# worker lock is constrained by the API lock, so both images share every common version.
# Needs `uv` (pip install uv).
set -euo pipefail
cd "$(dirname "$0")/.."

uv=${UV:-uv}
common=(
  --quiet
  --python-version 3.11
  --python-platform x86_64-manylinux_2_28
  --generate-hashes
  --custom-compile-command "requirements/compile.sh"
)
"$uv" pip compile "${common[@]}" pyproject.toml -o requirements/api.txt
"$uv" pip compile "${common[@]}" pyproject.toml --extra worker -c requirements/api.txt \
  -o requirements/worker.txt
"$uv" pip compile "${common[@]}" requirements/build.in -o requirements/build.txt
