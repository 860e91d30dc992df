"""A transaction DynamoDB cancels because another one touched the same item at once
(`TransactionConflict`) is tried again, not read as its condition saying no; moto never
cancels that way, so the shapes here are DynamoDB's own."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from batch_core import table_codec
from batch_core.table_codec import is_condition_failure, unless_refused


def cancelled(*codes: str) -> ClientError:
    response: Any = {
        "Error": {"Code": "TransactionCanceledException", "Message": "cancelled"},
        "CancellationReasons": [{"Code": code} for code in codes],
    }
    return ClientError(response, "TransactWriteItems")


def test_only_a_condition_is_a_refusal() -> None:
    assert is_condition_failure(cancelled("None", "ConditionalCheckFailed"))
    assert not is_condition_failure(cancelled("TransactionConflict", "None"))
    assert not is_condition_failure(cancelled("ThrottlingError"))


def test_a_conflict_is_tried_again_and_a_lasting_one_raises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(table_codec.time, "sleep", lambda seconds: None)
    answers: list[Any] = [cancelled("TransactionConflict"), {"ok": True}]

    def call(**_: Any) -> Any:
        answer = answers.pop(0)
        if isinstance(answer, ClientError):
            raise answer
        return answer

    assert unless_refused(call) == {"ok": True}
    answers[:] = [cancelled("TransactionConflict")] * table_codec.TRANSACTION_ATTEMPTS
    with pytest.raises(ClientError):
        unless_refused(call)
    answers[:] = [cancelled("ConditionalCheckFailed")]
    assert unless_refused(call) is None
