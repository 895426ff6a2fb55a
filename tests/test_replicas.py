"""Two app processes behind nginx (deploy/replicas.py): a class spread over both, each user kept on one.

Gradio keeps its queue and each visitor's state in one process, so every request of one browser or one
gradio_client must reach the same replica; nginx's access log names the replica of every request."""

from __future__ import annotations

import os
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from gradio_client import Client

from conftest import _free_port, local_client
from deploy.replicas import Replicas, find_nginx
from test_classroom import _generate

pytestmark = pytest.mark.slow

LOG_LINE = re.compile(r'"(?P<method>\S+) (?P<path>\S+) [^"]*" (?P<status>\d+) .* upstream=(?P<upstream>\S+) '
                      r'sticky=(?P<sticky>\S+)')


@pytest.fixture(scope="module")
def replicas(tmp_path_factory):
    if find_nginx() is None:
        message = "nginx is not installed (apt-get install -y nginx); the replicas test is skipped"
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    with Replicas(2, port=_free_port(), ports=[_free_port(), _free_port()], host="127.0.0.1",
                  workdir=tmp_path_factory.mktemp("replicas")) as running:
        yield running


def _requests(replicas: Replicas) -> list[dict]:
    lines = replicas.access_log.read_text(encoding="utf-8").splitlines()
    return [m.groupdict() for m in map(LOG_LINE.search, lines) if m]


def _replica_of(replicas: Replicas, cookie: str) -> set[str]:
    return {r["upstream"] for r in _requests(replicas) if r["sticky"] == cookie}


def _class_on_both_replicas(replicas: Replicas, size: int) -> list[Client]:
    """`size` clients, each with the cookie nginx gave it. The cookie is random, so a small class can land on one
    replica by chance (1 in 128 for eight): then more join until one reaches the other replica."""
    clients, seen = [], {}
    while True:
        client = local_client(replicas.url)
        # gradio_client keeps the cookies of its first response (/config) for all its later requests.
        cookie = client.cookies.get("lie_replica")
        assert cookie, client.cookies
        (replica,) = _replica_of(replicas, cookie)  # its API-info request already went there
        seen.setdefault(replica, []).append(client)
        clients.append(client)
        if len(clients) >= size and len(seen) == len(replicas.ports):
            break
        assert len(clients) < 4 * size, "every client landed on the same replica"
    while len(clients) > size:  # drop extra ones from the larger group
        largest = max(seen.values(), key=len)
        clients.remove(largest.pop())
    return clients


def test_a_class_is_spread_over_both_replicas_and_each_user_gets_their_solo_result(replicas):
    seeds = list(range(201, 209))  # 8 students, 8 seeds
    solo_client = local_client(replicas.url)
    solo = {seed: _generate(solo_client, seed) for seed in seeds}
    assert len({tuple(v) for v in solo.values()}) > 1

    clients = _class_on_both_replicas(replicas, len(seeds))
    cookies = [c.cookies["lie_replica"] for c in clients]
    assert len(set(cookies)) == len(clients)
    started = time.perf_counter()
    with ThreadPoolExecutor(len(seeds)) as pool:
        together = dict(zip(seeds, pool.map(_generate, clients, seeds)))
    elapsed = time.perf_counter() - started
    print(f"\n{len(seeds)} simultaneous users over 2 replicas: {elapsed:.1f} s in all")
    assert together == solo  # each got their own result, the same as alone (and as on the other replica)

    ours = {cookie: _replica_of(replicas, cookie) for cookie in cookies}
    # Every request of one user (API info, join, event stream, heartbeat) reached one replica...
    assert all(len(upstream) == 1 for upstream in ours.values()), ours
    # ...and the class used both.
    assert set().union(*ours.values()) == {f"127.0.0.1:{port}" for port in replicas.ports}, ours
    joins = [r for r in _requests(replicas) if r["path"].startswith("/gradio_api/queue/join") and r["sticky"] in ours]
    assert len(joins) == len(seeds) and all(r["status"] == "200" for r in joins)


@pytest.mark.browser
def test_a_browser_page_through_nginx_stays_on_one_replica(replicas, browser, tmp_path):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    try:
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.goto(replicas.url)
        page.wait_for_selector("#lie-model-facts")
        page.wait_for_selector("#tok-chips .lie-tok")
        page.locator("#tok-text textarea").fill("Replicas behind nginx")
        page.wait_for_function("() => document.querySelector('#tok-chips').innerText.includes('ngin')")
        page.get_by_text("Token table").click()
        with page.expect_download() as download:
            page.locator("#tok-download").click()
        # Gradio builds the file's address from X-Forwarded-Host: the front, not the replica's own port.
        assert download.value.url.startswith(replicas.url + "/"), download.value.url
        assert "behind" in open(download.value.path(), encoding="utf-8").read()

        cookie = {c["name"]: c["value"] for c in context.cookies()}["lie_replica"]
        # nginx logs a request when it ends: the page's event stream ends once its first views are all drawn.
        deadline = time.monotonic() + 60
        while True:
            mine = [r for r in _requests(replicas) if r["sticky"] == cookie]
            paths = {r["path"].split("?")[0] for r in mine}
            if "/gradio_api/queue/data" in paths or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert {"/gradio_api/queue/join", "/gradio_api/queue/data"} <= paths, paths
        assert any(p.startswith("/gradio_api/file=") for p in paths), paths
        assert len({r["upstream"] for r in mine}) == 1, mine
    finally:
        context.close()
