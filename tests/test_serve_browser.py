"""The page at / in a real headless Chromium: open an image, click points, and the mask drawn over the image is
exactly the one the API returns for those clicks. Needs Debian's `chromium` and `chromium-driver` (.ci/run
installs them); without them the test skips, except under CI, where it fails."""

from __future__ import annotations

import base64
import io
import os
import shutil
import socket
import threading
import time

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
selenium = pytest.importorskip("selenium")
import httpx  # noqa: E402
import uvicorn  # noqa: E402
from selenium.webdriver import ActionChains, Chrome, ChromeOptions, Keys  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402
from serve_helpers import make_store, sample_images  # noqa: E402

from samcl.serve import ServeConfig, create_app  # noqa: E402

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=600,800"]


def _require_chromium() -> None:
    if CHROMIUM and DRIVER:
        return
    reason = "chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the browser test")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app on a free localhost port, served by uvicorn in a thread of this process."""
    store = make_store(tmp_path_factory.mktemp("browser") / "store")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = create_app(ServeConfig(store=store, port=port))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture()
def browser(tmp_path):
    _require_chromium()
    options = ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    driver = Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def wait_for(driver, condition, what: str, seconds: float = 60):
    try:
        return WebDriverWait(driver, seconds, poll_frequency=0.05).until(lambda d: condition(d))
    except Exception:
        status = driver.find_element(By.ID, "status").text
        raise AssertionError(f"the page never got to: {what} (status line: {status!r})") from None


def drawn_mask(driver) -> np.ndarray:
    """The mask canvas's pixels as drawn: foreground where its alpha is not 0."""
    packed = driver.execute_script("""
        const c = document.getElementById('mask');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let s = ''; for (let i = 3; i < d.length; i += 4) s += d[i] > 0 ? '1' : '0'; return [c.width, c.height, s];""")
    width, height, bits = packed
    return np.frombuffer(bits.encode(), np.uint8).reshape(height, width) == ord("1")


def click_at(driver, x: float, y: float, negative: bool = False) -> None:
    """Click image pixel (x, y) on the marks canvas (as shown, scaled by CSS)."""
    canvas = driver.find_element(By.ID, "marks")
    rect = driver.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.width, r.height];", canvas)
    width, height = driver.execute_script("return [arguments[0].width, arguments[0].height];", canvas)
    dx, dy = x * rect[0] / width - rect[0] / 2, y * rect[1] / height - rect[1] / 2  # offsets from the centre
    chain = ActionChains(driver).move_to_element_with_offset(canvas, round(dx), round(dy))
    if negative:
        chain.key_down(Keys.SHIFT).click().key_up(Keys.SHIFT).perform()
    else:
        chain.click().perform()


def test_clicks_draw_the_mask_the_api_returns(server, browser, tmp_path):
    url = server
    sample = sample_images(1)[0]
    image = np.asarray(Image.fromarray(sample.image).resize((sample.image.shape[1] * 5, sample.image.shape[0] * 5)))
    path = tmp_path / "photo.png"
    Image.fromarray(image).save(path)
    browser.get(url + "/")
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#domain option")) > 2, "the domain menu filled")
    browser.find_element(By.ID, "file").send_keys(str(path))
    wait_for(browser, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "ready",
             "the image uploaded")
    positive = sample.points[0] * 5 + 2
    clicks = [(positive, False), (np.array([4.0, 4.0]), True)]
    for count, (point, negative) in enumerate(clicks, start=1):
        click_at(browser, *point, negative=negative)
        wait_for(browser, lambda d: d.execute_script("return window.samclPage.requests") == count
                 and d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "ready", f"answer {count}")
    sent = browser.execute_script("return window.samclPage.actions")
    assert [a["label"] for a in sent] == [1, 0]
    for action, (point, _) in zip(sent, clicks):  # the page maps a click to the pixel under the pointer
        assert abs(action["x"] - point[0]) <= 1.5 and abs(action["y"] - point[1]) <= 1.5, (action, point)
    drawn = drawn_mask(browser)
    with httpx.Client(base_url=url, timeout=60) as client:  # the same clicks straight to the API
        key = client.post("/v1/images", content=path.read_bytes()).json()["image_id"]
        answer = client.post("/v1/segment", json={"image_id": key, "points": [[a["x"], a["y"]] for a in sent],
                                                  "labels": [a["label"] for a in sent]}).json()
    expected = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["mask"]["data"])))) > 127
    assert drawn.shape == expected.shape == image.shape[:2]
    assert 0 < expected.sum() < expected.size
    assert np.array_equal(drawn, expected)
    status = browser.find_element(By.ID, "status").text
    assert f"domain {answer['domain']}" in status and f"predicted IoU {answer['score']:.3f}" in status
    if os.environ.get("SAMCL_SCREENSHOT"):  # docs/serve.png is made this way
        browser.save_screenshot(os.environ["SAMCL_SCREENSHOT"])
    browser.find_element(By.ID, "undo").click()
    wait_for(browser, lambda d: d.execute_script("return window.samclPage.requests") == 3, "the answer after undo")
    assert browser.execute_script("return window.samclPage.actions.length") == 1
    browser.find_element(By.ID, "clear").click()
    wait_for(browser, lambda d: not drawn_mask(d).any(), "the mask cleared")


def shown_geometry(driver) -> dict:
    return driver.execute_script("""
        const r = document.getElementById('image').getBoundingClientRect();
        const s = document.getElementById('status').getBoundingClientRect();
        return {width: r.width, height: r.height, right: r.right, bottom: r.bottom, status_top: s.top,
                status_bottom: s.bottom, window_width: document.documentElement.clientWidth,
                window_height: window.innerHeight};""")


@pytest.mark.parametrize("size", [(160, 120), (1600, 1200), (300, 1500)])
def test_the_image_fits_the_window_both_ways(server, browser, tmp_path, size):
    width, height = size
    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)
    browser.get(server + "/")
    browser.find_element(By.ID, "file").send_keys(str(path))
    wait_for(browser, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "ready",
             "the image uploaded")
    shown = shown_geometry(browser)
    assert shown["right"] <= shown["window_width"] and shown["bottom"] <= shown["status_top"]
    assert shown["status_bottom"] <= shown["window_height"]  # the status line stays on screen
    assert abs(shown["width"] / shown["height"] - width / height) < 0.02  # aspect kept
    # as large as the window allows: one side fills it (within the page's margins)
    assert shown["width"] >= shown["window_width"] - 60 or shown["bottom"] >= shown["status_top"] - 30, shown
    browser.set_window_size(900, 500)  # a resize refits
    wait_for(browser, lambda d: shown_geometry(d)["status_bottom"] <= shown_geometry(d)["window_height"],
             "the image refitted after a resize")
