"""Files and uploads over a bare moto world: a File's bytes and listing are its tenant's alone,
an upload's parts join in their recorded order (inline, or by an intake job past
INLINE_JOIN_BYTES), a File expires at its `expires_after`, and deleting one takes its bytes."""

from __future__ import annotations

import hashlib
import json

import pytest

from batch_core import s3keys
from batch_core.errors import InvalidRequestError, NotFoundError
from batch_core.intake_jobs import JoinUpload
from batch_core.retention import ExpiresAfter
from tests.stage_world import StageWorld

DATA = b'{"custom_id": "a"}\n'


def test_a_file_is_its_tenants_alone(world: StageWorld) -> None:
    files = world.stages.files
    made = files.create("tenant-a", filename="in.jsonl", purpose="batch", data=DATA)
    assert (made.bytes, made.filename, made.purpose) == (len(DATA), "in.jsonl", "batch")
    assert files.content("tenant-a", made.id).data == DATA
    with pytest.raises(NotFoundError):
        files.get("tenant-b", made.id)
    with pytest.raises(NotFoundError):
        files.content("tenant-b", made.id)
    assert [f.id for f in files.list_files("tenant-a").items] == [made.id]
    assert files.list_files("tenant-b").items == []


def test_a_bad_purpose_or_filename_is_refused_before_anything_is_stored(
    world: StageWorld,
) -> None:
    files = world.stages.files
    with pytest.raises(InvalidRequestError) as purpose:
        files.create("tenant-a", filename="in.jsonl", purpose="vision", data=DATA)
    assert purpose.value.param == "purpose"
    with pytest.raises(InvalidRequestError) as name:
        files.create("tenant-a", filename="a\x00b.jsonl", purpose="batch", data=DATA)
    assert name.value.param == "filename"
    assert world.store.list_keys("files/") == []


def test_an_upload_joins_its_parts_in_the_order_given(world: StageWorld) -> None:
    files = world.stages.files
    upload = files.create_upload(
        "tenant-a", filename="u.jsonl", purpose="batch", size=6, mime_type="application/jsonl"
    )
    second = files.add_upload_part("tenant-a", upload.id, b"def")
    first = files.add_upload_part("tenant-a", upload.id, b"abc")
    md5 = hashlib.md5(b"abcdef").hexdigest()
    done = files.complete_upload("tenant-a", upload.id, part_ids=[first.id, second.id], md5=md5)
    assert done.status == "completed" and done.file is not None
    assert files.content("tenant-a", done.file.id).data == b"abcdef"


def test_a_large_upload_is_joined_by_an_intake_job(world: StageWorld) -> None:
    world.configure(inline_join_bytes=0)
    files = world.stages.files
    upload = files.create_upload(
        "tenant-a", filename="u.jsonl", purpose="batch", size=3, mime_type="application/jsonl"
    )
    part = files.add_upload_part("tenant-a", upload.id, b"abc")
    done = files.complete_upload("tenant-a", upload.id, part_ids=[part.id])
    assert done.file is not None and files.get("tenant-a", done.file.id).file.status == "uploaded"
    (body,) = world.drain_bodies("intake")
    assert JoinUpload.model_validate(json.loads(body)).upload_id == upload.id
    joined = world.stages.intake.run(JoinUpload(upload_id=upload.id))
    assert joined is None
    assert files.get("tenant-a", done.file.id).file.status == "processed"
    assert files.content("tenant-a", done.file.id).data == b"abc"


def test_a_file_expires_at_its_expires_after_and_the_sweep_deletes_it(world: StageWorld) -> None:
    files = world.stages.files
    kept = files.create("tenant-a", filename="k.jsonl", purpose="batch", data=DATA)
    brief = files.create(
        "tenant-a",
        filename="b.jsonl",
        purpose="batch",
        data=DATA,
        expires_after=ExpiresAfter(anchor="created_at", seconds=3600),
    )
    assert files.expired_file_ids() == []
    world.clock.advance(3601)
    assert files.expired_file_ids() == [brief.id]
    with pytest.raises(NotFoundError):
        files.get("tenant-a", brief.id)  # gone for its tenant at once, before the sweep
    report = world.stages.sweep.run(time_left=lambda: 600.0)
    assert report.deleted_files == [brief.id]
    assert not world.store.exists(s3keys.file_key(brief.id))
    assert files.get("tenant-a", kept.id).file.id == kept.id


def test_deleting_a_file_takes_its_bytes(world: StageWorld) -> None:
    files = world.stages.files
    made = files.create("tenant-a", filename="d.jsonl", purpose="batch", data=DATA)
    with pytest.raises(NotFoundError):
        files.delete("tenant-b", made.id)  # another tenant's: as if it did not exist
    files.delete("tenant-a", made.id)
    assert not world.store.exists(s3keys.file_key(made.id))
    with pytest.raises(NotFoundError):
        files.get("tenant-a", made.id)
