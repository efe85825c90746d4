"""The Keyphrases page in a real browser: headless Chromium (Debian package) driven by Playwright against a
real ``airflow api-server`` with the plugin. Log in through Airflow's login form, open the page, search an
item, check the results table, save a screenshot (test tmp dir and var/screenshots/)."""

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

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed (make browser)")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def api_server(published_lake, tmp_path):
    from keyphrase_pipeline.core import airflow_standalone as af
    from keyphrase_pipeline.core.settings import settings_env

    ds, version = published_lake["ds"], published_lake["version"]
    af.ensure_metadata_db()
    port = free_port()
    env = dict(os.environ)
    env.update(settings_env(published_lake["settings"]))
    env.update({"AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin", "AIRFLOW__API__PORT": str(port),
                "AIRFLOW__API__WORKERS": "1"})
    log = open(tmp_path / "api-server.log", "w")
    proc = subprocess.Popen([af.airflow_bin(), "api-server", "--port", str(port), "--host", "127.0.0.1"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=False)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/v2/monitor/health", timeout=3) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, (tmp_path / "api-server.log").read_text()[-3000:]
            assert time.time() < deadline, "api-server did not start: " + (tmp_path / "api-server.log").read_text()[-3000:]
            time.sleep(1)
        passwords = json.loads((Path(env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated").read_text())
        yield {"base": base, "password": passwords["admin"], "ds": ds, "version": version}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_keyphrases_page_in_chromium(api_server, tmp_path):
    from playwright.sync_api import sync_playwright

    base = api_server["base"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 1100})
            page.set_default_timeout(30_000)
            # not logged in: the page sends us to Airflow's login form
            page.goto(f"{base}/keyphrases/")
            page.wait_for_url("**/auth/login**")
            page.locator("input[name='username']").fill("admin")
            page.locator("input[name='password']").fill(api_server["password"])
            page.locator("button[type='submit']").click()
            page.wait_for_url("**/keyphrases/**")
            # the page itself, with the data of the published lake
            page.wait_for_function("document.getElementById('champion').textContent.trim() !== '–'")
            assert page.locator("#champion").inner_text() == api_server["version"]
            assert page.locator("#runs tbody tr").count() >= 5
            assert "simulated annotator" in page.locator("#subtitle").inner_text()
            # search an item picked from the catalog
            items = page.evaluate("fetch('api/items?limit=3').then(r => r.json())")
            page.locator("#item-q").fill(str(items[0]["item_id"]))
            page.locator("#search-btn").click()
            page.wait_for_selector("#results tbody tr.result")
            rows = page.locator("#results tbody tr.result")
            assert 1 <= rows.count() <= 10
            first = rows.nth(0).locator("td")
            assert first.nth(0).inner_text() == "1" and float(first.nth(2).inner_text()) <= 1.0001
            assert first.nth(3).inner_text() in ("yes", "no")  # truth of the demo world shown
            assert items[0]["title"] in page.locator("#search-info").inner_text()
            page.wait_for_function("document.getElementById('scores').naturalWidth > 0")
            shot = tmp_path / "keyphrases.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            out = REPO / "var" / "screenshots"
            out.mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, out / "keyphrases.png")
        finally:
            browser.close()
