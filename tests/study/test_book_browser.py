"""The built smoke book in headless Chromium: every page loads cleanly, figures render, Table 2 shows numbers.

The HTML folder is served by a local ``http.server`` on 127.0.0.1 (so scripts, styles and fetches
behave as on a web host, which ``file://`` does not), and Chromium is driven by Selenium through
Debian's ``chromedriver``, named explicitly so that nothing is ever downloaded. Every request that
is not to 127.0.0.1 goes to a proxy address where nothing listens, so the test is offline by
construction; such requests are reported and fail the test, because a published page must not
depend on a CDN a reader's network may block.

Skipped when no Chromium or chromedriver is installed (``.ci/run`` installs both).
"""

from __future__ import annotations

import base64
import functools
import http.server
import json
import math
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from bmd.inputs import paper

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
CHROMEDRIVER_NAMES = ("chromedriver",)
LOCAL_HOSTS = {"127.0.0.1"}
PAGE_TIMEOUT_S = 30


def _which(names: tuple[str, ...], extra: tuple[str, ...] = ()) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return next((p for p in extra if Path(p).is_file() and os.access(p, os.X_OK)), None)


class _BookHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the HTML folder quietly; the browser's own favicon probe gets an empty answer, not a 404."""

    def do_GET(self):  # noqa: N802 - the base class's name
        if urlsplit(self.path).path == "/favicon.ico" and not Path(self.translate_path(self.path)).is_file():
            self.send_response(204)
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass


@pytest.fixture(scope="module")
def served_book(smoke_book: Path) -> Iterator[str]:
    """The smoke book's HTML folder served on 127.0.0.1 (a free port); yields the base URL."""
    html = smoke_book / "_build" / "html"
    handler = functools.partial(_BookHandler, directory=str(html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium through Selenium and the system chromedriver, with no network beyond 127.0.0.1."""
    chromium = _which(CHROMIUM_NAMES, ("/usr/bin/chromium",))
    driver_path = _which(CHROMEDRIVER_NAMES, ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"))
    if chromium is None or driver_path is None:
        pytest.skip("no chromium and chromedriver installed (Debian: apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
    from selenium.webdriver.chrome.service import Service

    previous = os.environ.get("SE_OFFLINE")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager, should it ever run, stays offline
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1600",
        # every non-loopback request goes to a port where nothing listens (loopback bypasses proxies)
        "--proxy-server=http://127.0.0.1:9", "--disable-background-networking", "--disable-component-update",
        "--disable-default-apps", "--disable-extensions", "--disable-sync", "--no-first-run",
        "--no-default-browser-check", "--metrics-recording-only", "--mute-audio",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    service = Service(executable_path=driver_path, log_output=os.devnull)
    try:
        driver = webdriver.Chrome(service=service, options=options)
    finally:
        if previous is None:
            os.environ.pop("SE_OFFLINE", None)
        else:
            os.environ["SE_OFFLINE"] = previous
    driver.set_page_load_timeout(PAGE_TIMEOUT_S)
    try:
        yield driver
    finally:
        driver.quit()


def _html_pages(smoke_book: Path) -> list[str]:
    """Every HTML page of the built book (chapters, appendices, the index and search pages)."""
    html = smoke_book / "_build" / "html"
    return sorted(str(p.relative_to(html)) for p in html.rglob("*.html")
                  if "_static" not in p.parts and "_sources" not in p.parts)


def _open(driver, url: str) -> dict:
    """Load a page, wait until it and its images are complete; returns its console and network records."""
    driver.get_log("browser")  # drop anything left from the previous page
    driver.get_log("performance")
    driver.get(url)
    deadline = time.monotonic() + PAGE_TIMEOUT_S
    while time.monotonic() < deadline:
        if driver.execute_script(
                "return document.readyState === 'complete' && [...document.images].every(i => i.complete)"):
            break
        time.sleep(0.1)
    time.sleep(0.3)  # let deferred scripts run and report
    console = driver.get_log("browser")
    requests = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            requests.append(message["params"]["request"]["url"])
    return {"console": console, "requests": requests}


def _leaves_the_machine(url: str) -> bool:
    """A network request to anywhere but the local server (data:, blob: and the browser's own chrome://
    resources are not network requests)."""
    parts = urlsplit(url)
    return parts.scheme in ("http", "https", "ws", "wss", "ftp") and parts.hostname not in LOCAL_HOSTS


def test_every_page_loads_offline_without_console_errors_and_renders_its_figures(smoke_book, served_book, browser):
    pages = _html_pages(smoke_book)
    assert "index.html" in pages and "table2.html" in pages
    problems: list[str] = []
    n_images = 0
    for page in pages:
        record = _open(browser, served_book + page)
        for url in record["requests"]:
            if _leaves_the_machine(url):
                problems.append(f"{page}: requests a non-local resource: {url}")
        for entry in record["console"]:
            if entry["level"] != "SEVERE":
                continue
            # none tolerated: bmd.study.sphinx_ext removes the duplicate inline scripts of Sphinx 7
            problems.append(f"{page}: console error: {entry['message']}")
        images = browser.execute_script(
            "return [...document.querySelectorAll('article img, main img')].map(i => "
            "({src: i.currentSrc || i.src, natural: i.naturalWidth, client: i.clientWidth}))")
        for image in images:
            n_images += 1
            if not (image["natural"] > 0 and image["client"] > 0):
                problems.append(f"{page}: image not rendered ({image['natural']}x natural, "
                                f"{image['client']} px shown): {image['src'][:120]}")
    assert not problems, "\n".join(problems)
    assert n_images > 0  # the smoke book has figures (Figure 2, the cohort's plots)


def test_table2_page_shows_the_papers_numbers_beside_ours_and_is_screenshotted(smoke_book, served_book, browser):
    data = json.loads((smoke_book / "runs" / "smoke" / "summary.json").read_text())
    ours = next(r for r in data["tables"]["table2"] if r["model"] == "multi_roi" and r["vertebra"] == "avg")
    papers = paper.value("table2", "multi_roi", "avg", "r")
    assert papers is not None and ours["paper_r"] == papers
    _open(browser, served_book + "table2.html")
    rows = browser.execute_script(
        "return [...document.querySelectorAll('article table tr')].map(tr => "
        "[...tr.children].map(c => c.innerText.trim()))")
    multi = [row for row in rows if row and row[0] == "Multi-ROI"]
    assert multi, "no multi_roi row in the Table 2 page's tables"
    shown = " | ".join(multi[0])
    r = ours["r"]
    ours_text = f"{r:.3f}" if r is not None and math.isfinite(r) else "n/a"  # as the page formats it
    cells = multi[0][1:]
    assert any(c.startswith(ours_text) for c in cells), shown  # ours (with its CI) ...
    assert f"{papers:.3f}" in cells, shown  # ... beside the paper's, in the same row
    assert f"{papers:.3f}" in browser.find_element("tag name", "body").text

    size = browser.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {  # the whole page in one frame
        "width": int(size["width"]), "height": min(int(size["height"]), 16_000), "deviceScaleFactor": 1,
        "mobile": False})
    try:
        shot = browser.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    target = smoke_book / "_build" / "screenshots" / "table2.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(base64.b64decode(shot["data"]))
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and target.stat().st_size > 10_000
