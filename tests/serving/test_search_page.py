"""The search page in headless Chromium (Debian's chromium + chromium-driver, driven by Selenium):
an uploaded image finds itself first; a text query fills the grid with scored, captioned results."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.serving.conftest import ServedApps
from tests.serving.helpers import image_id, val_images

pytestmark = pytest.mark.slow
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail("Chromium is missing: `make browser` installs Debian's chromium and chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _results(driver: object, count: int) -> list[object]:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 60).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .hit")) >= count)
    return driver.find_elements(By.CSS_SELECTOR, "#results .hit")  # type: ignore[attr-defined,no-any-return]


def test_an_uploaded_image_finds_itself_first(served: ServedApps, browser: object) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    image = val_images(served.bundles.shapes, 3)[2]
    browser.get(served.open_url + "/")  # type: ignore[attr-defined]
    browser.find_element(By.ID, "image").send_keys(str(image))  # type: ignore[attr-defined]
    Select(browser.find_element(By.ID, "target")).select_by_value("images")  # type: ignore[attr-defined]
    k = browser.find_element(By.ID, "k")  # type: ignore[attr-defined]
    k.clear()
    k.send_keys("4")
    browser.find_element(By.ID, "go").click()  # type: ignore[attr-defined]
    hits = _results(browser, 4)
    assert len(hits) == 4
    assert hits[0].get_attribute("data-id") == str(image_id(image))  # type: ignore[attr-defined]
    assert "score 1.000" in hits[0].text  # type: ignore[attr-defined]
    thumbnail = hits[0].find_element(By.TAG_NAME, "img")  # type: ignore[attr-defined]
    assert thumbnail.get_attribute("src").startswith("data:image/jpeg;base64,")
    assert browser.execute_script("return arguments[0].naturalWidth", thumbnail) > 0  # type: ignore[attr-defined]
    assert "4 images found" in browser.find_element(By.ID, "status").text  # type: ignore[attr-defined]


def test_a_text_query_and_an_error_show_on_the_page(served: ServedApps, browser: object) -> None:
    from selenium.webdriver.common.by import By

    browser.get(served.open_url + "/")  # type: ignore[attr-defined]
    browser.find_element(By.ID, "text").send_keys("a big red circle at the top")  # type: ignore[attr-defined]
    browser.find_element(By.ID, "go").click()  # type: ignore[attr-defined]
    hits = _results(browser, 8)
    assert all(hit.get_attribute("data-kind") == "image" for hit in hits)  # type: ignore[attr-defined]
    assert all(len(hit.find_element(By.CLASS_NAME, "caption").text) > 10 for hit in hits)  # type: ignore[attr-defined]

    k = browser.find_element(By.ID, "k")  # type: ignore[attr-defined]
    k.clear()
    k.send_keys("500")
    browser.find_element(By.ID, "go").click()  # type: ignore[attr-defined]
    from selenium.webdriver.support.ui import WebDriverWait

    status = browser.find_element(By.ID, "status")  # type: ignore[attr-defined]
    WebDriverWait(browser, 30).until(lambda _: "Error 422" in status.text)
    assert "(k)" in status.text and "1..50" in status.text
