"""`batchctl validate --estimate`: what a batch would cost before it runs, as a range.

GPU-seconds = work tokens / the engine's tokens per second x its GPUs, at the price per
GPU-hour. The range is the throughput +-50 %: a throughput measured on one workload moves
that much with another's prompt/output mix and length (a prefill-heavy batch runs several
times the tokens per second of a decode-heavy one), and the work counts each request's whole
output budget (max_tokens or the default), which a request may not use: the low end is what
a fast or short-answer batch costs, the high end a slow one's. Cold starts and idle workers
are not in it (the Batch's own `estimated_cost` has the same scope).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from batch_core.settings import Settings
from batchctl.arguments import positive, price, rate

SPREAD = 0.5
"""The throughput's uncertainty either way (see the module's docstring)."""


@dataclass(frozen=True)
class CostRange:
    gpu_seconds_low: float
    gpu_seconds_high: float
    usd_low: float
    usd_high: float


def cost_range(
    work_tokens: int, tokens_per_second: float, *, gpus: int, gpu_hourly_price: float
) -> CostRange:
    """The GPU-seconds and USD of `work_tokens` on engines of `gpus` GPUs that each get
    through `tokens_per_second`, +-SPREAD on the throughput."""
    fast, slow = tokens_per_second * (1 + SPREAD), tokens_per_second * (1 - SPREAD)
    low, high = work_tokens / fast * gpus, work_tokens / slow * gpus
    return CostRange(low, high, low / 3600 * gpu_hourly_price, high / 3600 * gpu_hourly_price)


def add_estimate_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = Settings.model_fields
    parser.add_argument(
        "--estimate",
        action="store_true",
        help="print a cost range from the work and the model's throughput",
    )
    parser.add_argument(
        "--tokens-per-second",
        type=rate,
        default=float(defaults["fleet_tokens_per_second"].default),
        help="one engine's measured throughput, prompt plus output tokens per second (its "
        "bench run; a registry entry's tokens_per_second is its whole fleet's: divide it by "
        "the fleet's engines)",
    )
    parser.add_argument("--gpus", type=positive, default=1, help="GPUs per engine")
    parser.add_argument(
        "--gpu-hourly-price",
        type=price,
        default=float(defaults["gpu_hourly_price"].default),
        help="USD per GPU-hour (the stack's GpuHourlyPrice; spot about 0.45)",
    )


def print_estimate(work_tokens: int, args: argparse.Namespace) -> None:
    estimate = cost_range(
        work_tokens, args.tokens_per_second, gpus=args.gpus, gpu_hourly_price=args.gpu_hourly_price
    )
    low, high = estimate.gpu_seconds_low, estimate.gpu_seconds_high
    print(
        f"  GPU time         {low:,.1f} - {high:,.1f} GPU-seconds "
        f"({low / 3600:.2f} - {high / 3600:.2f} GPU-hours; {args.tokens_per_second:g} tokens/s "
        f"per engine +-{SPREAD:.0%}, {args.gpus} GPU each)"
    )
    print(
        f"  estimated cost   ${estimate.usd_low:.4f} - ${estimate.usd_high:.4f} "
        f"(at ${args.gpu_hourly_price:g} per GPU-hour)"
    )
