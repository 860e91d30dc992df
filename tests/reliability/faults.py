"""AWS faults for the local stack: a botocore hook that runs before moto answers and, for a
share of the calls, fails them: refused before they are sent (a connection error), or done
by moto and then answered with a 503 (the answer lost on the way back). botocore's retries
must cover them, and every write a retry repeats must be harmless."""

from __future__ import annotations

import random
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from botocore.awsrequest import AWSResponse
from botocore.exceptions import EndpointConnectionError
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
        if service not in _SERVICES or _inside_moto():
            return None
        with self._lock:
            self.calls += 1
            draw = self._random.random()
            if draw >= self.rate + self.lost_rate:
                return None
            self.by_service[service] = self.by_service.get(service, 0) + 1
            # A lost ReceiveMessage answer hides its message for the visibility timeout (five
            # minutes for a worker): a delay, not a loss, and longer than this test waits.
            lost = draw >= self.rate and not event_name.endswith(".ReceiveMessage")
            if lost:
                self.lost += 1
            else:
                self.refused += 1
        if lost:
            # botocore runs every before-send handler: moto's, after this one, still does the
            # call; the first answer, this 503, is the one the client sees.
            return _response(request, 503, b"")
        # Refused before it was sent: raising here also keeps moto's own before-send handler
        # (which comes next) from running it. botocore retries connection errors.
        raise EndpointConnectionError(endpoint_url=request.url)


def _response(request: Any, status: int, body: bytes) -> AWSResponse:
    headers = {
        "Content-Length": str(len(body)),
        "x-amzn-RequestId": "fault-injected",
        "x-amz-request-id": "fault-injected",
    }
    return AWSResponse(request.url, status, headers, _Body(body))


def _inside_moto() -> bool:
    """Calls moto makes itself (its Step Functions interpreter calls DynamoDB and SQS through
    botocore) are moto's business: faults there would test moto, not us."""
    frame = sys._getframe(2)
    for _ in range(60):
        if frame is None:
            return False
        name = frame.f_code.co_filename
        if "moto/stepfunctions" in name or "moto/core/botocore_stubber" in name:
            return True
        frame = frame.f_back
    return False


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


@dataclass
class AnswerLoser:
    """Answers the first `times` calls that `match` picks with a 503 after moto did them."""

    match: Any
    times: int = 1
    lost: int = 0

    def __call__(self, request: Any, event_name: str = "", **kwargs: Any) -> AWSResponse | None:
        if self.lost >= self.times or _inside_moto():
            return None
        if not self.match(event_name, request.body or b""):
            return None
        self.lost += 1
        return _response(request, 503, b"")


@contextmanager
def lose_answers(match: Any, times: int = 1) -> Iterator[AnswerLoser]:
    """Lose the answers of chosen calls (made by every client created inside the block)."""
    loser = AnswerLoser(match, times)
    entry = ("before-send", loser)
    BUILTIN_HANDLERS.insert(0, entry)
    try:
        yield loser
    finally:
        BUILTIN_HANDLERS.remove(entry)
