"""The result index: where each result line of a batch is, so a page of results (or one
custom_id) is read with a few small objects and ranged GETs, never whole parts.

Three things make it:

- **Placed line ids.** Every result line's `id` carries its input line: `batch_req_` then
  10 hex digits of the line, then 22 hex digits of the id it was given (`placed_id`). A
  cursor (`after`, the last id of a page: the SDKs' own paging) is thereby a position in
  input order with no lookup, and a part written but not yet indexed (a crash between the
  two) is indexed again from its own bytes.
- **Line chunks.** With each part (and the never-ran lines, and the lines validation
  rejected) go index chunks: up to `CHUNK_ENTRIES` entries, sorted by line, each an input
  line, the line's id, which file holds it (output or error), its byte offset and length
  there, and a digest of its custom_id. A chunk's key names its first and last input line,
  so one listing tells a page which chunks can hold lines after its cursor (chunks of the
  same shard overlap: a shard's lines finish in any order; shards cover mostly increasing
  ranges, so a page reads the chunks of the few shards around its position). Chunks are
  written last to first: chunk 0 present means the index of that file is whole.
- **The custom_id index**, written at intake: custom_id digest -> input line and shard, in
  `ID_BUCKETS` hash buckets spooled in objects of at most `_ID_FLUSH_BYTES`; a lookup reads
  one bucket's objects, then that shard's chunks holding the line, then one ranged GET.
  Buckets by hash rather than one object per custom_id: a million lines are a few hundred
  small PUTs at intake, not a million. Digests, not the custom_ids (which may be long):
  bounded entries; the line read back is compared with the custom_id asked for.

Keys live under `s3keys.index_prefix`, beside results/ and errors/ (never under them:
`Results.merge` joins everything there into the output File).
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal

import orjson

from batch_core import s3keys
from batch_core.protocol import BatchRequestOutput
from batch_core.storage import ObjectStore

Kind = Literal["output", "error"]

LINE_ID_PREFIX = "batch_req_"
_LINE_HEX = 10
"""Input lines up to 16**10 (a trillion): far past any file the API takes."""
_TAIL_HEX = 22
_PLACED_ID = re.compile(r"batch_req_[0-9a-f]{32}")

CHUNK_ENTRIES = 1024
"""Entries per index chunk (about 100 KB): a page's read of a chunk stays small."""
ID_BUCKETS = 256
"""Hash buckets of the custom_id index. A constant, not a setting: readers and writers of a
batch must agree on it across deploys."""
_ID_FLUSH_BYTES = 64 * 1024
"""A bucket is written as an object once it holds this much: intake's memory stays at most
`ID_BUCKETS` times this (16 MB) whatever the batch's size."""
_ID_SHARDS = "shards.json"
"""The open-shard serial -> shard index map (a line's shard is known by its serial until
the planner emits the shard)."""
REJECTED = "rejected"
"""The source of the lines validation rejected (no shard)."""


def placed_id(line_id: str, line: int) -> str:
    """`line_id` with input line `line` in it. The same result whenever applied again, so a
    line written twice (a redelivered part) keeps one id."""
    tail = line_id.removeprefix(LINE_ID_PREFIX)
    if not re.fullmatch(r"[0-9a-f]+", tail) or len(tail) < _TAIL_HEX:
        tail = hashlib.sha256(line_id.encode()).hexdigest()
    return f"{LINE_ID_PREFIX}{line:0{_LINE_HEX}x}{tail[-_TAIL_HEX:]}"


def line_of(line_id: str) -> int | None:
    """The input line a placed id carries; None for anything else."""
    if not _PLACED_ID.fullmatch(line_id):
        return None
    return int(line_id[len(LINE_ID_PREFIX) : len(LINE_ID_PREFIX) + _LINE_HEX], 16)


def same_line_id(stored: str, given: str) -> bool:
    """Whether `stored` (as written, placed) is the line id `given` before it was placed
    (for code that recognises its own deterministic ids in written parts)."""
    return stored == given or stored == placed_id(given, line_of(stored) or 0)


def custom_id_digest(custom_id: str | None) -> str:
    """16 hex digits of the custom_id's sha256 ("-" for a line without one)."""
    if custom_id is None:
        return "-"
    return hashlib.sha256(custom_id.encode()).hexdigest()[:16]


@dataclass(frozen=True, order=True)
class Entry:
    """Where one result line is. Ordered by input line, then id (a page's order)."""

    line: int
    id: str
    kind: Kind
    offset: int
    length: int
    custom_id: str
    """`custom_id_digest` of the line's custom_id."""
    name: str = ""
    """The file pair that holds it (`part-00003`) in a shard's compacted index; "" in a
    file's own chunks (the chunk's name says it)."""

    def encode(self) -> bytes:
        kind = "o" if self.kind == "output" else "e"
        fields = [str(self.line), self.id, kind, str(self.offset), str(self.length)]
        fields += [self.custom_id, *([self.name] if self.name else [])]
        return ("\t".join(fields) + "\n").encode()


def _decode(raw: bytes) -> Entry | None:
    fields = raw.decode(errors="replace").split("\t")
    if len(fields) not in (6, 7):
        return None
    try:
        return Entry(
            line=int(fields[0]),
            id=fields[1],
            kind="output" if fields[2] == "o" else "error",
            offset=int(fields[3]),
            length=int(fields[4]),
            custom_id=fields[5],
            name=fields[6] if len(fields) == 7 else "",
        )
    except ValueError:
        return None


def read_entries(data: bytes) -> list[Entry]:
    """The entries of one chunk (a damaged line is skipped, never the page's failure)."""
    return [entry for raw in data.splitlines() if raw and (entry := _decode(raw)) is not None]


def encode_lines(lines: Iterable[BatchRequestOutput], kind: Kind) -> tuple[bytes, list[Entry]]:
    """The JSONL of `lines` (placed: each must know its input line) and their entries."""
    data = io.BytesIO()
    entries: list[Entry] = []
    for line in lines:
        if line.line is None:
            raise ValueError(f"result line {line.id} has no input line")
        placed = line.model_copy(update={"id": placed_id(line.id, line.line)})
        raw = placed.model_dump_json().encode() + b"\n"
        entries.append(
            Entry(
                line.line,
                placed.id,
                kind,
                data.tell(),
                len(raw),
                custom_id_digest(line.custom_id),
            )
        )
        data.write(raw)
    return data.getvalue(), entries


def entries_of_file(data: bytes, kind: Kind, line_of_custom_id: dict[str, int]) -> list[Entry]:
    """The entries of a result file already written (an index a crash left unwritten): each
    line's input line from its placed id, else from its custom_id (`line_of_custom_id`, a
    file written before ids were placed)."""
    entries: list[Entry] = []
    offset = 0
    for raw in data.splitlines(keepends=True):
        length = len(raw)
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError:
            document = None
        if isinstance(document, dict) and isinstance(document.get("id"), str):
            line_id = document["id"]
            custom_id = document.get("custom_id")
            custom_id = custom_id if isinstance(custom_id, str) else None
            line = line_of(line_id)
            if line is None and custom_id is not None:
                line = line_of_custom_id.get(custom_id)
            if line is not None:
                entries.append(
                    Entry(line, line_id, kind, offset, length, custom_id_digest(custom_id))
                )
        offset += length
    return entries


# -- chunks -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    """One index chunk, known from its key alone."""

    key: str
    source: str
    """A shard (`00012`) or `rejected`."""
    name: str
    """The file pair it indexes: `part-00003` or `never-ran`."""
    number: int
    first: int
    last: int


def chunk_key(batch_id: str, source: str, name: str, number: int, first: int, last: int) -> str:
    prefix = s3keys.line_index_prefix(batch_id, source)
    return f"{prefix}{name}.{number:04d}.{first:010d}-{last:010d}"


def parse_chunk_key(key: str) -> Chunk | None:
    try:
        path, base = key.rsplit("/", 1)
        source = path.rsplit("/", 1)[1]
        name, number, span = base.split(".")
        first, last = span.split("-")
        return Chunk(key, source, name, int(number), int(first), int(last))
    except ValueError:
        return None


def shard_source(shard_index: int) -> str:
    return f"{shard_index:05d}"


def file_key(batch_id: str, chunk: Chunk, entry: Entry) -> str:
    """The result file that holds the line of `entry`, read from `chunk`."""
    if chunk.source == REJECTED:
        return s3keys.rejected_lines_key(batch_id)
    shard = int(chunk.source)
    prefix = (
        s3keys.results_prefix(batch_id, shard)
        if entry.kind == "output"
        else s3keys.errors_prefix(batch_id, shard)
    )
    return f"{prefix}{entry.name or chunk.name}.jsonl"


def write_chunks(
    store: ObjectStore, batch_id: str, source: str, name: str, entries: list[Entry]
) -> None:
    """The index of one file pair: sorted, cut in chunks, written last to first (chunk 0,
    written last, says the index is whole). The same keys and bytes when written again."""
    ordered = sorted(entries)
    chunks = [ordered[i : i + CHUNK_ENTRIES] for i in range(0, len(ordered), CHUNK_ENTRIES)]
    for number in reversed(range(len(chunks))):
        chunk = chunks[number]
        key = chunk_key(batch_id, source, name, number, chunk[0].line, chunk[-1].line)
        store.put(key, b"".join(entry.encode() for entry in chunk), content_type="text/plain")


def indexed_names(store: ObjectStore, batch_id: str, source: str) -> set[str]:
    """The files of `source` whose index is whole (chunk 0 written)."""
    names: set[str] = set()
    for key in store.list_keys(s3keys.line_index_prefix(batch_id, source)):
        chunk = parse_chunk_key(key)
        if chunk is not None and chunk.number == 0:
            names.add(chunk.name)
    return names


_COMPACT = "upto-"


def compact_name(last_part: int) -> str:
    """The name of a shard's index of all its parts up to `last_part`, written as it settles."""
    return f"{_COMPACT}{last_part:05d}"


def part_number(name: str) -> int | None:
    """3 for `part-00003`; None for other names."""
    head, _, number = name.partition("-")
    return int(number) if head == "part" and number.isdigit() else None


def current(chunks: list[Chunk]) -> list[Chunk]:
    """The chunks a reader needs: per shard, its whole compacted index (the one covering the
    most parts) in place of the parts it covers; parts after it and never-ran lines as they
    are. A compaction a crash left partial (no chunk 0) is passed over."""
    covered: dict[str, tuple[int, str]] = {}
    for chunk in chunks:
        if chunk.name.startswith(_COMPACT) and chunk.number == 0:
            last = int(chunk.name.removeprefix(_COMPACT))
            if last >= covered.get(chunk.source, (-1, ""))[0]:
                covered[chunk.source] = (last, chunk.name)
    kept: list[Chunk] = []
    for chunk in chunks:
        last, name = covered.get(chunk.source, (-1, ""))
        if chunk.name.startswith(_COMPACT):
            if chunk.name == name:
                kept.append(chunk)
            continue
        number = part_number(chunk.name)
        if number is None or number > last:
            kept.append(chunk)
    return kept


def list_chunks(store: ObjectStore, batch_id: str, source: str | None = None) -> list[Chunk]:
    """The chunks a reader needs (`current`), of one source or of the whole batch."""
    return current(
        [
            chunk
            for key in store.list_keys(s3keys.line_index_prefix(batch_id, source))
            if (chunk := parse_chunk_key(key)) is not None
        ]
    )


def compact(store: ObjectStore, batch_id: str, shard_index: int, last_part: int) -> None:
    """One index of a settling shard's parts up to `last_part`, sorted by line: its chunks
    cover disjoint ranges, so a page reads one or two of them, not one per part. The parts'
    own chunks stay (a reader that listed them before keeps reading what it listed)."""
    source = shard_source(shard_index)
    keys = store.list_keys(s3keys.line_index_prefix(batch_id, source))
    chunks = [chunk for key in keys if (chunk := parse_chunk_key(key)) is not None]
    wanted = [
        chunk
        for chunk in chunks
        if (number := part_number(chunk.name)) is not None and number <= last_part
    ]
    if len({chunk.name for chunk in wanted}) <= 1:
        return  # one part: its own chunks are already sorted and disjoint
    entries: list[Entry] = []
    for chunk in wanted:
        entries += [replace(e, name=chunk.name) for e in read_entries(store.read(chunk.key))]
    write_chunks(store, batch_id, source, compact_name(last_part), entries)


# -- the custom_id index ------------------------------------------------------------------


def _bucket_of(digest: str) -> int:
    return int(digest[:8], 16) % ID_BUCKETS


def _id_digest(custom_id: str) -> str:
    return hashlib.sha256(custom_id.encode()).hexdigest()[:32]


class IdIndexWriter:
    """Intake's side of the custom_id index. A valid line's shard is known by the planner's
    open-shard serial (`placed` names its index once emitted); a rejected line's source is
    `REJECTED`; None when the shard is not known (the lookup then reads every chunk that
    holds the line)."""

    def __init__(self, store: ObjectStore, batch_id: str) -> None:
        self._store = store
        self._batch_id = batch_id
        self._buffers: dict[int, bytearray] = {}
        self._written: dict[int, int] = {}
        self._index_of: dict[int, int] = {}

    def add(self, custom_id: str | None, line: int, source: int | str | None) -> None:
        if custom_id is None:
            return
        digest = _id_digest(custom_id)
        where = "-" if source is None else source if isinstance(source, str) else f"s{source}"
        bucket = _bucket_of(digest)
        buffer = self._buffers.setdefault(bucket, bytearray())
        buffer += f"{digest}\t{line}\t{where}\n".encode()
        if len(buffer) >= _ID_FLUSH_BYTES:
            self._flush(bucket)

    def placed(self, serial: int, index: int) -> None:
        self._index_of[serial] = index

    def _key(self, bucket: int, number: int) -> str:
        return f"{s3keys.id_index_prefix(self._batch_id)}{bucket:03d}-{number:05d}"

    def _flush(self, bucket: int) -> None:
        number = self._written.get(bucket, 0)
        self._store.put(self._key(bucket, number), bytes(self._buffers.pop(bucket)), "text/plain")
        self._written[bucket] = number + 1

    def close(self) -> None:
        """Write the serial map (every shard is emitted by now), then what is left of the
        buckets: a bucket is never read without its map. The same keys and bytes on a
        resumed intake, which reads the same file."""
        self._store.put_json(
            f"{s3keys.id_index_prefix(self._batch_id)}{_ID_SHARDS}",
            sorted(self._index_of.items()),
        )
        with self._store.parallel_uploads() as uploads:
            for bucket in sorted(self._buffers):
                number = self._written.get(bucket, 0)
                uploads.submit(self._key(bucket, number), io.BytesIO(bytes(self._buffers[bucket])))
                self._written[bucket] = number + 1
        self._buffers.clear()


@dataclass(frozen=True)
class Located:
    """Where the custom_id index puts a custom_id: its input line and source (a shard's
    `00012`, `rejected`, or None when not known)."""

    line: int
    source: str | None


def locate(store: ObjectStore, batch_id: str, custom_id: str) -> list[Located]:
    """Every input line that had `custom_id` (one valid line; rejected duplicates too)."""
    digest = _id_digest(custom_id)
    prefix = s3keys.id_index_prefix(batch_id)
    found: list[tuple[int, str]] = []
    for key in store.list_keys(f"{prefix}{_bucket_of(digest):03d}-"):
        for raw in store.read(key).splitlines():
            fields = raw.decode(errors="replace").split("\t")
            if len(fields) == 3 and fields[0] == digest and fields[1].isdigit():
                found.append((int(fields[1]), fields[2]))
    if not found:
        return []
    serials: dict[int, int] = {}
    if any(where.startswith("s") for _, where in found):
        # None: a bucket flushed mid-intake, its map not yet written (lines not yet run).
        data = store.read_if_there(f"{prefix}{_ID_SHARDS}")
        document = orjson.loads(data) if data is not None else []
        serials = {int(serial): int(index) for serial, index in document}
    located: list[Located] = []
    for line, where in sorted(found):
        if where.startswith("s") and where[1:].isdigit() and int(where[1:]) in serials:
            located.append(Located(line, shard_source(serials[int(where[1:])])))
        elif where == REJECTED:
            located.append(Located(line, REJECTED))
        else:
            located.append(Located(line, None))
    return located
