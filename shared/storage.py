"""Object storage on any S3-compatible server (AWS, MinIO, SeaweedFS, R2…) through boto3.

Keys are fixed per job (``jobs/{job_id}/input``, ``jobs/{job_id}/chunks/{index:05d}.mkv``,
``jobs/{job_id}/result.mp4``) so a rerun overwrites instead of duplicating; what was measured
of an input lies beside it (``jobs/{job_id}/input.analysis/…``).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

import boto3
from botocore.client import Config as BotoConfig
from botocore.exceptions import ClientError

from shared.config import Settings, get_settings


def input_key(job_id: str) -> str:
    """Where a job's uploaded film lives."""
    return f"jobs/{job_id}/input"


def chunk_key(job_id: str, index: int, ext: str) -> str:
    """Where chunk ``index`` of a job is stored once encoded."""
    return f"jobs/{job_id}/chunks/{index:05d}.{ext}"


def result_key(job_id: str, ext: str) -> str:
    """Where a job's restored film is stored."""
    return f"jobs/{job_id}/result.{ext}"


def report_key(job_id: str, name: str = "report.json") -> str:
    """Where a job's quality report is stored (``name``), and its parts: each chunk's
    measurements (``chunks/00003.json``) and the pictures of its moments (``moments/…``)."""
    return f"jobs/{job_id}/report/{name}"


def analysis_prefix(input_key: str) -> str:
    """Where what was measured of an input is kept: beside it, under its key, so whatever
    deletes the input's key as a prefix (a job, an upload) deletes these too."""
    return f"{input_key}.analysis/"


def analysis_key(input_key: str, name: str) -> str:
    """Where one measure of an input (``name``: what was measured, and how) is kept."""
    return analysis_prefix(input_key) + name


def job_prefix(job_id: str) -> str:
    """Every object of a job starts with this."""
    return f"jobs/{job_id}/"


def _missing(err: ClientError) -> bool:
    """Whether the store said the object does not exist."""
    return err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")


@lru_cache(maxsize=8)
def _client(
    endpoint: str, access: str, secret: str, region: str, timeout: float = 60, attempts: int = 5
) -> Any:
    config = BotoConfig(
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        retries={"max_attempts": attempts, "mode": "standard"},
        connect_timeout=min(5, timeout),
        read_timeout=timeout,
    )
    return boto3.client(
        "s3",
        endpoint_url=endpoint or None,
        aws_access_key_id=access or None,
        aws_secret_access_key=secret or None,
        region_name=region,
        config=config,
    )


class Storage:
    """The bucket Lumière keeps inputs, chunks and results in."""

    def __init__(self, settings: Settings | None = None) -> None:
        s = settings or get_settings()
        self.bucket = s.s3_bucket
        self.client = _client(s.s3_endpoint_url, s.s3_access_key, s.s3_secret_key, s.s3_region)
        # Presigned URLs must name the host clients reach, which may differ behind a proxy.
        public = s.s3_public_endpoint_url or s.s3_endpoint_url
        self.public_client = _client(public, s.s3_access_key, s.s3_secret_key, s.s3_region)
        # Health checks want a quick answer, not retries: one try, 2 s.
        self.ping_client = _client(
            s.s3_endpoint_url, s.s3_access_key, s.s3_secret_key, s.s3_region, 2, 1
        )

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist yet."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.bucket)

    def ping(self) -> None:
        """Raise if the store or the bucket cannot be reached (within about 2 s)."""
        self.ping_client.head_bucket(Bucket=self.bucket)

    def upload_file(self, path: Path, key: str) -> None:
        """Upload a local file (multipart for large files, handled by boto3)."""
        self.client.upload_file(str(path), self.bucket, key)

    def upload_fileobj(self, fileobj: BinaryIO, key: str) -> None:
        """Stream a file object to ``key`` (multipart, bounded memory)."""
        self.client.upload_fileobj(fileobj, self.bucket, key)

    def copy(self, source: str, key: str) -> None:
        """Copy an object within the bucket, server-side (multipart for large files)."""
        self.client.copy({"Bucket": self.bucket, "Key": source}, self.bucket, key)

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        """Store a small object (a still, a report) from memory."""
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def get_bytes(self, key: str) -> bytes:
        """A small object's bytes."""
        return bytes(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def find_bytes(self, key: str) -> bytes | None:
        """A small object's bytes, or ``None`` if it does not exist."""
        try:
            return self.get_bytes(key)
        except ClientError as err:
            if _missing(err):
                return None
            raise

    def copy_prefix(self, source: str, prefix: str) -> int:
        """Copy every object under ``source`` to the same name under ``prefix``; returns how
        many were copied."""
        copied = 0
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=source):
            for obj in page.get("Contents", []):
                self.copy(obj["Key"], prefix + obj["Key"][len(source) :])
                copied += 1
        return copied

    def download_file(self, key: str, path: Path) -> None:
        """Download ``key`` to a local file."""
        self.client.download_file(self.bucket, key, str(path))

    def size(self, key: str) -> int | None:
        """Size of ``key`` in bytes, or ``None`` if it does not exist."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as err:
            if _missing(err):
                return None
            raise
        return int(head["ContentLength"])

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix``; returns how many were deleted."""
        deleted = 0
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            objects = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if objects:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": objects})
                deleted += len(objects)
        return deleted

    def presigned_get(self, key: str, expires: int = 3600, filename: str | None = None) -> str:
        """A time-limited download URL for ``key``."""
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if filename:
            params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
        return str(
            self.public_client.generate_presigned_url(
                "get_object", Params=params, ExpiresIn=expires
            )
        )
