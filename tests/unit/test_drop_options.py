"""Options of a dropped file, from its S3 metadata or `name=value` folders in its key."""

from __future__ import annotations

import pytest

from batch_core.drop_options import DropOptions, drop_options
from batch_core.errors import InvalidRequestError


def test_no_options_means_openai_defaults() -> None:
    assert drop_options("inbox/team/prompts.jsonl", {}) == DropOptions()


def test_options_from_object_metadata() -> None:
    options = drop_options(
        "inbox/prompts.jsonl",
        {
            "endpoint": "/v1/embeddings",
            "completion-window": "72h",
            "invalid-lines": "skip",
            "metadata-project": "alpha",
            "Metadata-Owner": "kim",
            "mtime": "1700000000",  # added by upload tools: ignored
        },
    )
    assert options == DropOptions(
        endpoint="/v1/embeddings",
        completion_window="72h",
        invalid_lines="skip",
        metadata={"project": "alpha", "owner": "kim"},
    )


def test_options_from_key_folders_and_metadata_wins() -> None:
    options = drop_options(
        "inbox/endpoint=completions/window=2d/invalid_lines=skip/team=nlp/run 1.jsonl",
        {"completion-window": "36h"},
    )
    assert options == DropOptions(
        endpoint="/v1/completions",
        completion_window="36h",
        invalid_lines="skip",
        metadata={"team": "nlp"},
    )


@pytest.mark.parametrize(
    ("key", "metadata", "param"),
    [
        ("inbox/endpoint=images/f.jsonl", {}, "endpoint"),
        ("inbox/f.jsonl", {"completion-window": "30d"}, "completion_window"),
        ("inbox/window=soon/f.jsonl", {}, "completion_window"),
        ("inbox/f.jsonl", {"invalid-lines": "ignore"}, "invalid_lines"),
        ("inbox/f.jsonl", {f"metadata-k{i}": "v" for i in range(17)}, "metadata"),
        ("inbox/f.jsonl", {"metadata-k": "v" * 513}, "metadata.k"),
        ("inbox/" + "k" * 65 + "=v/f.jsonl", {}, "metadata." + "k" * 65),
    ],
)
def test_unusable_option_names_its_param(key: str, metadata: dict[str, str], param: str) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        drop_options(key, metadata)
    assert raised.value.param == param
