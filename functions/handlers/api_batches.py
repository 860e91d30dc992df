"""The API's /v1/batches routes (OpenAI's Batches, plus `/results`, `/result_parts` and
`/retry`)."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import (
    Header,
    Query,
)

from batch_core.api_models import (
    MAX_ID_CHARS,
    BatchCreateParams,
    BatchList,
    BatchResultParts,
    ResultLine,
    ResultLineList,
    ResultPartObject,
)
from batch_core.batch_params import BatchParams, checked
from batch_core.models import Batch
from batch_core.result_pages import DEFAULT_LIMIT, MAX_CUSTOM_ID_CHARS, MAX_LIMIT
from batch_core.wiring import default_stages
from handlers.api_document import answers
from handlers.api_routing import IdInPath, tenant_of

router = Router()  # type: ignore[no-untyped-call]


# -- batches -------------------------------------------------------------------------


@router.post(
    "/v1/batches",
    summary="Create a batch (an Idempotency-Key header makes it safe to retry)",
    responses=answers(Batch, 404, body=True),
)
def create_batch(
    params: BatchCreateParams,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            max_length=255,
            description="The same key returns the same batch; with other parameters, a 400",
        ),
    ] = None,
) -> Batch:
    key = idempotency_key or None
    record = default_stages().batches.create_batch(
        tenant_of(router),
        checked(BatchParams, params.model_dump(exclude={"input_file_id"})),
        input_file_id=params.input_file_id,
        idempotency_key=key,
    )
    return record.to_batch()


@router.get("/v1/batches", summary="List batches, newest first", responses=answers(BatchList, 404))
def list_batches(
    after: Annotated[
        str | None,
        Query(max_length=MAX_ID_CHARS, description="A batch id: list the batches after it"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> BatchList:
    page = default_stages().batches.list_batches(tenant_of(router), after=after, limit=limit)
    return BatchList.of([r.to_batch() for r in page.items], page.has_more)


@router.get("/v1/batches/<batch_id>", summary="Retrieve a batch", responses=answers(Batch, 404))
def retrieve_batch(batch_id: IdInPath) -> Batch:
    return default_stages().batches.get_for(tenant_of(router), batch_id).to_batch()


@router.post(
    "/v1/batches/<batch_id>/cancel",
    summary="Cancel a batch; finished results are kept",
    responses=answers(Batch, 404, 409),
)
def cancel_batch(batch_id: IdInPath) -> Batch:
    return default_stages().batches.cancel(tenant_of(router), batch_id).to_batch()


@router.post(
    "/v1/batches/<batch_id>/retry",
    summary="A new batch of this batch's failed, expired and cancelled requests (extension)",
    responses=answers(Batch, 404, 409),
)
def retry_batch(batch_id: IdInPath) -> Batch:
    return default_stages().retries.retry(tenant_of(router), batch_id).to_batch()


@router.get(
    "/v1/batches/<batch_id>/results",
    summary="Result and error lines in input order, readable mid-run (extension)",
    description="A page of the batch's output and error lines together, in input order, each "
    "with its input `line`. `after` is the previous page's `last_id` (the SDKs' cursor paging). "
    "While the batch runs a page holds the lines finished so far: one that finishes later "
    "behind a cursor is seen by a new walk from the start. `custom_id` returns that "
    "request's line (found through an index, without reading the output).",
    responses=answers(ResultLineList, 400, 404),
)
def batch_results(
    batch_id: IdInPath,
    after: Annotated[
        str | None,
        Query(max_length=MAX_ID_CHARS, description="A result line id: the lines after it"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    custom_id: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=MAX_CUSTOM_ID_CHARS,
            description="Only the line of this custom_id",
        ),
    ] = None,
) -> ResultLineList:
    page = default_stages().batches.result_page(
        tenant_of(router), batch_id, after=after, limit=limit, custom_id=custom_id
    )
    lines = [ResultLine.model_validate(line) for line in page.data]
    return ResultLineList.of(lines, page.has_more)


@router.get(
    "/v1/batches/<batch_id>/result_parts",
    summary="The result part files written so far, readable mid-run (extension)",
    responses=answers(BatchResultParts, 404),
)
def batch_result_parts(batch_id: IdInPath) -> BatchResultParts:
    parts = default_stages().batches.result_parts(tenant_of(router), batch_id)
    return BatchResultParts(
        data=[ResultPartObject(kind=p.kind, bytes=p.bytes, url=p.url) for p in parts]
    )
