"""What the OpenAPI document says each route answers: its success body, every error status
it can send (all in OpenAI's error shape), the bearer key, and the content types served.

Powertools builds the document from the routes; `answers()` is what a route declares, and
`finish()` takes out what Powertools adds but this API never sends (422 and its schemas).
"""

from __future__ import annotations

import re
from typing import Any

from aws_lambda_powertools.event_handler.openapi.types import (
    OpenAPIResponse,
    OpenAPIResponseContentModel,
    OpenAPIResponseContentSchema,
)

from batch_core.api_models import ErrorResponse

BEARER = "ApiKey"
"""The security scheme's name: `Authorization: Bearer <key>`, as the OpenAI SDKs send it."""

_WHY: dict[int, str] = {
    302: "Too large to answer inline: a redirect to a short-lived presigned URL",
    400: "A parameter or the body is invalid (`param` names it)",
    401: "No API key, or an unknown one",
    404: "No such object for this key's tenant, or an unknown URL",
    405: "The path exists; the method does not (the `Allow` header lists those that do)",
    409: "The object is not in a state that allows this",
    413: "The body is larger than one request carries",
    415: "The body's Content-Type is not what the route reads",
    429: "Over the tenant's share of requests; retry after a short wait",
    500: "The server had an error",
}
_EVERY_ROUTE = (400, 401, 429, 500)  # 400: any parameter, an id over its length included
_WITH_BODY = (400, 413, 415)

Content = dict[str, OpenAPIResponseContentSchema | OpenAPIResponseContentModel]


def answers(
    model: type[Any] | None,
    *errors: int,
    body: bool = False,
    content: Content | None = None,
    redirect: bool = False,
) -> dict[int, OpenAPIResponse]:
    """The responses of one route: 200 with `model` (or `content`), the route's own error
    statuses, those of every route, and those of a route that reads a body."""
    success = content or {"application/json": {"model": model}}
    responses: dict[int, OpenAPIResponse] = {200: {"description": "OK", "content": success}}
    if redirect:
        responses[302] = {
            "description": _WHY[302],
            "headers": {
                "Location": {"description": "The presigned URL", "schema": {"type": "string"}}
            },
        }
    error: Content = {"application/json": {"model": ErrorResponse}}
    for status in sorted({*errors, *_EVERY_ROUTE, *(_WITH_BODY if body else ())}):
        responses[status] = {"description": _WHY[status], "content": error}
    return responses


FILE_BYTES: Content = {
    media_type: {"schema": {"type": "string", "format": "binary"}}
    for media_type in ("application/jsonl", "application/octet-stream")
}
"""File content: the stored bytes, JSONL files as `application/jsonl`."""


def finish(document: dict[str, Any]) -> dict[str, Any]:
    """The document as the API behaves: no 422 anywhere (bad input is a 400 in OpenAI's
    shape), every route behind the bearer key, and a file part never empty."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            responses.pop("422", None)
            if "302" in responses:  # a redirect has no body (Powertools gives each one)
                responses["302"].pop("content", None)
    schemas = document.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError", "ResponseValidationError"):
        schemas.pop(unused, None)
    for name, schema in schemas.items():
        if name.startswith("Body_"):  # multipart bodies: a file part carries bytes
            for field in schema.get("properties", {}).values():
                _not_null(field)
                if field.get("format") == "binary":
                    field["minLength"] = 1
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                _not_null(parameter["schema"])
    document.setdefault("components", {})["securitySchemes"] = {
        BEARER: {"type": "http", "scheme": "bearer", "description": "An API key (sk-...)"}
    }
    document["security"] = [{BEARER: []}]
    return document


def _not_null(schema: dict[str, Any]) -> None:
    """A form field or a query parameter is sent or left out; it cannot be JSON's null, so
    `X | None` is documented as X (an optional parameter)."""
    choices = schema.get("anyOf")
    if choices and {"type": "null"} in choices:
        rest = [choice for choice in choices if choice != {"type": "null"}]
        if len(rest) == 1:
            del schema["anyOf"]
            schema.update(rest[0])


def path_rules(document: dict[str, Any]) -> list[tuple[re.Pattern[str], list[str]]]:
    """Each documented path as a pattern, with the methods it answers (for 405's Allow)."""
    rules = []
    for path, operations in document.get("paths", {}).items():
        pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(path))
        rules.append((re.compile(f"^{pattern}$"), sorted(m.upper() for m in operations)))
    return rules
