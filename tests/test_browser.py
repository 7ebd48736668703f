"""End to end in a real browser: `learn2hash serve` in a subprocess, the page in headless Chromium
(driven by selenium through Debian's chromedriver), a query picked and an image uploaded, the
results checked against the API, and a screenshot kept in test-artifacts/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from _live import free_port, stop_process, wait_until_serving
from _photos import photo_collection

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


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`learn2hash serve` on a free loopback port; yields its base URL, stops it afterwards."""
    _require_browser()
    pytest.importorskip("fastapi")
    from learn2hash.runs import train_run

    folder = tmp_path_factory.mktemp("browser")
    run = train_run("itq", "digits", 16, folder / "run", progress=False)
    port = free_port()
    log = open(folder / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "learn2hash", "serve", "--run", str(run.folder),
                             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(proc, base, folder / "serve.log")
        yield {"base": base, "run": run, "folder": folder}
    finally:
        stop_process(proc)
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


# --------------------------------------------------------------------------- a collection (issue 27.3)
COLLECTION_KEY = "browser-key-0123456789abcdef"


@pytest.fixture(scope="module")
def collection_server(tmp_path_factory):
    """`learn2hash serve --collection` with an API key and --public-read, on a free loopback port."""
    _require_browser()
    pytest.importorskip("fastapi")
    folder = tmp_path_factory.mktemp("browser-collection")
    photo_collection(folder, seed=1)
    (folder / "key").write_text(COLLECTION_KEY)
    port = free_port()
    log = open(folder / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "learn2hash", "serve", "--collection", str(folder / "coll"),
                             "--port", str(port), "--api-key-file", str(folder / "key"), "--public-read"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(proc, base, folder / "serve.log")
        yield {"base": base, "folder": folder}
    finally:
        stop_process(proc)
        log.close()


def test_collection_page_thumbnails_search_add_and_remove(collection_server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from learn2hash.collections import Collection

    base, folder = collection_server["base"], collection_server["folder"]
    browser.get(base + "/")
    # the collection's own images, as thumbnails served from under its root
    WebDriverWait(browser, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#browse .photo-card img")) == 24)
    thumbs = browser.find_elements(By.CSS_SELECTOR, "#browse .photo-card img")
    WebDriverWait(browser, 30).until(lambda d: all(
        d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", t) for t in thumbs))
    assert "24 items" in browser.find_element(By.ID, "run-info").text
    # search by an uploaded photograph: the cards are the API's answer, in order
    upload = folder / "photos" / "c1" / "004.jpg"
    browser.find_element(By.ID, "upload-file").send_keys(str(upload))
    k_field = browser.find_element(By.ID, "k")
    k_field.clear()
    k_field.send_keys("6")
    browser.find_element(By.ID, "upload-search").click()
    WebDriverWait(browser, 30).until(
        lambda d: d.find_element(By.ID, "status").get_attribute("data-state") in ("done", "error"))
    assert browser.find_element(By.ID, "status").get_attribute("data-state") == "done"
    cards = browser.find_elements(By.CSS_SELECTOR, "#results .photo-card")
    boundary = "b0"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"k\"\r\n\r\n6\r\n--{boundary}\r\n"
            f"Content-Disposition: form-data; name=\"image\"; filename=\"q.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n"
            ).encode() + upload.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(f"{base}/search", data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        expected = json.loads(resp.read())["results"]
    assert [int(c.get_attribute("data-id")) for c in cards] == [h["id"] for h in expected]
    assert [int(c.get_attribute("data-distance")) for c in cards] == [h["distance"] for h in expected]
    # with the key, add the upload (with an external id), then remove it
    browser.find_element(By.ID, "api-key").send_keys(COLLECTION_KEY)
    browser.find_element(By.ID, "use-key").click()
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "status").text == "key in use")
    browser.find_element(By.ID, "external-id").send_keys("from-the-page")
    browser.find_element(By.ID, "add-item").click()
    WebDriverWait(browser, 30).until(lambda d: "added as item 24" in d.find_element(By.ID, "status").text)
    assert Collection.open(folder / "coll").item(24) == {"id": 24, "path": None, "external_id": "from-the-page"}
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "browser_collection.png"))
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, '#browse .photo-card[data-id="24"]'))
    browser.find_element(By.CSS_SELECTOR, '#browse .photo-card[data-id="24"] .remove').click()
    WebDriverWait(browser, 30).until(lambda d: "removed item 24" in d.find_element(By.ID, "status").text)
    assert len(Collection.open(folder / "coll")) == 24


def test_run_page_with_a_key_asks_for_it_and_sends_it(server, browser):
    """`serve --run` with a key (LEARN2HASH_API_KEY) and no --public-read: the page shows the key field, and
    once the key is given its thumbnails and searches work (each request sends it)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    port = free_port()
    folder = server["folder"]
    env = dict(os.environ, OMP_NUM_THREADS="1", LEARN2HASH_API_KEY=COLLECTION_KEY)
    with open(folder / "serve-key.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "learn2hash", "serve", "--run", str(server["run"].folder),
                                 "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(proc, base, folder / "serve-key.log", statuses=(401,))  # a key is asked for /health too
        browser.get(base + "/")
        WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "key-form").is_displayed())
        browser.find_element(By.ID, "api-key").send_keys(COLLECTION_KEY)
        browser.find_element(By.ID, "use-key").click()
        WebDriverWait(browser, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".query-thumb img")) > 0)
        thumbs = browser.find_elements(By.CSS_SELECTOR, ".query-thumb img")
        WebDriverWait(browser, 30).until(lambda d: all(
            d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", t) for t in thumbs))
        browser.find_element(By.CSS_SELECTOR, '.query-thumb[data-index="3"]').click()
        cards = wait_for_results(browser, 10)
        assert [int(c.get_attribute("data-distance")) for c in cards] == sorted(
            int(c.get_attribute("data-distance")) for c in cards)
    finally:
        stop_process(proc)
        browser.execute_script("sessionStorage.clear()")
