"""MODEL=s3://...: S3 keys become file names only inside the copy's directory, and the marker
decides whether a cached copy is used (an in-memory S3; tests/integration runs moto's)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from gpu_worker.model_weights import (
    MARKER,
    ModelDownloadError,
    S3Prefix,
    UnsafeKeyError,
    fetch_model,
    local_model,
    parse_s3_uri,
    relative_path,
)
from gpu_worker.settings import EngineSettings

BUCKET = "models-bucket"
URI = f"s3://{BUCKET}/models/tiny/"
TINY = parse_s3_uri(URI)


class MemoryS3:
    """The two calls the copy makes, over a dict of key -> bytes."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = dict(objects)
        self.downloads: list[str] = []
        self.error: Exception | None = None

    def get_paginator(self, operation: str) -> MemoryS3:
        assert operation == "list_objects_v2"
        return self

    def paginate(self, **params: str) -> Iterator[dict[str, Any]]:
        if self.error is not None:
            raise self.error
        assert params["Bucket"] == BUCKET
        contents = [
            {"Key": key, "Size": len(body), "ETag": f'"{hashlib.md5(body).hexdigest()}"'}
            for key, body in sorted(self.objects.items())
            if key.startswith(params["Prefix"])
        ]
        yield {"Contents": contents[:2]}  # two pages, as a long listing comes
        yield {"Contents": contents[2:]} if contents[2:] else {}

    def download_file(self, bucket: str, key: str, filename: str) -> None:
        assert bucket == BUCKET
        self.downloads.append(key)
        Path(filename).write_bytes(self.objects[key])


MODEL_FILES = {
    "models/tiny/config.json": b'{"model_type": "llama"}',
    "models/tiny/tokenizer.json": b"{}",
    "models/tiny/model.safetensors": b"\x00weights" * 100,
    "models/tiny/sub/folder/extra.bin": b"nested",
    "models/tiny-2/config.json": b"another model beside it",
}


@pytest.mark.parametrize(
    ("uri", "bucket", "prefix", "name"),
    [
        ("s3://b-1/models/tiny/", "b-1", "models/tiny/", "tiny"),
        ("s3://b-1/models/tiny", "b-1", "models/tiny/", "tiny"),
        (
            "s3://b-1/Llama-3.1-8B-Instruct/",
            "b-1",
            "Llama-3.1-8B-Instruct/",
            "Llama-3.1-8B-Instruct",
        ),
        ("s3://b-1", "b-1", "", "b-1"),
        ("s3://b-1/", "b-1", "", "b-1"),
    ],
)
def test_an_s3_uri_names_a_folder(uri: str, bucket: str, prefix: str, name: str) -> None:
    location = parse_s3_uri(uri)
    assert (location.bucket, location.prefix, location.name) == (bucket, prefix, name)


@pytest.mark.parametrize(
    "uri",
    ["s3://", "s3://UPPER/x/", "s3://a/x/../y/", "s3://a/x//y/", "s3://ab/x/./y", "/local/dir"],
)
def test_a_malformed_or_unsafe_uri_is_refused(uri: str) -> None:
    with pytest.raises(ModelDownloadError):
        parse_s3_uri(uri)


def test_the_cache_directory_is_one_safe_name_unique_per_uri() -> None:
    names = {
        parse_s3_uri(uri).directory_name
        for uri in ("s3://aaa/models/tiny/", "s3://bbb/models/tiny/", "s3://aaa/x/models/tiny/")
    }
    assert len(names) == 3
    assert all(name.startswith("tiny-") and "/" not in name for name in names)
    odd = S3Prefix("aaa", "we ird..\\name/").directory_name
    assert "/" not in odd and " " not in odd and "\\" not in odd


@pytest.mark.parametrize(
    "key",
    [
        "models/tiny/../../etc/passwd",
        "models/tiny/..",
        "models/tiny/sub/../../x",
        "models/tiny//etc/passwd",  # an absolute path once the prefix is cut off
        "models/tiny/./config.json",
        "models/tiny/sub//x",
        "models/tiny/nul\x00.bin",
        "models/tiny/" + MARKER,
        "models/other/config.json",  # not under the prefix at all
    ],
)
def test_a_key_that_could_leave_the_copy_is_refused(key: str) -> None:
    with pytest.raises(UnsafeKeyError, match="refusing"):
        relative_path(key, TINY)


def test_keys_under_the_prefix_become_relative_paths() -> None:
    assert relative_path("models/tiny/config.json", TINY) == PurePosixPath("config.json")
    assert relative_path("models/tiny/a/b/c.safetensors", TINY) == PurePosixPath(
        "a/b/c.safetensors"
    )
    assert relative_path("models/tiny/..weird..name", TINY) == PurePosixPath("..weird..name")


def test_an_unsafe_key_refuses_the_model_before_anything_is_written(tmp_path: Path) -> None:
    s3 = MemoryS3({**MODEL_FILES, "models/tiny/../../escaped": b"evil"})
    cache = tmp_path / "deep" / "cache"
    with pytest.raises(UnsafeKeyError, match=r"s3://models-bucket/models/tiny/.*escaped"):
        fetch_model(s3, URI, cache)
    assert s3.downloads == []
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "deep" / "escaped").exists()
    assert not cache.exists()


def test_a_copy_is_complete_only_with_its_marker_and_reused_while_the_listing_matches(
    tmp_path: Path,
) -> None:
    s3 = MemoryS3(MODEL_FILES)
    first = fetch_model(s3, URI, tmp_path)
    assert first.downloaded and first.files == 4
    assert first.total_bytes == sum(
        len(body) for key, body in MODEL_FILES.items() if key.startswith("models/tiny/")
    )
    assert sorted(s3.downloads) == sorted(k for k in MODEL_FILES if k.startswith("models/tiny/"))
    assert (first.path / "sub" / "folder" / "extra.bin").read_bytes() == b"nested"
    marker = json.loads((first.path / MARKER).read_text())
    assert marker["uri"] == URI
    assert [(o["key"], o["size"]) for o in marker["objects"]] == sorted(
        (k, len(v)) for k, v in MODEL_FILES.items() if k.startswith("models/tiny/")
    )
    assert all(o["etag"].startswith('"') for o in marker["objects"])

    s3.downloads.clear()
    second = fetch_model(s3, URI, tmp_path)
    assert (second.path, second.downloaded, s3.downloads) == (first.path, False, [])

    # An object replaced on S3 (new ETag, same size): the copy is made again.
    s3.objects["models/tiny/tokenizer.json"] = b"[]"
    third = fetch_model(s3, URI, tmp_path)
    assert third.downloaded and (third.path / "tokenizer.json").read_bytes() == b"[]"

    # An object added, or one removed: so is a new listing.
    s3.objects["models/tiny/generation_config.json"] = b"{}"
    assert fetch_model(s3, URI, tmp_path).downloaded
    del s3.objects["models/tiny/sub/folder/extra.bin"]
    fourth = fetch_model(s3, URI, tmp_path)
    assert fourth.downloaded and not (fourth.path / "sub").exists()

    # A file cut short by hand since: copied again.
    (fourth.path / "model.safetensors").write_bytes(b"short")
    assert fetch_model(s3, URI, tmp_path).downloaded

    # No marker (or a marker of another format): not a copy.
    (fourth.path / MARKER).unlink()
    assert fetch_model(s3, URI, tmp_path).downloaded
    marker = json.loads((fourth.path / MARKER).read_text())
    (fourth.path / MARKER).write_text(json.dumps({**marker, "format": 99}))
    assert fetch_model(s3, URI, tmp_path).downloaded
    assert fetch_model(s3, URI, tmp_path).downloaded is False
    # Only the copy and its lock are left in the cache: no leftovers of the replaced ones.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [first.path.name, f".{first.path.name}.lock"]
    )


def test_a_failed_download_leaves_no_copy_behind(tmp_path: Path) -> None:
    s3 = MemoryS3(MODEL_FILES)
    broken = s3.download_file

    def failing(bucket: str, key: str, filename: str) -> None:
        if key.endswith("model.safetensors"):
            raise ConnectionError("reset by peer")
        broken(bucket, key, filename)

    s3.download_file = failing  # type: ignore[method-assign]
    with pytest.raises(ModelDownloadError, match=r"models/tiny/model\.safetensors.*reset by peer"):
        fetch_model(s3, URI, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [f".{TINY.directory_name}.lock"]


def test_a_download_of_another_size_than_listed_fails(tmp_path: Path) -> None:
    s3 = MemoryS3(MODEL_FILES)

    def short(bucket: str, key: str, filename: str) -> None:
        Path(filename).write_bytes(b"x")

    s3.download_file = short  # type: ignore[method-assign]
    with pytest.raises(ModelDownloadError, match="listing said"):
        fetch_model(s3, URI, tmp_path)


def test_an_empty_prefix_or_an_unreadable_bucket_names_the_uri(tmp_path: Path) -> None:
    with pytest.raises(ModelDownloadError, match=r"s3://models-bucket/models/none/.*no objects"):
        fetch_model(MemoryS3(MODEL_FILES), "s3://models-bucket/models/none/", tmp_path)
    # Folder placeholders (the console's "Create folder") are not a model either.
    only_folders = MemoryS3({"models/empty/": b"", "models/empty/sub/": b""})
    with pytest.raises(ModelDownloadError, match="no objects"):
        fetch_model(only_folders, "s3://models-bucket/models/empty/", tmp_path)
    denied = MemoryS3(MODEL_FILES)
    denied.error = PermissionError("AccessDenied")
    with pytest.raises(ModelDownloadError, match=f"cannot list the model at {URI}.*AccessDenied"):
        fetch_model(denied, URI, tmp_path)


def test_local_model_leaves_other_models_alone_and_names_s3_ones_by_their_folder(
    tmp_path: Path,
) -> None:
    def no_client() -> Any:
        raise AssertionError("no S3 client is made for a local or hub model")

    for model in (None, "Qwen/Qwen2.5-7B-Instruct", "/models/llama"):
        settings = EngineSettings(model=model)
        assert local_model(settings, no_client) is settings

    s3 = MemoryS3(MODEL_FILES)
    copies: list[Any] = []
    settings = EngineSettings(model=URI, model_cache_dir=tmp_path, max_model_len=64)
    local = local_model(settings, lambda: s3, on_copy=copies.append)
    assert local.model == str(tmp_path / TINY.directory_name)
    assert (local.served_model_name, local.max_model_len) == ("tiny", 64)
    assert len(copies) == 1 and copies[0].downloaded
    named = local_model(
        settings.model_copy(update={"served_model_name": "demo"}),
        lambda: s3,
        on_copy=copies.append,
    )
    assert (named.model, named.served_model_name) == (local.model, "demo")
    assert len(copies) == 1  # the cached copy: nothing copied, nothing recorded


def test_the_cache_dir_setting_defaults_to_the_host_volume(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert EngineSettings().model_cache_dir == Path("/models/s3")
    monkeypatch.setenv("MODEL_CACHE_DIR", "/tmp/elsewhere")
    assert EngineSettings().model_cache_dir == Path("/tmp/elsewhere")


def test_a_cache_that_cannot_be_written_names_the_uri(tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    with pytest.raises(ModelDownloadError, match=f"cannot cache {URI} in {blocked}"):
        fetch_model(MemoryS3(MODEL_FILES), URI, blocked / "cache")
