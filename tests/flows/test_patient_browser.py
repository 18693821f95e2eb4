"""The web page's patient view in a real headless Chromium (Debian's chromium + chromium-driver through
Selenium), over the end-to-end run's store: reached from the experiments page and from a target page, it
shows the patient's figures, and every one of them loads (a decoded image: naturalWidth > 0)."""

from __future__ import annotations

import os

import pytest
import httpx

from tests.flows.test_web_browser import browser  # noqa: F401 - the headless Chromium (skips without it)

FIGURE_PARTS = {"probabilities": "diagnosis", "contributions": "modality_contributions", "slide_attention": "slide",
                "pet_ct": "radiology", "spatial": "spatial"}


@pytest.fixture(scope="module")
def served(e2e_run):
    from tests.flows.served import serve_store

    with serve_store(e2e_run["store"]) as url:
        yield url


@pytest.fixture(scope="module")
def full_patient(e2e_run) -> str:
    from tests.flows.test_patient_render import _full_patient

    return _full_patient(e2e_run["store"])


def _figures_loaded(driver) -> bool:
    imgs = driver.find_elements("css selector", "#patient-figures img.patient-figure")
    return bool(imgs) and all(driver.execute_script("return arguments[0].complete", i) for i in imgs)


def test_patient_view_from_the_experiments_page_loads_every_figure(served, browser, full_patient):  # noqa: F811
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 60, ignored_exceptions=(StaleElementReferenceException,))
    browser.get(served + "/#/experiments")
    wait.until(lambda d: d.find_element("id", "experiments-patients").is_displayed())
    browser.find_element("id", "experiments-patients").click()
    wait.until(lambda d: len(d.find_elements("css selector", "#patients a.patient-link")) > 10)
    browser.find_element("link text", full_patient).click()
    wait.until(lambda d: d.find_element("id", "patient-title").text == f"Patient {full_patient}")
    wait.until(_figures_loaded)
    report = httpx.get(f"{served}/api/patients/{full_patient}", timeout=60).json()
    expected = sorted(name for name, part in FIGURE_PARTS.items() if report.get(part))
    assert {"slide_attention", "pet_ct", "spatial"} <= set(expected)  # the patient has slide, CT/PET and spatial
    imgs = browser.find_elements("css selector", "#patient-figures img.patient-figure")
    assert sorted(i.get_attribute("data-figure") for i in imgs) == expected
    for img in imgs:
        size = browser.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", img)
        assert size[0] > 100 and size[1] > 100, (img.get_attribute("data-figure"), size)
    assert browser.find_element("id", "error").text == ""
    assert len(browser.find_elements("css selector", "#patient-targets tbody tr")) == len(report["targets"]) > 0
    if os.environ.get("FUSIONRX_SCREENSHOTS"):  # to look at the page: a folder to write PNGs into
        browser.save_screenshot(os.path.join(os.environ["FUSIONRX_SCREENSHOTS"], "patient_view.png"))
    # the self-contained report page the view links to: every image inline and decoded
    browser.get(browser.find_element("id", "patient-report-link").get_attribute("href"))
    wait.until(lambda d: len(d.find_elements("css selector", "img.figure")) == len(expected))
    for img in browser.find_elements("css selector", "img.figure"):
        assert img.get_attribute("src").startswith("data:image/png;base64,")
        assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 100


def test_patient_view_from_a_target_page_marks_the_target(served, browser, full_patient):  # noqa: F811
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 60, ignored_exceptions=(StaleElementReferenceException,))
    gene = httpx.get(f"{served}/api/targets?top=1", timeout=30).json()["rows"][0]["gene"]
    browser.get(f"{served}/#/target/{gene}")
    wait.until(lambda d: d.find_element("id", "target-title").text.startswith(gene)
               and d.find_element("id", "target-patients").is_displayed())
    browser.find_element("id", "target-patients").click()
    wait.until(lambda d: len(d.find_elements("css selector", "#patients a.patient-link")) > 10)
    browser.find_element("link text", full_patient).click()
    wait.until(lambda d: d.find_elements("css selector", "#patient-targets tr.hl"))
    marked = browser.find_elements("css selector", "#patient-targets tr.hl td.gene")
    assert [m.text for m in marked] == [gene]
    wait.until(_figures_loaded)
    for img in browser.find_elements("css selector", "#patient-figures img.patient-figure"):
        assert browser.execute_script("return arguments[0].naturalWidth", img) > 100
