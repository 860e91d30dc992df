"""The console: a static page at `/` of the API that talks only to the public /v1 API.

Three files (`console/`), no build step and nothing fetched from elsewhere; the Content
Security Policy holds the page to its own origin. They are served without a key (they hold
no data): the page asks for one and sends it with each API call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router

router = Router()  # type: ignore[no-untyped-call]

FILES = Path(__file__).parent / "console"
ASSETS = {"console.js": "text/javascript", "console.css": "text/css"}
PUBLIC_PATHS = frozenset({"/", *(f"/console/{name}" for name in ASSETS)})
"""The paths served without a key."""

HEADERS = {
    # Own origin only: scripts and styles from these files, calls to this API, downloads as
    # blobs; no frames, no forms posting elsewhere, no inline code.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _file(name: str, content_type: str) -> Response[Any]:
    return Response(
        status_code=200,
        content_type=f"{content_type}; charset=utf-8",
        body=(FILES / name).read_text(encoding="utf-8"),
        headers=HEADERS,
    )


@router.get("/", include_in_schema=False)
def console_page() -> Response[Any]:
    # Behind API Gateway the page is at /<stage>/: without the slash its relative links
    # (console/..., v1/...) would miss the stage.
    context = router.current_event.raw_event.get("requestContext") or {}
    public_path = str(context.get("path") or "/")
    if not public_path.endswith("/"):
        return Response(status_code=301, headers={"Location": public_path + "/"}, body="")
    return _file("index.html", "text/html")


@router.get("/console/<name>", include_in_schema=False)
def console_asset(name: str) -> Response[Any]:
    if name not in ASSETS:
        return Response(
            status_code=404,
            content_type="application/json",
            body='{"error": {"message": "No such console file.", "type": '
            '"invalid_request_error", "param": null, "code": "not_found"}}',
        )
    return _file(name, ASSETS[name])
