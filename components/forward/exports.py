"""Forward pass tab, the exports: one recorded pass (`inference.forward.ForwardPass`) as table rows (the CSV
downloads) and as JSON-ready data (the endpoints and the whole-pass download).

Pure functions: the model session and the cached pass in, plain lists and dicts out; no gradio, no model call
(the pass was recorded once; `pieces` and the diagram only read the tokenizer and the model's modules). The
event handlers (`events`) write these rows to files and the endpoints (`api`) return the dicts.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from inference.diagram import Box, diagram
from inference.forward import ForwardPass
from inference.limits import MAX_FORWARD_TOKENS, SURPRISAL_TOP
from inference.model.vocab import pieces
from inference.positions import positional_scheme

from .figures import box_links

# CSV headers, one per download (PAIR: both texts' surprisal; PROMPTS: both prompts' next-token probabilities).
SURPRISAL_HEADER = ["position", "id", "token", "surprisal_bits", "probability", "top_prediction",
                    "top_prediction_id", "top_prediction_probability", "entropy_bits"]
RESIDUAL_HEADER = ["stage", "layer", "position", "id", "token", "residual_norm", "attention_update_norm",
                   "mlp_update_norm", "layer_update_norm"]
LENS_HEADER = ["stage", "layer", "top_guess", "top_guess_id", "final_answer", "final_answer_probability"]
PAIR_HEADER = ["text", *SURPRISAL_HEADER]
PROMPTS_HEADER = ["token", "id", "probability_after_a", "probability_after_b"]


def stage_names(num_layers: int) -> list[str]:
    """The residual stream's stages: the embeddings, then the stream after each layer."""
    return ["embeddings"] + [f"layer {i}" for i in range(num_layers)]


def rounded(a, decimals: int = 5):
    """An array as nested lists of rounded floats (None stays None)."""
    return None if a is None else np.round(np.asarray(a, dtype=np.float64), decimals).tolist()


def box_data(box: Box, links: dict[str, str | None]) -> dict:
    """One box as a plain dict (its children nested), with `link`: the tab that opens it further (or None)."""
    data = {f.name: getattr(box, f.name) for f in dataclasses.fields(box) if f.name != "children"}
    return {**data, "children": [box_data(child, links) for child in box.children], "link": links[box.key]}


def diagram_boxes(s, forward: ForwardPass) -> list[dict]:
    """The data-flow diagram of the pass as plain dicts (nested boxes with their shapes and parameter counts)."""
    boxes = diagram(s, forward)
    links = box_links(boxes)
    return [box_data(box, links) for box in boxes]


def _blank(value):
    """None (the first token: not predicted) as an empty CSV cell."""
    return "" if value is None else value


# ---------------------------------------------------------------------------------------------------
# Surprisal


def surprisal_rows(s, forward: ForwardPass) -> dict:
    """Per token (None for the first, which nothing predicts): bits, p, the model's top guess there."""
    expected = pieces(s, forward.expected_ids)
    bits = [None] + [float(b) for b in forward.surprisal_bits]
    return {
        "bits": bits,
        "probs": [None] + [float(2.0 ** -b) for b in forward.surprisal_bits],
        "expected": [None] + expected,
        "expected_probs": [None] + [float(p) for p in forward.expected_probs],
        "entropy_bits": [None] + [float(e) for e in forward.entropy_bits],
    }


def most_surprising(forward: ForwardPass, rows: dict) -> list[dict]:
    """The SURPRISAL_TOP most surprising tokens, most surprising first, from `surprisal_rows`."""
    return [
        {"position": i, "token": forward.tokens.pieces[i], "id": forward.tokens.ids[i], "bits": rows["bits"][i],
         "prob": rows["probs"][i], "expected": rows["expected"][i], "expected_prob": rows["expected_probs"][i]}
        for i in forward.most_surprising(SURPRISAL_TOP)
    ]


def surprisal_csv_rows(s, forward: ForwardPass) -> list[list]:
    """One row per token: its id, surprisal and probability, and the model's top prediction at that position."""
    rows = surprisal_rows(s, forward)
    expected_ids = [None] + [int(i) for i in forward.expected_ids]
    return [[i, int(forward.tokens.ids[i]), forward.tokens.pieces[i], _blank(rows["bits"][i]), _blank(rows["probs"][i]),
             _blank(rows["expected"][i]), _blank(expected_ids[i]), _blank(rows["expected_probs"][i]),
             _blank(rows["entropy_bits"][i])] for i in range(forward.n)]


def pair_csv_rows(s, forward_a: ForwardPass, forward_b: ForwardPass) -> list[list]:
    """Two texts' surprisal rows in one table, each row led by its text ("A" or "B")."""
    return [["A", *r] for r in surprisal_csv_rows(s, forward_a)] + [["B", *r] for r in surprisal_csv_rows(s, forward_b)]


# ---------------------------------------------------------------------------------------------------
# Residual stream and logit lens


def residual_csv_rows(forward: ForwardPass) -> list[list]:
    """One row per stage (embeddings, then the stream after each layer) and token: the stream's norm and the
    norms of what that layer's attention and MLP added (hidden_norms row l+1 is the stream after layer l)."""
    out, ids, toks = [], forward.tokens.ids, forward.tokens.pieces
    # Rounded to 4 decimals (as the endpoint): short numbers keep a 1,024-token file quick to write.
    stream = rounded(forward.hidden_norms, 4)  # [L+1][n]
    updates = [rounded(u, 4) for u in (forward.attn_update_norms, forward.mlp_update_norms, forward.layer_update_norms)]
    for stage, name in enumerate(stage_names(forward.num_layers)):
        layer = stage - 1  # -1: the embeddings, before any layer
        for t in range(forward.n):
            added = ["" if u is None or layer < 0 else u[layer][t] for u in updates]
            out.append([name, "" if layer < 0 else layer, t, int(ids[t]), toks[t], stream[stage][t], *added])
    return out


def lens_csv_rows(s, forward: ForwardPass) -> list[list]:
    """One row per stage: the lens's top guess at the last token there, and the final answer's probability."""
    answer_id = int(np.argmax(forward.next_logprobs))
    answer = pieces(s, [answer_id])[0]
    tops = pieces(s, forward.lens_top_ids)
    return [[name, "" if stage == 0 else stage - 1, tops[stage], int(forward.lens_top_ids[stage]), answer,
             float(forward.lens_answer_probs[stage])] for stage, name in enumerate(stage_names(forward.num_layers))]


# ---------------------------------------------------------------------------------------------------
# Prompt comparison


def prompts_csv_rows(comparison: dict) -> list[list]:
    """One row per compared token (a `prompt_comparison` dict): its probability after each prompt."""
    c = comparison
    return [[label, i, float(pa), float(pb)] for label, i, pa, pb in zip(c["labels"], c["ids"], c["probs_a"], c["probs_b"])]


# ---------------------------------------------------------------------------------------------------
# JSON


def forward_data(s, forward: ForwardPass) -> dict:
    """The pass as JSON-ready data: tokens, diagram, positions, residual norms, logit lens, next tokens."""
    boxes = diagram_boxes(s, forward)
    scheme = positional_scheme(s)
    top_ids, top_probs = forward.top_next(10)
    rnd = lambda a: None if a is None else np.round(a.astype(np.float64), 4).tolist()  # noqa: E731
    return {
        "model": s.model_id,
        "tokens": list(forward.tokens.pieces),
        "ids": list(forward.tokens.ids),
        "num_tokens": forward.n,
        "num_layers": forward.num_layers,
        "num_parameters": s.facts.num_parameters,
        "diagram_parameters": sum(b["params"] for b in boxes),
        "diagram": boxes,
        "positions": {"kind": scheme.kind, "summary": scheme.summary, "thetas": scheme.thetas,
                      "context_length": scheme.context_length},
        "layer_names": stage_names(forward.num_layers),
        "hidden_norms": rnd(forward.hidden_norms),
        "attn_update_norms": rnd(forward.attn_update_norms),
        "mlp_update_norms": rnd(forward.mlp_update_norms),
        "logit_lens": {
            "position": forward.n - 1,
            "top_tokens": pieces(s, forward.lens_top_ids),
            "final_token_probs": rnd(forward.lens_answer_probs),
        },
        "next_token": [{"token": p, "id": int(i), "prob": round(float(q), 6)}
                       for p, i, q in zip(pieces(s, top_ids), top_ids, top_probs)],
        "head_check": forward.head_check,
        "seconds": round(forward.seconds, 4),
        "max_tokens": MAX_FORWARD_TOKENS,
    }


def surprisal_data(s, forward: ForwardPass) -> dict:
    """Per-token surprisal as JSON-ready data (null for the first token), with the perplexity."""
    rows = surprisal_rows(s, forward)
    return {
        "tokens": list(forward.tokens.pieces),
        "ids": list(forward.tokens.ids),
        "surprisal_bits": [None if b is None else round(b, 5) for b in rows["bits"]],
        "probs": [None if p is None else round(p, 8) for p in rows["probs"]],
        "expected": rows["expected"],
        "entropy_bits": [None if e is None else round(e, 5) for e in rows["entropy_bits"]],
        "num_predicted": forward.num_predicted,
        "mean_bits": None if forward.mean_bits is None else round(forward.mean_bits, 6),
        "perplexity": None if forward.perplexity is None else round(forward.perplexity, 6),
        "most_surprising": most_surprising(forward, rows),
    }


def pass_json(s, forward: ForwardPass, text: str, chat: bool) -> dict:
    """Everything the tab draws for one text: the pass, its surprisal, the embeddings drawn and the positions plot."""
    unit = forward.embeddings / np.maximum(np.linalg.norm(forward.embeddings, axis=-1, keepdims=True), 1e-12)
    scheme = positional_scheme(s)
    k = len(forward.embeddings)
    return {
        "text": text, "chat": chat, **forward_data(s, forward),
        "surprisal": surprisal_data(s, forward),
        "embeddings": {"tokens": forward.tokens.pieces[:k], "vectors": rounded(forward.embeddings),
                       "cosine": rounded(unit @ unit.T)},
        "position_curves": {"kind": scheme.kind, "distances": [int(d) for d in scheme.distances],
                            "curves": {name: dict(zip(("mean", "min", "max"), rounded(c)))
                                       for name, c in scheme.curves.items()}},
    }
