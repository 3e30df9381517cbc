"""Presigned multipart uploads: big films go from the client straight to the store."""

from __future__ import annotations

import math
from datetime import timedelta

from botocore.exceptions import ClientError
from sqlalchemy.orm import Session

from api.upload_stream import safe_filename
from shared.config import Settings
from shared.errors import Conflict, InvalidInput, NotFound
from shared.models import ApiKey, Upload, UploadStatus, new_id, utcnow
from shared.schemas import UploadComplete, UploadCreate, UploadPart, UploadPublic
from shared.storage import Storage

MAX_PARTS = 10_000  # S3's limit


def part_size_for(size: int, preferred: int) -> int:
    """The part size: the preferred one, grown until the file fits in S3's 10,000 parts."""
    return max(preferred, math.ceil(size / MAX_PARTS))


def _public(upload: Upload, storage: Storage, expires: int) -> UploadPublic:
    count = max(1, math.ceil(upload.size / upload.part_size))
    parts = []
    for number in range(1, count + 1):
        size = min(upload.part_size, upload.size - (number - 1) * upload.part_size)
        url = storage.public_client.generate_presigned_url(
            "upload_part",
            Params={
                "Bucket": storage.bucket,
                "Key": upload.key,
                "UploadId": upload.s3_upload_id,
                "PartNumber": number,
            },
            ExpiresIn=expires,
        )
        parts.append(UploadPart(part_number=number, url=url, size=size))
    return UploadPublic(
        id=upload.id,
        status=upload.status.value,
        filename=upload.filename,
        size=upload.size,
        part_size=upload.part_size,
        parts=parts,
        expires_at=upload.expires_at,
    )


def create_upload(
    session: Session, key: ApiKey, body: UploadCreate, storage: Storage, settings: Settings
) -> UploadPublic:
    """Open a multipart upload and presign a PUT URL for each of its parts."""
    if body.size > settings.max_upload_bytes:
        raise InvalidInput(
            f"size: {body.size} bytes is over the limit of {settings.max_upload_bytes} bytes"
        )
    upload_id = new_id()
    object_key = f"uploads/{upload_id}/input"
    created = storage.client.create_multipart_upload(
        Bucket=storage.bucket, Key=object_key, ContentType=body.content_type
    )
    upload = Upload(
        id=upload_id,
        api_key_id=key.id,
        key=object_key,
        s3_upload_id=created["UploadId"],
        filename=safe_filename(body.filename),
        size=body.size,
        part_size=part_size_for(body.size, settings.upload_part_bytes),
        expires_at=utcnow() + timedelta(seconds=settings.presign_expiry_s),
    )
    session.add(upload)
    session.commit()
    return _public(upload, storage, settings.presign_expiry_s)


def complete_upload(
    session: Session,
    key: ApiKey,
    upload_id: str,
    body: UploadComplete,
    storage: Storage,
    settings: Settings,
) -> UploadPublic:
    """Assemble the parts; the stored size must be the size declared at the start."""
    upload = session.get(Upload, upload_id)
    if upload is None or upload.api_key_id != key.id:
        raise NotFound(f"no upload {upload_id}")
    if upload.status != UploadStatus.PENDING:
        raise Conflict(f"upload {upload_id} is already {upload.status.value}")
    parts = sorted(body.parts, key=lambda p: p.part_number)
    try:
        storage.client.complete_multipart_upload(
            Bucket=storage.bucket,
            Key=upload.key,
            UploadId=upload.s3_upload_id,
            MultipartUpload={
                "Parts": [{"PartNumber": p.part_number, "ETag": p.etag} for p in parts]
            },
        )
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        raise InvalidInput(
            f"the store refused to complete the upload ({code}): check that "
            "every part was PUT and its ETag is right"
        ) from None
    stored = storage.size(upload.key)
    if stored != upload.size:
        storage.delete_prefix(upload.key)
        upload.status = UploadStatus.ABORTED
        session.commit()
        raise InvalidInput(f"the upload holds {stored} bytes but {upload.size} were declared")
    upload.status = UploadStatus.COMPLETED
    session.commit()
    return _public(upload, storage, settings.presign_expiry_s)
