"""A batch's results as its shards write them: part files under results/ and errors/ (each
with its index, `result_index`), each counted once on its shard and its batch; what an
earlier attempt wrote (recovered); the requests still to run; the error lines of requests
that never will; and the parts merged into the batch's output and error Files at its end, or
listed while it runs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from batch_core import result_index, s3keys
from batch_core.deps import Deps
from batch_core.ids import new_file_id, new_request_id, new_request_line_id
from batch_core.models import TERMINAL_STATUSES
from batch_core.protocol import (
    BatchLineError,
    BatchRequestOutput,
    BatchResponse,
    ErrorDetail,
    ShardRequest,
    UnreadableShardLine,
    read_output_line,
    read_shard_line,
    usage_of,
)
from batch_core.records import BatchRecord, FileRecord, PartCounts, ShardRecord
from batch_core.repeats import ShardRepeats, reused_line_id
from batch_core.retention import new_file_object
from batch_core.storage import ObjectStore
from batch_core.validation import iter_lines

logger = logging.getLogger(__name__)

NEVER_RAN = "never-ran.jsonl"
"""The error part of a shard's requests that never ran (cancelled, expired, shard_failed)."""


@dataclass(frozen=True)
class ResultPart:
    """One part file of a batch's results, for reading them while the batch runs."""

    kind: Literal["output", "error"]
    bytes: int
    url: str
    """A short-lived presigned GET URL."""


@dataclass(frozen=True)
class LineAt:
    """One line of a stored part: its key, byte offset and length."""

    key: str
    offset: int
    length: int


@dataclass
class PendingPart:
    """Results gathered for the next part file of a shard."""

    succeeded: list[BatchRequestOutput] = field(default_factory=list)
    failed: list[BatchRequestOutput] = field(default_factory=list)
    reused_ids: set[str] = field(default_factory=set)
    """Line ids of the lines answered from another request's result (`repeats`, `reuse`):
    counted as reused, with no tokens."""
    input_lines: dict[str, int] = field(default_factory=dict)
    """custom_id -> its 1-based input line, for each line whose number is known."""
    written: dict[str, LineAt] = field(default_factory=dict)
    """custom_id -> where its output line went, once `Results.write` stored the part (the
    result cache points there: `reuse`)."""
    gpu_seconds: float = 0.0
    """The shard's GPU time since its previous part (`gpu_time.ShardMeter`)."""

    def __len__(self) -> int:
        return len(self.succeeded) + len(self.failed)

    def counts(self) -> PartCounts:
        counts = PartCounts(gpu_seconds=self.gpu_seconds)
        for line in self.failed:
            counts.add(False, (0, 0, 0), reused=line.id in self.reused_ids)
        for line in self.succeeded:
            assert line.response is not None
            counts.add(True, usage_of(line.response.body), reused=line.id in self.reused_ids)
        return counts


@dataclass
class FinishedRequests:
    """What earlier attempts at a shard already wrote: by custom_id, and by line id for
    shard lines that could not be read (they may have no custom_id)."""

    custom_ids: set[str] = field(default_factory=set)
    line_ids: set[str] = field(default_factory=set)


def refused_line(
    seed: str, custom_id: str | None, *, message: str, code: str | None, param: str | None = None
) -> BatchRequestOutput:
    """An error line with a 400 response in OpenAI's shape, its ids derived from `seed`."""
    return BatchRequestOutput(
        id=new_request_line_id(seed),
        custom_id=custom_id,
        response=BatchResponse(
            status_code=400,
            request_id=new_request_id(seed),
            body={"error": ErrorDetail(message=message, param=param, code=code).model_dump()},
        ),
    )


def unreadable_line(shard: ShardRecord, line: UnreadableShardLine) -> BatchRequestOutput:
    """The error line of a shard line that cannot be read; its id is fixed by its place, so
    a later attempt recognises it as written."""
    refused = refused_line(
        f"{shard.batch_id}/{shard.index}/unreadable/{line.line_number}",
        line.custom_id,
        message=f"The request could not be read: {line.reason}",
        code="unreadable_request",
    )
    # Placed as written (`result_index`), so that it is recognised among written ids.
    placed = result_index.placed_id(refused.id, line.input_line)
    return refused.model_copy(update={"id": placed, "line": line.input_line})


def jsonl(lines: Iterable[BatchRequestOutput]) -> bytes:
    return b"".join(line.model_dump_json().encode() + b"\n" for line in lines)


class _LineNumbers:
    """The input line of each result line: its own (`BatchRequestOutput.line`), else the
    caller's custom_id map, else the shard's (read once, only when needed)."""

    def __init__(self, store: ObjectStore, shard: ShardRecord, known: dict[str, int]) -> None:
        self._store, self._shard, self._known = store, shard, known
        self._shard_lines: dict[str, int] | None = None

    @property
    def by_custom_id(self) -> dict[str, int]:
        if self._shard_lines is None:
            lines: dict[str, int] = {}
            key = s3keys.shard_key(self._shard.batch_id, self._shard.index)
            for number, raw in iter_lines(self._store.stream(key)):
                request = read_shard_line(raw, number) if raw else None
                if isinstance(request, ShardRequest):
                    lines[request.custom_id] = request.line
            self._shard_lines = {**lines, **self._known}
        return self._shard_lines

    def given(self, lines: list[BatchRequestOutput]) -> list[BatchRequestOutput]:
        placed: list[BatchRequestOutput] = []
        for line in lines:
            number = line.line
            if number is None and line.custom_id is not None:
                number = self._known.get(line.custom_id)
                if number is None:  # reads the shard, once
                    number = self.by_custom_id.get(line.custom_id)
            if number is None:
                # Never expected (every writer knows its lines): first in input order rather
                # than missing from the pages.
                logger.error("no input line for result %s of %s", line.id, self._shard)
                number = 0
            placed.append(line if line.line == number else line.model_copy(update={"line": number}))
        return placed


def _concat(store: ObjectStore, keys: list[str]) -> Iterator[bytes]:
    for key in keys:
        yield from store.stream(key)


class Results:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    # -- a shard's parts ------------------------------------------------------------------

    def write(
        self, shard: ShardRecord, part_index: int, part: PendingPart, *, settle: bool = False
    ) -> PartCounts:
        """Store one part and count it (once); with `settle`, the shard's last: the shard
        settles in the same transaction. Returns what it counted."""
        name = s3keys.part_name(part_index)
        self._store_indexed(
            shard, name, part.succeeded, part.failed, part.input_lines, part.written
        )
        if settle:  # its last part: one index of them all, for readers (`result_index`)
            result_index.compact(self.deps.store, shard.batch_id, shard.index, part_index)
        counts = part.counts()
        self._commit(shard, part_index, counts, settle=settle)
        return counts

    def _store_indexed(
        self,
        shard: ShardRecord,
        name: str,
        succeeded: list[BatchRequestOutput],
        failed: list[BatchRequestOutput],
        input_lines: dict[str, int] | None = None,
        written_at: dict[str, LineAt] | None = None,
    ) -> None:
        """A file pair of the shard (`part-00003.jsonl` or never-ran), each line's id placed
        (`result_index.placed_id`), then its index: the files exist before any index entry
        points at them, and the index is whole before the part is counted."""
        store, batch_id = self.deps.store, shard.batch_id
        lines = _LineNumbers(store, shard, input_lines or {})
        entries: list[result_index.Entry] = []
        kinds: list[tuple[result_index.Kind, str, list[BatchRequestOutput]]] = [
            ("output", s3keys.results_prefix(batch_id, shard.index), succeeded),
            ("error", s3keys.errors_prefix(batch_id, shard.index), failed),
        ]
        for kind, prefix, written in kinds:
            if written:
                placed = lines.given(written)
                data, found = result_index.encode_lines(placed, kind)
                store.put(prefix + name, data)
                entries += found
                if kind == "output" and written_at is not None:
                    for line, entry in zip(placed, found, strict=True):
                        at = LineAt(prefix + name, entry.offset, entry.length)
                        written_at[line.custom_id or ""] = at
        if entries:
            stem = name.removesuffix(".jsonl")
            source = result_index.shard_source(shard.index)
            result_index.write_chunks(store, batch_id, source, stem, entries)

    def _index_missing(self, shard: ShardRecord, by_part: dict[int, list[str]]) -> None:
        """Index the parts an earlier attempt wrote but did not index (a crash between the
        two): from their own bytes, each line's input line being in its placed id."""
        store, batch_id = self.deps.store, shard.batch_id
        source = result_index.shard_source(shard.index)
        indexed = result_index.indexed_names(store, batch_id, source)
        lines = _LineNumbers(store, shard, {})
        for part_index, keys in sorted(by_part.items()):
            stem = s3keys.part_name(part_index).removesuffix(".jsonl")
            if stem in indexed:
                continue
            entries: list[result_index.Entry] = []
            for key in keys:
                kind: result_index.Kind = (
                    "output" if key.startswith(s3keys.results_prefix(batch_id)) else "error"
                )
                entries += result_index.entries_of_file(store.read(key), kind, lines.by_custom_id)
            if entries:
                result_index.write_chunks(store, batch_id, source, stem, entries)

    def _commit(
        self, shard: ShardRecord, part_index: int, counts: PartCounts, *, settle: bool = False
    ) -> None:
        self.deps.table.shards.commit_part(
            shard.batch_id, shard.index, part_index=part_index, counts=counts, settle=settle
        )

    def recover(self, shard: ShardRecord) -> tuple[FinishedRequests, int]:
        """What earlier attempts already wrote (parts written but not counted are counted
        now), and the next free part number. Parts are read for their facts only (ids,
        success, usage), so no response body can break this."""
        store = self.deps.store
        keys = store.list_keys(s3keys.results_prefix(shard.batch_id, shard.index))
        keys += store.list_keys(s3keys.errors_prefix(shard.batch_id, shard.index))
        by_part: dict[int, list[str]] = {}
        for key in keys:
            if s3keys.is_part_key(key):  # not never-ran.jsonl, written when a shard is closed
                by_part.setdefault(s3keys.part_index_of(key), []).append(key)
        self._index_missing(shard, by_part)
        finished = FinishedRequests()
        for part_index in sorted(by_part):
            counts = PartCounts()
            for key in by_part[part_index]:
                for _, raw in iter_lines([store.read(key)]):
                    facts = read_output_line(raw) if raw else None
                    if facts is None:
                        continue
                    reused = bool(facts.custom_id) and result_index.same_line_id(
                        facts.id, reused_line_id(shard.batch_id, facts.custom_id or "")
                    )
                    counts.add(facts.succeeded, facts.usage, reused=reused)
                    finished.line_ids.add(facts.id)
                    if facts.custom_id:
                        finished.custom_ids.add(facts.custom_id)
            if part_index >= shard.parts_committed:
                self._commit(shard, part_index, counts)
        return finished, (max(by_part) + 1 if by_part else 0)

    def unfinished(
        self, shard: ShardRecord, finished: FinishedRequests
    ) -> Iterator[ShardRequest | BatchRequestOutput]:
        """The shard's requests that earlier attempts did not finish, in file order. A line
        that cannot be read comes as its own error line (never the worker's death), unless
        an earlier attempt already wrote it."""
        key = s3keys.shard_key(shard.batch_id, shard.index)
        for number, raw in iter_lines(self.deps.store.stream(key)):
            if not raw:
                continue
            request = read_shard_line(raw, number)
            if isinstance(request, UnreadableShardLine):
                line = unreadable_line(shard, request)
                if line.id not in finished.line_ids:
                    yield line
            elif request.custom_id not in finished.custom_ids:
                yield request

    def close_unfinished(self, shard: ShardRecord, code: str, message: str) -> None:
        """Write an error line (`response: null`, `error.code` `code`) for each request of the
        shard that never ran, then settle the shard counting them failed, once."""
        finished, _ = self.recover(shard)  # also counts parts written but not counted
        repeats = ShardRepeats.read(self.deps.store, shard)
        lines: list[BatchRequestOutput] = []
        for request in self.unfinished(shard, finished):
            if isinstance(request, BatchRequestOutput):
                lines.append(request)
                continue
            # A request that never ran never ran for its repeats either (`repeats`).
            never_ran = [(request.custom_id, request.line)]
            never_ran += [(r.custom_id, r.line) for r in repeats.of(request.line)]
            for custom_id, input_line in never_ran:
                lines.append(
                    BatchRequestOutput(
                        id=new_request_line_id(f"{shard.batch_id}/{custom_id}/{code}"),
                        custom_id=custom_id,
                        response=None,
                        error=BatchLineError(code=code, message=message),
                        line=input_line,
                    )
                )
        if lines:  # the same key and bytes if this runs again
            self._store_indexed(shard, NEVER_RAN, [], lines)
        self.deps.table.shards.settle_shard(shard.batch_id, shard.index, never_ran=len(lines))

    # -- a batch's parts ------------------------------------------------------------------

    def merge(self, record: BatchRecord, kind: Literal["output", "error"]) -> str | None:
        """Join the batch's result (or error) parts into one File of its owner's, kept as its
        output is (`output_expires_after`, else the deployment's); None if there are none.
        The same File id each time, so merging again gives the same File."""
        batch_id, store = record.id, self.deps.store
        prefix = (
            s3keys.results_prefix(batch_id) if kind == "output" else s3keys.errors_prefix(batch_id)
        )
        keys = store.list_keys(prefix)
        if not keys:
            return None
        file_id = new_file_id(f"{batch_id}/{kind}")
        target = s3keys.file_key(file_id)
        size = store.put_stream(target, _concat(store, keys))
        now = self.deps.now()
        keep = record.output_expires_after_seconds or self.deps.settings.file_retention_seconds
        file = new_file_object(
            file_id,
            size=size,
            created_at=now,
            filename=f"batch_{batch_id}_{kind}.jsonl",
            purpose="batch_output",
            expires_at=now + keep,
        )
        self.deps.table.files.put_file(
            FileRecord(file=file, s3_key=target, batch_id=batch_id, tenant=record.tenant)
        )
        return file_id

    def parts(self, record: BatchRecord) -> list[ResultPart]:
        """The result and error parts written so far, readable while the batch runs; none of
        a File that was deleted or has expired."""
        parts: list[ResultPart] = []
        prefixes: list[tuple[Literal["output", "error"], str, str | None]] = [
            ("output", s3keys.results_prefix(record.id), record.output_file_id),
            ("error", s3keys.errors_prefix(record.id), record.error_file_id),
        ]
        store, seconds = self.deps.store, self.deps.settings.presigned_url_seconds
        for kind, prefix, file_id in prefixes:
            if file_id is not None and not self.file_kept(file_id):
                continue  # its File was deleted or has expired: so have the parts it holds
            if file_id is None and record.status in TERMINAL_STATUSES:
                continue  # ended with none: nothing of this kind to read
            for key, size in store.list_sizes(prefix):
                parts.append(
                    ResultPart(kind=kind, bytes=size, url=store.presigned_url(key, seconds))
                )
        return parts

    def file_kept(self, file_id: str) -> bool:
        """The File exists and has not expired (the sweep may not have deleted it yet)."""
        record = self.deps.table.files.get_file(file_id)
        return record is not None and not record.expired(self.deps.now())

    def failed_custom_ids(self, batch_id: str) -> set[str]:
        """custom_ids of the batch's requests that ran and failed or never ran (not the lines
        validation rejected)."""
        rejected = s3keys.rejected_lines_key(batch_id)
        store = self.deps.store
        failed: set[str] = set()
        for key in store.list_keys(s3keys.errors_prefix(batch_id)):
            if key == rejected:
                continue
            for _, raw in iter_lines(store.stream(key)):
                facts = read_output_line(raw) if raw else None
                if facts is not None and facts.custom_id is not None:
                    failed.add(facts.custom_id)
        return failed
