"""A multipart write that fails at its end leaves no upload behind: its parts would be billed
until the bucket's lifecycle rule removed them two days later."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from moto import mock_aws

from batch_core import storage
from batch_core.storage import ObjectStore


@pytest.mark.parametrize("failing", ["UploadPart", "CompleteMultipartUpload"])
def test_a_multipart_write_that_fails_at_its_end_is_aborted(
    failing: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage, "_PART_BYTES", storage.MIN_COPY_PART_BYTES)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="data")
        calls = {"UploadPart": 0}

        def fail(model: Any, **_: Any) -> None:
            if model.name == "UploadPart":
                calls["UploadPart"] += 1
                # The first part goes through; the last one (written at the end) fails.
                if failing == "UploadPart" and calls["UploadPart"] == 2:
                    raise ConnectionError("the last part was lost")
            if model.name == failing == "CompleteMultipartUpload":
                raise ConnectionError("the completion was lost")

        s3.meta.events.register("before-call.s3.*", fail)
        chunk = b"x" * (1024 * 1024)
        with pytest.raises(ConnectionError):
            ObjectStore(s3, "data").put_stream("files/big.jsonl", [chunk] * 7)
        assert s3.list_multipart_uploads(Bucket="data").get("Uploads", []) == []
        assert "Contents" not in s3.list_objects_v2(Bucket="data")
