"""What the API's route modules share: the id in a path, the tenant of the request, the
request body's size limit."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Path

from batch_core.api_models import MAX_ID_CHARS
from batch_core.errors import PayloadTooLargeError
from batch_core.wiring import default_stages

IdInPath = Annotated[str, Path(min_length=1, max_length=MAX_ID_CHARS)]
"""An object id in the URL: longer ones than any issued are refused before a table lookup."""


def tenant_of(router: Router) -> str:
    """The tenant the gate authenticated for this request."""
    tenant: str = router.context["tenant"]
    return tenant


def check_size(data: bytes, what: str) -> None:
    limit = default_stages().settings.max_request_body_bytes
    if len(data) > limit:
        raise PayloadTooLargeError(
            f"The {what} is {len(data)} bytes; one request carries at most {limit}. "
            "Send larger files in parts through /v1/uploads.",
            param=what,
        )
