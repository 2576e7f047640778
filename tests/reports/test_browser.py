"""The report in a real browser: headless Debian Chromium driven by Playwright (integration test, CI runs it).

No console errors, no network request of any kind, the key elements visible, the script-tag class name
opens no dialog, and a full-page screenshot is saved under the run store (and copied to
$SYNTH_AUGMENT_ARTIFACTS when CI sets it).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from report_helpers import EVIL_CLASS

CHROMIUM = os.environ.get("SYNTH_AUGMENT_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[dev]' installs playwright")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"{CHROMIUM} not found: apt-get install chromium (.ci/run does)")
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield instance
        instance.close()


def test_report_in_chromium(finished_run, browser) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    requests: list[str] = []
    dialogs: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.on("request", lambda request: requests.append(request.url))
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:") else route.abort())
    url = finished_run.html_path.resolve().as_uri()
    page.goto(url, wait_until="load")
    page.wait_for_timeout(300)  # give a (wrongly) injected script or image error handler time to fire

    assert errors == []
    assert dialogs == []
    assert [r for r in requests if r != url and not r.startswith("data:")] == []
    for selector in ("#verdict", "#answer-table", "#trend-table", "#data-table", "#results-table",
                     "#evidence-table", "#provenance-table", "section#explanations figure img"):
        assert page.locator(selector).first.is_visible(), selector
    assert EVIL_CLASS in page.locator("#data-table").inner_text()  # rendered as text
    images = page.locator("img")
    assert images.count() > 10
    assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    screenshot = finished_run.run_dir / "report.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000
    artifacts = os.environ.get("SYNTH_AUGMENT_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, Path(artifacts) / "report-screenshot.png")
        shutil.copy(finished_run.html_path, Path(artifacts) / "report.html")
    page.close()
