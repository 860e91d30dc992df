"""The one item encoding, the listing page, and the one place a conditional write's refusal is
told from a failure.

Every item is its record's fields in DynamoDB's own types: a nested model (a File, an Upload, a
webhook endpoint, a batch's errors) is a map or a list of maps, so a write can reach into it
(`SET #file.#status = :s`), floats are numbers, and keys and index attributes sit beside the
fields. Items written before this encoding (JSON in `document` or `errors_json`, a File's
fields prefixed `file_`) are still read.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Generic, TypeVar

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError
from pydantic import BaseModel

_serializer = TypeSerializer()

_deserializer = TypeDeserializer()


T = TypeVar("T")
U = TypeVar("U")
R = TypeVar("R", bound=BaseModel)


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing (raw item values, records, or API objects), and whether more
    follow: the one listing shape from the table to the API."""

    items: list[T]
    has_more: bool

    def map(self, convert: Callable[[T], U]) -> Page[U]:
        return Page([convert(item) for item in self.items], self.has_more)


def to_item(values: Mapping[str, Any]) -> dict[str, Any]:
    """Plain values as DynamoDB's typed values; a None at the top is no attribute at all."""
    return {k: _serializer.serialize(storable(v)) for k, v in values.items() if v is not None}


def storable(value: Any) -> Any:
    """`value` with its floats as Decimals, the only numbers boto3 stores."""
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {k: storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable(v) for v in value]
    return value


def record_item(record: BaseModel, **keys: Any) -> dict[str, Any]:
    """A record as its item: its fields beside `keys` (pk, sk, listing and index attributes)."""
    return to_item({**keys, **record.model_dump()})


def record_from(model: type[R], values: Mapping[str, Any]) -> R:
    """A record from its item's plain values (keys and index attributes are ignored)."""
    return model.model_validate(_upgraded(values))


def _upgraded(values: Mapping[str, Any]) -> Mapping[str, Any]:
    """An item of the earlier encodings in this one: the JSON `document` of uploads, parts and
    webhooks, a batch's `errors_json`, a File's `file_`-prefixed fields."""
    if "document" in values:
        return {**values, **json.loads(values["document"])}
    if "errors_json" in values:
        return {**values, "errors": json.loads(values["errors_json"])}
    if "file" not in values and "file_id" in values:
        nested = {k[5:]: v for k, v in values.items() if k.startswith("file_")}
        return {**values, "file": nested}
    return values


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
    """A condition said no. A transaction cancelled for any other reason (another
    transaction on the same item at once, `TransactionConflict`; throttling) is not one: it
    is a failure to try again, not an answer."""
    code = error.response.get("Error", {}).get("Code", "")
    if code == "ConditionalCheckFailedException":
        return True
    if code != "TransactionCanceledException":
        return False
    reasons = error.response.get("CancellationReasons") or []
    codes = {str(reason.get("Code") or "None") for reason in reasons}
    # No reasons given (moto gives none at times): a condition, as before.
    return not codes or codes <= {"ConditionalCheckFailed", "None"}


def is_transaction_conflict(error: ClientError) -> bool:
    reasons = error.response.get("CancellationReasons") or []
    return any(reason.get("Code") == "TransactionConflict" for reason in reasons)


TRANSACTION_ATTEMPTS = 5
"""Tries of a transaction another one on the same item cancelled (DynamoDB cancels, rather
than queues, transactions that touch one item at once; botocore does not retry them)."""


def unless_refused(call: Callable[..., Any], **request: Any) -> Any | None:
    """`call(**request)`'s response, or None when the write's condition refused it (a
    duplicate, a moved status, a taken lease): the one place a conditional write's "no" is
    told from a failure. A transaction cancelled by a conflict is tried again, briefly."""
    for attempt in range(TRANSACTION_ATTEMPTS):
        try:
            return call(**request)
        except ClientError as error:
            if is_condition_failure(error):
                return None
            if not is_transaction_conflict(error) or attempt + 1 == TRANSACTION_ATTEMPTS:
                raise
            time.sleep(0.05 * 2**attempt * (1 + random.random()))
    return None  # pragma: no cover - the loop returns or raises
