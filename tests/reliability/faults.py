"""AWS faults for the local stack: a botocore hook that runs before moto answers and, for a
share of the calls, answers instead: throttling or a 5xx without doing the call, or a 5xx
after moto did it (the answer lost on the way back). botocore's retries must cover them and
every write a retry repeats must be harmless."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from botocore.awsrequest import AWSResponse
from botocore.handlers import BUILTIN_HANDLERS

_SERVICES = ("dynamodb", "s3", "sqs")


class _Body:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


@dataclass
class FaultInjector:
    rate: float
    lost_rate: float
    seed: int = 7
    calls: int = 0
    refused: int = 0
    lost: int = 0
    by_service: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def __call__(self, request: Any, event_name: str = "", **kwargs: Any) -> AWSResponse | None:
        service = event_name.split(".")[1] if event_name.count(".") >= 1 else ""
        if service not in _SERVICES:
            return None
        with self._lock:
            self.calls += 1
            draw = self._random.random()
            if draw >= self.rate + self.lost_rate:
                return None
            self.by_service[service] = self.by_service.get(service, 0) + 1
            lost = draw >= self.rate
            if lost:
                self.lost += 1
            else:
                self.refused += 1
        if lost:
            from moto.core.models import botocore_stubber

            botocore_stubber(event_name=event_name, request=request, **kwargs)  # it happened
            return _response(request, 503, b"")
        if service == "dynamodb":
            body = b'{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException",'
            body += b'"message":"Rate of requests exceeds the allowed throughput."}'
            return _response(request, 400, body)
        if service == "s3":
            body = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate."
            return _response(request, 503, body + b"</Message></Error>")
        return _response(request, 500, b'{"__type":"InternalError","message":"try again"}')


def _response(request: Any, status: int, body: bytes) -> AWSResponse:
    return AWSResponse(request.url, status, {"Content-Length": str(len(body))}, _Body(body))


@contextmanager
def aws_faults(rate: float, lost_rate: float = 0.0) -> Iterator[FaultInjector]:
    """Inject faults into every botocore client created inside the block."""
    injector = FaultInjector(rate, lost_rate)
    entry = ("before-send", injector)
    BUILTIN_HANDLERS.insert(0, entry)  # before moto's own before-send, which answers calls
    try:
        yield injector
    finally:
        BUILTIN_HANDLERS.remove(entry)
