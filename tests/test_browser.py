"""End to end in a real browser: `learn2hash serve` in a subprocess, the page in headless Chromium
(driven by selenium through Debian's chromedriver), a query picked and an image uploaded, the
results checked against the API, and a screenshot kept in test-artifacts/."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,1000"]


def _require_browser() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip)")
    if missing:
        message = f"browser test needs {', '.join(missing)} (scripts/install.sh installs them as root)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`learn2hash serve` on a free loopback port; yields its base URL, stops it afterwards."""
    _require_browser()
    pytest.importorskip("fastapi")
    from learn2hash.runs import train_run

    folder = tmp_path_factory.mktemp("browser")
    run = train_run("itq", "digits", 16, folder / "run", progress=False)
    port = _free_port()
    log = open(folder / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "learn2hash", "serve", "--run", str(run.folder),
                             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, f"server exited: {(folder / 'serve.log').read_text()}"
            assert time.monotonic() < deadline, "server did not answer /health within 90 s"
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as resp:
                    if json.loads(resp.read())["status"] == "ok":
                        break
            except OSError:
                time.sleep(0.2)
        yield {"base": base, "run": run, "folder": folder}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def browser(server, tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def api_search(base: str, body: dict) -> dict:
    req = urllib.request.Request(f"{base}/search", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def wait_for_results(driver, expected_count: int) -> list:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 30).until(
        lambda d: d.find_element(By.ID, "status").get_attribute("data-state") in ("done", "error"))
    status = driver.find_element(By.ID, "status")
    assert status.get_attribute("data-state") == "done", status.text
    cards = driver.find_elements(By.CSS_SELECTOR, "#results .result")
    assert len(cards) == expected_count
    images = driver.find_elements(By.CSS_SELECTOR, "#results .result img")
    assert len(images) == expected_count
    WebDriverWait(driver, 30).until(lambda d: all(
        d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img) for img in images))
    return cards


def test_pick_a_query_and_see_k_results(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server["base"] + "/")
    WebDriverWait(browser, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".query-thumb img")) > 0)
    assert "itq" in browser.find_element(By.ID, "run-info").text
    thumbs = browser.find_elements(By.CSS_SELECTOR, ".query-thumb img")
    WebDriverWait(browser, 30).until(lambda d: all(
        d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", t) for t in thumbs))

    browser.find_element(By.CSS_SELECTOR, '.query-thumb[data-index="7"]').click()
    cards = wait_for_results(browser, 10)
    distances = [int(c.get_attribute("data-distance")) for c in cards]
    ids = [int(c.get_attribute("data-id")) for c in cards]
    assert distances == sorted(distances)
    expected = api_search(server["base"], {"query_index": 7, "k": 10})
    assert ids == expected["ids"] and distances == expected["distances"]
    relevant = ["relevant" in c.get_attribute("class").split() for c in cards]
    assert relevant == expected["relevant"]
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "browser_search.png"))

    # another k, another query
    k_field = browser.find_element(By.ID, "k")
    k_field.clear()
    k_field.send_keys("5")
    browser.find_element(By.CSS_SELECTOR, '.query-thumb[data-index="12"]').click()
    cards = wait_for_results(browser, 5)
    assert [int(c.get_attribute("data-id")) for c in cards] == api_search(
        server["base"], {"query_index": 12, "k": 5})["ids"]


def test_upload_an_image(server, browser, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.by import By

    item = np.asarray(server["run"].dataset().query.x[30])[0]
    path = tmp_path / "query.png"
    Image.fromarray(np.kron(item, np.ones((4, 4), dtype=np.uint8))).save(path)
    browser.get(server["base"] + "/")
    browser.find_element(By.ID, "tab-button-upload").click()
    browser.find_element(By.ID, "upload-file").send_keys(str(path))
    k_field = browser.find_element(By.ID, "k")
    k_field.clear()
    k_field.send_keys("8")
    browser.find_element(By.ID, "upload-search").click()
    cards = wait_for_results(browser, 8)
    distances = [int(c.get_attribute("data-distance")) for c in cards]
    assert distances == sorted(distances)
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "browser_upload.png"))
