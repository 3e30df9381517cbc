"""/v1/uploads: presigned multipart uploads for films too big to send through the API."""

from __future__ import annotations

from fastapi import APIRouter, status

from api.deps import KeyDep, SessionDep, SettingsDep, StorageDep
from api.services import uploads as service
from shared.schemas import UploadComplete, UploadCreate, UploadPublic

router = APIRouter(prefix="/v1/uploads", tags=["uploads"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=UploadPublic)
def create_upload(
    body: UploadCreate, key: KeyDep, session: SessionDep, storage: StorageDep, settings: SettingsDep
) -> UploadPublic:
    """Start an upload: PUT each part's bytes to its URL, then call `complete` with the ETags."""
    return service.create_upload(session, key, body, storage, settings)


@router.post("/{upload_id}/complete", response_model=UploadPublic)
def complete_upload(
    upload_id: str,
    body: UploadComplete,
    key: KeyDep,
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
) -> UploadPublic:
    """Finish an upload; then create a job with `{"upload_id": …}`."""
    return service.complete_upload(session, key, upload_id, body, storage, settings)
