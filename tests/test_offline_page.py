"""Nothing leaves the machine: neither the page (fonts, scripts, analytics) nor the server at start (Gradio's
version check, analytics) reaches any host but the app's own, so a class on a closed network works and no
visitor is tracked."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import time
import urllib.request
from urllib.parse import urlsplit

import pytest

import app
from conftest import ROOT, _free_port, assert_no_error

# Each tab's first figure: a Plotly plot drawn inside the tab that is showing (Gradio keeps one panel per tab).
# Most tabs draw one on opening; two wait for a quick run of their button. The speculative, memory and serving tabs
# draw nothing before a run of several seconds (their own browser tests run them): opening them, with their run
# button shown, is enough for what this test looks for (a request to another host while the tab renders).
FIRST_VIEW_BUTTON = {"interventions": "#int-run", "prefill": "#pfd-run"}
RUN_BUTTON_ONLY = {"speculative": "#spd-run", "memory": "#mem-kv-run", "serving": "#srv-run"}
VISIBLE_PANEL_PLOT = """() => [...document.querySelectorAll('[role=tabpanel]')]
    .some(p => p.offsetParent !== null && p.querySelector('.js-plotly-plot .main-svg'))"""


def _outside(urls: list[str], origin: str) -> list[str]:
    """Addresses the page asked for that are not on the app's own host and port (data: and blob: never leave)."""
    own = urlsplit(origin).netloc
    return sorted({u for u in urls if urlsplit(u).scheme in ("http", "https", "ws", "wss")
                   and urlsplit(u).netloc != own})


@pytest.mark.browser
def test_the_page_asks_only_its_own_server_on_every_tab(browser, app_url, screenshot):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    requested: list[str] = []
    context.on("request", lambda request: requested.append(request.url))  # the page and any worker it starts
    try:
        page = context.new_page()
        page.on("websocket", lambda ws: requested.append(ws.url))
        page.set_default_timeout(90_000)
        page.goto(app_url)
        page.wait_for_selector("#lie-model-facts")
        for name, tab in zip(app.TAB_NAMES, app.TABS):
            page.get_by_role("tab", name=tab.TITLE, exact=True).click()
            page.wait_for_function("t => [...document.querySelectorAll('[role=tab][aria-selected=true]')]"
                                   ".some(e => e.innerText.trim() === t)", arg=tab.TITLE)
            if name in RUN_BUTTON_ONLY:
                page.wait_for_selector(RUN_BUTTON_ONLY[name], state="visible")
                continue
            if name in FIRST_VIEW_BUTTON:
                page.locator(FIRST_VIEW_BUTTON[name]).click()
            try:
                page.wait_for_function(VISIBLE_PANEL_PLOT)
            except Exception:
                screenshot(page, f"offline-no-plot-{name}")
                raise AssertionError(f"the {name} tab showed no figure") from None
        page.get_by_text("Limits on this server").click()
        page.wait_for_selector("#lie-limits table.lie-limits", state="visible")
        page.wait_for_timeout(1000)  # anything a figure or font asks for late
        assert_no_error(page)
        screenshot(page, "offline-last-tab")
    finally:
        context.close()
    assert any("/gradio_api/queue/join" in url for url in requested), "the page's own requests were not recorded"
    outside = _outside(requested, app_url)
    assert not outside, "the page reached outside hosts:\n" + "\n".join(outside)


def test_outside_addresses_are_told_apart_from_the_apps_own():
    origin = "http://127.0.0.1:7860"
    asked = [origin + "/", origin + "/gradio_api/queue/join", "data:image/png;base64,AA", "blob:" + origin + "/1",
             "https://fonts.googleapis.com/css2?family=Inter", "http://127.0.0.1:9999/", "wss://example.org/x"]
    assert _outside(asked, origin) == ["http://127.0.0.1:9999/", "https://fonts.googleapis.com/css2?family=Inter",
                                       "wss://example.org/x"]


def _is_local(host: str) -> bool:
    if host in ("localhost", "(none)"):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback or ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


# Runs app.py as `python app.py` does, with an audit hook that reports every name lookup and connection a
# Python socket makes (Gradio's version check and analytics use httpx, which goes through them).
WATCHED_START = """
import runpy, sys
def watch(event, args):
    if event == "socket.getaddrinfo":
        print("LOOKUP", args[0] or "(none)", file=sys.stderr, flush=True)
    elif event == "socket.connect" and isinstance(args[1], tuple):
        print("CONNECT", args[1][0], file=sys.stderr, flush=True)
sys.addaudithook(watch)
sys.argv = ["app.py", *sys.argv[1:]]
runpy.run_path("app.py", run_name="__main__")
"""


@pytest.mark.slow
def test_the_server_reaches_no_outside_host_at_start(tmp_path):
    port = _free_port()
    log_path = tmp_path / "server.log"
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1"}
    env.pop("GRADIO_ANALYTICS_ENABLED", None)  # app.py's own default must hold
    with open(log_path, "w") as log_file:
        server = subprocess.Popen([sys.executable, "-c", WATCHED_START, "--port", str(port)], cwd=ROOT, env=env,
                                  stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and server.poll() is None:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).close()
                break
            except OSError:
                time.sleep(0.5)
        assert server.poll() is None, "the app did not start"
        time.sleep(5)  # a version check runs in a thread after launch: give it time to show itself
    finally:
        server.terminate()
        server.wait(timeout=30)
    log = log_path.read_text(encoding="utf-8", errors="replace")
    seen = [line.split(None, 1) for line in log.splitlines() if line.startswith(("LOOKUP ", "CONNECT "))]
    assert seen, "the audit hook saw no socket at all (not even the app's own start-up check)"
    outside = [f"{kind} {host}" for kind, host in seen if not _is_local(host.strip())]
    assert not outside, "the server reached for outside hosts at start:\n" + "\n".join(outside)
