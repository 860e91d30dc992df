"""Repeats run once: identical requests of one batch are run by the engine once, and every
line still gets its own output line.

"Identical" is one definition everywhere (intake, the runner, the cross-batch cache in
`reuse`): the same endpoint url and the same *canonical* body, the body being everything but
the line's `custom_id` (the model is in the body). The canonical body is the body parsed as
JSON and written again with every object's keys sorted, no whitespace, UTF-8 (orjson's
`OPT_SORT_KEYS`): key order, spacing and `\\u00e9`-style escapes do not matter. Numbers are
compared as parsed: `1e2` and `100.0` are the same float, but the integer `1` and the float
`1.0` are not (an engine may read them differently; two runs are never a wrong answer).

Intake (`RepeatFinder`) keeps a 16-byte digest of each request's url and canonical body; the
first line of a body is its *primary* and goes into a shard as usual, each later one is a
*repeat* of it, written to a small object beside its primary's shard
(`s3keys.repeats_key`), never into a shard, so the engine never sees it. The runner
(`ShardRepeats`) writes a primary's repeats in the same part as the primary: a crash never
splits them, and a redelivered shard that finds the primary written has its repeats too.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from batch_core import s3keys
from batch_core.ids import new_request_line_id
from batch_core.protocol import BatchRequestOutput, BatchResponse
from batch_core.records import ShardRecord
from batch_core.storage import ObjectStore
from batch_core.validation import ValidLine

logger = logging.getLogger(__name__)

DIGEST_BYTES = 16
"""Of the sha256 kept per primary at intake: a false match within one batch has a chance of
about n^2 / 2^129 (10^-27 at a million lines)."""
MAX_REMEMBERED = 3 * 2**18
"""Primaries remembered at intake (786,432: a table of 2^20 slots of 24 bytes, 24 MB at
most, 36 MB while it last doubles). Past it a new body is not remembered: its later copies
run again, nothing is lost."""
MAX_REPEATS_PER_PRIMARY = 256
"""Repeats answered by one run: the next copy becomes a primary of its own (runs once more),
so a primary's part (it and its repeats, one object) stays a bounded size however often a
line is repeated. At most 1 run in 257 is spent again."""
_SPOOL_BYTES = 64 * 1024


def canonical_body(body: dict[str, Any]) -> bytes:
    """The body as compared: keys sorted at every level, no whitespace, UTF-8."""
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def request_digest(url: str, body: dict[str, Any]) -> bytes:
    """sha256 of the endpoint url and the canonical body (32 bytes)."""
    return hashlib.sha256(url.encode() + b"\n" + canonical_body(body)).digest()


def line_digest(line: ValidLine) -> bytes:
    """The intake digest of a valid line (its JSON is within `json_bounds`: safe to parse)."""
    body = orjson.loads(line.request_json)["body"]
    return request_digest(line.url, body)[:DIGEST_BYTES]


def reused_line_id(batch_id: str, custom_id: str) -> str:
    """The `id` of a line answered from another request's result: fixed by the batch and
    the custom_id, so a redelivered shard recognises it, and so that counting a part again
    (`Results.recover`) knows which lines ran no engine request and add no tokens."""
    return new_request_line_id(f"{batch_id}/{custom_id}/reused")


def reused_copy(
    batch_id: str, custom_id: str, result: BatchRequestOutput, line: int | None = None
) -> BatchRequestOutput:
    """`custom_id`'s own line (input line `line`) carrying `result`'s response: the same
    status code, body and request id (the engine request that answered it)."""
    response = result.response
    return BatchRequestOutput(
        id=reused_line_id(batch_id, custom_id),
        custom_id=custom_id,
        line=line,
        response=None
        if response is None
        else BatchResponse(
            status_code=response.status_code, request_id=response.request_id, body=response.body
        ),
        error=result.error,
    )


@dataclass(frozen=True)
class Repeat:
    """A line answered by its primary's result."""

    custom_id: str
    line: int
    """Its own 1-based input line."""
    of: int
    """Its primary's input line."""


MAX_SPOOLED_SHARDS = 512
"""Shards whose repeats intake holds at once: each spool may become an open file, and a Lambda
has 1,024 descriptors. Past it, a copy whose primary's shard has none runs again."""


@dataclass
class _ShardRepeats:
    data: IO[bytes] = field(
        default_factory=lambda: tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115
    )
    count: int = 0


_LOW_64 = (1 << 64) - 1


class _DigestTable:
    """16-byte digest -> a packed int, in open addressing over three `array('Q')`: 24 bytes
    a slot, never more than 3/4 full, doubling as it fills (a dict of bytes to tuples takes
    ~200 bytes an entry, more than intake's whole budget at a million lines)."""

    def __init__(self, max_entries: int) -> None:
        self._max_entries = max_entries
        self.size = 0
        self._last: tuple[bytes, int] = (b"", 0)
        self._allocate(1024)

    def _allocate(self, slots: int) -> None:
        self._mask = slots - 1
        self._high = array("Q", bytes(8 * slots))
        self._low = array("Q", bytes(8 * slots))
        self._values = array("Q", bytes(8 * slots))  # 0: an empty slot

    def _slot(self, high: int, low: int) -> int:
        """The slot holding the digest, or the empty slot where it would go."""
        mask, values = self._mask, self._values
        slot = low & mask
        while values[slot] and (self._low[slot] != low or self._high[slot] != high):
            slot = (slot + 1) & mask
        return slot

    def get(self, digest: bytes) -> tuple[int, int]:
        """(slot, value): value 0 when the digest is not in the table."""
        both = int.from_bytes(digest[:16], "little")
        slot = self._slot(both >> 64, both & _LOW_64)
        self._last = (digest, slot)
        return slot, self._values[slot]

    def put(self, digest: bytes, value: int) -> bool:
        """Set `digest`'s value (non-zero); False when it is new and the table is full."""
        both = int.from_bytes(digest[:16], "little")
        high, low = both >> 64, both & _LOW_64
        # The slot `get` just found, when this is the digest it was asked (intake's order).
        last, slot = self._last
        self._last = (b"", 0)  # good for one put only: another may fill the slot
        if last is not digest:
            slot = self._slot(high, low)
        if not self._values[slot]:
            if self.size >= self._max_entries:
                return False
            if (self.size + 1) * 4 > (self._mask + 1) * 3:
                self._grow()
                slot = self._slot(high, low)
            self._high[slot], self._low[slot] = high, low
            self.size += 1
        self._values[slot] = value
        return True

    def update(self, slot: int, value: int) -> None:
        """Set the value in a slot `get` found filled."""
        self._values[slot] = value

    def _grow(self) -> None:
        old = zip(self._high, self._low, self._values, strict=True)
        self._allocate(2 * len(self._values))
        self._last = (b"", 0)
        mask, high, low, values = self._mask, self._high, self._low, self._values
        for key_high, key_low, value in old:
            if value:
                slot = key_low & mask
                while values[slot]:  # every key is new here: the first empty slot is its
                    slot = (slot + 1) & mask
                high[slot], low[slot], values[slot] = key_high, key_low, value


# A primary's value in the table: its open-shard serial, its repeats so far, its input line.
_LINE_BITS = 32
_COUNT_BITS = 9  # MAX_REPEATS_PER_PRIMARY (256) fits
_LINE_MASK = (1 << _LINE_BITS) - 1
_COUNT_MASK = (1 << _COUNT_BITS) - 1


def _pack(serial: int, count: int, line: int) -> int:
    return (serial << (_LINE_BITS + _COUNT_BITS)) | (count << _LINE_BITS) | line


class RepeatFinder:
    """Intake's side: which valid lines are repeats, and of which primary.

    Primaries are known by the planner's open-shard serial (`ShardPlanner.add`) until the
    shard is emitted with its index (`placed`); repeats spool per shard, and `store` writes
    them once planning is over (a repeat may come after its primary's shard was emitted)."""

    def __init__(
        self,
        max_per_shard: int,
        *,
        max_per_primary: int | None = None,
        max_remembered: int | None = None,
    ) -> None:
        """`max_per_shard`: repeats stored beside one shard (the runner holds them all);
        the other caps default to the module's."""
        self._max_per_shard = max_per_shard
        self._max_per_primary = min(max_per_primary or MAX_REPEATS_PER_PRIMARY, _COUNT_MASK)
        # Ints only, never custom_ids: memory does not grow with what the lines hold.
        self._primaries = _DigestTable(max_remembered or MAX_REMEMBERED)
        self._by_serial: dict[int, _ShardRepeats] = {}
        self._index_of: dict[int, int] = {}  # serial -> shard index, once emitted
        self.repeats = 0

    def repeat(self, line: ValidLine) -> bytes | None:
        """None when `line` is a repeat (recorded as one); else its digest, for `primary`."""
        digest = line_digest(line)
        slot, value = self._primaries.get(digest)
        if not value:
            return digest
        serial = value >> (_LINE_BITS + _COUNT_BITS)
        count = (value >> _LINE_BITS) & _COUNT_MASK
        primary_line = value & _LINE_MASK
        shard = self._by_serial.get(serial)
        if (
            count >= self._max_per_primary
            or (shard is not None and shard.count >= self._max_per_shard)
            or (shard is None and len(self._by_serial) >= MAX_SPOOLED_SHARDS)
        ):
            return digest  # a primary of its own, which later copies join
        shard = self._by_serial.setdefault(serial, _ShardRepeats())
        shard.data.write(
            orjson.dumps({"of": primary_line, "line": line.line, "custom_id": line.custom_id})
            + b"\n"
        )
        shard.count += 1
        self._primaries.update(slot, _pack(serial, count + 1, primary_line))
        self.repeats += 1
        return None

    def primary(self, digest: bytes, line: ValidLine, serial: int) -> None:
        """`line` went into the open shard `serial` as the primary of its body (past
        MAX_REMEMBERED primaries, a new body is not remembered: its copies run)."""
        self._primaries.put(digest, _pack(serial, 0, line.line))

    def placed(self, serial: int, index: int) -> None:
        """The open shard `serial` was emitted as shard `index`."""
        self._index_of[serial] = index

    def counts(self) -> dict[int, int]:
        """Repeats per shard index."""
        return {self._index_of[s]: shard.count for s, shard in self._by_serial.items()}

    def store(self, store: ObjectStore, batch_id: str) -> None:
        """Upload each shard's repeats beside it (the same bytes if intake runs again)."""
        for serial, shard in self._by_serial.items():
            shard.data.seek(0)
            store.upload(s3keys.repeats_key(batch_id, self._index_of[serial]), shard.data)

    def close(self) -> None:
        for shard in self._by_serial.values():
            shard.data.close()
        self._by_serial.clear()


@dataclass
class ShardRepeats:
    """The runner's side: a shard's repeats by their primary's input line."""

    by_primary: dict[int, list[Repeat]] = field(default_factory=dict)

    @classmethod
    def read(cls, store: ObjectStore, shard: ShardRecord) -> ShardRepeats:
        """The repeats stored beside `shard` (none when it has none)."""
        found = cls()
        if not shard.repeats:
            return found
        key = s3keys.repeats_key(shard.batch_id, shard.index)
        if not store.exists(key):  # only damage does this: its primaries still run
            logger.error("shard %s:%d lost its repeats", shard.batch_id, shard.index)
            return found
        for raw in store.read(key).splitlines():
            repeat = _read_repeat(raw)
            if repeat is not None:
                found.by_primary.setdefault(repeat.of, []).append(repeat)
        return found

    def of(self, primary_line: int) -> list[Repeat]:
        return self.by_primary.get(primary_line, [])

    def copies(
        self, batch_id: str, primary_line: int, result: BatchRequestOutput
    ) -> Iterator[tuple[Repeat, BatchRequestOutput]]:
        """Each repeat of the primary at `primary_line` with its own line carrying `result`."""
        for repeat in self.of(primary_line):
            yield repeat, reused_copy(batch_id, repeat.custom_id, result, repeat.line)


def _read_repeat(raw: bytes) -> Repeat | None:
    """One line of a repeats object (intake wrote it; data can still be damaged)."""
    try:
        data = orjson.loads(raw)
        repeat = Repeat(custom_id=data["custom_id"], line=data["line"], of=data["of"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    if (
        isinstance(repeat.custom_id, str)
        and isinstance(repeat.line, int)
        and isinstance(repeat.of, int)
    ):
        return repeat
    return None
