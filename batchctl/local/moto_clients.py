"""moto's thread-safety and timing quirks, and a limit S3 enforces that moto does not, on the
clients of a local stack only.

`adapt_to_moto` is the wiring's client hook while a local stack runs (see wiring.add_client_hook):
production code never sees these adaptations.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from botocore.exceptions import ClientError


def _serialize_calls(client: Any) -> None:
    """Send one client's calls one at a time.

    moto's DynamoDB is not thread-safe: a transaction that fails restores a copy of the whole
    table taken when it began, losing what other threads wrote meanwhile, and concurrent ADD
    updates can lose increments. Real DynamoDB serializes both. Every component of the local
    stack shares the service's DynamoDB client, so one lock around it gives moto the same
    guarantee (other processes, such as the fault tests' workers, have clients of their own).
    """
    lock = threading.Lock()
    client_class = type(client)

    def serialized(operation_name: str, params: dict[str, Any]) -> Any:
        with lock:  # looked up on the class each time, so class-level hooks (the bench) apply
            return client_class._make_api_call(client, operation_name, params)

    client._make_api_call = serialized


_TOKEN_ATTEMPTS = 20
_TOKEN_RETRY_SECONDS = 0.25


def _retry_fresh_tokens(client: Any) -> None:
    """moto registers a task token's waiter only after the message carrying it was sent, so
    the finalize function can see a fresh token refused as InvalidToken for a moment: retry
    it briefly (a token that stays refused, one a duplicate already used, then reaches the
    tracker client as InvalidToken, which it reads as "no execution waits")."""
    send = client.send_task_success

    def send_task_success(**request: Any) -> Any:
        for attempt in range(_TOKEN_ATTEMPTS):
            try:
                return send(**request)
            except ClientError as error:
                code = error.response.get("Error", {}).get("Code")
                if code != "InvalidToken" or attempt + 1 == _TOKEN_ATTEMPTS:
                    raise
                time.sleep(_TOKEN_RETRY_SECONDS)
        return None  # pragma: no cover - the loop returns or raises

    client.send_task_success = send_task_success


S3_MAX_KEY_BYTES = 1024
_KEYED_S3_CALLS = {
    "PutObject",
    "CopyObject",
    "CreateMultipartUpload",
    "UploadPart",
    "UploadPartCopy",
    "CompleteMultipartUpload",
}


def _refuse_long_keys(client: Any) -> None:
    """S3 refuses a key over 1,024 UTF-8 bytes (KeyTooLongError); moto stores it. The local
    stack refuses it as S3 does, so every test meets the limit a deployment would."""
    make_call = client._make_api_call

    def refusing(operation_name: str, params: dict[str, Any]) -> Any:
        key = params.get("Key")
        if (
            operation_name in _KEYED_S3_CALLS
            and isinstance(key, str)
            and len(key.encode()) > S3_MAX_KEY_BYTES
        ):
            raise ClientError(
                {"Error": {"Code": "KeyTooLongError", "Message": "Your key is too long"}},
                operation_name,
            )
        return make_call(operation_name, params)

    client._make_api_call = refusing


def adapt_to_moto(service_name: str, client: Any) -> None:
    """The wiring's client hook while a local stack runs: moto's quirks, mended here only."""
    if service_name == "dynamodb":
        _serialize_calls(client)
    elif service_name == "stepfunctions":
        _retry_fresh_tokens(client)
    elif service_name == "s3":
        _refuse_long_keys(client)
