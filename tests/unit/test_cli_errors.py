"""Every batchctl command turns a bad argument or a refused value into one line on stderr and
exit code 2, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchctl.cli import main

NOWHERE = ["--base-url", "http://127.0.0.1:9/v1", "--api-key", "sk-12345678"]


def run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:  # argparse's own refusals
        return int(exit_.code or 0)


@pytest.fixture
def line_file(tmp_path: Path) -> Path:
    path = tmp_path / "one.jsonl"
    path.write_text(
        '{"custom_id": "a", "method": "POST", "url": "/v1/embeddings", '
        '"body": {"model": "m", "input": "x"}}\n'
    )
    return path


BAD = [
    ["nope"],
    [],
    ["local"],
    ["local", "serve"],
    ["local", "serve", "--api-key", "sk-test"],  # 7 characters
    ["local", "serve", "--api-key", "sk-12345678", "--port", "99999"],
    ["local", "serve", "--api-key", "sk-12345678", "--engine", "tpu"],
    ["local", "run", "{file}", "--out", "{out}", "--shard-size", "0"],
    ["local", "run", "{file}", "--out", "{out}", "--timeout", "soon"],
    ["local", "run", "{missing}", "--out", "{out}", "--engine", "fake"],
    ["validate", "{file}", "--shard-size", "-3"],
    ["validate", "{file}", "--max-requests", "many"],
    ["validate", "{file}", "--endpoint", "images"],
    ["validate", "{missing}"],
    ["submit", "{file}", "--window", "30d", *NOWHERE],
    ["submit", "{file}", "--metadata", "novalue", *NOWHERE],
    ["submit", "{file}", "--endpoint", "images", *NOWHERE],
    ["submit", "{missing}", *NOWHERE],
    ["submit", "{file}", *NOWHERE],  # nothing listens there
    ["list", "--limit", "0", *NOWHERE],
    ["status", "batch_x"],  # no base URL or key
    ["keys"],
    ["keys", "create"],
    ["webhooks", "add"],
]


@pytest.mark.parametrize("argv", BAD, ids=lambda argv: " ".join(argv) or "(none)")
def test_a_bad_invocation_is_one_line_and_exit_2(
    argv: list[str], line_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = {"file": line_file, "out": tmp_path / "out", "missing": tmp_path / "missing.jsonl"}
    assert run([part.format(**names) for part in argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("batchctl") and "Traceback" not in err


def test_an_unexpected_error_is_one_line_too(
    monkeypatch: pytest.MonkeyPatch, line_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from batchctl import cli

    def broken(*args: object, **kwargs: object) -> object:
        raise OSError("No space left on device")

    monkeypatch.setattr(cli, "dry_run", broken)
    assert run(["validate", str(line_file)]) == 2
    err = capsys.readouterr().err
    assert err == (
        "batchctl: OSError: No space left on device (BATCHCTL_TRACEBACK=1 shows where)\n"
    )
    monkeypatch.setenv("BATCHCTL_TRACEBACK", "1")
    with pytest.raises(OSError):
        main(["validate", str(line_file)])
