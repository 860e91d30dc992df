"""Pages of a batch's result lines in input order, with a cursor (extension:
`GET /v1/batches/{id}/results?after=&limit=&custom_id=`), read through the result index
(`result_index`): its chunk listing, the chunks that can hold the page's lines, and ranged
GETs of those lines, never whole parts.

A cursor is a position in input order (the id of a page's last line carries its input line).
Readable while the batch runs: a page holds the lines finished so far, so a line that
finishes later *behind* a cursor is not seen by that forward walk; a new walk from the start
sees it. `has_more` is about the lines written so far.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from batch_core import result_index
from batch_core.errors import InvalidRequestError
from batch_core.models import TERMINAL_STATUSES
from batch_core.records import BatchRecord
from batch_core.result_index import Chunk, Entry, Kind
from batch_core.results import Results

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
MAX_CUSTOM_ID_CHARS = 512
"""A custom_id asked for (a query parameter): longer ones are refused, not looked up."""
MAX_PLACES = 10_000
"""Input lines of one custom_id a lookup looks at, at most (valid custom_ids are unique; the
rest are rejected duplicates)."""
PAGE_BYTES = 4 * 1024 * 1024
"""Stored bytes of the lines one page reads, at most."""
SENT_BYTES = 5 * 1024 * 1024
"""A page's lines as Lambda sends them, at most (its answer stops at 6 MB): the JSON the API
writes escapes non-ASCII (`\u4e2d`, 6 bytes for 3), and Lambda's envelope escapes that again,
so a page is measured in that form and cut short (`has_more`), never refused; a single line
larger than that is refused with a pointer to `/result_parts`."""
_GAP_BYTES = 64 * 1024
"""Lines of one file this close together are read by one ranged GET."""
_READERS = 8
_T = TypeVar("_T")
_R = TypeVar("_R")


@dataclass(frozen=True)
class ResultPage:
    data: list[dict[str, Any]]
    has_more: bool


def _parallel(work: Callable[[_T], _R], items: list[_T]) -> list[_R]:
    if len(items) <= 1:
        return [work(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(_READERS, len(items))) as pool:
        return list(pool.map(work, items))


class ResultPages:
    def __init__(self, results: Results) -> None:
        self.results = results
        self.deps = results.deps

    def page(
        self,
        record: BatchRecord,
        *,
        after: str | None = None,
        limit: int = DEFAULT_LIMIT,
        custom_id: str | None = None,
    ) -> ResultPage:
        """Up to `limit` result and error lines after `after` (the id of a line of this
        batch's results), in input order; with `custom_id`, only that custom_id's lines."""
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidRequestError(f"limit must be between 1 and {MAX_LIMIT}.", param="limit")
        if custom_id is not None and not 0 < len(custom_id) <= MAX_CUSTOM_ID_CHARS:
            raise InvalidRequestError(
                f"custom_id must have 1 to {MAX_CUSTOM_ID_CHARS} characters.", param="custom_id"
            )
        start = (0, "")
        if after is not None:
            line = result_index.line_of(after)
            if line is None:
                raise _not_a_cursor(after)
            start = (line, after)
        visible = self._visible_kinds(record)
        if custom_id is not None:
            entries, more = self._custom_id_entries(record.id, custom_id, start, limit, visible)
        else:
            entries, more = self._entries_after(record.id, start, limit, visible)
        return self._read(record.id, entries, more)

    def _visible_kinds(self, record: BatchRecord) -> set[Kind]:
        """Hidden like the parts (`Results.parts`): nothing of a deleted or expired File."""
        visible: set[Kind] = set()
        kinds: list[tuple[Kind, str | None]] = [
            ("output", record.output_file_id),
            ("error", record.error_file_id),
        ]
        for kind, file_id in kinds:
            if file_id is not None and not self.results.file_kept(file_id):
                continue
            if file_id is None and record.status in TERMINAL_STATUSES:
                continue
            visible.add(kind)
        return visible

    # -- which lines ------------------------------------------------------------------------

    def _entries_after(
        self, batch_id: str, start: tuple[int, str], limit: int, visible: set[Kind]
    ) -> tuple[list[tuple[Chunk, Entry]], bool]:
        """The first `limit` visible entries after `start`. Chunks are read in order of their
        first line, a few at a time, until the next one starts past the page's last line:
        a page reads the chunks around its position, not the batch's."""
        store = self.deps.store
        line, after = start
        chunks = sorted(
            (c for c in result_index.list_chunks(store, batch_id) if c.last >= line),
            key=lambda c: (c.first, c.key),
        )
        found: list[tuple[Chunk, Entry]] = []
        seen_after = after == ""
        position = 0
        while position < len(chunks):
            if len(found) >= limit:
                found.sort(key=lambda pair: pair[1])
                del found[limit + 1 :]  # one past the page says whether there is more
                if chunks[position].first > found[limit - 1][1].line:
                    break
            wave = [chunks[position]]
            position += 1
            while (
                position < len(chunks)
                and len(wave) < _READERS
                and (len(found) < limit or chunks[position].first <= found[limit - 1][1].line)
            ):
                wave.append(chunks[position])
                position += 1

            def read(chunk: Chunk) -> list[tuple[Chunk, Entry]]:
                return [
                    (chunk, entry) for entry in result_index.read_entries(store.read(chunk.key))
                ]

            for pairs in _parallel(read, wave):
                for chunk, entry in pairs:
                    if entry.id == after:
                        seen_after = True
                    if (entry.line, entry.id) > start and entry.kind in visible:
                        found.append((chunk, entry))
        if not seen_after:
            raise _not_a_cursor(after)
        found.sort(key=lambda pair: pair[1])
        more = len(found) > limit or position < len(chunks)
        return found[:limit], more

    def _custom_id_entries(
        self,
        batch_id: str,
        custom_id: str,
        start: tuple[int, str],
        limit: int,
        visible: set[Kind],
    ) -> tuple[list[tuple[Chunk, Entry]], bool]:
        """The lines of `custom_id` (the custom_id index, then the chunks of the line's shard
        that hold its line), finished so far."""
        store = self.deps.store
        digest = result_index.custom_id_digest(custom_id)
        located = result_index.locate(store, batch_id, custom_id)
        listed: dict[str | None, list[Chunk]] = {}
        # Each chunk is read once, for every line of this custom_id it holds; past
        # MAX_PLACES lines (a file that repeats one custom_id a million times, every copy
        # rejected) the rest are not looked at: the answer stays an API call's work.
        wanted: dict[str, tuple[Chunk, set[int]]] = {}
        for place in located[:MAX_PLACES]:
            if place.source not in listed:
                listed[place.source] = result_index.list_chunks(store, batch_id, place.source)
            for chunk in listed[place.source]:
                if chunk.first <= place.line <= chunk.last:
                    wanted.setdefault(chunk.key, (chunk, set()))[1].add(place.line)
        found: list[tuple[Chunk, Entry]] = []
        seen_after = start[1] == ""
        for chunk, lines in wanted.values():
            for entry in result_index.read_entries(store.read(chunk.key)):
                if entry.line not in lines or entry.custom_id != digest:
                    continue
                seen_after = seen_after or entry.id == start[1]
                if (entry.line, entry.id) > start and entry.kind in visible:
                    found.append((chunk, entry))
        if not seen_after:
            raise _not_a_cursor(start[1])
        found.sort(key=lambda pair: pair[1])
        return found[:limit], len(found) > limit

    # -- the lines themselves ---------------------------------------------------------------

    def _read(self, batch_id: str, entries: list[tuple[Chunk, Entry]], more: bool) -> ResultPage:
        """The entries' lines, by ranged GETs (lines of one file close together: one GET),
        within `PAGE_BYTES`."""
        budget, kept = 0, 0
        for _, entry in entries:
            if kept and budget + entry.length > PAGE_BYTES:
                more = True
                break
            budget += entry.length
            kept += 1
        entries = entries[:kept]
        by_file: dict[str, list[Entry]] = {}
        for chunk, entry in entries:
            by_file.setdefault(result_index.file_key(batch_id, chunk, entry), []).append(entry)
        reads = [(key, span) for key, group in by_file.items() for span in _spans(group)]
        store = self.deps.store

        def read(item: tuple[str, list[Entry]]) -> list[tuple[Entry, bytes]]:
            key, span = item
            first = span[0].offset
            data = store.read_range(key, first, span[-1].offset + span[-1].length - first)
            return [
                (entry, data[entry.offset - first : entry.offset - first + entry.length])
                for entry in span
            ]

        lines: dict[Entry, bytes] = {}
        for pairs in _parallel(read, reads):
            lines.update(pairs)
        data: list[dict[str, Any]] = []
        sent = 0
        for _, entry in entries:
            try:
                document = orjson.loads(lines[entry])
            except orjson.JSONDecodeError:
                continue  # never expected: the index and its file are written together
            if isinstance(document, dict):
                document["line"] = entry.line
                size = _sent_size(document)
                if sent + size > SENT_BYTES:
                    if not data:
                        raise _too_large(entry, size)
                    more = True
                    break
                sent += size
                data.append(document)
        return ResultPage(data=data, has_more=more)


def _spans(entries: Iterable[Entry]) -> list[list[Entry]]:
    """Entries of one file grouped into runs read by one ranged GET each."""
    spans: list[list[Entry]] = []
    for entry in sorted(entries, key=lambda e: e.offset):
        if spans and entry.offset - (spans[-1][-1].offset + spans[-1][-1].length) <= _GAP_BYTES:
            spans[-1].append(entry)
        else:
            spans.append([entry])
    return spans


def _sent_size(document: dict[str, Any]) -> int:
    """Bytes of `document` in Lambda's answer: json.dumps as the API writes it (ASCII), then
    escaped once more as the envelope's `body` string."""
    return len(json.dumps(json.dumps(document)))


def _too_large(entry: Entry, size: int) -> InvalidRequestError:
    return InvalidRequestError(
        f"The result line at input line {entry.line} is {size} bytes as sent, more than one "
        f"answer holds ({SENT_BYTES}); read it from the batch's output or error File, or its "
        "part through /result_parts.",
        param="limit",
        code="result_line_too_large",
    )


def _not_a_cursor(after: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"after must be the id of a result line of this batch (a page's last id); got {after!r}.",
        param="after",
        code="invalid_cursor",
    )
