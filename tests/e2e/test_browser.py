"""The dashboard in a real browser: Debian's headless Chromium driven by Selenium through Debian's
chromedriver (both installed by scripts/ensure_browser.sh, which `make test` runs), against the `dcgan up`
of tests/e2e/conftest.py.

One person's session, in order: sign in, upload images with a preview, submit a training job from the form,
watch its loss chart gain points and its grid change while it runs, go back along the step slider, see new
jobs appear on the live jobs page, cancel a queued job from its page, compare two finished runs, be refused
a form without its CSRF token, sign out. Then a second tenant signs in and sees none of it. With
DCGAN_SCREENSHOTS=1 the jobs page, the running job and the comparison are saved as docs/dashboard-*.png
(1280x900), the README's pictures; otherwise into the test's temporary directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, Api

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW = (1280, 900)
# Tiny networks: each step takes milliseconds on a CPU, so the run is long in steps but short in time.
TINY = {"img_size": 32, "img_channels": 1, "z_dim": 8, "g_channels": 8, "d_channels": 8, "batch_size": 16,
        "checkpoint_every": 0, "num_samples": 16}
WATCHED_STEPS = 2000  # long enough to be watched for a few seconds while it runs, on a busy machine too
SAMPLE_EVERY = 20
SCREENSHOT_POINTS = 60

pytestmark = [pytest.mark.timeout(420),
              pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                                 reason="needs Debian's chromium and chromium-driver (scripts/ensure_browser.sh "
                                        "installs them; make test runs it)")]


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={WINDOW[0]},{WINDOW[1]}", "--hide-scrollbars"):
        options.add_argument(argument)
    # The driver named here, never one Selenium Manager would download (the tests run offline).
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_window_size(*WINDOW)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    if os.environ.get("DCGAN_SCREENSHOTS") == "1":
        return ROOT / "docs"
    return tmp_path_factory.mktemp("screenshots")


def wait_for(condition, seconds: float = 60, what: str = "condition"):
    """Poll `condition` until it returns something truthy (returned); fail saying `what` after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        result = condition()
        if result:
            return result
        assert time.monotonic() < deadline, f"waited {seconds} s for {what}"
        time.sleep(0.25)


class Page:
    """The browser on the platform at `base`, with the few moves the tests make."""

    def __init__(self, driver, base: str):
        self.driver, self.base = driver, base

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def find(self, selector: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def find_all(self, selector: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def attribute(self, selector: str, name: str) -> str | None:
        found = self.find_all(selector)
        return found[0].get_attribute(name) if found else None

    def path(self) -> str:
        return self.driver.current_url.removeprefix(self.base)

    def sign_in(self, key: str) -> None:
        self.open("/")
        assert self.path().startswith("/signin")
        self.find("#api_key").send_keys(key)
        self.find("[data-signin-form] button[type=submit]").click()
        wait_for(lambda: self.path() == "/", 20, "the jobs page after signing in")

    def sign_out(self) -> None:
        self.find("[data-signout]").click()
        wait_for(lambda: self.path().startswith("/signin"), 20, "the sign-in page after signing out")

    def fill(self, name: str, value: str) -> None:
        from selenium.webdriver.support.ui import Select

        field = self.find(f'[name="{name}"]:not([type=hidden])')
        if field.tag_name == "select":
            Select(field).select_by_value(value)
        else:
            field.clear()
            field.send_keys(value)

    def job_status(self) -> str:
        return self.find("[data-job] [data-field=status]").text


def create_key(data_dir: Path, tenant: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "STORAGE_URL")}
    env["DCGAN_DATA_DIR"] = str(data_dir)
    result = subprocess.run([sys.executable, "-m", "cli", "keys", "create", "--tenant", tenant], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60, check=True)
    return result.stdout.strip().splitlines()[-1]


def submit(api: Api, **config) -> str:
    status, job = api.json("POST", "/v1/jobs/train", {"dataset": "builtin:digits", "config": {**TINY, **config}})
    assert status == 202, job
    return job["id"]


def write_pngs(folder: Path, count: int) -> list[Path]:
    from PIL import Image

    paths = []
    for index in range(count):
        path = folder / f"digit-{index}.png"
        Image.new("L", (16, 16), color=40 * index).save(path)
        paths.append(path)
    return paths


def test_a_session_in_the_browser(platform, browser, screenshots, tmp_path):
    api, data_dir = platform
    page = Page(browser, api.base)
    page.sign_in(api.key)

    # Upload three images: previewed from the chosen files, zipped in the browser, counted by the API.
    page.open("/jobs/new")
    page.find("[data-upload-file]").send_keys("\n".join(str(p) for p in write_pngs(tmp_path, 3)))
    wait_for(lambda: len(page.find_all("[data-thumbnail]")) == 3, 10, "three thumbnails")
    page.find("[data-upload-name]").send_keys("three squares")
    page.find("[data-upload-button]").click()
    wait_for(lambda: page.attribute("[data-upload-status]", "data-num-images") == "3", 30, "the upload's counts")
    assert page.attribute("[data-upload-status]", "data-num-rejected") == "0"
    assert "three squares" in page.find("[data-dataset-picker] option:checked").text

    # Submit a training job from the form, on the digits; the job's page follows it.
    page.fill("dataset", "builtin:digits")
    for name, value in {**TINY, "steps": WATCHED_STEPS, "sample_every": SAMPLE_EVERY}.items():
        page.fill(f"config.{name}", str(value))
    page.find("[data-submit]").click()
    wait_for(lambda: page.path().startswith("/jobs/") and page.find_all("[data-job]"), 20, "the new job's page")
    watched = page.attribute("[data-job]", "data-job-id")
    status, job = api.json("GET", f"/v1/jobs/{watched}")
    assert status == 200 and job["config"]["steps"] == WATCHED_STEPS and job["config"]["z_dim"] == 8

    # While it runs, the loss chart gains points and the grid moves on to newer steps.
    wait_for(lambda: page.job_status() == "running", 240, "the job to start (the worker is shared)")
    points, steps = set(), set()

    def watched_changes():
        if page.job_status() == "running":
            points.add(int(page.attribute('[data-chart="losses"]', "data-points")))
            steps.add(page.attribute("[data-grid]", "data-step"))
        return len(points - {0}) >= 2 and len(steps - {None}) >= 2

    wait_for(watched_changes, 120, "the loss chart to gain points and the grid to change while the job runs")
    assert int(page.attribute('[data-chart="d-outputs"]', "data-points")) > 0
    # The picture: a few seconds more of curve, if the run lasts that long.
    wait_for(lambda: page.job_status() != "running" or int(page.attribute('[data-chart="losses"]', "data-points"))
             >= SCREENSHOT_POINTS, 30, "more points")
    page.driver.save_screenshot(str(screenshots / "dashboard-job.png"))

    # The slider goes back to the first grid.
    from selenium.webdriver.common.keys import Keys

    page.find("[data-step-slider]").send_keys(Keys.HOME)
    wait_for(lambda: page.attribute("[data-grid]", "data-step") == str(SAMPLE_EVERY), 10, "the first grid")
    assert page.find("[data-step-label]").text == str(SAMPLE_EVERY)
    assert page.attribute("[data-grid]", "src").endswith(f"/samples/{SAMPLE_EVERY}")

    # The jobs page shows jobs submitted after it was opened, without a reload.
    page.open("/")
    cancelled = submit(api, steps=400, sample_every=SAMPLE_EVERY)
    compared = submit(api, steps=400, sample_every=SAMPLE_EVERY, loss="hinge")
    for job_id in (cancelled, compared, watched):
        wait_for(lambda: page.find_all(f'tr[data-job-id="{job_id}"]'), 15, f"the row of {job_id}")
    page.driver.save_screenshot(str(screenshots / "dashboard-jobs.png"))

    # Cancel the queued one from its page, through the confirmation page.
    page.open(f"/jobs/{cancelled}")
    page.find("[data-cancel]").click()
    page.find("[data-confirm-cancel]").click()
    wait_for(lambda: page.path() == f"/jobs/{cancelled}" and page.job_status() == "cancelled", 20,
             "the cancelled job's page")
    assert not page.find_all("[data-cancel]")

    # Compare the two runs once both have finished: ticked on the jobs page, overlaid, grids side by side.
    for job_id in (watched, compared):
        assert api.wait(job_id, {"succeeded"}, seconds=240)["status"] == "succeeded"
    page.open("/")
    for job_id in (watched, compared):
        page.find(f'tr[data-job-id="{job_id}"] [data-compare-pick]').click()
    page.find("[data-compare-submit]").click()
    wait_for(lambda: page.path().startswith("/compare"), 20, "the compare page")
    wait_for(lambda: int(page.attribute('[data-chart="compare-losses"]', "data-points") or 0) > 0, 20,
             "the overlaid loss curves")
    grids = lambda: [page.attribute(f'[data-compare-grid][data-job-id="{j}"]', "data-step")  # noqa: E731
                     for j in (watched, compared)]
    wait_for(lambda: grids()[0] and grids()[0] == grids()[1], 20, "both grids at one step")
    page.find("[data-compare-step]").send_keys(Keys.HOME)
    wait_for(lambda: grids() == [str(SAMPLE_EVERY)] * 2, 10, "both grids at the first step")
    page.find("[data-compare-step]").send_keys(Keys.END)
    wait_for(lambda: grids()[0] == str(WATCHED_STEPS), 10, "the watched job's last grid")
    page.driver.save_screenshot(str(screenshots / "dashboard-compare.png"))

    # A form without its CSRF token is refused, and changes nothing: here, signing out.
    page.open("/")
    page.driver.execute_script("document.querySelector('form.signout [name=csrf_token]').remove()")
    page.find("[data-signout]").click()
    wait_for(lambda: page.find_all("[data-error-status]"), 10, "the refusal")
    assert page.attribute("[data-error-status]", "data-error-status") == "400" and "CSRF" in page.find("main").text
    page.open("/")
    assert page.path() == "/"  # still signed in
    page.sign_out()
    page.open(f"/jobs/{watched}")
    assert page.path().startswith("/signin")

    # Another tenant sees none of it, and the first tenant's job URLs are 404 pages.
    page.sign_in(create_key(data_dir, "browser-other"))
    listed = [row.get_attribute("data-job-id") for row in page.find_all("tr[data-job-id]")]
    assert not {watched, cancelled, compared} & set(listed)
    for path in (f"/jobs/{watched}", f"/jobs/{cancelled}/cancel", f"/compare?job={watched}&job={compared}"):
        page.open(path)
        assert page.attribute("[data-error-status]", "data-error-status") == "404", path
    page.sign_out()
    for name in ("dashboard-jobs.png", "dashboard-job.png", "dashboard-compare.png"):
        assert (screenshots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name

