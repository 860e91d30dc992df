"""Media URLs: deny by default, never an internal address, the same rule at intake and in the
worker's engine settings."""

from __future__ import annotations

import json

import pytest

from batch_core.media_urls import MediaPolicy, is_internal_host
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
    # Not globally routable, or a transition form whose embedded IPv4 address is internal:
    "http://[::127.0.0.1]/",  # IPv4-compatible (deprecated ::/96)
    "http://[::a9fe:a9fe]/",  # the same, hex-written 169.254.169.254
    "http://[::ffff:10.0.0.1]/",  # IPv4-mapped private
    "http://[::ffff:0:7f00:1]/",  # IPv4-translated (SIIT) loopback
    "http://[64:ff9b::7f00:1]/",  # NAT64 well-known prefix, loopback inside
    "http://[64:ff9b::169.254.169.254]/",  # NAT64 of the metadata service
    "http://[64:ff9b:1::808:808]/",  # local-use NAT64 (RFC 8215): never global
    "http://[2002:a9fe:a9fe::1]/",  # 6to4 of 169.254.169.254
    "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
    "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",  # Teredo
    "http://[2001:0:a00:1::f5ff:fffe]/",  # Teredo, 10.0.0.1 as its server
    "http://224.0.0.1/",  # IPv4 multicast
    "http://239.255.255.250/",  # IPv4 multicast (SSDP)
    "http://[ff02::1]/",  # IPv6 multicast, link scope
    "http://[ff0e::1]/",  # IPv6 multicast, global scope: still not a host
    "http://[::]/",  # unspecified
    "http://240.0.0.1/",  # reserved
    "http://255.255.255.255/",  # broadcast
    "http://[fec0::1]/",  # site-local (deprecated)
    "http://[3fff::1]/",  # documentation (RFC 9637)
    "http://100.64.0.1/",  # shared address space (carrier NAT)
    "http://[fe80::1%25eth0]/",  # link-local with a zone
]
# Global addresses, also when written in a transition form: the rule is not "refuse all IPv6".
PUBLIC = [
    "8.8.8.8",
    "2606:4700:4700::1111",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
    "2002:808:808::1",
    "images.example.com",
]
OTHER_SCHEMES = ["file:///etc/passwd", "gopher://example.com/", "ftp://example.com/x.png", "x"]


@pytest.mark.parametrize("url", INTERNAL)
def test_internal_addresses_are_refused_even_when_listed(url: str) -> None:
    from urllib.parse import urlsplit

    host = (urlsplit(url).hostname or "").rstrip(".")
    policy = MediaPolicy.of([host, "images.example.com"])
    reason = policy.refusal(url)
    assert reason is not None and "is not a public address" in reason


@pytest.mark.parametrize("host", PUBLIC)
def test_global_addresses_pass_the_internal_address_rule(host: str) -> None:
    assert not is_internal_host(host)
    assert (
        MediaPolicy.of([host]).refusal(
            f"https://[{host}]/x.png" if ":" in host else f"https://{host}/x.png"
        )
        is None
    )


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
