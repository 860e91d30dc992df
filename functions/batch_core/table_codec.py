"""Items to and from DynamoDB's typed values, the listing page, and the one place a conditional
write's refusal is told from a failure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Generic, TypeVar

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

_serializer = TypeSerializer()

_deserializer = TypeDeserializer()


T = TypeVar("T")
U = TypeVar("U")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing (raw item values, records, or API objects), and whether more
    follow: the one listing shape from the table to the API."""

    items: list[T]
    has_more: bool

    def map(self, convert: Callable[[T], U]) -> Page[U]:
        return Page([convert(item) for item in self.items], self.has_more)


def to_item(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _serializer.serialize(v) for k, v in values.items() if v is not None}


def from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: plain(_deserializer.deserialize(v)) for k, v in item.items()}


def plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def is_condition_failure(error: ClientError) -> bool:
    code = error.response.get("Error", {}).get("Code", "")
    return code in {"ConditionalCheckFailedException", "TransactionCanceledException"}


def unless_refused(call: Callable[..., Any], **request: Any) -> Any | None:
    """`call(**request)`'s response, or None when the write's condition refused it (a
    duplicate, a moved status, a taken lease): the one place a conditional write's "no" is
    told from a failure."""
    try:
        return call(**request)
    except ClientError as error:
        if is_condition_failure(error):
            return None
        raise
