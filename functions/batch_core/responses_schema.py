"""What a Responses API body (`/v1/responses`) must look like, checked at intake.

Every request of a batch stands alone: the workers keep no responses and run nothing in the
background, so what needs a stored response is refused here, by name, rather than failing on
the GPU.
"""

from __future__ import annotations

from typing import Any

from batch_core.errors import LineError

RESPONSE_ROLES = frozenset({"system", "developer", "user", "assistant"})
# Responses content parts that carry text (the rest: images, files, audio, tool output).
_RESPONSE_TEXT_PARTS = frozenset({"input_text", "output_text", "text", "refusal"})


def check_responses(body: dict[str, Any]) -> int:
    """A Responses API body (`/v1/responses`); returns its characters of input text.

    Every request of a batch stands alone: the workers keep no responses and run nothing in
    the background, so what needs a stored response is refused here, by name, rather than
    failing on the GPU."""
    if body.get("background"):
        raise LineError.invalid(
            "background is not supported in a batch: it already runs offline.", "body.background"
        )
    for name in ("previous_response_id", "conversation"):
        if body.get(name) is not None:
            raise LineError.invalid(
                f"{name} is not supported in a batch: no response is stored between requests;"
                " put the earlier turns in body.input.",
                f"body.{name}",
            )
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise LineError.invalid("body.instructions must be a string.", "body.instructions")
    chars = len(instructions or "")
    value = body.get("input")
    if isinstance(value, str) and value:
        return chars + len(value)
    if type(value) is not list or not value:
        raise LineError.invalid(
            "body.input must be a non-empty string or a list of input items.", "body.input"
        )
    for index, item in enumerate(value):
        where = f"body.input[{index}]"
        if type(item) is not dict:
            raise LineError.invalid(f"{where} must be an input item object.", where)
        role = item.get("role")
        if role is not None and role not in RESPONSE_ROLES:
            raise LineError.invalid(
                f"{where} needs a role among {', '.join(sorted(RESPONSE_ROLES))}, got {role!r}.",
                f"{where}.role",
            )
        if "content" in item:
            chars += _response_content_chars(item["content"], f"{where}.content")
        elif role is not None:
            raise LineError.invalid(f"{where}.content is required.", f"{where}.content")
    return chars


def _response_content_chars(content: object, where: str) -> int:
    if isinstance(content, str):
        return len(content)
    if type(content) is not list:
        raise LineError.invalid(
            f"Invalid '{where}': expected a string or a list of content parts.", where
        )
    chars = 0
    for index, part in enumerate(content):
        at = f"{where}[{index}]"
        kind = part.get("type") if type(part) is dict else None
        if not isinstance(kind, str):
            raise LineError.invalid(f"'{at}' must be a content part with a type.", f"{at}.type")
        if kind in _RESPONSE_TEXT_PARTS:
            text = part.get("text", part.get("refusal"))
            if not isinstance(text, str):
                raise LineError.invalid(f"'{at}.text' must be a string.", f"{at}.text")
            chars += len(text)
    return chars  # its media URLs: media_urls.media_urls_of, from request_schema.check_body
