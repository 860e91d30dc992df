"""Typed domain errors; the adapters map them to HTTP or event outcomes in one place."""

from __future__ import annotations


class BatchCoreError(Exception):
    """Base of every error the core raises on purpose."""

    code = "server_error"


class NotFoundError(BatchCoreError):
    code = "not_found"


class ConflictError(BatchCoreError):
    """The request does not fit the object's current state (e.g. cancelling a completed batch)."""

    code = "conflict"


class InvalidRequestError(BatchCoreError):
    code = "invalid_request"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        if code:
            self.code = code


class LineError(BatchCoreError):
    """One problem with one line of a batch input file."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
