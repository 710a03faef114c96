"""The generator registry and the seed browser in a real browser (Debian's headless Chromium through Selenium,
as tests/e2e/test_browser.py), against the `dcgan up` of tests/e2e/conftest.py, whose sampling worker renders
the pictures while the page waits.

A short training run scored every few steps draws its FID chart, shows its best step and links its registered
versions to the seed browser; the registry shows their lineage and scores. Its generator, downloaded and
uploaded again through the API, shows on the registry page as an upload; its seed browser loads a page of
seeds, shows one large, re-renders them at another truncation, walks between two seeds as a GIF and pages on
to the next seeds. When the sampling routes answer 503, the page says so in words (the answer is substituted
in the browser: the real 503, with the sampling worker stopped, is the API's own test).
With DCGAN_SCREENSHOTS=1 the seed browser and the registry are saved as docs/dashboard-seed-browser.png and
docs/dashboard-generators.png (1280x900).
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid

import pytest

from tests.e2e.conftest import Api
from tests.e2e.test_browser import CHROMEDRIVER, CHROMIUM, TINY, Page, browser, screenshots, wait_for  # noqa: F401

pytestmark = [pytest.mark.timeout(420),
              pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                                 reason="needs Debian's chromium and chromium-driver (scripts/ensure_browser.sh "
                                        "installs them; make test runs it)")]
SEEDS_PER_PAGE = 16
# Scored every EVAL_EVERY steps by the digits classifier: a few seconds of a tiny network, enough for strokes.
SCORED_STEPS, EVAL_EVERY = 600, 200


@pytest.fixture(scope="module")
def scored_run(platform) -> dict:
    """A finished training job on the digits, scored as it trained (GET /v1/jobs/<id>)."""
    api, _ = platform
    status, job = api.json("POST", "/v1/jobs/train", {"dataset": "builtin:digits", "name": "scored", "config": {
        **TINY, "steps": SCORED_STEPS, "sample_every": EVAL_EVERY, "eval_every": EVAL_EVERY, "eval_num": 64,
        "eval_net": "digits"}})
    assert status == 202, job
    job = api.wait(job["id"], {"succeeded", "failed", "cancelled"}, seconds=300)
    assert job["status"] == "succeeded", job.get("error")
    return job


def upload_generator(api: Api, name: str, weights: bytes, config: dict) -> dict:
    """POST /v1/generators as multipart/form-data."""
    boundary = uuid.uuid4().hex
    parts = [(f'name="file"; filename="{name}.safetensors"', "application/octet-stream", weights),
             ('name="config"', "text/plain", json.dumps(config).encode()),
             ('name="name"', "text/plain", name.encode())]
    body = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; {disposition}\r\nContent-Type: {kind}\r\n\r\n"
                    .encode() + data + b"\r\n" for disposition, kind, data in parts) + f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(api.base + "/v1/generators", data=body, method="POST", headers={
        "Authorization": f"Bearer {api.key}", "Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 201
        return json.loads(response.read())


def wait_for_sampler(api: Api, ref: str, seconds: float = 180) -> None:
    """The sampling worker starts with `dcgan up` but imports torch first: wait for its first picture."""
    deadline = time.monotonic() + seconds
    while True:
        status, headers, _ = api.request("GET", f"/v1/generators/{ref}/images/0.png")
        if status == 200:
            assert headers["Content-Type"] == "image/png"
            return
        assert status in (503, 504) and time.monotonic() < deadline, f"the sampler answered {status}"
        time.sleep(1)


def states(page: Page) -> list[tuple[str, str | None, str | None]]:
    return [(b.get_attribute("data-seed"), b.get_attribute("data-state"), b.get_attribute("data-shown-truncation"))
            for b in page.find_all("[data-seed-grid] [data-seed]")]


def all_loaded(page: Page, first: int, truncation: str) -> bool:
    return states(page) == [(str(seed), "loaded", truncation) for seed in range(first, first + SEEDS_PER_PAGE)]


def natural_width(page: Page, selector: str) -> int:
    return page.driver.execute_script("return document.querySelector(arguments[0]).naturalWidth", selector)


def test_the_seed_browser_of_an_uploaded_generator(platform, browser, screenshots, scored_run):  # noqa: F811
    from selenium.webdriver.common.keys import Keys

    api, _ = platform
    status, _, weights = api.request("GET", f"/v1/jobs/{scored_run['id']}/generator")
    assert status == 200
    version = upload_generator(api, f"browsed-{uuid.uuid4().hex[:6]}", weights, scored_run["config"])
    ref = version["ref"]
    wait_for_sampler(api, ref)
    page = Page(browser, api.base)
    page.sign_in(api.key)

    # The registry lists the upload; its row leads to the seed browser.
    page.open("/generators")
    row = f'tr[data-ref="{ref}"]'
    assert page.find_all(row) and "uploaded" in page.find(row).text
    page.find(f"{row} [data-browse]").click()
    wait_for(lambda: page.path().startswith(f"/generators/{ref}/browse"), 20, "the seed browser")

    # A page of seeds, each its own picture at the generator's size.
    wait_for(lambda: all_loaded(page, 0, "1"), 90, "the first 16 seeds")
    assert natural_width(page, '[data-seed="3"] img') == TINY["img_size"]
    assert page.attribute('[data-seed="3"]', "data-content-type") == "image/png"
    assert page.find("[data-sampler-error]").is_displayed() is False

    # Click one: it shows large.
    page.find('[data-seed="5"]').click()
    wait_for(lambda: page.attribute("[data-large]", "data-large") == "5"
             and page.attribute("[data-large] img", "data-state") == "loaded", 30, "seed 5, large")
    assert page.find('[data-seed="5"]').get_attribute("aria-pressed") == "true"

    # Another truncation re-renders what is shown, and the address keeps it.
    before = page.attribute('[data-seed="0"] img', "src")
    slider = page.find("[data-truncation]")
    for _ in range(4):
        slider.send_keys(Keys.ARROW_LEFT)
    wait_for(lambda: all_loaded(page, 0, "0.8"), 60, "the seeds at truncation 0.8")
    wait_for(lambda: page.attribute("[data-large] img", "data-shown-truncation") == "0.8", 30, "the large one too")
    assert page.attribute('[data-seed="0"] img', "src") != before
    assert page.find("[data-truncation-label]").text == "0.80" and "truncation=0.8" in page.path()

    # Two seeds picked from the large view: the walk between them is a GIF.
    page.find("[data-pick=from]").click()
    page.find('[data-seed="9"]').click()
    wait_for(lambda: page.attribute("[data-large]", "data-large") == "9", 10, "seed 9, large")
    page.find("[data-pick=to]").click()
    wait_for(lambda: page.attribute("[data-interpolation]", "data-state") == "loaded", 60, "the interpolation")
    assert page.attribute("[data-interpolation]", "data-interpolation") == "5-9"
    assert page.attribute("[data-interpolation]", "data-content-type") == "image/gif"
    assert natural_width(page, "[data-interpolation]") == TINY["img_size"]
    page.driver.save_screenshot(str(screenshots / "dashboard-seed-browser.png"))

    # The next page of seeds, and back.
    page.find('[data-page="next"]').click()
    wait_for(lambda: all_loaded(page, SEEDS_PER_PAGE, "0.8"), 60, "seeds 16 to 31")
    assert f"start={SEEDS_PER_PAGE}" in page.path()
    page.find('[data-page="previous"]').click()
    wait_for(lambda: all_loaded(page, 0, "0.8"), 60, "seeds 0 to 15 again")

    # A sampling service that is down: a sentence saying so, not broken pictures; then up again, and the page's
    # button tries again.
    script = page.driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": """
        const realFetch = window.fetch;
        window.samplerDown = true;
        window.fetch = (url, options) => window.samplerDown && String(url).includes('/v1/generators/')
          ? Promise.resolve(new Response(JSON.stringify({type: '/problems/sampler-unavailable', status: 503,
                title: 'No sampling worker', detail: 'no sampling worker is running'}),
              {status: 503, headers: {'Content-Type': 'application/problem+json'}}))
          : realFetch(url, options);"""})
    try:
        page.open(f"/generators/{ref}/browse?start=32")
        wait_for(lambda: page.find("[data-sampler-error]").is_displayed(), 20, "the sampler's problem")
        assert page.attribute("[data-sampler-error]", "data-status") == "503"
        assert "The sampling service is not available: no sampling worker is running" in \
            page.find("[data-sampler-error]").text
        wait_for(lambda: {state for _, state, _ in states(page)} == {"error"}, 20, "every seed marked failed")
        assert not any(b.find_element("css selector", "img").get_attribute("src")
                       for b in page.find_all("[data-seed-grid] [data-seed]"))
        page.driver.execute_script("window.samplerDown = false")
    finally:
        page.driver.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": script["identifier"]})
    page.find("[data-retry]").click()
    wait_for(lambda: all_loaded(page, 32, "1"), 60, "seeds 32 to 47 after trying again")
    assert page.find("[data-sampler-error]").is_displayed() is False
    page.sign_out()


def test_a_scored_run_shows_its_fid_best_step_and_versions(platform, browser, screenshots,  # noqa: F811
                                                           scored_run):
    api, _ = platform
    job = scored_run
    page = Page(browser, api.base)
    page.sign_in(api.key)
    page.open(f"/jobs/{job['id']}")
    # The FID series is drawn: one point per scored step.
    _, history = api.json("GET", f"/v1/jobs/{job['id']}/metrics")
    scored = str(sum(1 for point in history["points"] if point.get("fid") is not None))
    assert scored == str(SCORED_STEPS // EVAL_EVERY), history["points"]
    wait_for(lambda: page.attribute('[data-chart="fid"]', "data-points") == scored, 30, "the FID chart's points")
    assert page.find("[data-fid-figure]").is_displayed()
    best = job["best"]
    assert page.find('[data-field="best"]').text.startswith(f"step {best['step']} · FID {best['fid']:.2f}")
    assert page.find("[data-best-download]").get_attribute("href").endswith(f"/v1/jobs/{job['id']}/best-generator")
    refs = [version["ref"] for version in job["generators"]]
    assert refs and [row.get_attribute("data-registered-ref") for row in page.find_all("[data-registered-ref]")] \
        == refs
    page.find(f'[data-registered-ref="{refs[0]}"] [data-browse]').click()
    wait_for(lambda: page.path().startswith(f"/generators/{refs[0]}/browse"), 20, "the version's seed browser")
    # The registry shows where each version came from, how it scored, and the aliases on it.
    newest = int(refs[-1].rsplit(":", 1)[1])
    status, _ = api.json("PUT", "/v1/generators/scored/aliases/champion", {"version": newest})
    assert status == 200
    page.open("/generators")
    assert "@champion" in page.find('[data-generator-name="scored"] [data-alias="champion"]').text
    row = page.find(f'tr[data-ref="{refs[-1]}"]')
    assert row.find_element("css selector", "[data-lineage-job]").text == job["id"][:8]
    assert row.find_element("css selector", '[data-field="fid"]').text == f"{job['generators'][-1]['fid']:.2f}"
    page.driver.save_screenshot(str(screenshots / "dashboard-generators.png"))
    # Ranked: the jobs page's best-FID order lists it with its score.
    page.open("/?sort=best_fid")
    assert page.find(f'tr[data-job-id="{job["id"]}"] [data-field="best-fid"]').text == f"{best['fid']:.2f}"
    page.sign_out()
