"""The live view in a real browser (Debian's headless Chromium through chromedriver) against a demo run:
``asset-cycle run --serve`` (the simulated fleet at 30x real time, as `make run` starts it). Trucks appear
on the map and move between two screenshots, clicking a truck shows its cycle in progress as the API
has it, and the page logs no console error; and over a replayed site (tests/web/conftest.py's bundle run),
its stale trucks are drawn hollow and dashed, the others in their segment's colour. Screenshots are kept
in test-artifacts/browser/."""

from __future__ import annotations

import re
import shutil
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.job.reliability_support import CliRun, cli_env, free_port
from tests.web.support import BundleRun, drop_run_data, get

pytestmark = [pytest.mark.browser, pytest.mark.flink, pytest.mark.services]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SEGMENT_COLOURS = {"LOAD_TIME": "#d97706", "LOAD_TRAVEL": "#dc2626", "DUMP_TIME": "#7c3aed", "EMPTY_TRAVEL": "#2563eb",
                   "NONE": "#6b7280"}  # web/static/app.js's legend


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, pg_dsn: str, redis_url: str, redis_client: Any
         ) -> Iterator[tuple[CliRun, str]]:  # fmt: skip
    """A demo run with the live view; yields (the run, the page's URL)."""
    base = tmp_path_factory.mktemp("web-demo")
    schema, prefix = f"t_{uuid.uuid4().hex[:16]}", f"test:{uuid.uuid4().hex[:16]}:"
    run = CliRun(["--serve", "--serve-port", str(free_port()), "--schema", schema, "--redis-prefix", prefix,
                  "--rest-port", str(free_port()), "--metrics-port", str(free_port()), "--checkpoint-dir",
                  str(base / "cp"), "--progress-s", "5"], cli_env(pg_dsn, redis_url), base / "run.log")  # fmt: skip
    try:
        run.wait_for_line("job running", 300)
        [url] = re.findall(r"^Live view: (http://127\.0\.0\.1:\d+/)$", run.output(), re.M)
        run.wait_for(lambda: len(get(url + "api/fleet").json()["trucks"]) >= 6, 120, "trucks in the fleet")
        yield run, url
    finally:
        run.stop()
        drop_run_data(pg_dsn, redis_client, schema, prefix)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    webdriver = pytest.importorskip("selenium.webdriver")
    if not Path(CHROMIUM).exists() or not Path(CHROMEDRIVER).exists():
        pytest.fail("Debian's chromium and chromium-driver are needed (`.ci/run` installs them: "
                    "apt-get install -y chromium chromium-driver)", pytrace=False)  # fmt: skip
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-extensions", "--no-first-run",
                 "--window-size=1400,900"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def _positions(driver: Any) -> dict[str, str]:
    """Each truck marker's drawn shape (its SVG path), by truck."""
    from selenium.webdriver.common.by import By

    return {m.get_attribute("data-truck"): m.get_attribute("d") for m in driver.find_elements(By.CSS_SELECTOR,
                                                                                              "path.truck")}


def test_trucks_appear_and_move_a_click_shows_its_cycle_and_the_console_stays_clean(
        demo: tuple[CliRun, str], browser: Any) -> None:  # fmt: skip
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    run, url = demo
    browser.get(url)
    fleet = get(url + "api/fleet").json()["trucks"]
    WebDriverWait(browser, 30).until(lambda d: len(_positions(d)) == len(fleet))
    first = _positions(browser)
    assert set(first) == {t["asset_guid"] for t in fleet}
    browser.save_screenshot(str(ARTIFACTS / "1-trucks.png"))
    WebDriverWait(browser, 30).until(lambda d: sum(_positions(d).get(k) != v for k, v in first.items()) >= 2)
    browser.save_screenshot(str(ARTIFACTS / "2-trucks-moved.png"))
    assert browser.find_element(By.ID, "connection").text == "connected"

    # click a truck that is in a cycle (standing at a loader or dump when one is: it holds still)
    fleet = get(url + "api/fleet").json()["trucks"]
    in_cycle = [t for t in fleet if t["cycle"] and t["cycle"]["load_start_utc"]]
    assert in_cycle, fleet
    truck = min(in_cycle, key=lambda t: t["segment"] not in ("LOAD_TIME", "DUMP_TIME"))["asset_guid"]

    def panel_shows_its_cycle(driver: Any) -> bool:
        if driver.find_element(By.ID, "truck-title").text != f"Truck {truck}":
            marker = driver.find_element(By.CSS_SELECTOR, f'path.truck[data-truck="{truck}"]')
            ActionChains(driver).move_to_element(marker).click().perform()
            return False
        start = get(url + f"api/trucks/{truck}").json()["current_cycle"]["load_start_utc"]
        shown = driver.find_element(By.ID, "current-cycle").text
        return f"{start[:10]} {start[11:19]}Z" in shown and "elapsed" in shown

    WebDriverWait(browser, 30, poll_frequency=1).until(panel_shows_its_cycle)
    assert browser.find_element(By.ID, "truck-panel").is_displayed()
    assert browser.find_elements(By.CSS_SELECTOR, "#truck-body table") or "no closed cycles" in browser.find_element(
        By.ID, "truck-body").text
    browser.save_screenshot(str(ARTIFACTS / "3-truck-clicked.png"))

    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []

    browser.get("about:blank")  # the page stops polling before its server goes
    assert run.signal(signal.SIGINT, 120) == 0, run.output()[-3000:]
    with pytest.raises(OSError):  # the live view stopped with the job
        get(url + "api/fleet", timeout=3)


def test_stale_trucks_are_drawn_hollow_and_dashed(bundle_run: BundleRun, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    trucks = bundle_run.get("/api/fleet")["trucks"]
    assert {t["stale"] for t in trucks} == {True, False}
    browser.get("about:blank")
    browser.get_log("browser")  # what an earlier page logged is not this page's
    browser.get(bundle_run.url)
    WebDriverWait(browser, 30).until(lambda d: len(_positions(d)) == len(trucks))
    browser.save_screenshot(str(ARTIFACTS / "4-stale-trucks.png"))
    for truck in trucks:
        marker = browser.find_element(By.CSS_SELECTOR, f'path.truck[data-truck="{truck["asset_guid"]}"]')
        drawn = (marker.get_attribute("stroke-dasharray"), marker.get_attribute("fill"))
        if truck["stale"]:
            assert drawn == ("2 3", "#ffffff"), truck
        else:
            assert drawn[0] is None and drawn[1] == SEGMENT_COLOURS[truck["segment"]], (truck, drawn)
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
