"""The console: a static page at `/` of the API that talks only to the public /v1 API.

Three files (`console/`), no build step and nothing fetched from elsewhere; the Content
Security Policy holds the page to its own origin and, for calls, to the stack's bucket too:
a file over the inline limit is content by redirect to a presigned S3 URL, which the page's
fetch follows (the bucket answers it cross-origin: its CORS rule). They are served without a
key (they hold no data): the page asks for one and sends it with each API call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router

from batch_core.wiring import default_stages

router = Router()  # type: ignore[no-untyped-call]

FILES = Path(__file__).parent / "console"
ASSETS = {"console.js": "text/javascript", "console.css": "text/css"}
PUBLIC_PATHS = frozenset({"/", *(f"/console/{name}" for name in ASSETS)})
"""The paths served without a key."""

HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def download_origin() -> str:
    """The origin of this stack's presigned URLs (`https://<bucket>.s3.<region>.amazonaws.com`
    on AWS, the moto server locally): the one place besides the API the page may fetch from.
    Read off a URL signed for no real key: signing is local, and it is exactly what the
    content route redirects to, whatever the region's or the endpoint's addressing."""
    parts = urlsplit(default_stages().store.presigned_url("console-origin", 60))
    return f"{parts.scheme}://{parts.netloc}"


def content_security_policy() -> str:
    # Own origin only: scripts and styles from these files, calls to this API and the bucket's
    # presigned downloads, saved as blobs; no frames, no forms posting elsewhere, no inline code.
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; "
        f"connect-src 'self' {download_origin()}; img-src 'self' data:; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    )


def _file(name: str, content_type: str) -> Response[Any]:
    return Response(
        status_code=200,
        content_type=f"{content_type}; charset=utf-8",
        body=(FILES / name).read_text(encoding="utf-8"),
        headers={**HEADERS, "Content-Security-Policy": content_security_policy()},
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
