"""The web page in a real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium):
the ranking loads, a weight change re-ranks it, a click opens the target page with its structures and the
target's spatial picture, drawn from a spatial sample laid out as `run` writes it (spatial/<patient>/sample.h5ad)."""

from __future__ import annotations

import os
import shutil

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from tests.flows.test_queries import store  # noqa: F401 - the hand-built store (G1 has spatial evidence)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _require_browser() -> None:
    if os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER):
        return
    msg = "Debian chromium + chromium-driver not installed (apt-get install chromium chromium-driver)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(scope="module")
def run_spatial_sample(store):  # noqa: F811
    """One processed spatial sample where `run` puts it (flows.tasks.spatial_task: spatial/<patient>/sample.h5ad):
    log-normalised X over G1, G3 and ACTB (not G2), spot centres, the tumour region; G1 is up in the region."""
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 1000, size=(60, 2))
    region = np.linalg.norm(xy - 500.0, axis=1) < 250.0
    x = rng.poisson(2.0, size=(60, 3)).astype(np.float32)
    x[region, 0] += 6.0
    a = ad.AnnData(X=np.log1p(x), obs=pd.DataFrame({"tumour_region": region}, index=[f"s{i}" for i in range(60)]),
                   var=pd.DataFrame(index=["G1", "G3", "ACTB"]))
    a.obsm["spatial"] = xy
    folder = store["root"] / "spatial" / "TCGA-AA-0001"
    folder.mkdir(parents=True, exist_ok=True)
    a.write_h5ad(folder / "sample.h5ad")
    return folder / "sample.h5ad"


@pytest.fixture(scope="module")
def served(store, run_spatial_sample):  # noqa: F811
    from tests.flows.served import serve_store

    with serve_store(store["root"]) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()


def _first_gene(driver) -> str:
    return driver.find_element("css selector", "#ranking tbody tr td.gene").text


def test_ranking_reweight_and_target_page(served, browser):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 20, ignored_exceptions=(StaleElementReferenceException,))
    browser.get(served + "/")
    wait.until(lambda d: len(d.find_elements("css selector", "#ranking tbody tr")) == 4)
    assert _first_gene(browser) == "G1"
    # only copy number counts: G3 (copy number 1.0) moves to the top
    for t in ("rna_expression", "survival_association", "spatial_tumour_region", "somatic_mutation",
              "model_attribution", "copy_number"):
        if browser.find_elements("id", f"w-{t}"):
            browser.execute_script(
                "const e = document.getElementById(arguments[0]); e.value = arguments[1];"
                "e.dispatchEvent(new Event('change'));", f"w-{t}", "1" if t == "copy_number" else "0")
    wait.until(lambda d: _first_gene(d) == "G3")
    if os.environ.get("FUSIONRX_SCREENSHOTS"):
        browser.save_screenshot(os.path.join(os.environ["FUSIONRX_SCREENSHOTS"], "ranking.png"))
    # sorting by gene name (a header click) puts G1 first, without a new query
    browser.find_element("css selector", "th[data-key='gene']").click()
    assert _first_gene(browser) == "G1"
    # the target page: evidence bars, drawn structures (SVG images that loaded), measured vs predicted
    browser.find_element("link text", "G1").click()
    wait.until(lambda d: d.find_element("id", "target-title").text.startswith("G1"))
    bars = browser.find_elements("css selector", ".evidence-bar")
    assert len(bars) >= 5
    wait.until(lambda d: all(d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)
                             for img in d.find_elements("css selector", "img.structure")))
    assert len(browser.find_elements("css selector", "img.structure")) == 2
    badges = sorted(b.text for b in browser.find_elements("css selector", ".compound .badge"))
    assert badges == ["measured", "predicted"]
    # G1 has spatial evidence: its picture is drawn from the sample `run` wrote
    wait.until(lambda d: d.execute_script("const i = document.getElementById('spatial-img');"
                                          "return i.complete && i.naturalWidth > 0"))
    assert browser.find_element("id", "spatial-img").is_displayed()
    assert browser.find_element("id", "spatial-status").text == ""
    drawn = browser.execute_async_script("const done = arguments[arguments.length - 1];"
                                         "fetch('/api/targets/G1/spatial.png').then("
                                         "(r) => done([r.status, r.headers.get('X-Spatial-Samples')]));")
    assert drawn == [200, "TCGA-AA-0001"]
    assert browser.find_element("id", "error").text == ""
    if os.environ.get("FUSIONRX_SCREENSHOTS"):  # to look at the page: a folder to write PNGs into
        browser.save_screenshot(os.path.join(os.environ["FUSIONRX_SCREENSHOTS"], "target_page.png"))
    # G2 is ranked but measured in no spatial sample: the page says so instead of a picture
    browser.get(served + "/#/target/G2")
    wait.until(lambda d: d.find_element("id", "spatial-status").text == "not measured in any spatial sample")
    assert not browser.find_element("id", "spatial-img").is_displayed()
