"""Shared fixtures: the real bundled model (loaded once per test session), the app served once on
loopback, and headless Chromium for browser tests."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking"]


@pytest.fixture(autouse=True)
def no_inference_mode_left_on():
    """A generator that yields inside `torch.inference_mode()` leaves it on in the caller's thread; later tensors
    then become inference tensors and transformers' continuous batching engine fails on them. Catch it where it
    happens."""
    yield
    import torch

    assert not torch.is_inference_mode_enabled(), "this test left torch.inference_mode on in the main thread"


@pytest.fixture(scope="session")
def session():
    """The embedded default model, the same object every tab uses."""
    from inference.session import get_session

    return get_session()


@pytest.fixture(scope="session")
def gemma():
    """Gemma 3 270M base: extra norms, tied embeddings, two RoPE thetas, no chat template."""
    from inference.session import BUNDLED, GEMMA_MODEL, get_session

    if not BUNDLED[GEMMA_MODEL].installed():
        pytest.skip("the Gemma 3 270M package is not installed")
    return get_session(GEMMA_MODEL)


@pytest.fixture(scope="session")
def tiny_gpt2(session):
    """A small random GPT-2 (learned positions, LayerNorm, fused qkv): the anatomy is read, not hard-coded."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from inference.session import ModelSession, read_facts

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(session.tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=4,
                        attn_implementation="eager")  # as the session loads every model: attention weights come back
    model = GPT2LMHeadModel(config).eval()
    return ModelSession(model_id="tiny-gpt2", model=model, tokenizer=session.tokenizer, device=torch.device("cpu"),
                        dtype=torch.float32, facts=read_facts(model), source="test", load_seconds=0.0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def app_url(session):
    """The real app, launched once in this process (sharing the loaded model) on a free loopback port."""
    import app

    demo = app.build_demo()
    demo.launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True, quiet=True,
                **app.launch_kwargs())
    yield demo.local_url.rstrip("/")
    demo.close()


def local_client(url: str, **kwargs):
    """A gradio_client for the app on this machine. It speaks plain HTTP, so no TLS context is needed: by default
    gradio_client builds one that loads the CA bundle for every request (~40 ms of CPU each), which on 2 cores
    slowed the server being measured (30 clients: 2.7 s of client CPU a burst, 0.4 s without)."""
    from gradio_client import Client

    return Client(url, verbose=False, ssl_verify=False, **kwargs)


@pytest.fixture(scope="session")
def client(app_url):
    return local_client(app_url)


def _chromium_path() -> str | None:
    for candidate in (os.environ.get("CHROMIUM_PATH"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser"), shutil.which("google-chrome")):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


@pytest.fixture(scope="session")
def browser():
    path = _chromium_path()
    if path is None:
        message = "no Chromium found (install it: apt-get install -y chromium); browser tests skipped"
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, app_url):
    """A fresh page on the app; wait for elements, not for network idle."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    pg.goto(app_url)
    pg.wait_for_selector("#lie-model-facts")
    yield pg
    context.close()


@pytest.fixture
def screenshot():
    """screenshot(page, name) saves test-artifacts/<name>.png for a person to look at."""
    ARTIFACTS.mkdir(exist_ok=True)

    def take(pg, name: str, full_page: bool = True) -> Path:
        path = ARTIFACTS / f"{name}.png"
        pg.screenshot(path=str(path), full_page=full_page)
        return path

    return take


def assert_no_error(page) -> None:
    """No error toast and no "Something went wrong" message on the page (browser tests)."""
    errors = page.locator(".toast-body.error, [data-testid='toast-body'].error")
    assert errors.count() == 0, errors.first.inner_text()
    assert "Something went wrong" not in page.locator("body").inner_text()
