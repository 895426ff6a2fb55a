"""Beam search with the full tree recorded vs plain transformers beam search.

Target (issue 5): `run_beam_search` (every candidate kept as a node, uncached) takes at most 1.3x the time
of `model.generate(num_beams=4)` for 32 new tokens, measured alternately in one run. Both run the same
search to the same length (a story prompt that does not reach EOS within 32 tokens).
"""

from __future__ import annotations

import torch

from bench.common import Result, check, interleaved

PROMPT = "Once upon a time"
NUM_BEAMS = 4
NEW_TOKENS = 32


def run() -> list[Result]:
    from inference.beam import run_beam_search
    from inference.session import get_session
    from inference.tokens import tokenize

    session = get_session()
    ids = torch.tensor([tokenize(session, PROMPT).ids], device=session.device)

    def ours():
        return run_beam_search(session, PROMPT, NUM_BEAMS, NEW_TOKENS)

    def theirs():
        with session.lock, torch.inference_mode():
            return session.model.generate(
                ids, attention_mask=torch.ones_like(ids), num_beams=NUM_BEAMS, max_new_tokens=NEW_TOKENS,
                do_sample=False, length_penalty=1.0, early_stopping=False, top_k=None, top_p=None, temperature=None,
            )

    tree = ours()
    assert tree.num_steps == NEW_TOKENS, "the bench prompt must run the full 32 steps"
    ours_s, theirs_s = interleaved(ours, theirs, repeat=3)
    name = f"beam_search vs model.generate (num_beams={NUM_BEAMS}, {NEW_TOKENS} tokens)"
    return [
        check(name, ours_s / theirs_s, "ratio", 1.3),
        check(f"beam_search, {NUM_BEAMS} beams x {NEW_TOKENS} tokens, {len(tree.nodes) - 1} nodes", ours_s, "s"),
        check(f"model.generate, {NUM_BEAMS} beams x {NEW_TOKENS} tokens", theirs_s, "s"),
    ]
