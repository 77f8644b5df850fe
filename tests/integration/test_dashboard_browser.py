"""The dashboard in a real headless Chromium: it renders our queues and jobs under its CSP, runs no injected markup,
and asks for credentials without the key."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect
from playwright.sync_api import Error as PlaywrightError
from rq.job import JobStatus

from core.settings import QUEUE_NORMAL, Settings
from redis_client import enqueue, make_redis
from tests.conftest import ADMIN_KEY, SettingsFactory
from tests.support.analyses import fail_queued_job
from tests.support.audio import wav_bytes
from tests.support.browser import Watch, chromium
from tests.support.processes import ApiServer

XSS_FILENAME = "<script>window.__xss=1</script>.wav"
XSS_DESCRIPTION = '<img src="x" onerror="window.__xss=2"><script>window.__xss=3</script>'
WAIT_MS = 15_000
# Resolves once the injected <img> has failed to load, i.e. after its onerror attribute had its chance.
_INJECT_MARKUP = """() => new Promise(resolve => {
    $('body').append('<script>window.__xss = 5</script>');
    const holder = $('<div><img src="data:," onerror="window.__xss = 4"></div>');
    holder.find('img').on('error', () => setTimeout(() => resolve(typeof window.__xss), 0));
    $('body').append(holder);
})"""

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(60), pytest.mark.one_database]


@pytest.fixture
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


def _no_xss(page: Page) -> None:
    assert page.evaluate("typeof window.__xss") == "undefined"


def test_dashboard_renders_queues_and_jobs_and_runs_no_injected_markup(
    make_settings: SettingsFactory,
    api_server: Callable[[Settings], ApiServer],
    browser: Browser,
    artifacts_dir: Path,
) -> None:
    settings = make_settings(use_rq_queue=True)
    api = api_server(settings)  # and no worker: the jobs stay queued
    with api.client() as client:
        answer = client.post("/audio", files={"file": (XSS_FILENAME, wav_bytes(0.5), "audio/wav")})
    assert answer.status_code == 202, answer.text
    upload_id = answer.json()["id"]
    # Defence in depth: a description that does carry markup (ours never do) must still render as text.
    with make_redis(settings) as connection:
        hostile = enqueue(
            connection,
            settings,
            "tasks.audio_analysis.process_audio_analysis",
            "hostile",
            job_id="hostile-description",
            queue_name=QUEUE_NORMAL,
            description=XSS_DESCRIPTION,
        )

    context = browser.new_context(http_credentials={"username": "admin", "password": ADMIN_KEY})
    page = context.new_page()
    watch = Watch(page)

    page.goto(f"{api.url}/rq")
    queue_row = page.locator(
        '#queues tr[data-role="queue"]', has=page.get_by_role("cell", name=QUEUE_NORMAL, exact=True)
    )
    expect(queue_row.locator("td").nth(1)).to_have_text("2", timeout=WAIT_MS)  # the "Queued jobs" column
    page.screenshot(path=artifacts_dir / "dashboard-queues.png", full_page=True)
    _no_xss(page)

    page.goto(f"{api.url}/rq/0/view/jobs/{QUEUE_NORMAL}/queued/8/asc/1")
    expect(page.locator(f'tr[data-job-id="{upload_id}"]')).to_contain_text(f"process_audio_analysis({upload_id})")
    expect(page.locator(f'tr[data-job-id="{hostile.id}"] .description')).to_have_text(XSS_DESCRIPTION)
    page.screenshot(path=artifacts_dir / "dashboard.png", full_page=True)
    _no_xss(page)

    page.goto(f"{api.url}/rq/0/view/job/{hostile.id}")
    expect(page.locator("#job-data .description-scroll")).to_have_text(XSS_DESCRIPTION, timeout=WAIT_MS)
    expect(page.locator("#job-data")).to_contain_text(QUEUE_NORMAL)
    page.screenshot(path=artifacts_dir / "dashboard-job.png", full_page=True)
    _no_xss(page)

    page.goto(f"{api.url}/rq/0/view/job/{upload_id}")
    expect(page.locator("#job-data .description-scroll")).to_have_text(f"process_audio_analysis({upload_id})")
    _no_xss(page)

    # The dashboard's own buttons still work through the guard: Chromium's same-origin POST passes it.
    with make_redis(settings) as connection:
        failed = fail_queued_job(upload_id, connection)
        page.goto(f"{api.url}/rq/0/view/jobs/{QUEUE_NORMAL}/failed/8/asc/1")
        with page.expect_response(f"{api.url}/rq/job/{upload_id}/requeue") as requeue:
            page.locator(f'tr[data-job-id="{upload_id}"] [data-role="requeue-job-btn"]').click(timeout=WAIT_MS)
        assert requeue.value.status == 200
        assert failed.get_status(refresh=True) == JobStatus.QUEUED
    assert watch.dialogs == []
    assert watch.errors == []  # CSP violations and script errors are console errors: the CSP breaks nothing

    # The CSP on its own: markup injected the way the dashboard inserts HTML (jQuery) runs no script.
    assert page.evaluate(_INJECT_MARKUP) == "undefined"
    assert len([error for error in watch.errors if "Content Security Policy" in error]) == 2
    context.close()

    # Without credentials Chromium gets the Basic challenge and, having nothing to answer, gives up on the page.
    anonymous = browser.new_context()
    page = anonymous.new_page()
    with (
        page.expect_response(f"{api.url}/rq/") as challenge,
        pytest.raises(PlaywrightError, match="ERR_INVALID_AUTH_CREDENTIALS"),
    ):
        page.goto(f"{api.url}/rq/")
    assert challenge.value.status == 401
    assert challenge.value.headers["www-authenticate"].startswith("Basic ")
    anonymous.close()
