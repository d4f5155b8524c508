"""The station page in a real headless Chromium (the distribution's, driven by Playwright) against `exsylab serve`.

One browser for the module. The run is simulated and held at chosen datasets by the gated
launcher, so each check happens while the run stands at a known point.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from playwright import sync_api

from acquisition.journal import Journal
from serve_support import REPO, start_serve

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHORT = REPO / "tests" / "data" / "exsy-short.yaml"
CYCLING = REPO / "tests" / "data" / "cycling-short.yaml"
WAIT_MS = 90_000

# .ci/run installs the distribution's Chromium; without it these tests fail (apt-get install chromium), never skip


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield browser
        browser.close()


def _loaded(page, element_id: str, version: str) -> None:
    """Wait until the page shows figure `element_id` at `version` (the image itself loaded)."""
    page.wait_for_function(
        "([id, v]) => { const i = document.getElementById(id); return i && !i.hidden && i.dataset.loaded === v"
        " && i.naturalWidth > 0; }", arg=[element_id, version], timeout=WAIT_MS)


def _paused_at_safe_point(run_dir: Path) -> bool:
    journal = Journal(run_dir / "journal.sqlite")
    try:
        return any(e["status"] == "paused" for e in journal.events(limit=1000))
    finally:
        journal.close()


def test_page_follows_a_running_series_and_pause_needs_the_token(browser, tmp_path: Path) -> None:
    served = start_serve(REPO / "examples" / "station-sim.yaml", tmp_path / "runs", tmp_path / "gates",
                         holds=(1, 2, 3))
    page = browser.new_page()
    try:
        page.goto(served.url)
        page.wait_for_function("document.getElementById('connection').textContent === 'live'", timeout=WAIT_MS)
        # the name arrives with the first state, which may follow 'live' on a loaded machine
        page.wait_for_function("document.getElementById('station-name').textContent !== 'exsylab station'",
                               timeout=WAIT_MS)
        assert page.inner_text("#station-name") == "simulated station"
        # queue from the page: refused without the token, accepted with it
        page.fill("#add-paths", f"{SHORT}, {CYCLING}")
        page.click("#add-form button[type=submit]")
        page.wait_for_function("document.getElementById('message').textContent.startsWith('refused (401)')",
                               timeout=WAIT_MS)
        assert served.queue() == []
        page.fill("#token", served.token)
        page.dispatch_event("#token", "change")
        page.click("#add-form button[type=submit]")
        assert served.wait_gate(1) == "short_exsy/10"
        page.wait_for_selector("#queue li[data-id=q1][data-state=running]", timeout=WAIT_MS)
        # the first dataset: contour and build-up appear, the lanes show where the run is
        _loaded(page, "plot-contour", "short_exsy-10")
        _loaded(page, "plot-buildup", "1")
        page.wait_for_function("document.getElementById('datasets-count').dataset.done === '1'", timeout=WAIT_MS)
        lanes = page.inner_text("#lanes")
        assert "nmr" in lanes and "/10" in lanes and "cycler:ch1" in lanes
        assert page.inner_text("#run-state") == "running"
        served.release(1)
        # the second: both figures update without a reload
        assert served.wait_gate(2) == "short_exsy/11"
        _loaded(page, "plot-contour", "short_exsy-11")
        _loaded(page, "plot-buildup", "2")
        run_dir = Path(served.queue()[0]["run_dir"])
        # pause: refused without a token and with a wrong one; done with the right one
        page.fill("#token", "")
        page.dispatch_event("#token", "change")
        page.click("#pause")
        page.wait_for_function("document.getElementById('message').textContent.startsWith('refused (401)')",
                               timeout=WAIT_MS)
        page.fill("#token", "not-the-token-at-all")
        page.dispatch_event("#token", "change")
        page.click("#pause")
        page.wait_for_function("document.getElementById('message').textContent.startsWith('refused (403)')",
                               timeout=WAIT_MS)
        assert (run_dir / "control").read_text().strip() == "run"
        page.fill("#token", served.token)
        page.dispatch_event("#token", "change")
        page.click("#pause")
        page.wait_for_function("document.getElementById('run-state').textContent === 'paused'", timeout=WAIT_MS)
        assert (run_dir / "control").read_text().strip() == "pause"
        served.release(2)
        served.wait_for("the lanes to stop at a safe point", lambda: _paused_at_safe_point(run_dir))
        assert not (served.gates / "at-3").exists()  # nothing acquired while paused
        page.fill("#token", "")
        page.dispatch_event("#token", "change")
        page.click("#resume")
        page.wait_for_function("document.getElementById('message').textContent.startsWith('refused (401)')",
                               timeout=WAIT_MS)
        assert (run_dir / "control").read_text().strip() == "pause"
        page.fill("#token", served.token)
        page.dispatch_event("#token", "change")
        page.click("#resume")
        assert served.wait_gate(3) == "short_exsy/12"
        _loaded(page, "plot-contour", "short_exsy-12")
        served.release(3)
        page.wait_for_selector("#queue li[data-id=q1][data-state=done]", timeout=WAIT_MS)
        page.wait_for_function("document.getElementById('report').textContent.startsWith('# Run report')",
                               timeout=WAIT_MS)
        page.wait_for_function("document.querySelector('#cycling-plots img') && "
                               "document.querySelector('#cycling-plots img').naturalWidth > 0", timeout=WAIT_MS)
        assert page.inner_text("#run-state") == "done"
    finally:
        page.close()
        assert served.stop() == 0


def test_page_fits_a_phone_screen(browser, tmp_path: Path) -> None:
    served = start_serve(REPO / "examples" / "station-sim.yaml", tmp_path / "runs", tmp_path / "gates")
    page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    try:
        status, _ = served.request("POST", "/api/queue", {"uploads": [
            {"name": "short.yaml", "text": SHORT.read_text()}, {"name": "cycling.yaml", "text": CYCLING.read_text()}]})
        assert status == 201
        served.wait_for("the run to end", lambda: served.queue()[0]["state"] == "done")
        page.goto(served.url)
        _loaded(page, "plot-contour", "short_exsy-15")
        _loaded(page, "plot-buildup", "6")
        _loaded(page, "plot-temperature", "6")
        page.wait_for_function("document.querySelector('#cycling-plots img') && "
                               "document.querySelector('#cycling-plots img').naturalWidth > 0", timeout=WAIT_MS)
        page.wait_for_function("document.getElementById('report').textContent.startsWith('# Run report')",
                               timeout=WAIT_MS)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width} px wide on a 390 px screen"
        for element_id in ("plot-contour", "plot-buildup", "plot-temperature", "cycling-plots", "queue", "lanes",
                           "report"):
            box = page.locator(f"#{element_id}").bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, element_id
    finally:
        page.close()
        assert served.stop() == 0
