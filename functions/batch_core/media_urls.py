"""Which media URLs a request may make the workers fetch: deny by default.

A multimodal model fetches `image_url`, `video_url`, `audio_url` and friends from inside the
deployment, so a URL is a request the GPU host makes on the user's behalf. Inline `data:` URLs
are always fine; a remote URL only when its host is in `ALLOWED_MEDIA_DOMAINS` (exactly, as
vLLM's own `--allowed-media-domains` compares), and never an address on a private, loopback
or link-local network, whatever the list says. Intake refuses such a line with a clear error;
the engine checks again before vLLM sees the request, and vLLM fetches with redirects off.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

# Content part types whose payload is (or holds) a URL, and the key of the URL inside it.
_URL_PARTS = {
    "image_url": "url",
    "video_url": "url",
    "audio_url": "url",
    "input_image": "image_url",
    "input_file": "file_url",
    "file": "file_url",
}
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain", ".home.arpa")


@dataclass(frozen=True)
class MediaPolicy:
    """The hosts remote media may come from (empty: none, only inline data: URLs)."""

    allowed_domains: frozenset[str] = frozenset()

    @classmethod
    def of(cls, domains: Iterable[str]) -> MediaPolicy:
        return cls(frozenset(d.strip().lower().rstrip(".") for d in domains if d.strip()))

    def refusal(self, url: str) -> str | None:
        """Why the workers must not fetch `url`; None when they may."""
        if url[:5].lower() == "data:":
            return None
        try:
            parts = urlsplit(url.strip())
            host = (parts.hostname or "").rstrip(".")
        except ValueError:
            return "it is not a valid URL"
        if parts.scheme.lower() not in {"http", "https"}:
            return "only https, http and inline data: URLs are accepted"
        if not host:
            return "it names no host"
        if is_internal_host(host):
            return f"{host} is a private, loopback or link-local address"
        if not self.allowed_domains:
            return "remote media is not enabled here (ALLOWED_MEDIA_DOMAINS); send it inline"
        if host not in self.allowed_domains:
            allowed = ", ".join(sorted(self.allowed_domains))
            return f"{host} is not an allowed media domain ({allowed})"
        return None

    def vllm_domains(self) -> list[str]:
        """What vLLM's `--allowed-media-domains` gets. vLLM allows every host for an empty
        list, so "none" is a name no URL can have (the reserved `.invalid` domain)."""
        return sorted(self.allowed_domains) or ["media.invalid"]


def is_internal_host(host: str) -> bool:
    """A name or address that reaches this machine or a private network (never a target)."""
    name = host.lower().strip("[]")
    if name in _LOCAL_NAMES or name.endswith(_LOCAL_SUFFIXES):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        # Numeric forms the resolver still reads as addresses (2130706433, 0x7f.1, 127.1):
        # a real domain's last label is never a number.
        last = name.rsplit(".", 1)[-1]
        return last.isdigit() or last.startswith("0x")
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_global


def media_urls(content: object, where: str) -> Iterator[tuple[str, str]]:
    """(url, param) of every media URL in a message's content parts."""
    if not isinstance(content, list):
        return
    for index, part in enumerate(content):
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        key = _URL_PARTS.get(kind) if isinstance(kind, str) else None
        if key is None:
            continue
        payload: Any = part.get(kind)
        at = f"{where}[{index}].{kind}"
        if isinstance(payload, str):
            yield payload, at
        elif isinstance(payload, dict) and isinstance(payload.get(key), str):
            yield payload[key], f"{at}.{key}"
        elif payload is None and isinstance(part.get(key), str):
            # The Responses API's flat parts: {"type": "input_image", "image_url": "..."}
            yield part[key], f"{where}[{index}].{key}"


def first_refused(messages: object, policy: MediaPolicy) -> tuple[str, str] | None:
    """(param, reason) of the first media URL in chat `messages` that `policy` refuses."""
    if not isinstance(messages, list):
        return None
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            continue
        refused = refused_in(message.get("content"), f"body.messages[{index}].content", policy)
        if refused is not None:
            return refused
    return None


def refused_in(content: object, where: str, policy: MediaPolicy) -> tuple[str, str] | None:
    """(param, reason) of the first media URL in one message's `content` that `policy`
    refuses (chat messages and Responses input items alike)."""
    for url, param in media_urls(content, where):
        reason = policy.refusal(url)
        if reason is not None:
            return param, reason
    return None
