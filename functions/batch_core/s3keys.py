"""The S3 key layout: one place that knows where everything lives in the bucket."""

from __future__ import annotations

import hashlib

INBOX_PREFIX = "inbox/"
OUTBOX_PREFIX = "outbox/"
FILES_PREFIX = "files/"
BATCHES_PREFIX = "batches/"


def file_key(file_id: str) -> str:
    return f"{FILES_PREFIX}{file_id}"


UPLOADS_PREFIX = "uploads/"
INPUT_NAME = "input.jsonl"


def batch_input_key(batch_id: str) -> str:
    """Where a batch created through the API keeps its input; the S3 event on this key
    starts validation, as a dropped file's does."""
    return f"{BATCHES_PREFIX}{batch_id}/{INPUT_NAME}"


def batch_id_of_input(key: str) -> str | None:
    """`batches/<id>/input.jsonl` -> `<id>`; None for any other key."""
    parts = key.split("/")
    if len(parts) == 3 and f"{parts[0]}/" == BATCHES_PREFIX and parts[2] == INPUT_NAME:
        return parts[1]
    return None


def upload_part_key(upload_id: str, part_id: str) -> str:
    return f"{UPLOADS_PREFIX}{upload_id}/{part_id}"


def shard_key(batch_id: str, shard_index: int) -> str:
    return f"{BATCHES_PREFIX}{batch_id}/shards/{shard_index:05d}.jsonl"


def shard_prefix(batch_id: str) -> str:
    return f"{BATCHES_PREFIX}{batch_id}/shards/"


def repeats_key(batch_id: str, shard_index: int) -> str:
    """The repeats of a shard's primaries (`repeats`): under the shard prefix, so whatever
    deletes a batch's shards (and the `batches/` lifecycle rule) takes them too."""
    return f"{shard_prefix(batch_id)}repeats/{shard_index:05d}.jsonl"


def results_prefix(batch_id: str, shard_index: int | None = None) -> str:
    base = f"{BATCHES_PREFIX}{batch_id}/results/"
    return base if shard_index is None else f"{base}{shard_index:05d}/"


def errors_prefix(batch_id: str, shard_index: int | None = None) -> str:
    base = f"{BATCHES_PREFIX}{batch_id}/errors/"
    return base if shard_index is None else f"{base}{shard_index:05d}/"


def rejected_lines_key(batch_id: str) -> str:
    """Error lines for the input lines that failed validation (invalid_lines=skip)."""
    return f"{errors_prefix(batch_id)}rejected/{part_name(0)}"


def index_prefix(batch_id: str) -> str:
    """The batch's result index (`result_index`): where each result line is, and which line
    holds a custom_id. Not under results/ or errors/: `Results.merge` joins everything there."""
    return f"{BATCHES_PREFIX}{batch_id}/index/"


def line_index_prefix(batch_id: str, source: str | None = None) -> str:
    """The index chunks of a result file's lines; `source` is a shard (`00012`) or
    `rejected`."""
    base = f"{index_prefix(batch_id)}lines/"
    return base if source is None else f"{base}{source}/"


def id_index_prefix(batch_id: str) -> str:
    """custom_id -> input line and shard, in hash buckets, written at intake."""
    return f"{index_prefix(batch_id)}ids/"


def part_name(part_index: int) -> str:
    return f"part-{part_index:05d}.jsonl"


def is_part_key(key: str) -> bool:
    return key.rsplit("/", 1)[-1].startswith("part-")


def part_index_of(key: str) -> int:
    """The part number in `.../part-00012.jsonl`."""
    return int(key.rsplit("part-", 1)[1].split(".", 1)[0])


MAX_KEY_BYTES = 1024
"""S3 refuses longer keys (KeyTooLongError), counted in UTF-8 bytes."""
OUTBOX_FILENAMES = ("batch.json", "output.jsonl", "errors.jsonl")
"""What a dropped batch's outbox folder holds."""
_UNIQUE_SUFFIX_BYTES = len("~") + 8
MAX_OUTBOX_NAME_BYTES = (
    MAX_KEY_BYTES
    - len(OUTBOX_PREFIX)
    - len("/")
    - max(len(name) for name in OUTBOX_FILENAMES)
    - _UNIQUE_SUFFIX_BYTES
)
"""The longest outbox name whose every key (made unique, too) S3 still takes."""
_SHORTENED_MARK = "~h"


def outbox_name(inbox_key: str) -> str | None:
    """`inbox/team/prompts.jsonl` -> `team/prompts`; None for keys outside the inbox.

    Only `.jsonl` is dropped: `x.json` and `x.txt` keep their names, so they cannot share
    `x`'s outbox. Any name still taken (the same key dropped again, or `x` beside
    `x.jsonl`) is made unique at intake with `unique_outbox_name`. A name too long for its
    outbox keys (an inbox key may take all of S3's 1,024 bytes) is cut, at a character, and
    ends in a hash of the whole key, so two long names that share a beginning stay apart."""
    if not inbox_key.startswith(INBOX_PREFIX):
        return None
    name = inbox_key[len(INBOX_PREFIX) :].removesuffix(".jsonl")
    if len(name.encode()) > MAX_OUTBOX_NAME_BYTES:
        digest = hashlib.sha256(inbox_key.encode()).hexdigest()[:16]
        room = MAX_OUTBOX_NAME_BYTES - len(_SHORTENED_MARK) - len(digest)
        kept = name.encode()[:room].decode(errors="ignore")  # never half a character
        name = f"{kept}{_SHORTENED_MARK}{digest}"
    return name or None


def unique_outbox_name(name: str, batch_id: str) -> str:
    """The outbox name of a batch whose plain name another batch holds: `x~<8 of its id>`."""
    return f"{name}~{batch_id.removeprefix('batch_')[:8]}"


def outbox_key(name: str, filename: str) -> str:
    return f"{OUTBOX_PREFIX}{name}/{filename}"
