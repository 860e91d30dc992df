"""The API's /v1/files and /v1/uploads routes (OpenAI's Files and Uploads)."""

from __future__ import annotations

import base64
from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import (
    File,
    Form,
    Query,
    UploadFile,
)

from batch_core.api_models import (
    MAX_ID_CHARS,
    FileDeleted,
    FileList,
    UploadCompleteParams,
    UploadCreateParams,
)
from batch_core.files import content_disposition, content_type_of
from batch_core.models import FileObject, Upload, UploadPart
from batch_core.retention import (
    MAX_EXPIRES_AFTER_SECONDS,
    MIN_EXPIRES_AFTER_SECONDS,
    ExpiresAfter,
)
from batch_core.wiring import (
    default_stages,
)
from handlers.api_document import FILE_BYTES, answers
from handlers.api_routing import IdInPath, check_size, tenant_of

router = Router()  # type: ignore[no-untyped-call]


# -- files ---------------------------------------------------------------------------


@router.post(
    "/v1/files",
    summary="Upload a batch input file (multipart)",
    responses=answers(FileObject, body=True),
)
def create_file(
    file: Annotated[UploadFile, File(description="The JSONL input file")],
    purpose: Annotated[Literal["batch"], Form(description="Must be 'batch'")],
    anchor: Annotated[
        Literal["created_at"] | None,
        Form(alias="expires_after[anchor]", description="What expiry counts from"),
    ] = None,
    seconds: Annotated[
        int | None,
        Form(
            alias="expires_after[seconds]",
            ge=MIN_EXPIRES_AFTER_SECONDS,
            le=MAX_EXPIRES_AFTER_SECONDS,
            description="Seconds after `created_at` the File expires (default 30 days)",
        ),
    ] = None,
) -> FileObject:
    check_size(file.content, "file")
    return default_stages().files.create(
        tenant_of(router),
        filename=file.filename or "upload.jsonl",
        purpose=purpose,
        data=file.content,
        expires_after=_expires_after(seconds),
    )


def _expires_after(seconds: int | None) -> ExpiresAfter | None:
    """A multipart form's `expires_after[seconds]`: its `expires_after[anchor]` is validated
    by the route and can only be `created_at`, so the seconds alone make the policy."""
    if seconds is None:
        return None
    return ExpiresAfter(anchor="created_at", seconds=seconds)


@router.get("/v1/files", summary="List files", responses=answers(FileList, 404))
def list_files(
    after: Annotated[
        str | None, Query(max_length=MAX_ID_CHARS, description="A file id: list the files after it")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Annotated[Literal["asc", "desc"], Query()] = "desc",
    purpose: Annotated[str | None, Query(max_length=64)] = None,
) -> FileList:
    page = default_stages().files.list_files(
        tenant_of(router), after=after, limit=limit, order=order, purpose=purpose
    )
    return FileList.of(page.items, page.has_more)


@router.get("/v1/files/<file_id>", summary="Retrieve a file", responses=answers(FileObject, 404))
def retrieve_file(file_id: IdInPath) -> FileObject:
    return default_stages().files.get(tenant_of(router), file_id).file


@router.delete("/v1/files/<file_id>", summary="Delete a file", responses=answers(FileDeleted, 404))
def delete_file(file_id: IdInPath) -> FileDeleted:
    default_stages().files.delete(tenant_of(router), file_id)
    return FileDeleted(id=file_id)


@router.get(
    "/v1/files/<file_id>/content",
    summary="A file's bytes (large files: a redirect)",
    responses=answers(None, 404, 409, content=FILE_BYTES, redirect=True),
)
def file_content(file_id: IdInPath) -> Response[Any]:
    content = default_stages().files.content(tenant_of(router), file_id)
    if content.url is not None:
        return Response(status_code=302, headers={"Location": content.url}, body="")
    response: Response[Any] = Response(
        status_code=200,
        content_type=content_type_of(content.file.filename),
        headers={"Content-Disposition": content_disposition(content.file.filename)},
        # The stored bytes exactly, whatever they are: base64 here, binary on the wire
        # (BinaryMediaTypes */*). Bytes left to Powertools would be decoded as UTF-8 first.
        body=base64.b64encode(content.data or b"").decode("ascii"),
    )
    response.base64_encoded = True
    return response


# -- uploads -------------------------------------------------------------------------


@router.post(
    "/v1/uploads",
    summary="Start an upload of a large file in parts",
    responses=answers(Upload, body=True),
)
def create_upload(params: UploadCreateParams) -> Upload:
    return default_stages().files.create_upload(
        tenant_of(router),
        filename=params.filename,
        purpose=params.purpose,
        size=params.bytes,
        mime_type=params.mime_type,
        expires_after=params.expires_after,
    )


@router.post(
    "/v1/uploads/<upload_id>/parts",
    summary="Add a part to an upload",
    responses=answers(UploadPart, 404, 409, body=True),
)
def add_upload_part(
    upload_id: IdInPath, data: Annotated[UploadFile, File(description="The part's bytes")]
) -> UploadPart:
    check_size(data.content, "data")
    return default_stages().files.add_upload_part(tenant_of(router), upload_id, data.content)


@router.post(
    "/v1/uploads/<upload_id>/complete",
    summary="Join the parts into a File",
    responses=answers(Upload, 404, 409, body=True),
)
def complete_upload(upload_id: IdInPath, params: UploadCompleteParams) -> Upload:
    return default_stages().files.complete_upload(
        tenant_of(router), upload_id, part_ids=params.part_ids, md5=params.md5
    )


@router.post(
    "/v1/uploads/<upload_id>/cancel",
    summary="Cancel an upload",
    responses=answers(Upload, 404, 409),
)
def cancel_upload(upload_id: IdInPath) -> Upload:
    return default_stages().files.cancel_upload(tenant_of(router), upload_id)
