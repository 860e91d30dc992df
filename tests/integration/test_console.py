"""The console in a real browser (Debian's Chromium driven by Playwright) against
`batchctl local serve --engine fake`, as a person uses it: sign in, create a batch from a file,
watch it complete, download its results, open a failed batch's errors, cancel another, and
manage files. A screenshot of each page goes to out/console/."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from batchctl.moto_server import _free_port
from tests.conftest import MODEL, chat_request, start_local_serve, stop_process

KEY = "sk-console-0123456789"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "out" / "console"
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# As the machine's notes say: no background networking, or Chromium's calls home are refused.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
if not Path(CHROMIUM).is_file():
    pytest.skip(
        f"no Chromium at {CHROMIUM}: `make test` installs Debian's chromium with apt; "
        "set CHROMIUM to another Chromium build",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def console_url() -> Iterator[str]:
    process, printed = start_local_serve(
        *("--port", str(_free_port()), "--api-key", KEY, "--engine", "fake", "--model", MODEL),
        *("--shard-size", "4"),
        env={"FAKE_SECONDS_PER_REQUEST": "0.05"},  # slow enough to watch, and to cancel mid-run
    )
    found = re.search(r"^API\s+(\S+)/v1", printed, re.M)
    assert found, printed
    try:
        yield found.group(1) + "/"
    finally:
        stop_process(process)


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: sync_api.Browser, console_url: str) -> Iterator[sync_api.Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    opened = context.new_page()
    opened.on("dialog", lambda dialog: dialog.accept())  # the confirm() of cancel and delete
    outside: list[str] = []
    allowed = (console_url, "blob:", "data:", *download_origins(console_url))
    opened.on(
        "request",
        lambda request: None if request.url.startswith(allowed) else outside.append(request.url),
    )
    # A script error or a refused resource (the page's own policy refusing it) shows here.
    problems: list[str] = []
    opened.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    opened.on("pageerror", lambda error: problems.append(str(error)))
    opened.goto(console_url)
    opened.get_by_label("API key").fill(KEY)
    opened.get_by_role("button", name="Sign in").click()
    opened.get_by_role("heading", name="Batches").wait_for()
    yield opened
    assert problems == []
    assert outside == []  # nothing but this API, ever
    assert KEY not in opened.url
    context.close()


def download_origins(console_url: str) -> list[str]:
    """The origins besides its own the page's policy lets it fetch from: the bucket's, where a
    large file's content redirects (its presigned URL)."""
    import httpx

    policy = httpx.get(console_url).headers["content-security-policy"]
    found = re.search(r"connect-src ([^;]*)", policy)
    assert found, policy
    return [origin + "/" for origin in found.group(1).split() if origin != "'self'"]


def shot(page: sync_api.Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def jsonl(tmp_path: Path, name: str, lines: list[object]) -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def create_batch(
    page: sync_api.Page,
    path: Path,
    *,
    metadata: dict[str, str] | None = None,
    priority: int | None = None,
) -> str:
    page.get_by_role("link", name="New batch").first.click()
    page.get_by_label("JSONL file").set_input_files(str(path))
    page.get_by_label("Completion window").fill("48h")
    if priority is not None:
        page.get_by_label("Priority").fill(str(priority))
    for key, value in (metadata or {}).items():
        page.get_by_role("button", name="Add a pair").click()
        page.locator(".meta-key").last.fill(key)
        page.locator(".meta-value").last.fill(value)
    shot(page, "new-batch")
    # Every field has a label a screen reader reads out.
    unlabelled = page.evaluate(
        "[...document.querySelectorAll('input, select')].filter(e => !e.labels.length)"
        ".map(e => e.id || e.name)"
    )
    assert unlabelled == []
    page.get_by_role("button", name="Create batch").click()
    page.wait_for_url(re.compile(r"#/batches/batch_"))
    return page.url.rsplit("/", 1)[-1]


def test_a_batch_from_the_page_completes_and_its_results_download(
    page: sync_api.Page, tmp_path: Path
) -> None:
    long_prompt = " ".join(["word"] * 5000)  # over the fake model's context: one failed line
    lines = [chat_request(f"r{i}") for i in range(11)] + [chat_request("too-long", long_prompt)]
    lines.append({**lines[0], "custom_id": "r0-again"})  # runs once, answered twice
    batch_id = create_batch(
        page, jsonl(tmp_path, "chat.jsonl", lines), metadata={"team": "nlp"}, priority=5
    )
    page.get_by_text("completed", exact=True).first.wait_for(timeout=60_000)
    assert page.get_by_role("progressbar").get_attribute("aria-valuenow") == "13"
    assert page.get_by_text("13 / 13 done, 1 failed").is_visible()
    bar = page.locator(".progress").bounding_box()
    done = page.locator(".progress .done").bounding_box()
    assert bar and done and 0.8 < done["width"] / bar["width"] < 0.95  # 12 of 13 succeeded
    assert page.get_by_text("nlp", exact=True).is_visible()  # its metadata
    assert page.locator("#priority").inner_text() == "5"
    assert page.locator("#reused").inner_text() == "1"
    assert re.fullmatch(r"\d+\.\d GPU-seconds", page.locator("#gpu-seconds").inner_text())
    assert re.fullmatch(r"\$\d+\.\d{4}", page.locator("#estimated-cost").inner_text())
    timeline = page.locator(".card", has_text="Timeline")
    for step in ("created", "in progress", "finalizing", "completed"):
        assert timeline.get_by_text(step, exact=True).count() == 1, step
    # The error file's first lines: the one request the engine refused.
    errors = page.locator("#error-lines")
    errors.wait_for()
    assert errors.get_by_text("too-long").is_visible()
    assert errors.get_by_text("context_length_exceeded").is_visible()
    shot(page, "batch-completed")

    with page.expect_download() as output:
        page.get_by_role("button", name="Download output").click()
    lines_out = Path(output.value.path()).read_text().splitlines()
    assert output.value.suggested_filename == f"{batch_id}_output.jsonl"
    assert sorted(json.loads(line)["custom_id"] for line in lines_out) == sorted(
        [*(f"r{i}" for i in range(11)), "r0-again"]
    )
    with page.expect_download() as errors_file:
        page.get_by_role("button", name="Download errors").click()
    assert json.loads(Path(errors_file.value.path()).read_text())["custom_id"] == "too-long"

    # The list shows it with its progress and tokens, and the status filter finds it.
    page.get_by_role("link", name="Batches").first.click()
    row = page.locator(f"tr[data-batch='{batch_id}']")
    row.wait_for()
    assert row.get_by_text("13 / 13 done, 1 failed").is_visible()
    page.get_by_label("Status").select_option("completed")
    page.locator(f"tr[data-batch='{batch_id}']").wait_for()
    page.get_by_label("Status").select_option("failed")
    page.get_by_text("No failed batch on this page.").wait_for()
    page.get_by_label("Status").select_option("")
    row.wait_for()
    shot(page, "batches")


def test_a_failed_batch_shows_its_validation_errors(page: sync_api.Page, tmp_path: Path) -> None:
    lines: list[object] = [
        chat_request("a"),
        {"custom_id": "b", "method": "POST"},
        chat_request("a"),
    ]
    create_batch(page, jsonl(tmp_path, "bad.jsonl", lines))
    table = page.locator("#validation-errors")
    table.wait_for(timeout=60_000)
    assert page.get_by_text("failed", exact=True).first.is_visible()
    # Each bad line with its number, code, param and message.
    rows = [row.split("\t") for row in table.locator("tbody").inner_text().splitlines()]
    assert rows[0][:3] == ["2", "missing_body", "body"]
    assert rows[1][:3] == ["3", "duplicate_custom_id", "custom_id"]
    shot(page, "batch-failed")


def test_a_running_batch_can_be_cancelled_from_its_page(
    page: sync_api.Page, tmp_path: Path
) -> None:
    lines = [chat_request(f"c{i}") for i in range(400)]  # 20 s of fake work
    create_batch(page, jsonl(tmp_path, "long.jsonl", lines))
    page.get_by_text("in progress", exact=True).first.wait_for(timeout=60_000)
    # Cancel once some requests have run: a click as soon as it is in progress can beat the
    # worker to the first shard, and then none has run.
    page.locator(".progress-label").filter(has_text=re.compile(r"^[1-9][\d,]* / ")).wait_for(
        timeout=60_000
    )
    page.get_by_role("button", name="Cancel batch").click()
    page.get_by_text("cancelled", exact=True).first.wait_for(timeout=60_000)
    # Every request is accounted for: those that ran, and the rest as batch_cancelled lines.
    label = page.locator(".progress-label").inner_text()
    done, failed = (int(n.replace(",", "")) for n in re.findall(r"([\d,]+) (?:/|failed)", label))
    assert label.startswith(f"{done} / 400 done") and done == 400
    assert 0 < 400 - failed < 400  # some ran, the rest never did
    shot(page, "batch-cancelled")


def test_files_list_download_and_delete(
    page: sync_api.Page, tmp_path: Path, console_url: str
) -> None:
    client = openai.OpenAI(base_url=console_url + "v1", api_key=KEY, max_retries=0)
    data = b"".join(json.dumps(chat_request(f"f{i}")).encode() + b"\n" for i in range(2))
    uploaded = client.files.create(file=("to-delete.jsonl", data), purpose="batch")
    page.get_by_role("link", name="Files").click()
    row = page.locator(f"tr[data-file='{uploaded.id}']")
    row.wait_for()
    with page.expect_download() as got:
        row.get_by_role("button", name="Download to-delete.jsonl").click()
    assert Path(got.value.path()).read_bytes() == data
    shot(page, "files")
    row.get_by_role("button", name="Delete to-delete.jsonl").click()
    page.get_by_text("Deleted to-delete.jsonl.").wait_for(state="attached")
    page.locator(f"tr[data-file='{uploaded.id}']").wait_for(state="detached")
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)


def test_the_page_works_at_phone_width_and_by_keyboard(
    browser: sync_api.Browser, console_url: str
) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 740})
    phone = context.new_page()
    phone.goto(console_url)
    phone.keyboard.press("Tab")  # the skip link, then the key field by keyboard alone
    phone.get_by_label("API key").focus()
    phone.keyboard.type(KEY)
    phone.keyboard.press("Enter")
    phone.get_by_role("heading", name="Batches").wait_for()
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 375  # tables scroll inside their box; the page does not
    shot(phone, "batches-phone")
    # A wrong key is refused with a message, and nothing is kept.
    phone.get_by_role("button", name="Sign out").click()
    phone.get_by_label("API key").fill("sk-wrong-key-000")
    phone.get_by_role("button", name="Sign in").click()
    phone.get_by_role("alert").wait_for()
    assert phone.evaluate("sessionStorage.length") == 0
    context.close()


def test_the_console_files_hold_the_page_to_its_own_origin(console_url: str) -> None:
    import httpx

    page = httpx.get(console_url)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "http" not in re.sub(r"https?://[^\s]*w3\.org[^\s\"]*", "", page.text)
    script = httpx.get(console_url + "console/console.js")
    assert script.status_code == 200 and "fetch(API" in script.text
    assert not re.search(r"https?://(?!www\.w3\.org)", script.text)  # no third-party calls
    # Only the console's own files are served without a key; everything else still needs one.
    assert httpx.get(console_url + "console/other.js").status_code == 401
    assert httpx.get(console_url + "v1/batches").status_code == 401
    auth = {"Authorization": f"Bearer {KEY}"}
    assert httpx.get(console_url + "console/other.js", headers=auth).status_code == 404


def test_a_file_over_one_request_goes_up_in_parts(
    page: sync_api.Page, tmp_path: Path, console_url: str
) -> None:
    # Six requests of about 900 KB each: over the 4 MB one request carries.
    lines = [chat_request(f"big{i}", "x" * 900_000) for i in range(6)]
    path = jsonl(tmp_path, "big.jsonl", lines)
    assert path.stat().st_size > 5_000_000
    parts_seen: list[str] = []
    page.on("request", lambda r: parts_seen.append(r.url) if r.url.endswith("/parts") else None)
    batch_id = create_batch(page, path)
    client = openai.OpenAI(base_url=console_url + "v1", api_key=KEY, max_retries=0)
    batch = client.batches.retrieve(batch_id)
    assert len(parts_seen) == 2  # 4 MB and the rest, joined by the upload
    assert client.files.retrieve(batch.input_file_id).bytes == path.stat().st_size


def test_a_file_over_the_inline_limit_downloads_through_its_presigned_url(
    page: sync_api.Page, tmp_path: Path, console_url: str
) -> None:
    """Over 4 MB the content route redirects to S3: the page's policy lets that one origin
    (the bucket's) be fetched, and the bytes arrive whole."""
    client = openai.OpenAI(base_url=console_url + "v1", api_key=KEY, max_retries=0)
    line = json.dumps(chat_request("big", "y" * 1_000_000)).encode() + b"\n"
    path = tmp_path / "five-mb.jsonl"
    path.write_bytes(line * 5)
    assert path.stat().st_size > 5_000_000
    done = client.uploads.upload_file_chunked(
        file=path, mime_type="application/jsonl", purpose="batch", part_size=4 * 1024 * 1024
    )
    assert done.file is not None
    redirected: list[str] = []
    page.on("response", lambda r: redirected.append(r.url) if r.status == 302 else None)
    page.get_by_role("link", name="Files").click()
    row = page.locator(f"tr[data-file='{done.file.id}']")
    row.wait_for()
    with page.expect_download() as got:
        row.get_by_role("button", name="Download five-mb.jsonl").click()
    assert Path(got.value.path()).read_bytes() == path.read_bytes()
    assert got.value.suggested_filename == "five-mb.jsonl"
    assert redirected == [f"{console_url}v1/files/{done.file.id}/content"]  # it went by S3


def test_the_lists_show_no_stray_text(
    page: sync_api.Page, tmp_path: Path, console_url: str
) -> None:
    """What a person reads holds no `null` or `undefined` (a pager with no link once printed
    `nullnull` under the table)."""
    client = openai.OpenAI(base_url=console_url + "v1", api_key=KEY, max_retries=0)
    data = b"".join(json.dumps(chat_request(f"s{i}")).encode() + b"\n" for i in range(3))
    created = []
    for _ in range(2):
        uploaded = client.files.create(file=("stray.jsonl", data), purpose="batch")
        created.append(
            client.batches.create(
                input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
            ).id
        )

    def stray(text: str) -> list[str]:
        # Without the ids, whose random letters could spell either word.
        return re.findall(r"null|undefined", re.sub(r"\b(batch|file)[_-]\w+", "", text))

    page.get_by_role("link", name="Files").click()
    page.locator("tr[data-file]").first.wait_for()
    text = page.inner_text("body")
    assert stray(text) == [], text
    page.get_by_role("link", name="Batches").first.click()
    for batch_id in created:
        page.locator(f"tr[data-batch='{batch_id}']").wait_for()
    text = page.inner_text("body")
    assert all(batch_id in text for batch_id in created)
    assert stray(text) == [], text
    page.get_by_role("link", name=created[0]).click()
    page.get_by_text("completed", exact=True).first.wait_for(timeout=60_000)
    text = page.inner_text("body")
    assert stray(text) == [], text


def test_twenty_running_batches_watched_at_once_never_meet_a_429(
    browser: sync_api.Browser,
) -> None:
    """A person keeps the list of 20 running batches open, and a tab on four of them: every
    page polls every 2 s, at the deployment's default rate, and no answer is a 429. Then a
    cancel of each, in a loop, through the SDK with its retries off: none refused either. Its
    own stack, whose
    engine takes 10 s a request (8 at once), so each batch of 20 runs for minutes at almost no
    cost to the machine (the cancels end them)."""
    process, printed = start_local_serve(
        *("--port", str(_free_port()), "--api-key", KEY, "--engine", "fake", "--model", MODEL),
        env={"FAKE_SECONDS_PER_REQUEST": "10"},
    )
    found = re.search(r"^API\s+(\S+)/v1", printed, re.M)
    assert found, printed
    url = found.group(1) + "/"
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    refused: list[str] = []
    context.on("response", lambda r: refused.append(r.url) if r.status == 429 else None)
    try:
        client = openai.OpenAI(base_url=url + "v1", api_key=KEY, max_retries=0)
        data = b"".join(json.dumps(chat_request(f"w{i}")).encode() + b"\n" for i in range(20))
        uploaded = client.files.create(file=("watched.jsonl", data), purpose="batch")
        batches = [
            client.batches.create(
                input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
            ).id
            for _ in range(20)
        ]
        tabs = []
        for target in ["#/batches", *(f"#/batches/{b}" for b in batches[:4])]:
            tab = context.new_page()  # the key is kept per tab: each one signs in
            tab.goto(url)
            tab.get_by_label("API key").fill(KEY)
            tab.get_by_role("button", name="Sign in").click()
            tab.get_by_role("heading", name="Batches").wait_for()
            tab.goto(url + target)
            tabs.append(tab)
        for batch_id in batches:
            tabs[0].locator(f"tr[data-batch='{batch_id}']").wait_for()
        for tab in tabs[1:]:
            tab.locator("#priority").wait_for()
        tabs[0].wait_for_timeout(12_000)  # six polls of every page
        still = [b for b in batches if client.batches.retrieve(b).status == "in_progress"]
        assert len(still) >= 15, "the batches ended before the pages could watch them run"
        for batch_id in batches:
            client.batches.cancel(batch_id)
        # The watching tab sees it (its next poll), still without a 429.
        tabs[1].get_by_text(re.compile(r"^cancell(ing|ed)$")).first.wait_for(timeout=30_000)
    finally:
        context.close()
        stop_process(process)
    assert refused == []
