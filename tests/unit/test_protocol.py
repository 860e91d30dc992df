"""Our objects and lines parse as the openai SDK's own types (the oracle)."""

from __future__ import annotations

from openai.types import Batch as OpenAIBatch
from openai.types import Completion, CreateEmbeddingResponse
from openai.types import FileObject as OpenAIFileObject
from openai.types.chat import ChatCompletion

from batch_core.models import BatchError, FileObject
from batch_core.protocol import EngineRequest, EngineResult, usage_of
from batch_core.records import BatchRecord
from gpu_worker.engines.fake import FakeEngine


def record(**overrides: object) -> BatchRecord:
    values: dict[str, object] = {
        "id": "batch_abc",
        "endpoint": "/v1/chat/completions",
        "input_file_id": "file-abc",
        "completion_window": "24h",
        "status": "in_progress",
        "created_at": 1_700_000_000,
        "input_key": "inbox/x.jsonl",
        "request_total": 10,
        "request_completed": 4,
        "request_failed": 1,
        "input_tokens": 100,
        "cached_tokens": 20,
        "output_tokens": 50,
    }
    values.update(overrides)
    return BatchRecord.model_validate(values)


def test_batch_parses_as_openai_batch_with_live_counts_and_usage() -> None:
    batch = OpenAIBatch.model_validate(record().to_batch().model_dump(mode="json"))
    assert batch.status == "in_progress"
    assert batch.request_counts is not None
    assert (
        batch.request_counts.total,
        batch.request_counts.completed,
        batch.request_counts.failed,
    ) == (10, 4, 1)
    assert batch.usage is not None
    assert batch.usage.total_tokens == 150
    assert batch.usage.input_tokens_details.cached_tokens == 20


def test_failed_batch_carries_its_errors() -> None:
    failed = record(
        status="failed",
        failed_at=1_700_000_001,
        errors=[BatchError(code="invalid_json_line", line=3, message="bad", param=None)],
    )
    batch = OpenAIBatch.model_validate(failed.to_batch().model_dump(mode="json"))
    assert batch.errors is not None and batch.errors.data is not None
    assert batch.errors.data[0].line == 3
    assert batch.errors.data[0].code == "invalid_json_line"


def test_file_object_parses_as_openai_file() -> None:
    file = FileObject(
        id="file-1", bytes=10, created_at=1, filename="x.jsonl", purpose="batch_output"
    )
    parsed = OpenAIFileObject.model_validate(file.model_dump(mode="json"))
    assert parsed.purpose == "batch_output"


def test_engine_result_becomes_an_openai_output_line() -> None:
    engine = FakeEngine("m")
    request = EngineRequest(
        custom_id="c1",
        url="/v1/chat/completions",
        body={"model": "m", "messages": [{"role": "user", "content": "a b c"}], "max_tokens": 5},
    )
    line = next(engine.run([request])).to_output_line()
    assert line.id.startswith("batch_req_")
    assert line.succeeded
    assert line.response is not None
    completion = ChatCompletion.model_validate(line.response.body)
    assert completion.usage is not None and completion.usage.completion_tokens == 5
    assert usage_of(line.response.body) == (3, 0, 5)


def test_fake_engine_answers_completions_and_embeddings_in_openai_shapes() -> None:
    engine = FakeEngine("m")
    completion, embedding = engine.run(
        [
            EngineRequest(
                custom_id="a",
                url="/v1/completions",
                body={"model": "m", "prompt": "x y", "max_tokens": 2},
            ),
            EngineRequest(
                custom_id="b", url="/v1/embeddings", body={"model": "m", "input": ["x", "y"]}
            ),
        ]
    )
    assert Completion.model_validate(completion.body).choices[0].text
    assert len(CreateEmbeddingResponse.model_validate(embedding.body).data) == 2


def test_error_result_has_openai_error_body() -> None:
    result = EngineResult.failure(
        "c", 400, "too long", param="input_tokens", code="context_length_exceeded"
    )
    line = result.to_output_line()
    assert not line.succeeded
    assert line.response is not None
    assert line.response.status_code == 400
    assert line.response.body == {
        "error": {
            "message": "too long",
            "type": "invalid_request_error",
            "param": "input_tokens",
            "code": "context_length_exceeded",
        }
    }
    assert line.error is None


def test_every_openai_object_has_the_sdk_types_fields_exactly() -> None:
    """models.py is the OpenAI objects, field for field: a field added to or missing from one
    of them would show up here before a client meets it."""
    from openai import types as sdk
    from openai.types.uploads import UploadPart as SdkUploadPart

    from batch_core import models

    pairs = [
        (models.Batch, sdk.Batch),
        (models.BatchError, sdk.BatchError),
        (models.BatchRequestCounts, sdk.BatchRequestCounts),
        (models.BatchUsage, sdk.BatchUsage),
        (models.FileObject, sdk.FileObject),
        (models.Upload, sdk.Upload),
        (models.UploadPart, SdkUploadPart),
    ]
    for ours, theirs in pairs:
        extensions = models.BATCH_EXTENSIONS if ours is models.Batch else frozenset()
        assert set(ours.model_fields) - extensions == set(theirs.model_fields), ours.__name__
