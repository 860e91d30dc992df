"""`batchctl tenants set|show|list|clear`: a tenant's own limits in the stack's table (TABLE_NAME
and AWS credentials, as `batchctl keys`). Each limit is optional: one not set is the stack's
setting (TenantRequestsPerSecond, TenantBurstSeconds, TenantMaxActiveBatches,
TenantMaxQueuedRequests, TenantMaxQueuedTokens); `default` as a value sets it back to that,
0 is no limit. The API and intake read a tenant's limits at most 30 s old (their cache)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from batch_core.errors import InvalidRequestError
from batch_core.tenant_limits import (
    LIMIT_FIELDS,
    LIMITS_CACHE_SECONDS,
    MAX_ACTIVE_BATCHES,
    MAX_BURST_SECONDS,
    MAX_QUEUED_REQUESTS,
    MAX_QUEUED_TOKENS,
    MAX_REQUESTS_PER_SECOND,
    TenantLimits,
    TenantLimitsAdmin,
)
from batchctl.exit_codes import EXIT_NOT_COMPLETED, EXIT_OK, EXIT_TOOL_ERROR

DEFAULT = "default"

_BOUNDS = {
    "requests_per_second": (0, MAX_REQUESTS_PER_SECOND),
    "burst_seconds": (1, MAX_BURST_SECONDS),
    "max_active_batches": (0, MAX_ACTIVE_BATCHES),
    "max_queued_requests": (0, MAX_QUEUED_REQUESTS),
    "max_queued_tokens": (0, MAX_QUEUED_TOKENS),
}
_HELP = {
    "requests_per_second": "API write requests per second, sustained (reads cost a quarter)",
    "burst_seconds": "seconds of that rate it may spend at once",
    "max_active_batches": "batches not yet ended; one more is 429",
    "max_queued_requests": "requests its active batches may hold",
    "max_queued_tokens": "estimated tokens its active batches may hold",
}


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _limit(name: str) -> Any:
    """A bounded whole number, or `default` (None: the stack's setting)."""
    low, high = _BOUNDS[name]

    def parse(text: str) -> int | None:
        if text.strip().lower() == DEFAULT:
            return None
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text[:40]!r} is not a whole number (or '{DEFAULT}')"
            ) from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"{value} is out of range: give {low} to {high} (or '{DEFAULT}')"
            )
        return value

    return parse


def add_tenant_commands(commands: Any) -> None:
    tenants = commands.add_parser("tenants", help="tenants' own limits (else the stack's)")
    tenant_commands = tenants.add_subparsers(dest="tenants_command", required=True)
    put = tenant_commands.add_parser(
        "set", help=f"set limits of one tenant ('{DEFAULT}': back to the stack's; 0: none)"
    )
    put.add_argument("tenant")
    for name in LIMIT_FIELDS:
        # Not given: no attribute at all (a given `default` is None).
        put.add_argument(
            _option(name),
            dest=name,
            type=_limit(name),
            default=argparse.SUPPRESS,
            help=_HELP[name],
        )
    put.set_defaults(run=_set)
    show = tenant_commands.add_parser("show", help="one tenant's own limits")
    show.add_argument("tenant")
    show.set_defaults(run=_show)
    tenant_commands.add_parser("list", help="tenants with limits of their own").set_defaults(
        run=_list
    )
    clear = tenant_commands.add_parser("clear", help="every limit of a tenant back to the stack's")
    clear.add_argument("tenant")
    clear.set_defaults(run=_clear)


def _admin() -> TenantLimitsAdmin:
    from batch_core.wiring import default_tenant_limits

    return default_tenant_limits()


def _line(limits: TenantLimits) -> str:
    values = {name: getattr(limits, name) for name in LIMIT_FIELDS}
    shown = (f"{_option(n)[2:]}={DEFAULT if v is None else v}" for n, v in values.items())
    return f"{limits.tenant:<24} {' '.join(shown)}"


def _set(args: argparse.Namespace) -> int:
    given = [name for name in LIMIT_FIELDS if hasattr(args, name)]
    if not given:
        print(
            "batchctl: give at least one limit, e.g. --max-active-batches 5 (see --help)",
            file=sys.stderr,
        )
        return EXIT_TOOL_ERROR
    try:
        limits = _admin().set(args.tenant, {name: getattr(args, name) for name in given})
    except InvalidRequestError as error:
        print(f"batchctl: {error}", file=sys.stderr)
        return EXIT_TOOL_ERROR
    print(_line(limits))
    print(f"(applies within {LIMITS_CACHE_SECONDS:.0f} s)", file=sys.stderr)
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    try:
        limits = _admin().show(args.tenant)
    except InvalidRequestError as error:
        print(f"batchctl: {error}", file=sys.stderr)
        return EXIT_TOOL_ERROR
    print(_line(limits))
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    for limits in _admin().list():
        print(_line(limits))
    return EXIT_OK


def _clear(args: argparse.Namespace) -> int:
    try:
        cleared = _admin().clear(args.tenant)
    except InvalidRequestError as error:
        print(f"batchctl: {error}", file=sys.stderr)
        return EXIT_TOOL_ERROR
    if not cleared:
        print(f"batchctl: tenant {args.tenant!r} has no limits of its own", file=sys.stderr)
        return EXIT_NOT_COMPLETED
    print(f"{args.tenant}: every limit is the stack's again")
    return EXIT_OK
