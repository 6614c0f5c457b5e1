"""The live view's speed: ``/api/fleet`` latency over N trucks (p50/p99 of sequential requests on one
keep-alive connection, as the page polls), and with ``--browser`` the page in headless Chromium with
M trucks that all move every second (main-thread busy time, long tasks, click-to-panel latency).

The trucks are synthetic rows in a throwaway schema ``bench_<hex>`` of the test database (every truck
with a position and a cycle in progress); no Redis keys are made (the map has no regions).

    .venv/bin/python bench/web_fleet.py                              # 200 trucks, 500 requests
    .venv/bin/python bench/web_fleet.py --trucks 200 --requests 1000 --browser --browser-trucks 500
"""

from __future__ import annotations

import argparse
import http.client
import math
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg2
from psycopg2 import sql
from psycopg2.extras import execute_values

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import PG_DSN  # noqa: E402
from stores.postgres import TableNames, apply_migrations  # noqa: E402
from web.server import LiveServer  # noqa: E402
from web.settings import ServeSettings  # noqa: E402

SITE = "BENCH-SITE"
CENTER = (-22.70, 118.70)
SEGMENTS = ("LOAD_TIME", "LOAD_TRAVEL", "DUMP_TIME", "EMPTY_TRAVEL")


def _position(i: int, step: int) -> tuple[float, float]:
    angle = (i * 0.7 + step * 0.01) % (2 * math.pi)
    radius = 0.004 + 0.02 * ((i * 37) % 100) / 100
    return CENTER[0] + radius * math.sin(angle), CENTER[1] + radius * math.cos(angle)


@contextmanager
def bench_schema(trucks: int) -> Iterator[TableNames]:
    """A schema with ``trucks`` positions and cycles in progress (dropped afterwards)."""
    names = TableNames(schema=f"bench_{uuid.uuid4().hex[:12]}")
    conn = psycopg2.connect(PG_DSN)
    try:
        apply_migrations(conn, names)
        now = time.time()
        with conn.cursor() as cur:
            execute_values(cur, sql.SQL(
                "INSERT INTO {} (asset_guid, site_guid, last_event_utc, latitude, longitude, work_state_id, "
                "current_segment, area, area_guid) VALUES %s").format(names.table("process_info")),
                [(f"HT-{i:04d}", SITE, now - (i % 7), *_position(i, 0), 3, SEGMENTS[i % 4], "T", None)
                 for i in range(trucks)], template="(%s, %s, to_timestamp(%s), %s, %s, %s, %s, %s, %s)")
            execute_values(cur, sql.SQL(
                "INSERT INTO {} (asset_guid, site_guid, cycle_status, current_segment, loader_asset_guid, "
                "load_start_utc, last_event_utc) VALUES %s").format(names.table("cycle_tmp")),
                [(f"HT-{i:04d}", SITE, "INPROGRESS", SEGMENTS[i % 4], f"LDR-{i % 5}", now - 600 - i, now)
                 for i in range(trucks)], template="(%s, %s, %s, %s, %s, to_timestamp(%s), to_timestamp(%s))")
        conn.commit()
        yield names
    finally:
        conn.rollback()
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(names.schema)))
        conn.commit()
        conn.close()


@contextmanager
def served(names: TableNames) -> Iterator[LiveServer]:
    server = LiveServer(ServeSettings(database=PG_DSN, names=names, redis=None, port=0))
    server.open()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def fleet_latency(server: LiveServer, requests: int) -> list[float]:
    """Milliseconds of each of ``requests`` sequential GET /api/fleet on one keep-alive connection."""
    port = int(server.url.rsplit(":", 1)[1].strip("/"))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    timings = []
    for i in range(50 + requests):
        start = time.perf_counter()
        conn.request("GET", "/api/fleet")
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {body[:200]!r}")
        if i >= 50:  # after a warm-up
            timings.append((time.perf_counter() - start) * 1000)
    conn.close()
    return timings


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def browser_figures(server: LiveServer, names: TableNames, trucks: int, seconds: float) -> dict[str, float]:
    """The page with every truck moving each second: busy main-thread ms per second, long tasks (> 50 ms)
    and the time from a click on a truck to its panel."""
    from selenium import webdriver
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    stop = threading.Event()

    def move() -> None:
        conn = psycopg2.connect(PG_DSN)
        conn.autocommit = True
        step = 0
        while not stop.wait(1.0):
            step += 1
            with conn.cursor() as cur:
                execute_values(cur, sql.SQL(
                    "UPDATE {} p SET latitude = v.lat, longitude = v.lon, last_event_utc = now() "
                    "FROM (VALUES %s) AS v(guid, lat, lon) WHERE p.asset_guid = v.guid").format(
                    names.table("process_info")), [(f"HT-{i:04d}", *_position(i, step)) for i in range(trucks)])
        conn.close()

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path="/usr/bin/chromedriver"))
    mover = threading.Thread(target=move, daemon=True)
    try:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": (
            "window.__long = []; new PerformanceObserver(l => l.getEntries().forEach(e => "
            "window.__long.push(e.duration))).observe({type: 'longtask', buffered: true});")})
        driver.execute_cdp_cmd("Performance.enable", {})
        driver.get(server.url)
        WebDriverWait(driver, 60).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "path.truck")) == trucks)
        mover.start()
        time.sleep(3)
        driver.execute_script("window.__long = [];")

        def task_s() -> float:
            metrics = driver.execute_cdp_cmd("Performance.getMetrics", {})["metrics"]
            return next(m["value"] for m in metrics if m["name"] == "TaskDuration")

        def shapes() -> dict[str, str]:
            return dict(driver.execute_script(
                "return [...document.querySelectorAll('path.truck')].map(p => [p.dataset.truck, p.getAttribute('d')]);"))

        first = shapes()
        before, started = task_s(), time.monotonic()
        time.sleep(seconds)
        busy = (task_s() - before) / (time.monotonic() - started)
        moved = sum(shapes().get(k) != v for k, v in first.items())
        long_tasks = driver.execute_script("return window.__long;")
        marker = driver.find_elements(By.CSS_SELECTOR, "path.truck")[trucks // 2]
        guid = marker.get_attribute("data-truck")
        clicked = time.monotonic()
        ActionChains(driver).move_to_element(marker).click().perform()
        WebDriverWait(driver, 10, poll_frequency=0.01).until(
            lambda d: d.find_element(By.ID, "truck-title").text == f"Truck {guid}")
        click_ms = (time.monotonic() - clicked) * 1000
    finally:
        stop.set()
        driver.quit()
    return {"busy_ms_per_s": busy * 1000, "moved": moved, "long_tasks": len(long_tasks),
            "longest_task_ms": max(long_tasks, default=0.0), "click_to_panel_ms": click_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trucks", type=int, default=200)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--browser", action="store_true", help="also measure the page in headless Chromium")
    parser.add_argument("--browser-trucks", type=int, default=500)
    parser.add_argument("--browser-s", type=float, default=20.0, help="seconds the page is watched")
    args = parser.parse_args()
    with bench_schema(args.trucks) as names, served(names) as server:
        timings = fleet_latency(server, args.requests)
    print(f"/api/fleet, {args.trucks} trucks, {args.requests} sequential requests: p50 "
          f"{statistics.median(timings):.1f} ms, p90 {_percentile(timings, 0.9):.1f} ms, p99 "
          f"{_percentile(timings, 0.99):.1f} ms, max {max(timings):.1f} ms")
    if args.browser:
        with bench_schema(args.browser_trucks) as names, served(names) as server:
            figures = browser_figures(server, names, args.browser_trucks, args.browser_s)
        print(f"page, {args.browser_trucks} trucks moving every second, watched {args.browser_s:g} s ({figures['moved']} "
              f"moved on screen): main thread busy "
              f"{figures['busy_ms_per_s']:.0f} ms per s, {figures['long_tasks']} long tasks (> 50 ms, longest "
              f"{figures['longest_task_ms']:.0f} ms), click to truck panel {figures['click_to_panel_ms']:.0f} ms")


if __name__ == "__main__":
    main()
