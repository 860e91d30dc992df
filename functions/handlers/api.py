"""The OpenAI-compatible HTTP API (API Gateway REST -> Lambda): /v1/files, /v1/uploads and
/v1/batches as the openai SDK calls them, plus two extensions (`/results`, `/retry`).

A gate (`_admit`) authenticates and checks the body's bytes before any route parses it;
each route (`api_files`: files and uploads; `api_batches`: batches; `api_webhooks`: webhook
endpoints) then makes one call on the core and returns the object.
Typed core errors become OpenAI's error shape in one place (`_error_response`).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from batch_core.batch_params import problem_of
from batch_core.errors import (
    AuthenticationError,
    BatchCoreError,
    ConflictError,
    InvalidRequestError,
    LineError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitError,
)
from batch_core.json_bounds import check_bounds
from batch_core.wiring import (
    AwsError,
    default_api_keys,
    default_rate_limiter,
    default_stages,
    is_throttled,
)
from handlers import api_batches, api_console, api_files, api_webhooks
from handlers.api_document import finish, path_rules

logger = Logger()
tracer = Tracer()
metrics = Metrics()
app = APIGatewayRestResolver(enable_validation=True)
app.include_router(api_files.router)
app.include_router(api_batches.router)
app.include_router(api_webhooks.router)
app.include_router(api_console.router)

OPENAPI_PATH = "/openapi.json"
API_TITLE = "openbatch: OpenAI-compatible Batch API"
API_VERSION = "1.0.0"

_STATUS: list[tuple[type[BatchCoreError], int, str]] = [
    (AuthenticationError, 401, "invalid_request_error"),
    (RateLimitError, 429, "rate_limit_error"),
    (NotFoundError, 404, "invalid_request_error"),
    (ConflictError, 409, "invalid_request_error"),
    (PayloadTooLargeError, 413, "invalid_request_error"),
    (InvalidRequestError, 400, "invalid_request_error"),
    (LineError, 400, "invalid_request_error"),
]


def _error_response(
    status: int,
    message: str,
    *,
    error_type: str,
    param: str | None,
    code: str | None,
    headers: dict[str, str] | None = None,
) -> Response[Any]:
    """OpenAI's error shape: {"error": {"message", "type", "param", "code"}}."""
    return Response(
        status_code=status,
        content_type="application/json",
        body=_error_body(message, error_type=error_type, param=param, code=code),
        headers=headers,
    )


def _retry_headers(error: BatchCoreError) -> dict[str, str]:
    """How long a client should wait before asking again, as OpenAI's SDKs read it
    (`retry-after-ms` first, then `retry-after` in whole seconds)."""
    if error.retry is False:
        return {"x-should-retry": "false"}
    wait_ms = error.retry_after_ms if isinstance(error, RateLimitError) else None
    if wait_ms is None:
        return {}
    return {"retry-after-ms": str(wait_ms), "retry-after": str(-(-wait_ms // 1000))}


def _error_body(
    message: str, *, error_type: str, param: str | None, code: str | None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def _status_of(error: BatchCoreError) -> tuple[int, str]:
    for error_class, status, error_type in _STATUS:
        if isinstance(error, error_class):
            return status, error_type
    return 500, "server_error"


@app.exception_handler(BatchCoreError)  # type: ignore[untyped-decorator]
def _core_error(error: BatchCoreError) -> Response[Any]:
    status, error_type = _status_of(error)
    if status == 500:
        logger.exception("unexpected core error")
        return _error_response(
            500, "The server had an error.", error_type="server_error", param=None, code=error.code
        )
    return _error_response(
        status,
        str(error),
        error_type=error_type,
        param=error.param,
        code=error.code,
        headers=_retry_headers(error),
    )


@app.exception_handler(RequestValidationError)  # type: ignore[untyped-decorator]
def _invalid_request(error: RequestValidationError) -> Response[Any]:
    problems = error.errors()
    first = problems[0] if problems else {}
    kind = first.get("type")
    if kind == "json_invalid":
        reason = (first.get("ctx") or {}).get("error", "invalid JSON")
        where = [part for part in first.get("loc", ()) if isinstance(part, int)]
        at = f" at character {where[0]}" if where else ""
        return _error_response(
            400,
            f"We could not parse the JSON body of your request ({reason}{at}); this route "
            "expects a JSON object.",
            error_type="invalid_request_error",
            param=None,
            code="invalid_json",
        )
    message, param = problem_of(first)
    if param is None:  # the body as a whole: empty, `null`, a list, a string...
        return _error_response(
            400,
            "The request body must be a JSON object with this route's parameters.",
            error_type="invalid_request_error",
            param=None,
            code="invalid_body",
        )
    missing = kind == "missing"
    return _error_response(
        400,
        message,
        error_type="invalid_request_error",
        param=param,
        code="missing_required_parameter" if missing else "invalid_value",
    )


@app.exception_handler(RequestUnsupportedContentType)  # type: ignore[untyped-decorator]
def _unsupported_type(error: RequestUnsupportedContentType) -> Response[Any]:
    content_type = app.current_event.get_header_value("content-type", default_value="") or ""
    return _error_response(
        415,
        f"Unsupported Content-Type {content_type[:100]!r} for this route; send "
        "application/json (or multipart/form-data for file uploads).",
        error_type="invalid_request_error",
        param="Content-Type",
        code="unsupported_media_type",
    )


@app.exception_handler(ValueError)  # type: ignore[untyped-decorator]
def _unreadable_body(error: ValueError) -> Response[Any]:
    """Powertools' body parsers raise ValueError on a body they cannot read (a multipart
    body cut short, a broken part header): the client's fault, not a 5xx."""
    logger.warning("unreadable request body", exc_info=True)
    return _error_response(
        400,
        f"The request body could not be read: {str(error)[:200]}",
        error_type="invalid_request_error",
        param=None,
        code="invalid_body",
    )


@app.exception_handler(AwsError)  # type: ignore[untyped-decorator]
def _aws_error(error: AwsError) -> Response[Any]:
    """AWS pushing back becomes OpenAI's 429 (the client's retry handles it); anything else
    from AWS is our fault: a 500 in OpenAI's shape, logged with its trace."""
    if is_throttled(error):
        return _error_response(
            429,
            "Too many requests right now; retry after a short wait.",
            error_type="rate_limit_error",
            param=None,
            code="rate_limit_exceeded",
            headers={"retry-after-ms": "1000", "retry-after": "1"},  # AWS backs off in seconds
        )
    logger.exception("AWS call failed")
    return _error_response(
        500, "The server had an error.", error_type="server_error", param=None, code=None
    )


@app.not_found
def _no_route(_: Exception) -> Response[Any]:
    event = app.current_event
    for pattern, methods in _path_rules():
        if pattern.match(event.path) and event.http_method in methods:
            # The route's own id rule refused the segment (say, a character no id has).
            return _error_response(
                404,
                f"No such object: {event.path}.",
                error_type="invalid_request_error",
                param=None,
                code="not_found",
            )
        if pattern.match(event.path):
            response = _error_response(
                405,
                f"{event.http_method} is not allowed on {event.path}; use {' or '.join(methods)}.",
                error_type="invalid_request_error",
                param=None,
                code="method_not_allowed",
            )
            response.headers["Allow"] = ", ".join(methods)
            return response
    return _error_response(
        404,
        f"Unknown request URL: {event.http_method} {event.path}.",
        error_type="invalid_request_error",
        param=None,
        code="unknown_url",
    )


@app.get(OPENAPI_PATH, include_in_schema=False)
def openapi_document() -> Response[Any]:
    return Response(status_code=200, content_type="application/json", body=openapi_json())


def openapi_json() -> str:
    """The OpenAPI document of this API (checked in as docs/openapi.json)."""
    return json.dumps(_openapi_document(), indent=2)


@cache
def _openapi_document() -> dict[str, Any]:
    schema = app.get_openapi_json_schema(title=API_TITLE, version=API_VERSION)
    document: dict[str, Any] = finish(json.loads(schema))
    return document


@cache
def _path_rules() -> list[tuple[re.Pattern[str], list[str]]]:
    return path_rules(_openapi_document())


# -- the gate: before any route parses a body ----------------------------------------


def _admit(event: dict[str, Any]) -> dict[str, Any] | None:
    """The key, the tenant's rate and the body's bytes, checked before Powertools parses or
    validates anything: an anonymous or hostile request costs one lookup and gets a 4xx in
    OpenAI's shape. Returns the refusal, or None (the tenant is in the resolver's context)."""
    app.clear_context()  # type: ignore[no-untyped-call]
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    try:
        tenant = None
        path = event.get("path")
        console = path in api_console.PUBLIC_PATHS and event.get("httpMethod") == "GET"
        if path != OPENAPI_PATH and not console:
            tenant = default_api_keys().tenant_of(headers.get("authorization"))
            default_rate_limiter().admit(tenant, str(event.get("httpMethod") or "POST"))
        _check_body(event, headers.get("content-type", ""))
    except BatchCoreError as error:
        status, error_type = _status_of(error)
        body = _error_body(str(error), error_type=error_type, param=error.param, code=error.code)
        return {  # no resolver has run: the proxy response itself
            "statusCode": status,
            "headers": {"Content-Type": "application/json", **_retry_headers(error)},
            "body": json.dumps(body),
            "isBase64Encoded": False,
        }
    if tenant is not None:
        app.append_context(tenant=tenant)  # type: ignore[no-untyped-call]
    return None


def _check_body(event: dict[str, Any], content_type: str) -> None:
    """What every body must be before a parser sees it: within the size one request
    carries; multipart with its boundary; anything else UTF-8 JSON within the JSON bounds."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "multipart/form-data" and "boundary=" not in content_type.lower():
        raise InvalidRequestError(
            "A multipart/form-data body needs a boundary in its Content-Type header.",
            param="Content-Type",
            code="invalid_value",
        )
    text = event.get("body")
    if not text:
        return
    limit = default_stages().settings.max_request_body_bytes
    if event.get("isBase64Encoded"):
        if len(text) > limit * 4 // 3 + 4:
            raise PayloadTooLargeError(
                f"The request body is over {limit} bytes; send large files in parts through "
                "/v1/uploads.",
            )
        try:
            data = base64.b64decode(text, validate=True)
        except binascii.Error as error:
            raise InvalidRequestError("The request body is not valid base64.") from error
    else:
        data = text.encode("utf-8", "surrogateescape")
    if media_type == "multipart/form-data":
        return
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidRequestError(
            f"The request body is not valid UTF-8 (byte {error.start}).",
            code="invalid_encoding",
        ) from error
    check_bounds(data)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler(capture_response=False)  # responses carry file bytes and URLs
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    refusal = _admit(event)
    if refusal is not None:
        return refusal
    return app.resolve(event, context)


if __name__ == "__main__":
    print(openapi_json())
