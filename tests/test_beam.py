"""Beam search: the tree's search is transformers' own (checked against model.generate), its tree is
well formed, bad input gets one clear sentence, and the figures stay fixed and readable."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from components.beam.figures import hypotheses_table, lane_layout, step_figure
from inference.beam import (
    FINISHED, KEPT, PRUNED, ROOT, BeamNode, BeamTree, Hypothesis, beam_search, compare_decoders, to_dict,
)
from inference.errors import InputError
from inference.model.vocab import eos_ids
from inference.tokens import tokenize

# (prompt, num_beams, max_new_tokens, length_penalty, early_stopping, chat): short budgets keep it fast.
CASES = [
    ("The capital of France is", 2, 8, 1.0, False, False),
    ("Once upon a time", 3, 8, 0.5, True, False),
    ("Once upon a time", 5, 6, 2.0, False, False),
    ("What is 2+2?", 4, 12, 1.0, False, True),  # hypotheses end on EOS (the tab's default search)
    ("What is 2+2?", 2, 14, 1.0, True, True),  # early_stopping=True: ends once 2 hypotheses are done
    ("What is 2+2?", 2, 14, 1.0, False, True),  # False: ends when no live beam can beat the finished ones
    ("What is 2+2?", 2, 16, 1.0, "never", True),
]
CASE_IDS = [f"{p[:10]}-k{k}-n{n}-lp{lp}-es{es}-chat{c}" for p, k, n, lp, es, c in CASES]


def reference(session, prompt, num_beams, max_new_tokens, length_penalty, early_stopping, chat):
    """transformers' own beam search, every generation setting passed explicitly (nothing from the model's
    generation_config but its EOS/pad ids; top_k/top_p/temperature unset: do_sample=False ignores them)."""
    ids = torch.tensor([tokenize(session, prompt, chat).ids])
    with session.lock, torch.inference_mode():
        out = session.model.generate(
            ids, attention_mask=torch.ones_like(ids), num_beams=num_beams, num_return_sequences=num_beams,
            max_new_tokens=max_new_tokens, length_penalty=length_penalty, early_stopping=early_stopping,
            do_sample=False, output_scores=True, return_dict_in_generate=True, top_k=None, top_p=None,
            temperature=None, repetition_penalty=None, no_repeat_ngram_size=None, min_new_tokens=None,
        )
    eos = set(eos_ids(session))
    hyps = []
    for seq, score in zip(out.sequences[:, ids.shape[1]:].tolist(), out.sequences_scores.tolist()):
        for i, tid in enumerate(seq):  # shorter hypotheses are padded after their EOS
            if tid in eos:
                seq = seq[: i + 1]
                break
        hyps.append((seq, score))
    return hyps


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_same_hypotheses_and_scores_as_transformers(session, case):
    tree = beam_search(session, *case)
    expected = reference(session, *case)
    assert len(tree.finished) == len(expected) == case[1]
    for rank, (hyp, (ids, score)) in enumerate(zip(tree.finished, expected)):
        assert hyp.token_ids == ids, f"rank {rank}: {hyp.text!r} vs {session.tokenizer.decode(ids)!r}"
        assert hyp.score == pytest.approx(score, abs=1e-4), f"rank {rank}"


def test_chat_case_really_finishes_on_eos(session):
    tree = beam_search(session, *CASES[3])
    assert any(h.ends_with_eos for h in tree.finished)
    assert any(n.status == FINISHED and n.eos for n in tree.nodes)
    early = beam_search(session, *CASES[4])
    assert "early_stopping=True" in early.stop_reason and early.num_steps < early.max_new_tokens
    heuristic = beam_search(session, *CASES[5])
    assert "can no longer beat" in heuristic.stop_reason and early.num_steps < heuristic.num_steps


def test_one_beam_is_greedy(session):
    prompt, n = "What is 2+2?", 12
    ids = torch.tensor([tokenize(session, prompt, True).ids])
    with session.lock, torch.inference_mode():
        out = session.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, num_beams=1,
                                     max_new_tokens=n, top_k=None, top_p=None, temperature=None)
    greedy = out[0, ids.shape[1]:].tolist()
    tree = beam_search(session, prompt, 1, n, chat=True)
    assert tree.finished[0].token_ids == greedy


def test_length_penalty_score_formula(session):
    for case in CASES:
        tree = beam_search(session, *case)
        scores = [h.score for h in tree.finished]
        assert scores == sorted(scores, reverse=True)
        for h in tree.finished:
            assert h.length == len(h.token_ids)
            assert h.score == pytest.approx(h.sum_logprob / h.length ** case[3], abs=1e-5)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_tree_is_well_formed(session, case):
    tree = beam_search(session, *case)
    k, K = tree.num_beams, tree.candidates_per_step
    assert K == 2 * k  # one EOS id: 2 * num_beams candidates, never the vocabulary
    assert len(tree.nodes) == 1 + tree.num_steps * K
    by_id = {n.id: n for n in tree.nodes}
    assert tree.nodes[0].status == ROOT
    for node in tree.nodes[1:]:
        parent = by_id[node.parent]  # every node's parent exists ...
        assert parent.step == node.step - 1
        assert parent.status in (ROOT, KEPT)  # ... and was a live beam
        assert node.cum_logprob == pytest.approx(parent.cum_logprob + node.logprob, abs=1e-4)
        assert node.logprob <= 0
        if node.status == FINISHED:
            assert node.rank < k  # an EOS candidate outside the top num_beams is not finished
        if node.eos and node.rank >= k:
            assert node.status == PRUNED
    for step in range(tree.num_steps):
        nodes = tree.step_nodes(step)
        assert [n.rank for n in nodes] == list(range(K))
        cums = [n.cum_logprob for n in nodes]
        assert cums == sorted(cums, reverse=True)
        kept = [n for n in nodes if n.status == KEPT]
        last_by_length = step == tree.num_steps - 1 and tree.num_steps == tree.max_new_tokens
        assert len(kept) == (0 if last_by_length else k)  # exactly num_beams live beams per step
        assert sorted(n.beam for n in kept) == list(range(len(kept)))
    for rank, hyp in enumerate(tree.finished):
        end = by_id[hyp.node]
        assert end.status == FINISHED and end.final_rank == rank
        assert end.cum_logprob == pytest.approx(hyp.sum_logprob)


def test_cached_and_json(session):
    case = CASES[0]
    tree = beam_search(session, *case)
    assert beam_search(session, *case) is tree
    data = json.loads(json.dumps(to_dict(tree)))
    assert len(data["edges"]) == len(data["nodes"]) - 1
    assert data["hypotheses"][0]["token_ids"] == tree.finished[0].token_ids
    assert {n["status"] for n in data["nodes"]} <= {ROOT, KEPT, PRUNED, FINISHED}


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(num_beams=0), "num_beams"),
        (dict(num_beams=100), "num_beams"),
        (dict(num_beams=2.5), "num_beams"),
        (dict(max_new_tokens=-3), "max_new_tokens"),
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(max_new_tokens=65), "max_new_tokens"),
        (dict(length_penalty=float("nan")), "length_penalty"),
        (dict(length_penalty=9), "length_penalty"),
        (dict(early_stopping="maybe"), "early_stopping"),
        (dict(prompt="   "), "empty"),
        (dict(prompt=""), "empty"),
    ],
)
def test_bad_input_gets_one_clear_sentence(session, kwargs, words):
    args = dict(prompt="Hello", num_beams=2, max_new_tokens=4, length_penalty=1.0, early_stopping=False)
    args.update(kwargs)
    with pytest.raises(InputError) as err:
        beam_search(session, **args)
    message = str(err.value)
    assert words in message and message.endswith(".") and "\n" not in message


# ---------------------------------------------------------------------------------------------------
# Figures


def _markers(fig) -> int:
    return sum(len(t.x) for t in fig.data if t.mode and "markers" in t.mode)


def test_frames_keep_fixed_axes_and_grow(session):
    tree = beam_search(session, *CASES[3])
    frames = [step_figure(tree, f) for f in range(tree.num_steps + 1)]
    ranges = {(tuple(f.layout.xaxis.range), tuple(f.layout.yaxis.range), f.layout.height) for f in frames}
    assert len(ranges) == 1  # the animation never rescales
    assert _markers(frames[0]) == 1  # the prompt alone
    for f in range(1, tree.num_steps + 1):
        history = sum(n.status != PRUNED for s in range(f - 1) for n in tree.step_nodes(s))
        assert _markers(frames[f]) == 1 + history + tree.candidates_per_step
    assert _markers(frames[-1]) > _markers(frames[2])
    best = [t for t in frames[-1].data if t.name == "best hypothesis"][0]
    assert len(best.x) == 3 * tree.finished[0].length  # one segment per token of the winner
    hover = " ".join(t for tr in frames[-1].data if tr.hovertext for t in tr.hovertext)
    assert "step log-prob" in hover and "cumulative log-prob" in hover and "normalized score" in hover


def test_table_shows_length_penalty_reordering(session):
    tree = beam_search(session, *CASES[3])
    table = hypotheses_table(tree)
    assert list(table["rank"]) == list(range(1, tree.num_beams + 1))
    assert sorted(table["rank by raw sum"]) == list(range(1, tree.num_beams + 1))
    # Here a short EOS answer wins on raw sum but a longer one overtakes it once divided by length.
    assert list(table["rank by raw sum"]) != list(table["rank"])


def _synthetic_tree(num_beams: int = 8, steps: int = 64, seed: int = 0) -> BeamTree:
    """A structurally valid tree at the largest settings, for the figure only (no model involved): the
    figure is a pure function of the tree, and the real search at 8 x 64 takes too long for this suite."""
    rng = np.random.default_rng(seed)
    k, K = num_beams, 2 * num_beams
    nodes = [BeamNode(0, -1, -1, -1, "(prompt)", 0.0, 0.0, ROOT, 0)]
    live, finished = [0], []
    for step in range(steps):
        cands = []
        for _ in range(K):
            parent = nodes[int(rng.choice(live))]
            lp = float(-rng.exponential(1.0))
            cands.append((parent.cum_logprob + lp, lp, parent.id, bool(rng.random() < 0.06)))
        cands.sort(key=lambda c: -c[0])
        kept_slots, new_live = 0, []
        for rank, (cum, lp, parent, eos) in enumerate(cands):
            stop = eos or step == steps - 1
            node = BeamNode(len(nodes), parent, step, rank, f"tok{rank}", lp, cum, PRUNED, rank,
                            score=cum / (step + 1), eos=eos)
            if stop and rank < k:
                node.status = FINISHED
                finished.append((node.score, node.id))
            elif not stop and kept_slots < k:
                node.status, node.beam = KEPT, kept_slots
                kept_slots += 1
                new_live.append(node.id)
            nodes.append(node)
        live = new_live or live
    finished.sort(key=lambda x: -x[0])
    hyps = []
    for rank, (score, nid) in enumerate(finished[:k]):
        nodes[nid].final_rank = rank
        hyps.append(Hypothesis([1] * (nodes[nid].step + 1), "text", score, nodes[nid].cum_logprob,
                               nodes[nid].step + 1, nid, nodes[nid].eos))
    return BeamTree("p", "p", [1], False, k, steps, 1.0, False, K, [2], nodes, hyps, steps, "reached max new tokens",
                    k * (steps - 1), 0.0)


def test_biggest_settings_stay_readable():
    tree = _synthetic_tree()
    pos = lane_layout(tree)
    assert all(0 <= y < tree.candidates_per_step for _, y in pos.values())
    for frame in (1, 32, 64):
        fig = step_figure(tree, frame, pos)
        # Pruned candidates are drawn for the shown step only: no hairball of 64 x 16 candidates.
        pruned = [t for t in fig.data if t.name == "pruned"][0]
        assert len(pruned.x) <= tree.candidates_per_step
        assert _markers(fig) <= 1 + frame * (tree.num_beams + tree.num_beams) + tree.candidates_per_step
        labels = [t for tr in fig.data if tr.mode and "text" in tr.mode for t in tr.text if t]
        assert len(labels) <= tree.candidates_per_step + 1 + sum(n.status == FINISHED for n in tree.nodes)
        assert len(fig.to_json()) < 400_000  # one frame per timer tick: keep it small
    # Lanes: a beam that lives on stays in its lane, so most edges between live beams are horizontal.
    kept = [n for n in tree.nodes if n.status == KEPT and n.step > 0]
    straight = sum(pos[n.id][1] == pos[n.parent][1] for n in kept)
    assert straight >= 0.4 * len(kept)


# ---------------------------------------------------------------------------------------------------
# Comparison


def test_greedy_comparison_matches_one_beam(session):
    # The tab's default request (seed 0), so the app tests reuse this cached comparison.
    greedy, sampled = compare_decoders(session, "What is 2+2?", 12, 1.0, True, seed=0)
    one_beam = beam_search(session, "What is 2+2?", 1, 12, chat=True).finished[0]
    assert greedy.method == "greedy" and greedy.token_ids == one_beam.token_ids
    assert greedy.sum_logprob == pytest.approx(one_beam.sum_logprob, abs=1e-3)
    assert sampled.method == "sampled" and 1 <= sampled.length <= 12
    assert math.isfinite(sampled.sum_logprob) and sampled.sum_logprob <= 0
