"""The one item encoding: a record's fields in DynamoDB's own types, read back unchanged, and
items of the earlier encodings still read."""

from __future__ import annotations

import json

from pydantic import BaseModel

from batch_core.models import BatchError, FileObject, Upload
from batch_core.records import BatchRecord, FileRecord, ShardRecord, UploadRecord
from batch_core.table_codec import from_item, record_from, record_item

FILE = FileObject(id="file-1", bytes=3, created_at=1, filename="a.jsonl", purpose="batch")


def round_trip(record: BaseModel) -> BaseModel:
    return record_from(type(record), from_item(record_item(record, pk="P", sk="S")))


def test_records_come_back_as_they_went_in() -> None:
    batch = BatchRecord(
        id="batch_1",
        endpoint="/v1/chat/completions",
        input_file_id="file-1",
        completion_window="24h",
        status="failed",
        created_at=1,
        input_key="batches/batch_1/input.jsonl",
        metadata={"team": "nlp"},
        errors=[BatchError(code="invalid_json_line", line=3, message="bad", param=None)],
    )
    upload = UploadRecord(
        upload=Upload(
            id="upload_1",
            bytes=3,
            created_at=1,
            expires_at=2,
            filename="a.jsonl",
            purpose="batch",
            status="completed",
            file=FILE,
        ),
        tenant="t",
        mime_type="application/jsonl",
        part_ids=["part_1", "part_2"],
    )
    shard = ShardRecord.model_validate(
        {"batch_id": "batch_1", "index": 0, "request_count": 2, "lease_until": 12.75}
    )
    for record in (batch, FileRecord(file=FILE, s3_key="files/file-1"), upload, shard):
        assert round_trip(record) == record


def test_nested_models_are_maps_and_floats_numbers() -> None:
    item = record_item(FileRecord(file=FILE, s3_key="k"), pk="FILE#file-1", sk="META")
    assert item["file"]["M"]["status"] == {"S": "processed"}
    assert "file_status" not in item and "document" not in item
    lease = record_item(
        ShardRecord.model_validate(
            {"batch_id": "batch_1", "index": 0, "request_count": 2, "lease_until": 1.5}
        )
    )
    assert lease["lease_until"] == {"N": "1.5"}


def test_items_of_the_earlier_encodings_are_still_read() -> None:
    batch = record_from(
        BatchRecord,
        {
            "id": "batch_1",
            "endpoint": "/v1/embeddings",
            "input_file_id": "file-1",
            "completion_window": "24h",
            "status": "failed",
            "created_at": 1,
            "input_key": "k",
            "errors_json": json.dumps([{"code": "x", "line": 2, "message": "m", "param": None}]),
        },
    )
    assert batch.errors is not None and batch.errors[0].line == 2
    legacy_file = {f"file_{k}": v for k, v in FILE.model_dump().items()}
    file = record_from(FileRecord, {"pk": "FILE#file-1", "s3_key": "k", **legacy_file})
    assert file.file == FILE
    pending = Upload(
        id="upload_1",
        bytes=3,
        created_at=1,
        expires_at=2,
        filename="a",
        purpose="batch",
        status="pending",
    )
    upload = UploadRecord(upload=pending, tenant="t", mime_type="m")
    assert record_from(UploadRecord, {"document": upload.model_dump_json()}) == upload
