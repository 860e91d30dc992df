"""The text a request sends, as chat messages (chat, chat-style embeddings) or as a prompt or
input (completions, embeddings): checked as OpenAI checks it, counted in characters."""

from __future__ import annotations

import zlib
from typing import Any

import orjson

from batch_core.endpoints.quoting import quoted
from batch_core.endpoints.sampling import is_int
from batch_core.errors import LineError

CHAT_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
CONTENT_PART_TYPES = frozenset(
    {
        "text",
        "image_url",
        "input_audio",
        "audio_url",
        "video_url",
        "file",
        "refusal",
        "image_embeds",
        "image_pil",
        "input_image",
        "input_text",
    }
)


def _text_chars(content: object, where: str) -> int:
    """Characters of text in a message's content; raises for content OpenAI would refuse."""
    if isinstance(content, str):
        return len(content)
    if not isinstance(content, list):
        raise LineError(
            "invalid_request",
            f"Invalid '{where}': expected a string or a list of content parts.",
            where,
        )
    chars = 0
    for index, part in enumerate(content):
        part_at = f"{where}[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in CONTENT_PART_TYPES:
            raise LineError(
                "invalid_request",
                f"Invalid '{part_at}.type': expected one of "
                f"{', '.join(sorted(CONTENT_PART_TYPES))}, got {quoted(kind)}.",
                f"{part_at}.type",
            )
        assert isinstance(part, dict)
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise LineError(
                    "invalid_request", f"'{part_at}.text' must be a string.", f"{part_at}.text"
                )
            chars += len(text)
        elif kind == "image_url":
            image = part.get("image_url")
            if not isinstance(image, dict) or not isinstance(image.get("url"), str):
                raise LineError(
                    "invalid_request",
                    f"'{part_at}.image_url' must be an object with a 'url' string.",
                    f"{part_at}.image_url",
                )
    return chars


def check_messages(messages: object) -> tuple[int, int]:
    """Characters of prompt text, and a digest of the leading messages (0: none).

    The leading messages are all but the last one: a shared system prompt or few-shot
    preamble, which the shard planner keeps together for vLLM's prefix cache. The digest is
    a CRC of the contents: it only picks a shard slot, so a collision merely shares one.
    """
    if type(messages) is not list or not messages:
        raise LineError(
            "invalid_request", "body.messages must be a non-empty list.", "body.messages"
        )
    chars = 0
    prefix = 0
    last = len(messages) - 1
    for index, message in enumerate(messages):
        role = message.get("role") if type(message) is dict else None
        if role not in CHAT_ROLES:
            where = f"body.messages[{index}]"
            raise LineError(
                "invalid_request",
                f"{where} needs a role among {', '.join(sorted(CHAT_ROLES))}, got {quoted(role)}.",
                f"{where}.role",
            )
        content = message.get("content")
        if type(content) is str:  # the common case, kept short
            chars += len(content)
        else:
            chars += _other_content(message, role, content, f"body.messages[{index}]")
        if index < last:
            text = content.encode() if type(content) is str else orjson.dumps(content)
            prefix = zlib.crc32(text, prefix)
        if role == "tool" and type(message.get("tool_call_id")) is not str:
            where = f"body.messages[{index}]"
            raise LineError(
                "invalid_request",
                f"{where} has role 'tool' and needs a 'tool_call_id' string.",
                f"{where}.tool_call_id",
            )
    return chars, (prefix or 1) if last else 0


def _other_content(message: dict[str, Any], role: str, content: object, where: str) -> int:
    if content is None:
        if role == "assistant" and (message.get("tool_calls") or message.get("function_call")):
            return 0
        raise LineError("invalid_request", f"{where}.content is required.", f"{where}.content")
    return _text_chars(content, f"{where}.content")


def prompt_chars(value: object, name: str) -> int:
    """Characters of a completions prompt or an embeddings input (strings or token ids)."""
    if isinstance(value, str) and value:
        return len(value)
    if isinstance(value, list) and value:
        if all(isinstance(item, str) for item in value):
            return sum(len(item) for item in value)
        if all(is_int(item) for item in value):
            return 4 * len(value)  # token ids: about four characters each
        if all(isinstance(item, list) and all(is_int(t) for t in item) for item in value):
            return 4 * sum(len(item) for item in value)
    raise LineError(
        "invalid_request",
        f"body.{name} must be a non-empty string, a list of strings, or token ids.",
        f"body.{name}",
    )
