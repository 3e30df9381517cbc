"""Multipart uploads nobody finished are aborted, so their parts stop taking space."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from cli.local_services import LocalStack
from shared.config import Settings, get_settings
from shared.storage import Storage
from worker.jobs import abort_abandoned_uploads


@pytest.fixture()
def worker_settings(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run worker code in this process against the harness's servers."""
    for name, value in stack.env().items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_abandoned_multipart_uploads_are_aborted(settings: Settings, worker_settings: None) -> None:
    storage = Storage(settings)
    started = storage.client.create_multipart_upload(
        Bucket=storage.bucket, Key="jobs/abandoned/input"
    )
    storage.client.upload_part(
        Bucket=storage.bucket,
        Key="jobs/abandoned/input",
        UploadId=started["UploadId"],
        PartNumber=1,
        Body=b"x" * 1000,
    )

    def open_uploads() -> list[str]:
        listed = storage.client.list_multipart_uploads(Bucket=storage.bucket)
        return [u["UploadId"] for u in listed.get("Uploads", [])]

    assert started["UploadId"] in open_uploads()
    assert abort_abandoned_uploads(max_age=timedelta(days=1)) == 0  # too young to abort
    assert abort_abandoned_uploads(max_age=timedelta(0)) >= 1
    assert started["UploadId"] not in open_uploads()
