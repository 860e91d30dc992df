"""Media URLs: deny by default, never an internal address, the same rule at intake and in the
worker's engine settings."""

from __future__ import annotations

import json

import pytest

from batch_core.media_urls import MediaPolicy
from batch_core.validation import BatchValidator, iter_lines
from gpu_worker.engines.vllm_engine import engine_argv
from gpu_worker.settings import EngineSettings

INTERNAL = [
    "http://127.0.0.1/internal/admin",
    "http://localhost:8080/",
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://2130706433/",
    "http://0x7f.0.0.1/",
    "http://127.1/",
    "http://10.0.0.8/",
    "http://192.168.1.1/",
    "http://172.16.0.1/",
    "http://metadata.google.internal/",
    "http://printer.local/",
    "http://0.0.0.0/",
]
OTHER_SCHEMES = ["file:///etc/passwd", "gopher://example.com/", "ftp://example.com/x.png", "x"]


@pytest.mark.parametrize("url", INTERNAL)
def test_internal_addresses_are_refused_even_when_listed(url: str) -> None:
    from urllib.parse import urlsplit

    host = (urlsplit(url).hostname or "").rstrip(".")
    policy = MediaPolicy.of([host, "images.example.com"])
    reason = policy.refusal(url)
    assert reason is not None and "private, loopback or link-local" in reason


@pytest.mark.parametrize("url", OTHER_SCHEMES)
def test_only_http_https_and_data_urls(url: str) -> None:
    assert MediaPolicy.of(["example.com"]).refusal(url) is not None


def test_remote_media_is_off_by_default_and_on_per_exact_host() -> None:
    default = MediaPolicy()
    assert default.refusal("data:image/png;base64,iVBORw0KGgo=") is None
    reason = default.refusal("https://images.example.com/cat.png")
    assert reason is not None and "ALLOWED_MEDIA_DOMAINS" in reason
    listed = MediaPolicy.of(["images.example.com"])
    assert listed.refusal("https://images.example.com/cat.png") is None
    assert listed.refusal("https://evil.example.org/cat.png") is not None
    assert listed.refusal("https://sub.images.example.com/cat.png") is not None  # as vLLM


def line(url: str, kind: str = "image_url") -> bytes:
    part = {"type": kind, kind: {"url": url}}
    body = {"model": "m", "messages": [{"role": "user", "content": [part]}]}
    return json.dumps({"custom_id": "c", "body": body}).encode()


@pytest.mark.parametrize("kind", ["image_url", "video_url", "audio_url"])
def test_intake_refuses_internal_media_urls_naming_the_part(kind: str) -> None:
    validator = BatchValidator(endpoint=None, media=MediaPolicy.of(["images.example.com"]))
    lines = [line("http://169.254.169.254/latest/meta-data/", kind), line("data:,x", kind)]
    accepted = list(validator.validate(iter_lines([b"\n".join(lines)])))
    (error,) = validator.report().errors
    assert (error.line, error.code) == (1, "media_url_refused")
    assert error.param == f"body.messages[0].content[0].{kind}.url"
    assert [request.line for request in accepted] == [2]


def test_the_engine_gets_the_same_list_and_a_list_that_allows_nothing_by_default() -> None:
    def domains(argv: list[str]) -> list[str]:
        start = argv.index("--allowed-media-domains") + 1
        return [a for a in argv[start:] if not a.startswith("--")][:2]

    closed = engine_argv(EngineSettings(), "m", "m", on_cpu=True)
    assert domains(closed) == ["media.invalid"]
    opened = engine_argv(
        EngineSettings(allowed_media_domains="a.example.com,b.example.com"),  # type: ignore[arg-type]
        "m",
        "m",
        on_cpu=True,
    )
    assert domains(opened) == ["a.example.com", "b.example.com"]
