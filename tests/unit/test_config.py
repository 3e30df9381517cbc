"""Settings come from LUMIERE_* variables, with defaults that serve a local stack."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.config import Settings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LUMIERE_PORT", "LUMIERE_DATA_DIR", "LUMIERE_DEVICE"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.port == 8000
    assert settings.data_dir == Path("data")
    assert settings.device == "auto"


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LUMIERE_PORT", "8100")
    monkeypatch.setenv("LUMIERE_DATA_DIR", "/srv/lumiere")
    monkeypatch.setenv("LUMIERE_CHUNK_SECONDS", "4.5")
    settings = Settings()
    assert (settings.port, settings.data_dir, settings.chunk_seconds) == (
        8100,
        Path("/srv/lumiere"),
        4.5,
    )


def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LUMIERE_DEVICE", "tpu")
    with pytest.raises(ValidationError):
        Settings()
