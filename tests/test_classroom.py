"""A classroom at once: many simultaneous users, bad input on every endpoint, a bounded soak.

All traffic goes to the app served on loopback by the `app_url` fixture."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from conftest import local_client

GENERATE = dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, repetition_penalty=1.0, presence_penalty=0.0,
                frequency_penalty=0.0, max_new_tokens=6, chat=True, stop=[], min_new_tokens=0)
PROMPT = "Name a colour."


def _generate(client: Client, seed: int) -> list[int]:
    return client.predict(PROMPT, seed=seed, **GENERATE, api_name="/generate")["token_ids"]


def test_simultaneous_users_each_get_their_solo_result(app_url):
    seeds = list(range(101, 113))  # 12 students, 12 seeds
    solo_client = local_client(app_url)
    solo = {seed: _generate(solo_client, seed) for seed in seeds}
    assert len({tuple(v) for v in solo.values()}) > 1  # different seeds, different samples

    clients = [local_client(app_url) for _ in seeds]
    started = time.perf_counter()
    with ThreadPoolExecutor(len(seeds)) as pool:
        together = dict(zip(seeds, pool.map(_generate, clients, seeds)))
    elapsed = time.perf_counter() - started
    print(f"\n12 simultaneous users: {elapsed:.1f} s in all, {elapsed / len(seeds):.2f} s per request")
    assert together == solo


SUBJECTS = ["cats", "dogs", "the sea", "rain", "music", "trees", "the moon", "bread", "winter", "trains", "bees",
            "clouds", "rivers", "books", "snow", "coffee", "birds", "mountains", "the sun", "apples", "chess", "robots",
            "stars", "gardens", "boats", "tea", "owls", "deserts", "cities", "friends"]
GREEDY_16 = {**GENERATE, "temperature": 0.0, "max_new_tokens": 16, "min_new_tokens": 16}


def _greedy(client: Client, prompt: str) -> dict:
    return client.predict(prompt, **GREEDY_16, api_name="/generate")


def test_thirty_students_generating_at_once_are_served_together(app_url, session):
    """30 simultaneous users, 16 greedy tokens each, different prompts: all answers back in a few times the time of one
    user alone (one at a time it was ~35x; the issue's target is 5x, see below), each told it shared its passes; a sample of them equal their solo runs
    (tests/test_serving.py checks batched = solo exhaustively on smaller batches, and against model.generate)."""
    from inference.generation import generate
    from inference.sampling import SamplingParams

    prompts = [f"Write one sentence about {s}." for s in SUBJECTS]
    # The clients share this process (and its 2 cores) with the server: on a busy machine their posts may wait
    # longer than httpx's 5 s default for the server's event loop.
    with ThreadPoolExecutor(8) as pool:
        clients = list(pool.map(lambda _: local_client(app_url, httpx_kwargs={"timeout": 60}), prompts))
        # Each student has the page open before pressing Generate: a session's first request costs the server a copy
        # of the whole page's config (~50 ms for its ~870 blocks), which is not what this test measures.
        list(pool.map(lambda c: c.predict("hello", False, api_name="/tokenize"), clients))

    def clocks() -> tuple[float, float]:
        return time.perf_counter(), time.process_time()  # wall; CPU of this process (server and clients)

    def alone(prompt: str) -> tuple[float, float]:  # one user alone, through the same server
        wall, cpu = clocks()
        _greedy(clients[0], prompt)
        return time.perf_counter() - wall, time.process_time() - cpu

    times = [alone("Write one sentence about the wind."), alone("Write one sentence about the rain.")]
    barrier = threading.Barrier(len(prompts))

    def student(client, prompt):
        barrier.wait()
        return _greedy(client, prompt)

    busy = os.getloadavg()[0] / (os.cpu_count() or 1)  # other jobs on this machine, per core
    wall, cpu = clocks()
    with ThreadPoolExecutor(len(prompts)) as pool:
        answers = list(pool.map(student, clients, prompts))
    together, together_cpu = time.perf_counter() - wall, time.process_time() - cpu
    times.append(alone("Write one sentence about a lamp."))  # after too: the machine's load drifts
    one, one_cpu = sorted(t for t, _ in times)[1], sorted(c for _, c in times)[1]
    print(f"\n30 simultaneous users: {together:.1f} s for all, one user alone {one:.2f} s: {together / one:.1f}x "
          f"(CPU time {together_cpu / one_cpu:.1f}x; load {busy:.1f} per core)")
    sample = range(0, len(prompts), 10)
    solo = [generate(session, prompts[i], SamplingParams(temperature=0), 16, min_new_tokens=16).token_ids
            for i in sample]
    assert [answers[i]["token_ids"] for i in sample] == solo
    assert all(len(a["token_ids"]) == 16 for a in answers)
    shared = [a["serving"]["shared_with_max"] for a in answers]
    assert max(shared) >= 10 and all("shared" in a["serving"]["note"] for a in answers if a["serving"]["shared_with_max"])
    # The target is 5x in wall time; bench/bench_serving.py measures it with the clients in their own process.
    # Here the clients share the server's process and cores: 4.6x in wall time and 6.2x in CPU time on a quiet
    # machine, more on a busy one; served one at a time it would be ~30x. CPU time moves least with the machine's
    # load: it guards against losing the batching, not the 5x target.
    assert together_cpu <= 10 * one_cpu, f"30 users took {together_cpu / one_cpu:.1f}x one user's CPU time"


def _endpoints(client: Client) -> dict[str, list[dict]]:
    api = client.view_api(print_info=False, return_format="dict")
    return {name: info["parameters"] for name, info in api["named_endpoints"].items()}


def _bad_values(param: dict) -> list:
    """Values out of range for this parameter's type (strings: empty, huge, binary). An empty `model` is the
    default model, the same call as the good one, so `model` gets a number instead."""
    kind = param.get("python_type", {}).get("type", "")
    if "str" in kind and "list" not in kind:
        model = param["parameter_name"] == "model"
        empty = [5] if model else [""]  # a model id that is not text (JSON lets any value through)
        return [*empty, "x" * 300_000, "\x00\x01\x02\x1b[2J\ufffe"]
    if "int" in kind or "float" in kind:
        return [-10**9, 10**9]
    return []


def test_bad_input_on_every_endpoint_answers_quickly_and_the_server_survives(client, session):
    endpoints = _endpoints(client)
    assert {"/tokenize", "/attention", "/next_token", "/generate", "/beam_search", "/timeline",
            "/forward_pass", "/surprisal"} <= set(endpoints)
    # Short runs where a token count is not the value under test: the point is bad input, not a long sweep.
    good = {"text": "The capital of France is", "prompt": "The capital of France is", "max_new_tokens": 4,
            "max_tokens": 64, "dtypes": "float32,bfloat16"}
    tried = 0
    for name, params in endpoints.items():
        base = {p["parameter_name"]: good.get(p["parameter_name"], p.get("parameter_default"))
                for p in params}
        for param in params:
            for bad in _bad_values(param):
                kwargs = {**base, param["parameter_name"]: bad}
                if any(v is None and not p["parameter_has_default"] for p, v in zip(params, kwargs.values())):
                    continue
                started = time.perf_counter()
                try:
                    client.predict(**kwargs, api_name=name)
                except AppError as err:
                    message = str(err)
                    assert "Traceback" not in message and len(message) < 400, (name, param, message)
                    assert "Something went wrong" not in message, (name, param, message)  # a sentence for each
                elapsed = time.perf_counter() - started
                assert elapsed < 30, f"{name} {param['parameter_name']}={str(bad)[:20]!r} took {elapsed:.1f} s"
                tried += 1
    assert tried > 20
    # Still serving, and still correct.
    assert client.predict("The capital of France is", False, api_name="/tokenize")["ids"] == \
        session.tokenizer("The capital of France is").input_ids


@pytest.mark.slow
def test_soak_memory_stays_bounded(client):
    process = psutil.Process(os.getpid())  # the app runs in this process
    calls = [
        lambda i: client.predict(f"Soak text number {i}", False, api_name="/tokenize"),
        lambda i: client.predict(PROMPT, seed=i, **{**GENERATE, "max_new_tokens": 3}, api_name="/generate"),
        lambda i: client.predict(f"Attention soak {i % 7}", 0, 0, False, api_name="/attention"),
        lambda i: client.predict(f"Surprisal soak {i % 5} of the text", False, api_name="/surprisal"),
    ]
    for i in range(20):  # warm-up: caches fill to their steady size
        calls[i % len(calls)](i)
    before = process.memory_info().rss
    started = time.perf_counter()
    for i in range(120):  # 30 rounds of the four kinds, after the warm-up filled the caches
        calls[i % len(calls)](i)
        assert time.perf_counter() - started < 600, "soak ran over its time bound"
    growth_mb = (process.memory_info().rss - before) / 2**20
    print(f"\nsoak: 120 requests in {time.perf_counter() - started:.1f} s, RSS growth {growth_mb:.1f} MB")
    assert growth_mb < 100


def test_a_full_queue_says_how_long_it_is_and_when_to_retry():
    """The app's wrapper on Gradio's queue, on a real Gradio server whose queue holds one request."""
    import threading

    import gradio as gr

    import app
    from conftest import _free_port

    release = threading.Event()
    with gr.Blocks(analytics_enabled=False) as demo:
        box = gr.Textbox()
        box.submit(lambda x: release.wait(30) and x, box, box, api_name="slow")
    demo.queue(max_size=1, default_concurrency_limit=1)
    app.explain_full_queue(demo._queue)
    demo.launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True, quiet=True)
    try:
        clients = [local_client(demo.local_url) for _ in range(3)]
        running = clients[0].submit("a", api_name="/slow")
        time.sleep(1.0)
        waiting = clients[1].submit("b", api_name="/slow")
        time.sleep(1.0)
        with pytest.raises(Exception) as err:
            clients[2].predict("c", api_name="/slow")
        assert "The server is busy: 1 requests are already waiting" in str(err.value)
        assert "try again in" in str(err.value)
        release.set()
        assert running.result(timeout=30) == "a" and waiting.result(timeout=30) == "b"
    finally:
        release.set()
        demo.close()
