"""A shard's result parts: writing and committing them, recovering what an earlier attempt wrote,
and reading the requests still to run (shared by a running shard and by the ending).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from batch_core import s3keys
from batch_core.ids import new_request_id, new_request_line_id
from batch_core.messaging import ShardTask
from batch_core.protocol import (
    BatchRequestOutput,
    BatchResponse,
    ErrorDetail,
    ShardRequest,
    UnreadableShardLine,
    read_output_line,
    read_shard_line,
    usage_of,
)
from batch_core.records import ShardRecord
from batch_core.service_base import ServiceBase
from batch_core.validation import iter_lines

ShardOutcome = Literal["done", "interrupted", "stopped", "busy", "skipped"]
"""done: settled; interrupted: the worker is stopping, another finishes it; stopped: the batch
is no longer running; busy: another worker holds the shard's lease; skipped: nothing to do
(already done, or the batch is not running)."""


@dataclass
class ShardRun:
    """What one attempt at a shard did (for the worker's logs and metrics)."""

    outcome: ShardOutcome
    succeeded: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    seconds: float = 0.0


@dataclass
class PartTally:
    """The counts one part adds to its batch."""

    completed: int = 0
    failed: int = 0
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0

    def add(self, succeeded: bool, usage: tuple[int, int, int]) -> None:
        if not succeeded:
            self.failed += 1
            return
        self.completed += 1
        self.input_tokens += usage[0]
        self.cached_tokens += usage[1]
        self.output_tokens += usage[2]


@dataclass
class PendingPart:
    """Results gathered for the next part file of a shard."""

    succeeded: list[BatchRequestOutput] = field(default_factory=list)
    failed: list[BatchRequestOutput] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.succeeded) + len(self.failed)

    def tally(self) -> PartTally:
        tally = PartTally(failed=len(self.failed))
        for line in self.succeeded:
            assert line.response is not None
            tally.add(True, usage_of(line.response.body))
        return tally


@dataclass
class FinishedRequests:
    """What earlier attempts at a shard already wrote: by custom_id, and by line id for
    shard lines that could not be read (they may have no custom_id)."""

    custom_ids: set[str] = field(default_factory=set)
    line_ids: set[str] = field(default_factory=set)


def unreadable_line(shard: ShardRecord, line: UnreadableShardLine) -> BatchRequestOutput:
    """The error line of a shard line that cannot be read; its id is fixed by its place, so
    a later attempt recognises it as written."""
    return refused_line(
        f"{shard.batch_id}/{shard.index}/unreadable/{line.line_number}",
        line.custom_id,
        message=f"The request could not be read: {line.reason}",
        code="unreadable_request",
    )


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


def jsonl(lines: Iterable[BatchRequestOutput]) -> bytes:
    return b"".join(line.model_dump_json().encode() + b"\n" for line in lines)


class ShardParts(ServiceBase):
    """Part bookkeeping over the bucket and the shard items."""

    def _part_keys(self, shard: ShardRecord, part_index: int) -> tuple[str, str]:
        name = s3keys.part_name(part_index)
        return (
            s3keys.results_prefix(shard.batch_id, shard.index) + name,
            s3keys.errors_prefix(shard.batch_id, shard.index) + name,
        )

    def _recover_parts(self, shard: ShardRecord) -> tuple[FinishedRequests, int]:
        """What earlier attempts already wrote, and the next free part number. Parts are read
        for their facts only (ids, success, usage), so no response body can break this."""
        keys = self.store.list_keys(
            s3keys.results_prefix(shard.batch_id, shard.index)
        ) + self.store.list_keys(s3keys.errors_prefix(shard.batch_id, shard.index))
        by_part: dict[int, list[str]] = {}
        for key in keys:
            if s3keys.is_part_key(key):  # not never-ran.jsonl, written when a shard is closed
                by_part.setdefault(s3keys.part_index_of(key), []).append(key)
        finished = FinishedRequests()
        for part_index in sorted(by_part):
            tally = PartTally()
            for key in by_part[part_index]:
                for _, raw in iter_lines([self.store.read(key)]):
                    facts = read_output_line(raw) if raw else None
                    if facts is None:
                        continue
                    tally.add(facts.succeeded, facts.usage)
                    finished.line_ids.add(facts.id)
                    if facts.custom_id:
                        finished.custom_ids.add(facts.custom_id)
            if part_index >= shard.parts_committed:
                self._commit(shard, part_index, tally)
        return finished, (max(by_part) + 1 if by_part else 0)

    def _write_part(
        self,
        shard: ShardRecord,
        part_index: int,
        part: PendingPart,
        run: ShardRun,
        *,
        check_status: bool = True,
        settle: bool = False,
    ) -> str | None:
        """Store and commit one part (with `settle`, the shard's last: the shard settles in
        the same transaction); returns the batch's status as it is now when `check_status`
        (None otherwise)."""
        results_key, errors_key = self._part_keys(shard, part_index)
        if part.succeeded:
            self.store.put(results_key, jsonl(part.succeeded))
        if part.failed:
            self.store.put(errors_key, jsonl(part.failed))
        input_tokens, output_tokens = self._commit(shard, part_index, part.tally(), settle=settle)
        run.succeeded += len(part.succeeded)
        run.failed += len(part.failed)
        run.input_tokens += input_tokens
        run.output_tokens += output_tokens
        if not check_status:
            return None
        batch = self.repository.get_batch(shard.batch_id)
        if batch is None:
            return "deleted"
        self._publish(batch)  # live request_counts for people watching outbox batch.json
        return batch.status

    def _commit(
        self, shard: ShardRecord, part_index: int, tally: PartTally, *, settle: bool = False
    ) -> tuple[int, int]:
        """Add a part's counts to the batch (once); returns its input and output tokens."""
        self.repository.commit_part(
            shard.batch_id,
            shard.index,
            part_index=part_index,
            completed=tally.completed,
            failed=tally.failed,
            input_tokens=tally.input_tokens,
            cached_tokens=tally.cached_tokens,
            output_tokens=tally.output_tokens,
            settle=settle,
        )
        return tally.input_tokens, tally.output_tokens

    def _unfinished(
        self, shard: ShardRecord, finished: FinishedRequests
    ) -> Iterator[ShardRequest | BatchRequestOutput]:
        """The shard's requests that earlier attempts did not finish, in file order. A line
        that cannot be read comes as its own error line (never the worker's death), unless
        an earlier attempt already wrote it."""
        task = ShardTask(batch_id=shard.batch_id, shard_index=shard.index)
        for request in self._read_shard(task):
            if isinstance(request, UnreadableShardLine):
                line = unreadable_line(shard, request)
                if line.id not in finished.line_ids:
                    yield line
            elif request.custom_id not in finished.custom_ids:
                yield request

    def _read_shard(self, task: ShardTask) -> Iterator[ShardRequest | UnreadableShardLine]:
        key = s3keys.shard_key(task.batch_id, task.shard_index)
        for number, raw in iter_lines(self.store.stream(key)):
            if raw:
                yield read_shard_line(raw, number)
