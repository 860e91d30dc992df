"""An item's size as DynamoDB counts it against its 400 KB limit (for tests that must stay under).

The rules of "Item sizes and formats" in the DynamoDB developer guide: attribute names and
strings in UTF-8 bytes, numbers about one byte per two significant digits plus one, binary
as is, null and booleans one byte, lists and maps three bytes plus one per element (a map's
keys count as names).
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from batch_core.repository import batch_pk

if TYPE_CHECKING:
    from batchctl.local import LocalStack

ITEM_LIMIT_BYTES = 400 * 1024


def item_bytes(item: dict[str, Any]) -> int:
    """Bytes of an item in DynamoDB's wire form (`{"name": {"S": "..."}, ...}`)."""
    return sum(len(name.encode()) + _value_bytes(value) for name, value in item.items())


def batch_item_bytes(stack: LocalStack, batch_id: str) -> int:
    """The size of a batch's item as stored in the local stack's table."""
    item = stack.session.client("dynamodb").get_item(
        TableName=stack.physical_id("BatchTable"),
        Key={"pk": {"S": batch_pk(batch_id)}, "sk": {"S": "META"}},
        ConsistentRead=True,
    )["Item"]
    return item_bytes(item)


def _value_bytes(value: dict[str, Any]) -> int:
    ((kind, inner),) = value.items()
    if kind == "S":
        return len(str(inner).encode())
    if kind == "N":
        digits = Decimal(inner).normalize().as_tuple().digits
        return (len(digits) + 1) // 2 + 1
    if kind == "B":
        return len(inner)
    if kind in {"NULL", "BOOL"}:
        return 1
    if kind == "L":
        return 3 + sum(1 + _value_bytes(element) for element in inner)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + _value_bytes(v) for k, v in inner.items())
    if kind == "SS":
        return sum(len(s.encode()) for s in inner)
    if kind == "NS":
        return sum(_value_bytes({"N": n}) for n in inner)
    raise ValueError(f"unknown DynamoDB type {kind}")
