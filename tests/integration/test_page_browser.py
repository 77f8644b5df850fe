"""The pages at `/` and `/admin` in a real headless Chromium, in both modes (RQ workers; in-process).

Uploads are followed to their result table and waveform, a scheduled upload is canceled, a failed one
retried, a file name with markup stays text, and the admin view lists, filters and follows jobs.
Screenshots (desktop and phone) go to test-artifacts/<test>/.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, FilePayload, Locator, Page, expect

from core.settings import Settings
from tasks.audio_analysis import TASK_NAME
from tests.conftest import ADMIN_KEY, ProcessFactory, SettingsFactory
from tests.support.audio import corrupt_audio_bytes, wav_bytes
from tests.support.browser import PHONE, chromium, fits_the_width, open_page
from tests.support.processes import ApiServer, wait_until_ended

WAIT_MS = 90_000  # an analysis and its waveform on a loaded machine
EXPECT_MS = 20_000  # anything else the page shows after a request or two
PLAYWRIGHT_EXPECT_MS = 5_000
MARKUP_NAME = "<img src=x onerror=window.__xss=1>.wav"
# What a drop of files on the zone looks like to the page: the same DragEvents a person's drop fires.
_DROP = """(zone, files) => {
    const transfer = new DataTransfer();
    for (const file of files) {
        const bytes = Uint8Array.from(atob(file.data), (c) => c.charCodeAt(0));
        transfer.items.add(new File([bytes], file.name, { type: file.type }));
    }
    for (const type of ["dragenter", "dragover", "drop"]) {
        zone.dispatchEvent(new DragEvent(type, { dataTransfer: transfer, bubbles: true, cancelable: true }));
    }
}"""

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(240), pytest.mark.one_database]


@dataclass
class Deployment:
    settings: Settings
    api: ApiServer

    def client(self) -> httpx.Client:
        return self.api.client(headers={"X-API-Key": ADMIN_KEY})


@pytest.fixture(params=["rq", "background"])
def deployment(
    request: pytest.FixtureRequest,
    make_settings: SettingsFactory,
    api_server: Callable[[Settings], ApiServer],
    workers: ProcessFactory,
) -> Deployment:
    """The API, with real workers (`rq`) or running analyses in its own process (`background`)."""
    settings = make_settings(use_rq_queue=request.param == "rq")
    api = api_server(settings)
    if settings.use_rq_queue:
        workers(settings)
    return Deployment(settings, api)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium for the module's tests (each opens its own context: no storage is shared)."""
    with chromium() as launched:
        yield launched


@pytest.fixture(autouse=True)
def patient_expectations() -> Iterator[None]:
    """Every `expect` here waits up to 20 s (Playwright's 5 s is short for a loaded machine); restored after."""
    expect.set_options(timeout=EXPECT_MS)
    yield
    expect.set_options(timeout=PLAYWRIGHT_EXPECT_MS)


def _card(page: Page, filename: str) -> Locator:
    """An upload's card, found as a person using a screen reader would: the article named by its file."""
    return page.get_by_role("article", name=filename, exact=True)


def _enter_key(page: Page, key: str = ADMIN_KEY) -> None:
    key_box = page.locator("#key-box")
    if key_box.get_attribute("open") is None:
        key_box.locator("summary").click()
    page.get_by_role("textbox", name="Admin key").fill(key)
    page.get_by_role("button", name="Use this key").click()


def _drop(page: Page, files: list[tuple[str, bytes]]) -> None:
    payload = [{"name": name, "type": "audio/wav", "data": base64.b64encode(data).decode()} for name, data in files]
    page.locator("#drop-zone").evaluate(_DROP, payload)


def _choose(page: Page, name: str, data: bytes, mime: str = "audio/wav") -> None:
    page.locator("#file-input").set_input_files([FilePayload(name=name, mimeType=mime, buffer=data)])


def _id_of(card: Locator) -> str:
    expect(card).to_have_attribute("data-id", re.compile(r".+"))
    job_id = card.get_attribute("data-id")
    assert job_id
    return job_id


def test_dropped_uploads_are_followed_live_to_their_results_and_waveforms(
    deployment: Deployment, browser: Browser, artifacts_dir: Path
) -> None:
    context, page, watch = open_page(browser, f"{deployment.api.url}/")
    headers = page.request.get(f"{deployment.api.url}/").headers
    assert "'unsafe-inline'" not in headers["content-security-policy"]
    assert "script-src 'self'" in headers["content-security-policy"]

    _drop(page, [("tone.wav", wav_bytes(1.0)), ("second tone.wav", wav_bytes(0.5, freq_hz=220.0))])

    for name, frequency_hz in [("tone.wav", 440.0), ("second tone.wav", 220.0)]:
        card = _card(page, name)
        expect(card).to_have_attribute("data-status", "finished", timeout=WAIT_MS)
        expect(card.locator(".state")).to_have_text("Finished")
        expect(card.get_by_role("progressbar")).to_have_js_property("value", 100)
        expect(card.get_by_role("button")).to_have_count(0)  # nothing to cancel or retry
        expect(card.locator(".log li").first).to_be_attached()  # the task's log lines came over the stream
        result = card.get_by_role("table", name="Result")
        dominant = result.get_by_role("row", name="Dominant frequency").get_by_role("cell")
        expect(dominant).to_have_text(re.compile(r"^[\d.]+ Hz$"))
        assert float(dominant.inner_text().removesuffix(" Hz")) == pytest.approx(frequency_hz, abs=2)
        expect(result.get_by_role("row", name="Duration")).to_be_visible()
        waveform = card.get_by_role("img", name=f"Waveform of {name}")
        expect(waveform).to_be_visible(timeout=WAIT_MS)
        assert waveform.evaluate("image => image.naturalWidth") > 0
    expect(page.get_by_role("article")).to_have_count(2)
    with deployment.client() as client:
        assert wait_until_ended(client, _id_of(_card(page, "tone.wav")))["status"] == "finished"
    page.screenshot(path=artifacts_dir / "upload-desktop.png", full_page=True)
    assert watch.errors == []  # CSP violations would be console errors
    assert watch.dialogs == []
    context.close()

    # The same uploads' page on a phone: an upload there, nothing wider than the screen.
    phone, page, watch = open_page(browser, f"{deployment.api.url}/", PHONE)
    _choose(page, "phone.wav", wav_bytes(0.5))
    card = _card(page, "phone.wav")
    expect(card).to_have_attribute("data-status", "finished", timeout=WAIT_MS)
    expect(card.get_by_role("img", name="Waveform of phone.wav")).to_be_visible(timeout=WAIT_MS)
    assert fits_the_width(page)
    page.screenshot(path=artifacts_dir / "upload-phone.png", full_page=True)
    assert watch.errors == []
    phone.close()


def test_a_scheduled_upload_is_canceled_from_the_page(
    deployment: Deployment, browser: Browser, artifacts_dir: Path
) -> None:
    context, page, watch = open_page(browser, f"{deployment.api.url}/")
    later = datetime.now(UTC) + timedelta(hours=1)  # the browser runs in UTC (open_page)
    page.get_by_label("Run at").fill(later.strftime("%Y-%m-%dT%H:%M"))
    _choose(page, "later.wav", wav_bytes(0.5))
    card = _card(page, "later.wav")
    expect(card).to_have_attribute("data-status", "scheduled", timeout=WAIT_MS)
    expect(card.locator(".state")).to_contain_text("Scheduled for")
    analysis_id = _id_of(card)

    # Without the admin key the page asks for it rather than calling the API.
    card.get_by_role("button", name="Cancel").click()
    expect(card.get_by_role("alert")).to_contain_text("enter the admin key")
    expect(page.get_by_role("textbox", name="Admin key")).to_be_focused()
    page.screenshot(path=artifacts_dir / "scheduled-desktop.png", full_page=True)
    _enter_key(page)
    card.get_by_role("button", name="Cancel").click()

    expect(card).to_have_attribute("data-status", "canceled", timeout=WAIT_MS)
    expect(card.locator(".state")).to_have_text("Canceled")
    expect(card.get_by_role("button", name="Cancel")).to_be_hidden()
    with deployment.client() as client:
        body = client.get(f"/audio/{analysis_id}").json()
    assert (body["status"], body["started_at"], body["attempts"]) == ("canceled", None, 0)
    page.screenshot(path=artifacts_dir / "canceled-desktop.png", full_page=True)
    assert watch.errors == []
    context.close()


def test_a_failed_upload_is_retried_from_the_page(
    deployment: Deployment, browser: Browser, artifacts_dir: Path
) -> None:
    context, page, watch = open_page(browser, f"{deployment.api.url}/")
    _enter_key(page)
    _choose(page, "broken.flac", corrupt_audio_bytes(), "audio/flac")
    card = _card(page, "broken.flac")
    expect(card).to_have_attribute("data-status", "failed", timeout=WAIT_MS)
    expect(card.locator(".state")).to_contain_text("Failed: could not decode audio")
    expect(card.get_by_role("table", name="Result")).to_have_count(0)

    card.get_by_role("button", name="Retry").click()

    # The same corrupt file fails again, on a second attempt that the page follows live.
    expect(card.locator(".state")).to_contain_text("Failed (attempt 2): could not decode audio", timeout=WAIT_MS)
    expect(card.get_by_role("button", name="Retry")).to_be_visible()
    with deployment.client() as client:
        body = client.get(f"/audio/{_id_of(card)}").json()
    assert (body["status"], body["attempts"]) == ("failed", 2)
    page.screenshot(path=artifacts_dir / "retried-desktop.png", full_page=True)
    assert watch.errors == []
    context.close()


def test_a_file_name_with_markup_is_shown_as_text_and_runs_no_script(
    make_settings: SettingsFactory, api_server: Callable[[Settings], ApiServer], browser: Browser, artifacts_dir: Path
) -> None:
    api = api_server(make_settings(use_rq_queue=True))  # no worker: the upload waits, its name on show
    context, page, watch = open_page(browser, f"{api.url}/")
    # The drop zone's file button is in the keyboard's path (the element before the admin-key box).
    page.locator("#key-box > summary").focus()
    page.keyboard.press("Shift+Tab")
    expect(page.get_by_label("Choose audio files or drop them here")).to_be_focused()

    _choose(page, MARKUP_NAME, wav_bytes(0.5))

    card = _card(page, MARKUP_NAME)
    expect(card).to_have_attribute("data-status", "queued", timeout=WAIT_MS)
    expect(card.get_by_role("heading")).to_have_text(MARKUP_NAME)
    expect(page.locator("img")).to_have_count(0)  # the name never became an element
    assert page.evaluate("typeof window.__xss") == "undefined"
    with api.client() as client:
        assert client.get(f"/audio/{_id_of(card)}").json()["filename"] == MARKUP_NAME
    page.screenshot(path=artifacts_dir / "markup-name.png", full_page=True)
    assert watch.errors == []
    assert watch.dialogs == []
    context.close()


def _upload(client: httpx.Client, name: str, data: bytes, **fields: str) -> str:
    answer = client.post("/audio", files={"file": (name, data, "audio/wav")}, data=fields)
    assert answer.status_code == 202, answer.text
    job_id: str = answer.json()["id"]
    return job_id


def _rows(page: Page) -> Locator:
    return page.locator("#job-rows tr")


def test_the_admin_view_counts_lists_filters_and_follows_jobs(
    deployment: Deployment, browser: Browser, artifacts_dir: Path
) -> None:
    with deployment.client() as client:
        finished = _upload(client, "good.wav", wav_bytes(0.5))
        failed = _upload(client, "bad.flac", corrupt_audio_bytes())
        later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        scheduled = _upload(client, "later.wav", wav_bytes(0.5), scheduled_at=later)
        assert wait_until_ended(client, finished)["status"] == "finished"
        assert wait_until_ended(client, failed)["status"] == "failed"
    context, page, watch = open_page(browser, f"{deployment.api.url}/admin")

    # No key yet: the view asks for one; a wrong one is refused and asked for again.
    expect(page.locator("#key-state")).to_have_text("Enter the admin key to see the jobs.")
    _enter_key(page, "not-the-key")
    expect(page.locator("#key-state")).to_contain_text("The admin key was refused")
    assert len(watch.errors) == 1  # the browser logs the refused request
    assert "401" in watch.errors[0]
    watch.errors.clear()
    _enter_key(page)

    summary = page.locator("#summary").get_by_role("row", name=TASK_NAME)
    expect(summary.get_by_role("button", name=f"1 finished jobs of {TASK_NAME}: list them")).to_be_visible()
    expect(summary.get_by_role("button", name=f"1 failed jobs of {TASK_NAME}: list them")).to_be_visible()
    expect(summary.get_by_role("button", name=f"1 scheduled jobs of {TASK_NAME}: list them")).to_be_visible()
    expect(summary.locator("td").last).to_have_text("3")
    expect(_rows(page)).to_have_count(3)
    expect(page.get_by_role("button", name="Show older jobs")).to_be_hidden()  # all on one page
    page.screenshot(path=artifacts_dir / "admin-desktop.png", full_page=True)

    page.get_by_label("Status", exact=True).select_option("failed")
    page.get_by_role("button", name="Filter").click()
    expect(_rows(page)).to_have_count(1)
    expect(_rows(page).first).to_have_attribute("data-id", failed)
    assert "status=failed" in page.url

    page.get_by_label("Task", exact=True).fill("tasks.nothing")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#jobs-state")).to_have_text("No job matches.")

    page.get_by_role("button", name="Clear").click()
    expect(_rows(page)).to_have_count(3)
    summary.get_by_role("button", name=f"1 scheduled jobs of {TASK_NAME}: list them").click()
    expect(_rows(page)).to_have_count(1)
    expect(_rows(page).first).to_have_attribute("data-id", scheduled)

    # The finished job's logs and result, over its event stream.
    page.get_by_role("button", name="Clear").click()
    page.get_by_role("button", name=f"Follow job {finished}").click()
    panel = page.locator("#job-panel")
    expect(panel.get_by_role("heading", name=f"Job {finished}")).to_be_visible()
    expect(panel.locator("#job-state")).to_have_text("finished")
    expect(panel.locator("#job-log li").first).to_be_attached()
    expect(panel.locator("#job-result")).to_contain_text("duration_s")

    # The scheduled one, canceled from here: the panel, the row and the counts follow.
    page.get_by_role("button", name=f"Follow job {scheduled}").click()
    expect(panel.locator("#job-state")).to_have_text("scheduled")
    panel.get_by_role("button", name="Cancel").click()
    expect(panel.locator("#job-state")).to_have_text("canceled", timeout=WAIT_MS)
    expect(page.locator(f'#job-rows tr[data-id="{scheduled}"]')).to_have_attribute("data-status", "canceled")
    expect(summary.get_by_role("button", name=f"1 canceled jobs of {TASK_NAME}: list them")).to_be_visible()
    assert watch.errors == []
    context.close()

    # On a phone, two jobs a page: the third comes with "Show older jobs".
    phone, page, watch = open_page(browser, f"{deployment.api.url}/admin?limit=2", PHONE)
    _enter_key(page)
    expect(_rows(page)).to_have_count(2)
    page.get_by_role("button", name="Show older jobs").click()
    expect(_rows(page)).to_have_count(3)
    expect(_rows(page).last).to_have_attribute("data-id", finished)  # newest first: the first upload is last
    expect(page.get_by_role("button", name="Show older jobs")).to_be_hidden()
    assert fits_the_width(page)
    page.screenshot(path=artifacts_dir / "admin-phone.png", full_page=True)
    assert watch.errors == []
    phone.close()
