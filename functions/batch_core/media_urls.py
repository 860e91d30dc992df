"""Which media URLs a request may make the workers fetch: deny by default.

A multimodal model fetches `image_url`, `video_url`, `audio_url` and friends from inside the
deployment, so a URL is a request the GPU host makes on the user's behalf. Inline `data:` URLs
are always fine; a remote URL only when its host is in `ALLOWED_MEDIA_DOMAINS` (exactly, as
vLLM's own `--allowed-media-domains` compares), and never an address on a private, loopback
or link-local network (nor multicast, reserved, or such an address inside an IPv6 transition
form), whatever the list says. One walk (`media_urls_of`) finds every URL in a body, in every
shape the endpoints accept; intake refuses a line with such a URL with a clear error, the
worker applies the same walk before vLLM sees the request, and vLLM fetches with redirects off.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

# Keys whose value is a URL a model fetches (or an object holding it under `url`, `file_url`
# or `image_url`), wherever they sit in a content part and whatever its type says: vLLM reads
# a part that has a `uuid` by its keys, not by its type.
_URL_KEYS = ("image_url", "video_url", "audio_url", "file_url")
_URL_HOLDERS = (*_URL_KEYS, "file", "input_image")
_INNER_URL_KEYS = ("url", "file_url", "image_url")
# The fields of a score or rerank body that hold texts or content objects ({"content": [...]}).
_POOLING_FIELDS = (
    "query", "queries", "documents", "items", "text_1", "text_2", "data_1", "data_2",
)  # fmt: skip
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain", ".home.arpa")
# IPv6 ranges that are never a public host, beyond what `is_global` flags (Python 3.11 calls
# several of them global). NAT64's well-known prefix is not here: it embeds an IPv4 address,
# which gets the IPv4 rule.
_NOT_GLOBAL_V6 = tuple(
    ipaddress.IPv6Network(net)
    for net in (
        "::/96",  # IPv4-compatible (deprecated), with :: and ::1
        "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215): translates to private networks
        "2001::/32",  # Teredo: tunnels through a relay to an embedded IPv4 address
        "fec0::/10",  # site-local (deprecated)
        "3fff::/20",  # documentation (RFC 9637)
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = _NOT_GLOBAL_V6[0]
_SHOWN_HOST_CHARS = 80  # a refusal quotes the host: a tenant's string, so bounded


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
            return (
                f"{_shown(host)} is not a public address (private, loopback, link-local, "
                "multicast, reserved, or one of them inside an IPv6 transition address)"
            )
        if not self.allowed_domains:
            return "remote media is not enabled here (ALLOWED_MEDIA_DOMAINS); send it inline"
        if host not in self.allowed_domains:
            allowed = ", ".join(sorted(self.allowed_domains))
            return f"{_shown(host)} is not an allowed media domain ({allowed})"
        return None

    def vllm_domains(self) -> list[str]:
        """What vLLM's `--allowed-media-domains` gets. vLLM allows every host for an empty
        list, so "none" is a name no URL can have (the reserved `.invalid` domain)."""
        return sorted(self.allowed_domains) or ["media.invalid"]


def _shown(host: str) -> str:
    return host if len(host) <= _SHOWN_HOST_CHARS else host[:_SHOWN_HOST_CHARS] + "..."


def is_internal_host(host: str) -> bool:
    """A name or address that is not a public host on the internet (never a target): this
    machine, a private network, multicast, reserved, or any of them embedded in an IPv6
    transition address (mapped, compatible, NAT64, 6to4, Teredo). Shared by media URLs and
    webhook endpoints."""
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
    return _is_internal_address(address)


def _is_internal_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv4Address):
        # is_global misses multicast (224/4) on Python 3.11.
        return not address.is_global or address.is_multicast
    if any(_is_internal_address(embedded) for embedded in _embedded_ipv4(address)):
        return True
    if address.ipv4_mapped is not None or address in _NAT64:
        return False  # the embedded address is the host reached, and it is public
    return (
        not address.is_global
        or address.is_multicast
        or address.is_reserved
        or address.is_site_local
        or any(address in net for net in _NOT_GLOBAL_V6)
    )


def _embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 transition form reaches (none: not such a form)."""
    if address.ipv4_mapped is not None:
        return (address.ipv4_mapped,)
    if address.sixtofour is not None:
        return (address.sixtofour,)
    if address.teredo is not None:
        return address.teredo  # the relay server, and the client behind it
    if address in _NAT64 or address in _IPV4_COMPATIBLE:
        return (ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF),)
    return ()


def media_urls_of(body: Mapping[str, Any], endpoint: str | None) -> Iterator[tuple[str, str]]:
    """(url, param) of every URL in a request body that a worker would fetch: the one walk
    intake (`request_schema.check_body`) and the worker (`shard_run`) both apply. `endpoint`
    picks the shapes to walk; an unknown one (or None) walks them all."""
    walks = _WALKS.get(endpoint or "") or _ALL_WALKS
    for walk in walks:
        yield from walk(body)


def refused_media(
    body: Mapping[str, Any], endpoint: str | None, policy: MediaPolicy
) -> tuple[str, str] | None:
    """(param, reason) of the first URL in `body` that `policy` refuses; None when none is."""
    for url, param in media_urls_of(body, endpoint):
        reason = policy.refusal(url)
        if reason is not None:
            return param, reason
    return None


def _part_urls(part: object, at: str) -> Iterator[tuple[str, str]]:
    """URLs of one content part (or anything shaped like one), by its keys."""
    if type(part) is not dict:
        return
    for key in _URL_HOLDERS:
        value = part.get(key)
        if isinstance(value, str) and key in _URL_KEYS:
            yield value, f"{at}.{key}"
        elif type(value) is dict:
            for inner in _INNER_URL_KEYS:
                if isinstance(value.get(inner), str):
                    yield value[inner], f"{at}.{key}.{inner}"


def _parts_urls(content: object, at: str) -> Iterator[tuple[str, str]]:
    """URLs of a list of content parts (a string or anything else has none)."""
    if type(content) is list:
        for index, part in enumerate(content):
            yield from _part_urls(part, f"{at}[{index}]")


def _messages(body: Mapping[str, Any], field: str = "messages") -> Iterator[tuple[str, str]]:
    """Chat messages (chat completions, chat-style embeddings): their content parts."""
    messages = body.get(field)
    if type(messages) is list:
        for index, message in enumerate(messages):
            if type(message) is dict:
                yield from _parts_urls(message.get("content"), f"body.{field}[{index}].content")


def _responses_input(body: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """Responses input items, with or without a role: a message's content parts, a tool
    output's parts (a list, or one object such as a computer screenshot), a bare part."""
    items = body.get("input")
    if type(items) is not list:
        return
    for index, item in enumerate(items):
        if type(item) is not dict:
            continue
        at = f"body.input[{index}]"
        yield from _part_urls(item, at)
        yield from _parts_urls(item.get("content"), f"{at}.content")
        output = item.get("output")
        yield from _part_urls(output, f"{at}.output")
        yield from _parts_urls(output, f"{at}.output")


def _responses_extras(body: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """An `mcp` tool's server, and vLLM's `previous_input_messages` (chat messages)."""
    tools = body.get("tools")
    if type(tools) is list:
        for index, tool in enumerate(tools):
            if type(tool) is dict and isinstance(tool.get("server_url"), str):
                yield tool["server_url"], f"body.tools[{index}].server_url"
    yield from _messages(body, "previous_input_messages")


def _pooling(body: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """Score and rerank texts: a string, a content object {"content": [parts]}, a bare part,
    or a list of them."""
    for field in _POOLING_FIELDS:
        value = body.get(field)
        values = enumerate(value) if type(value) is list else [(None, value)]
        for index, item in values:
            at = f"body.{field}" if index is None else f"body.{field}[{index}]"
            if type(item) is dict:
                yield from _part_urls(item, at)
                yield from _parts_urls(item.get("content"), f"{at}.content")


_Walk = Callable[[Mapping[str, Any]], Iterator[tuple[str, str]]]
_WALKS: dict[str, tuple[_Walk, ...]] = {
    "/v1/chat/completions": (_messages,),
    "/v1/embeddings": (_messages,),
    "/v1/responses": (_responses_input, _responses_extras),
    "/v1/score": (_pooling,),
    "/v1/rerank": (_pooling,),
    "/v1/completions": (),
}
_ALL_WALKS: tuple[_Walk, ...] = (_messages, _responses_input, _responses_extras, _pooling)
