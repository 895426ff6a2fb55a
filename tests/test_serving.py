"""Serving a class (inference/serving.py): generations that arrive together are decoded in one batch, each row
with its own pipeline, seed, stop rules and records; greedy rows equal the solo run. And the Serving view
(inference/continuous.py): transformers' continuous-batching engine observed, against a static batch and one at a
time."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from conftest import assert_no_error, local_client
from inference import serving
from inference.generation import generate, prompt_ids
from inference.model import batch_cache
from inference.model.run import new_cache
from inference.sampling import SamplingParams
from inference.serving import ServedTrace, batcher_of, serve, served_timeline, shared_note

GREEDY = SamplingParams(temperature=0)
PROMPTS = ["Name a colour.", "What is the capital of France?", "Write one sentence about the sea, please.", "Hi"]


def _together(session, calls):
    """Run each call (a function of the session) in its own thread at once, as Gradio runs concurrent requests."""
    start = threading.Barrier(len(calls))

    def go(call):
        start.wait()
        return call(session)

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(go, calls))


@pytest.fixture(scope="module")
def solo(session):
    """Each prompt's greedy run alone (6 tokens): the reference the batched runs must equal."""
    return [generate(session, p, GREEDY, 6) for p in PROMPTS]


def test_greedy_rows_batched_together_equal_their_solo_runs(session, solo):
    before = batcher_of(session).passes
    served = _together(session, [lambda s, p=p: serve(s, p, GREEDY, 6) for p in PROMPTS])
    assert [t.token_ids for t in served] == [t.token_ids for t in solo]
    for prompt, t in zip(PROMPTS, served):  # and transformers' own greedy generate, alone
        ids = torch.tensor([prompt_ids(session, prompt)])
        with torch.inference_mode():
            out = session.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=6,
                                         pad_token_id=session.tokenizer.pad_token_id)
        assert t.token_ids == [i for i in out[0, ids.shape[1]:].tolist() if i != session.tokenizer.pad_token_id]
    assert [t.stop_reason for t in served] == [t.stop_reason for t in solo]
    assert [t.text for t in served] == [t.text for t in solo]
    assert all(isinstance(t, ServedTrace) for t in served)
    assert max(t.shared_with_max for t in served) >= 1  # they did share passes
    assert batcher_of(session).passes - before < sum(len(t.token_ids) for t in served)  # fewer passes than tokens
    for t in served:  # each keeps its own records and timings
        assert len(t.steps) == len(t.token_ids) == len(t.pass_rows)
        assert t.steps[0].phase == "prefill" and all(s.phase == "decode" for s in t.steps[1:])
        assert t.ttft_s > 0 and t.total_s >= t.ttft_s


def test_each_row_keeps_its_own_sampling_seed_and_stop_rules(session):
    runs = [
        dict(prompt=PROMPTS[0], params=SamplingParams(temperature=0.8, top_k=40, seed=7), max_new_tokens=6),
        dict(prompt=PROMPTS[1], params=SamplingParams(temperature=1.2, top_p=0.9, seed=11), max_new_tokens=4),
        dict(prompt=PROMPTS[2], params=GREEDY, max_new_tokens=12, stop=(" sea",)),
        dict(prompt=PROMPTS[3], params=SamplingParams(temperature=1.0, seed=3), max_new_tokens=5, min_new_tokens=5),
    ]
    solo = [generate(session, r["prompt"], r["params"], r["max_new_tokens"], stop=r.get("stop", ()),
                     min_new_tokens=r.get("min_new_tokens", 0)) for r in runs]
    served = _together(session, [lambda s, r=r: serve(s, r["prompt"], r["params"], r["max_new_tokens"],
                                                      stop=r.get("stop", ()), min_new_tokens=r.get("min_new_tokens", 0))
                                 for r in runs])
    for a, b in zip(solo, served):
        assert b.stop_reason == a.stop_reason and (b.params.seed is None or b.seed == a.seed)
        assert b.token_ids == a.token_ids  # sampled rows too (these seeds do not sit on a float boundary)
        assert [s.draw for s in b.steps] == [s.draw for s in a.steps]  # the same uniform numbers
    assert served[2].stop_reason == "stop_sequence" and len(served[3].token_ids) == 5


def test_a_row_joins_a_running_batch_and_leaves_without_waiting_for_the_longest(session):
    long_solo = generate(session, PROMPTS[2], GREEDY, 14, min_new_tokens=14)
    short_solo = generate(session, PROMPTS[0], GREEDY, 3, min_new_tokens=3)
    long_run = serving.served_generation(session, PROMPTS[2], GREEDY, 14, min_new_tokens=14)
    records, done = [], {}

    def consume():
        for record in long_run:
            records.append(record)

    thread = threading.Thread(target=consume)
    thread.start()
    while len(records) < 3:  # the long run is decoding: the short one joins mid-flight
        time.sleep(0.01)
    short = serve(session, PROMPTS[0], GREEDY, 3, min_new_tokens=3)
    done["short_at"] = len(records)
    thread.join()
    assert long_run.trace.token_ids == long_solo.token_ids
    assert short.token_ids == short_solo.token_ids
    assert short.shared_with_max == 1 and long_run.trace.shared_with_max == 1
    assert done["short_at"] < 14  # the short one was back while the long one was still decoding


def test_a_consumer_that_leaves_early_takes_its_row_out_and_the_others_go_on(session, solo):

    def quitter(s):
        run = serving.served_generation(s, PROMPTS[0], GREEDY, 40, min_new_tokens=40)
        for i, _ in enumerate(run):
            if i == 2:
                break
        return run.trace

    quit_trace, stayed = _together(session, [quitter, lambda s: serve(s, PROMPTS[1], GREEDY, 6)])
    assert len(quit_trace.token_ids) <= 4
    assert stayed.token_ids == solo[1].token_ids
    deadline = time.time() + 10
    while batcher_of(session).rows and time.time() < deadline:  # the worker drops the row at its next step
        time.sleep(0.05)
    assert not batcher_of(session).rows


def test_caps_bound_the_rows_of_a_pass(session, solo, monkeypatch):
    monkeypatch.setattr(serving, "MAX_BATCH_ROWS", 2)
    b = batcher_of(session)
    b.max_rows = 0
    served = _together(session, [lambda s, p=p: serve(s, p, GREEDY, 6) for p in PROMPTS])
    assert b.max_rows <= 2 and max(t.shared_with_max for t in served) <= 1
    assert [t.token_ids for t in served] == [t.token_ids for t in solo]


def test_runs_the_batch_cannot_hold_are_served_alone(session):
    trace = serve(session, PROMPTS[0], GREEDY, 2, use_cache=False)  # recompute mode: no cache to batch
    assert not isinstance(trace, ServedTrace)
    assert trace.token_ids == generate(session, PROMPTS[0], GREEDY, 2, use_cache=False).token_ids
    assert shared_note(trace) == ""
    from inference.interventions import parse_ablation

    ablation = parse_ablation(session, "mlp L0")  # hooks on the shared model would reach every row: served alone
    trace = serve(session, PROMPTS[0], GREEDY, 2, ablation=ablation)
    assert not isinstance(trace, ServedTrace)
    assert trace.token_ids == generate(session, PROMPTS[0], GREEDY, 2, ablation=ablation).token_ids


def test_the_trace_says_what_was_shared(session):
    served = _together(session, [lambda s, p=p: serve(s, p, GREEDY, 4) for p in PROMPTS[:3]])
    t = served[0]
    d = t.to_dict(steps=False)
    assert d["token_ids"] == t.token_ids and d["serving"]["shared_with_max"] == t.shared_with_max
    assert d["serving"]["pass_rows"] == t.pass_rows
    note = shared_note(t)
    assert f"up to {t.shared_with_max} other request" in note


def test_served_timeline_measures_each_rows_own_kv_cache(session, solo):
    params = GREEDY
    results = _together(session, [lambda s, p=p: served_timeline(s, p, params, 6) for p in PROMPTS[:3]])
    for tl, sv in results:
        assert sv is not None and tl.kv_matches()  # the row's own slots, measured from the batch's tensors
        assert tl.kv_bytes == tl.kv_formula_bytes
        assert tl.to_dict()["metrics"]["new_tokens"] == len(tl.token_ids)
    assert [tl.token_ids for tl, _ in results] == [t.token_ids for t in solo[:3]]


def test_a_repeated_prompt_reuses_its_prefix_but_the_timeline_prefills_it_all(session, solo):
    prompt = PROMPTS[1]
    n = len(prompt_ids(session, prompt))
    first, again = serve(session, prompt, GREEDY, 4), serve(session, prompt, GREEDY, 4)
    assert again.cached_prefix_tokens == n - 1 and again.token_ids == solo[1].token_ids[:4]  # prefix caching
    assert "prefix caching" in shared_note(again)
    tl, _ = served_timeline(session, prompt, GREEDY, 3)  # the Prefill & decode tab measures the whole prefill
    assert tl.steps[0].tokens_in_pass == n and tl.token_ids == solo[1].token_ids[:3]


def test_batch_cache_rows_survive_padding_joining_and_dropping(session):
    """Two rows prefilled alone, joined into one left-padded batch, one dropped: the other's keys are unchanged."""
    model = session.model
    a, b = new_cache(session), new_cache(session)
    with torch.inference_mode():
        model(input_ids=torch.tensor([[1, 2, 3, 4, 5]]), past_key_values=a, use_cache=True)
        model(input_ids=torch.tensor([[6, 7]]), past_key_values=b, use_cache=True)
    keys_b = b.layers[3].keys.clone()
    batch_cache.pad_left(b, 3)
    batch_cache.append_rows(a, b)
    assert batch_cache.rows(a) == 2 and batch_cache.width(a) == 5
    assert torch.equal(a.layers[3].keys[1, :, 3:], keys_b[0])
    assert torch.count_nonzero(a.layers[3].keys[1, :, :3]) == 0
    batch_cache.keep_rows(a, [1])
    batch_cache.cut_left(a, 3)
    assert torch.equal(a.layers[3].keys, keys_b)
    assert sum(batch_cache.row_layer_bytes(a, 2)) == batch_cache.total_bytes(a) == 2 * 46_080


def test_gemma_rows_batch_inside_its_sliding_window(gemma):
    prompts = ["The capital of France is", "Once upon a time"]
    solo = [generate(gemma, p, GREEDY, 3, chat=False).token_ids for p in prompts]
    served = _together(gemma, [lambda s, p=p: serve(s, p, GREEDY, 3, chat=False) for p in prompts])
    assert [t.token_ids for t in served] == solo
    assert batch_cache.fits_window(gemma, 511) and not batch_cache.fits_window(gemma, 600)


# ---------------------------------------------------------------------------------------------------
# The Serving view: transformers' continuous-batching engine


BURST = [("What is the capital of France?", 4), ("Write a short poem about the sea.", 8), ("Say hello.", 3)]


@pytest.fixture(scope="module")
def burst(session):
    from inference.continuous import serve_burst

    return serve_burst(session, [p for p, _ in BURST], [n for _, n in BURST], num_blocks=8, max_batch_tokens=48)


def test_the_engines_answers_equal_generate_batch_and_both_baselines(session, burst):
    from transformers import GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    from inference.generation import prompt_ids
    from inference.model.twin import sdpa_twin, shares_weights

    twin = sdpa_twin(session)
    assert shares_weights(session, twin) and session.model.config._attn_implementation == "eager"
    rows = [prompt_ids(session, p) for p, _ in BURST]
    config = GenerationConfig(do_sample=False, max_new_tokens=8, eos_token_id=session.tokenizer.eos_token_id,
                              pad_token_id=session.tokenizer.pad_token_id)
    theirs = twin.generate_batch(rows, generation_config=config, max_new_tokens=8, progress_bar=False,
                                 continuous_batching_config=ContinuousBatchingConfig(num_blocks=8, max_batch_tokens=48,
                                                                                     use_cuda_graph=False))
    for request, (_, n), out in zip(burst.continuous.requests, BURST, theirs.values()):
        assert request.token_ids == out.generated_tokens[:n]
    assert burst.identical("static") and burst.identical("sequential")
    assert burst.texts("static") == burst.texts("continuous") == burst.texts("sequential")
    # The session's own model still runs an ordinary (eager) forward pass afterwards.
    assert generate(session, "Hi", GREEDY, 2).token_ids


def test_the_engines_schedule_is_observed_step_by_step(burst):
    run = burst.continuous
    assert run.steps and all(s.end_s >= s.start_s for s in run.steps)
    for i, (prompt, n) in enumerate(BURST):
        prefilled = sum(t for s in run.steps for j, t in s.prefill if j == i)
        decoded = sum(1 for s in run.steps for j in s.decode if j == i)
        assert prefilled == burst.prompt_tokens[i]  # the whole prompt, maybe over several passes (48 tokens each)
        assert decoded == len(run.requests[i].token_ids) - 1  # the first token comes from the prefill pass
    assert max(s.tokens for s in run.steps) <= burst.max_batch_tokens
    assert 0 < max(s.blocks_used for s in run.steps) <= burst.num_blocks
    assert any(s.waiting for s in run.steps)  # 48 tokens per pass: not every prompt fits the first pass


def test_throughput_comes_from_measured_wall_time(burst):
    for run in burst.runs.values():
        assert run.tokens_per_s == pytest.approx(run.new_tokens / run.wall_s)
        assert all(0 <= r.start_s <= r.first_token_s <= r.end_s <= r.returned_s <= run.wall_s + 1e-3
                   for r in run.requests)
    static = burst.runs["static"]
    assert len({round(r.returned_s, 6) for r in static.requests}) == 1  # everyone waits for the longest
    sequential = burst.runs["sequential"].requests
    assert all(a.end_s <= b.start_s + 1e-6 for a, b in zip(sequential, sequential[1:]))  # one after another
    d = burst.to_dict()
    assert set(d["runs"]) == {"continuous", "static", "sequential"} and d["identical"]["static"]


def test_a_burst_over_the_caps_is_refused_in_one_sentence(session):
    from inference.continuous import serve_burst
    from inference.errors import InputError

    with pytest.raises(InputError, match="At most"):
        serve_burst(session, ["x"] * 40, [4] * 40)
    with pytest.raises(InputError, match="KV blocks"):
        serve_burst(session, ["Write a long story about the sea."], [40], num_blocks=1)


# ---------------------------------------------------------------------------------------------------
# In the browser: the "shared" note, and the Serving view


@pytest.mark.browser
def test_browser_shared_note_and_the_serving_view(page, app_url, screenshot, session):
    # Another visitor's long generation is decoding while this one runs Prefill & decode: their passes are shared.
    other = local_client(app_url)
    page.get_by_role("tab", name="Prefill & decode").click()
    job = other.submit("Write a long story about the sea.", temperature=0.0, top_k=0, top_p=1.0, min_p=0.0,
                       repetition_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0, seed=0,
                       max_new_tokens=160, min_new_tokens=160, chat=True, stop=[], api_name="/generate")
    # Click only once the other run is in the batch: on a loaded machine its queue hop can take seconds.
    batcher = batcher_of(session)
    deadline = time.monotonic() + 60
    while not batcher.rows and time.monotonic() < deadline:
        time.sleep(0.05)
    assert batcher.rows, "the other visitor's generation never reached the batcher"
    page.click("#pfd-run")
    page.wait_for_selector("#pfd-headline:has-text('shared')")
    assert "other request" in page.locator("#pfd-headline").inner_text()
    assert job.result()["serving"]["shared_with_max"] >= 1

    page.get_by_role("tab", name="Serving").click()
    page.locator("#srv-burst textarea").fill("Say hello. | 2\nName a colour. | 4\nWhat is 2 + 2? | 3")
    page.click("#srv-run")
    page.wait_for_selector("#srv-headline-table", timeout=120_000)
    page.wait_for_selector("#srv-schedule .js-plotly-plot")
    page.wait_for_selector("#srv-gantt .js-plotly-plot")
    assert page.locator("#srv-headline-table").inner_text().count("✓ same") == 2
    assert_no_error(page)
    screenshot(page, "serving-burst")
