"""The dashboard in a real headless Chromium: live updates arrive without a reload.

Chromium is Debian's ``chromium`` package (``scripts/install`` adds it), driven by
Playwright through its executable path. Without it the test skips, saying so —
except under ``.ci/run`` (``TICKTAPE_REQUIRE_BROWSER=1``), where it fails.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ticktape.testing import ServerProcess

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
UPDATE_TIMEOUT_MS = 5_000  # a pushed change shows within the feed period; slack for the host


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[tuple[ServerProcess, object]]:
    if CHROMIUM is None:
        if os.environ.get("TICKTAPE_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is required here (TICKTAPE_REQUIRE_BROWSER=1)")
        pytest.skip("no chromium here (apt-get install chromium)")
    server = ServerProcess(f"sqlite:///{tmp_path}/ticktape.db", tmp_path)
    server.start()
    try:
        with playwright_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
            try:
                yield server, browser.new_page()
            finally:
                browser.close()
    finally:
        server.stop()


def test_sessions_appear_and_change_live_without_polling(
    browser_page: tuple[ServerProcess, object],
) -> None:
    server, page = browser_page
    expect = playwright_api.expect
    list_requests: list[str] = []
    page.on("request", lambda r: list_requests.append(r.url) if "/api/sessions?" in r.url else None)
    page.goto(server.url + "/")
    updated = page.locator("#updated")
    expect(updated).to_contain_text("live", timeout=UPDATE_TIMEOUT_MS)
    loaded = len(list_requests)

    with httpx.Client(base_url=server.url, timeout=30.0) as c:
        created = c.post("/api/sessions", json={"kind": "collect", "symbols": ["SOL_USDT"]})
        sid = created.json()["id"]
        row = page.locator("#sessions tr", has=page.locator(f"code[title='{sid}']"))
        expect(row).to_contain_text("running", timeout=UPDATE_TIMEOUT_MS)
        expect(row).to_contain_text("SOL_USDT")
        assert c.post(f"/api/sessions/{sid}/stop", params={"wait": "true"}).status_code == 200
        expect(row).to_contain_text("stopped", timeout=UPDATE_TIMEOUT_MS)
        expect(row.locator("button")).to_have_count(0)
    assert len(list_requests) == loaded, "the page polled the list while the stream was live"
