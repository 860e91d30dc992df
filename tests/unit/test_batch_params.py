"""One type per batch parameter: the API's body, a dropped file's options and the service's own
check refuse the same values and name the same param."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from batch_core.api_models import BatchCreateParams
from batch_core.batch_params import BatchParams, checked, problem_of, window_seconds
from batch_core.drop_options import drop_options
from batch_core.errors import InvalidRequestError

REFUSED: list[tuple[str, Any, str]] = [
    ("completion_window", "30d", "completion_window"),
    ("completion_window", "24h\n", "completion_window"),
    ("completion_window", "0h", "completion_window"),
    ("metadata", {f"k{i}": "v" for i in range(17)}, "metadata"),
    ("metadata", {"k": "v" * 513}, "metadata.k"),
    ("metadata", {"k" * 65: "v"}, "metadata." + "k" * 65),
    ("metadata", {"": "v"}, "metadata."),
    ("invalid_lines", "ignore", "invalid_lines"),
    ("endpoint", "/v1/images", "endpoint"),
]


def _api_param(name: str, value: Any) -> str | None:
    # invalid_lines is no API parameter (OpenAI has none): the body refuses it as extra.
    body = {"input_file_id": "file-1", "endpoint": "/v1/embeddings", name: value}
    with pytest.raises(ValidationError) as raised:
        BatchCreateParams.model_validate(body)
    return problem_of(raised.value.errors()[0])[1]


@pytest.mark.parametrize(("name", "value", "param"), REFUSED)
def test_every_edge_refuses_the_same_value_naming_the_same_param(
    name: str, value: Any, param: str
) -> None:
    with pytest.raises(InvalidRequestError) as service:
        checked(BatchParams, {"endpoint": "/v1/embeddings", name: value})
    assert (service.value.param, service.value.code) == (param, "invalid_value")
    assert _api_param(name, value) == param
    if name == "metadata":
        headers = {f"metadata-{k}": v for k, v in value.items()}
        if "" in value:
            return  # an empty S3 metadata suffix is no pair; the folder form covers it below
    else:
        headers = {name.replace("_", "-"): value}
    with pytest.raises(InvalidRequestError) as dropped:
        drop_options("inbox/f.jsonl", headers)
    assert dropped.value.param == param and dropped.value.code == "invalid_option"


def test_a_refused_window_says_which_windows_exist() -> None:
    with pytest.raises(InvalidRequestError, match="between 1h and 7d"):
        window_seconds("8d")
    assert window_seconds("1h") == 3600
    assert window_seconds("7d") == window_seconds("168h") == 7 * 86400


def test_an_accepted_set_is_the_same_at_every_edge() -> None:
    values = {"completion_window": "72h", "metadata": {"team": "nlp"}}
    params = checked(BatchParams, {"endpoint": "/v1/embeddings", **values})
    body = BatchCreateParams.model_validate(
        {"input_file_id": "file-1", "endpoint": "/v1/embeddings", **values}
    )
    options = drop_options(
        "inbox/f.jsonl",
        {"endpoint": "embeddings", "completion-window": "72h", "metadata-team": "nlp"},
    )
    for edge in (body, options):
        assert (edge.endpoint, edge.completion_window, edge.metadata) == (
            params.endpoint,
            params.completion_window,
            params.metadata,
        )
