"""Beam search, step by step, recording every candidate it weighs: the same search as transformers.

transformers 5.23 (`GenerationMixin._beam_search`) runs, for one prompt and `num_beams` beams:

1. prefill the prompt; the first step extends only beam 0 (the other beams start at -1e9 so the k
   beams do not all pick the same token);
2. each step: log-softmax of every live beam's next-token logits, plus the beam's running sum of
   log-probs, flattened over beams x vocabulary; keep the top K = max(2, 1 + #EOS ids) * num_beams
   candidates (K = 2*num_beams for one EOS id). A candidate "hits a stop" when its token is an EOS id or
   the step reaches max_new_tokens;
3. the best num_beams candidates that did not hit a stop become the next live beams (the KV cache is
   reordered so each row holds its parent's keys and values);
4. a candidate that hit a stop is a finished hypothesis only if it ranks in the top num_beams of the K;
   its score is sum_logprob / gen_len ** length_penalty (gen_len counts generated tokens, EOS
   included), and the finished list keeps the num_beams best scores;
5. stop when the step reached max_new_tokens, or (early_stopping=True) when num_beams hypotheses are
   finished, or when the best live beam can no longer beat the worst finished one: its running sum over
   gen_len ** length_penalty (early_stopping=False) or over max_new_tokens ** length_penalty
   (early_stopping="never" with a positive penalty) is <= the worst finished score.

We run exactly that, batched over beams with a `DynamicCache`, and keep the K candidates of every step
(never the vocabulary) as tree nodes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from .deadline import Deadline
from .errors import InputError
from .limits import (
    MAX_BEAM_NEW_TOKENS,
    MAX_LENGTH_PENALTY,
    MAX_NUM_BEAMS,
    MAX_PROMPT_TOKENS,
    MIN_LENGTH_PENALTY,
)
from .generation import eos_ids as eos_token_ids  # the same ids generate() stops on
from .tokens import clean_text, readable_piece, token_to_bytes, tokenize

NEG_INF_SCORE = -1.0e9  # transformers' "never pick this" score for beams that must not continue

ROOT, KEPT, PRUNED, FINISHED = "root", "kept", "pruned", "finished"


@dataclass
class BeamNode:
    """One candidate a step considered (or the root: the prompt)."""

    id: int
    parent: int  # id of the live beam it extends; -1 for the root
    step: int  # index of the generated token: 0 = first new token; the root is -1
    token_id: int
    piece: str  # readable token text ("·" for a space, "↵" newline)
    logprob: float  # log p(token | the parent beam's text)
    cum_logprob: float  # running sum of log-probs of the generated tokens up to this one
    status: str  # root | kept (a live beam for the next step) | pruned | finished
    rank: int  # rank among this step's K candidates by cumulative log-prob, 0 = best
    beam: int = -1  # the live-beam slot a kept node occupies next step (the lane), else -1
    score: float = 0.0  # cum_logprob / (step+1) ** length_penalty: its score were it to end here
    eos: bool = False  # the token is an end-of-sequence id
    final_rank: int | None = None  # rank in BeamTree.finished when this node ends a returned hypothesis
    reason: str = ""  # why it got its status, in words

    @property
    def length(self) -> int:
        return self.step + 1


@dataclass(frozen=True)
class Hypothesis:
    """A finished sequence: the generated tokens (EOS included when it ended on EOS) and its score."""

    token_ids: list[int]
    text: str
    score: float  # sum_logprob / length ** length_penalty, what the beams are ranked by
    sum_logprob: float
    length: int
    node: int  # id of its last node in the tree
    ends_with_eos: bool


@dataclass
class BeamTree:
    """The whole search: every candidate node per step and the ranked finished hypotheses."""

    prompt: str
    prompt_text: str  # what the model received (chat template applied when chat=True)
    prompt_ids: list[int]
    chat: bool
    num_beams: int
    max_new_tokens: int
    length_penalty: float
    early_stopping: bool | str
    candidates_per_step: int  # K = max(2, 1 + #EOS ids) * num_beams
    eos_ids: list[int]
    nodes: list[BeamNode]  # nodes[0] is the root; then step by step, rank by rank
    finished: list[Hypothesis]  # best first, num_beams of them (transformers' num_return_sequences)
    num_steps: int
    stop_reason: str
    forward_rows: int  # token rows run through the model after the prefill: num_beams per decode step
    seconds: float
    timed_out: bool = False  # stopped by the request's time limit (not kept in the analysis cache)
    _by_step: dict[int, list[BeamNode]] = field(default_factory=dict, repr=False)

    def step_nodes(self, step: int) -> list[BeamNode]:
        """The K candidates of one step, best first."""
        if not self._by_step:
            for node in self.nodes[1:]:
                self._by_step.setdefault(node.step, []).append(node)
        return self._by_step.get(step, [])

    def edges(self) -> list[tuple[int, int]]:
        """(parent id, child id) for every candidate."""
        return [(n.parent, n.id) for n in self.nodes if n.parent >= 0]


# ---------------------------------------------------------------------------------------------------
# Checking the request


def check_early_stopping(value) -> bool | str:
    """True, False or "never" (transformers' three modes); strings from forms and JSON are accepted."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", ""):
        return False
    if text == "never":
        return "never"
    raise InputError(f"early_stopping must be true, false or \"never\" (got {str(value)[:40]!r}).")


def _whole_number(value, name: str, low: int, high: int) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a whole number between {low} and {high} (got {str(value)[:40]!r}).") from None
    if not math.isfinite(number) or number != int(number) or not low <= number <= high:
        raise InputError(f"{name} must be a whole number between {low} and {high} (got {value:g}).")
    return int(number)


def check_request(num_beams, max_new_tokens, length_penalty, early_stopping) -> tuple[int, int, float, bool | str]:
    """Validate the search settings against the caps; one clear sentence per problem."""
    num_beams = _whole_number(num_beams, "num_beams", 1, MAX_NUM_BEAMS)
    max_new_tokens = _whole_number(max_new_tokens, "max_new_tokens", 1, MAX_BEAM_NEW_TOKENS)
    try:
        length_penalty = float(length_penalty)
    except (TypeError, ValueError):
        raise InputError(f"length_penalty must be a number (got {str(length_penalty)[:40]!r}).") from None
    if not (math.isfinite(length_penalty) and MIN_LENGTH_PENALTY <= length_penalty <= MAX_LENGTH_PENALTY):
        raise InputError(
            f"length_penalty must be between {MIN_LENGTH_PENALTY:g} and {MAX_LENGTH_PENALTY:g} (got {length_penalty:g})."
        )
    return num_beams, max_new_tokens, length_penalty, check_early_stopping(early_stopping)


# ---------------------------------------------------------------------------------------------------
# The search


def beam_search(
    session,
    prompt: str,
    num_beams: int,
    max_new_tokens: int,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
    chat: bool = False,
) -> BeamTree:
    """Run beam search on `prompt` and return the tree of every candidate. Cached per request."""
    prompt = clean_text(prompt, "prompt")
    num_beams, max_new_tokens, length_penalty, early_stopping = check_request(
        num_beams, max_new_tokens, length_penalty, early_stopping
    )
    chat = bool(chat)
    key = (prompt, chat, num_beams, max_new_tokens, length_penalty, str(early_stopping))
    return session.analysis(
        "beam_search", key,
        lambda: _search(session, prompt, chat, num_beams, max_new_tokens, length_penalty, early_stopping),
    )


def run_beam_search(session, prompt: str, num_beams: int, max_new_tokens: int, length_penalty: float = 1.0,
                    early_stopping: bool | str = False, chat: bool = False,
                    deadline: Deadline | None = None) -> BeamTree:
    """beam_search without the analysis cache: always runs the model (benchmarks time this)."""
    prompt = clean_text(prompt, "prompt")
    num_beams, max_new_tokens, length_penalty, early_stopping = check_request(
        num_beams, max_new_tokens, length_penalty, early_stopping
    )
    return _search(session, prompt, bool(chat), num_beams, max_new_tokens, length_penalty, early_stopping, deadline)


def _pieces(tokenizer, token_ids: list[int], special_ids: set[int]) -> list[str]:
    tokens = tokenizer.convert_ids_to_tokens(token_ids)
    return [
        readable_piece(token_to_bytes(tokenizer, tok, tid in special_ids), tid in special_ids)[0]
        for tid, tok in zip(token_ids, tokens)
    ]


def _search(session, prompt, chat, num_beams, max_new_tokens, length_penalty, early_stopping,
            deadline: Deadline | None = None) -> BeamTree:
    deadline = deadline or Deadline()
    view = tokenize(session, prompt, chat)
    if view.num_tokens > MAX_PROMPT_TOKENS:
        raise InputError(
            f"The prompt is {view.num_tokens:,} tokens; the limit is {MAX_PROMPT_TOKENS:,}. Shorten it and try again."
        )
    model, tokenizer = session.model, session.tokenizer
    special_ids = set(tokenizer.all_special_ids)
    eos_ids = eos_token_ids(session)
    k = num_beams
    num_candidates = max(2, 1 + len(eos_ids)) * k  # K: enough that k live beams remain if k candidates end
    lp = length_penalty

    root = BeamNode(id=0, parent=-1, step=-1, token_id=-1, piece="(prompt)", logprob=0.0, cum_logprob=0.0,
                    status=ROOT, rank=0, reason="the prompt")
    nodes: list[BeamNode] = [root]
    live: list[int] = [0]  # node id of each live beam row
    finished: list[tuple[float, int]] = []  # (score, node id), best first, at most k
    started = time.perf_counter()
    stop_reason = ""
    forward_rows = 0
    step = 0
    timed_out = False

    with session.lock, torch.inference_mode():
        device = session.device
        eos_tensor = torch.tensor(eos_ids, dtype=torch.long, device=device)
        input_ids = torch.tensor([view.ids], dtype=torch.long, device=device)  # [1, n]
        from transformers import DynamicCache

        cache = DynamicCache(config=model.config)
        # Prefill one row, not k identical rows as generate() does: the other k-1 beams would start at -1e9
        # and never be picked at step 0; the cache is expanded to k rows by the first reorder.
        out = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), past_key_values=cache,
                    use_cache=True, logits_to_keep=1)
        logits = out.logits[:, -1, :].float()  # [1, V]
        del out
        running = torch.zeros(1, device=device)  # [rows] running log-prob sums
        vocab = logits.shape[-1]
        attention = torch.ones(k, view.num_tokens + max_new_tokens, dtype=torch.long, device=device)
        heuristic_open = True  # transformers' is_early_stop_heuristic_unsatisfied

        for step in range(max_new_tokens):
            gen_len = step + 1
            log_probs = torch.log_softmax(logits, dim=-1)  # [rows, V]
            totals = (log_probs + running[:, None]).reshape(-1)  # [rows * V] candidate running sums
            top_totals, top_index = torch.topk(totals, num_candidates)  # [K] best first
            top_beam = top_index // vocab  # [K] row each candidate extends
            top_token = top_index % vocab  # [K]
            top_logprob = log_probs.reshape(-1)[top_index]  # [K] the step's own log-prob
            hits_stop = torch.isin(top_token, eos_tensor)  # [K] candidates that end on EOS
            timed_out = gen_len < max_new_tokens and deadline.expired
            if gen_len >= max_new_tokens or timed_out:
                # The length limit stops every candidate; so does the request's time limit, which ends the
                # search here as if max_new_tokens had been this step.
                hits_stop = torch.ones_like(hits_stop)
            # Live beams for the next step: the best k that did not stop.
            masked = top_totals + hits_stop.float() * NEG_INF_SCORE  # [K]
            next_rank = torch.topk(masked, k).indices  # [k] ranks into the K candidates, best first
            running = masked[next_rank]  # [k]
            scores = top_totals / (gen_len**lp)  # [K] length-normalized, as transformers divides

            totals_l, logprob_l, score_l = top_totals.tolist(), top_logprob.tolist(), scores.tolist()
            beam_l, token_l, stop_l = top_beam.tolist(), top_token.tolist(), hits_stop.tolist()
            eos_l = torch.isin(top_token, eos_tensor).tolist()
            slot_of = {r: slot for slot, r in enumerate(next_rank.tolist()) if not stop_l[r]}
            pieces = _pieces(tokenizer, token_l, special_ids)
            new_live = [0] * k
            new_finished = []
            for r in range(num_candidates):
                node = BeamNode(
                    id=len(nodes), parent=live[beam_l[r]], step=step, token_id=token_l[r], piece=pieces[r],
                    logprob=logprob_l[r], cum_logprob=totals_l[r], status=PRUNED, rank=r, score=score_l[r],
                    eos=eos_l[r],
                )
                if stop_l[r] and r < k:
                    node.status = FINISHED
                    node.reason = ("ended on EOS in the top num_beams" if eos_l[r] else
                                   "stopped by the time limit" if timed_out else "reached max new tokens")
                    new_finished.append((score_l[r], node.id))
                elif stop_l[r]:
                    node.reason = (
                        "ended on EOS but ranked outside the top num_beams" if eos_l[r]
                        else "reached max new tokens outside the top num_beams"
                    )
                elif r in slot_of:
                    node.status, node.beam = KEPT, slot_of[r]
                    node.reason = f"one of the {k} best continuations: live beam {slot_of[r] + 1}"
                    new_live[slot_of[r]] = node.id
                else:
                    node.reason = f"not among the {k} best continuations"
                nodes.append(node)

            # The finished list keeps the k best scores (new ones enter only while improvement is possible;
            # otherwise the loop has already stopped).
            merged = finished + new_finished
            merged.sort(key=lambda item: -item[0])  # stable: at a tie the earlier hypothesis stays
            for _, node_id in merged[k:]:
                nodes[node_id].reason += "; displaced by better finished hypotheses"
            finished = merged[:k]

            # The early-stop heuristic: can the best live beam still beat the worst finished hypothesis?
            hypothetical_len = max_new_tokens if (early_stopping == "never" and lp > 0.0) else gen_len
            best_possible = (running[:1] / (hypothetical_len**lp)).item()
            worst_finished = finished[-1][0] if len(finished) == k else NEG_INF_SCORE
            heuristic_open = heuristic_open and best_possible > worst_finished

            if timed_out:
                stop_reason = (f"the server's time limit of {deadline.seconds:g} s per request: stopped after "
                               f"{gen_len} of {max_new_tokens} tokens, the beams as they stood")
                break
            if gen_len >= max_new_tokens:
                stop_reason = f"reached max new tokens ({max_new_tokens})"
                break
            if early_stopping is True and len(finished) == k:
                stop_reason = f"{k} hypotheses finished (early_stopping=True stops as soon as num_beams are done)"
                break
            if not heuristic_open:
                stop_reason = (
                    "the best live beam can no longer beat the worst finished hypothesis "
                    f"(its score {best_possible:.3f} <= {worst_finished:.3f})"
                )
                break

            # Decode: one row per live beam, each with its parent's keys and values.
            cache.reorder_cache(top_beam[next_rank])  # [k] parent rows; expands the 1-row prefill cache
            live = new_live
            next_tokens = top_token[next_rank][:, None]  # [k, 1]
            cur = view.num_tokens + gen_len
            out = model(input_ids=next_tokens, attention_mask=attention[:, : cur], past_key_values=cache,
                        use_cache=True)
            logits = out.logits[:, -1, :].float()  # [k, V]
            del out
            forward_rows += k

    hypotheses = []
    for rank, (score, node_id) in enumerate(finished):
        nodes[node_id].final_rank = rank
        path = _path(nodes, node_id)
        token_ids = [n.token_id for n in path]
        hypotheses.append(Hypothesis(
            token_ids=token_ids,
            text=tokenizer.decode(token_ids, skip_special_tokens=True),
            score=score,
            sum_logprob=nodes[node_id].cum_logprob,
            length=len(token_ids),
            node=node_id,
            ends_with_eos=nodes[node_id].eos,
        ))
    return BeamTree(
        prompt=prompt, prompt_text=view.text, prompt_ids=list(view.ids), chat=chat, num_beams=k,
        max_new_tokens=max_new_tokens, length_penalty=lp, early_stopping=early_stopping,
        candidates_per_step=num_candidates, eos_ids=eos_ids, nodes=nodes, finished=hypotheses,
        num_steps=step + 1, stop_reason=stop_reason, forward_rows=forward_rows,
        seconds=time.perf_counter() - started, timed_out=timed_out,
    )


def _path(nodes: list[BeamNode], node_id: int) -> list[BeamNode]:
    """The generated nodes from the first step to `node_id` (the root excluded)."""
    path = []
    while node_id > 0:
        path.append(nodes[node_id])
        node_id = nodes[node_id].parent
    return path[::-1]


def path_ids(tree: BeamTree, node_id: int) -> list[int]:
    """Node ids from the first generated token to `node_id`."""
    return [n.id for n in _path(tree.nodes, node_id)]


# ---------------------------------------------------------------------------------------------------
# JSON


def _round(x: float, digits: int = 5) -> float:
    return round(float(x), digits)


def to_dict(tree: BeamTree) -> dict:
    """JSON-ready form of a BeamTree (the `beam_search` API endpoint)."""
    return {
        "prompt": tree.prompt,
        "prompt_text": tree.prompt_text,
        "chat": tree.chat,
        "num_beams": tree.num_beams,
        "max_new_tokens": tree.max_new_tokens,
        "length_penalty": tree.length_penalty,
        "early_stopping": tree.early_stopping,
        "candidates_per_step": tree.candidates_per_step,
        "num_steps": tree.num_steps,
        "stop_reason": tree.stop_reason,
        "timed_out": tree.timed_out,
        "forward_rows": tree.forward_rows,
        "hypotheses": [
            {
                "rank": i,
                "text": h.text,
                "token_ids": h.token_ids,
                "score": _round(h.score, 6),
                "sum_logprob": _round(h.sum_logprob, 6),
                "length": h.length,
                "ends_with_eos": h.ends_with_eos,
                "node": h.node,
            }
            for i, h in enumerate(tree.finished)
        ],
        "nodes": [
            {
                "id": n.id, "parent": n.parent, "step": n.step, "token_id": n.token_id, "token": n.piece,
                "logprob": _round(n.logprob), "cum_logprob": _round(n.cum_logprob), "score": _round(n.score),
                "status": n.status, "rank": n.rank, "beam": n.beam, "eos": n.eos, "final_rank": n.final_rank,
                "reason": n.reason,
            }
            for n in tree.nodes
        ],
        "edges": [list(e) for e in tree.edges()],
    }


# ---------------------------------------------------------------------------------------------------
# What beam search buys: greedy and a seeded sample of the same prompt, scored the same way


@dataclass(frozen=True)
class Decoded:
    """One decoding of the prompt by another method, with the model's own log-probs of its tokens."""

    method: str  # "greedy" | "sampled"
    token_ids: list[int]
    text: str
    sum_logprob: float
    length: int
    score: float  # sum_logprob / length ** length_penalty, comparable with the beam hypotheses
    ends_with_eos: bool
    detail: str  # how it was produced


def sequence_logprobs(session, prompt_ids: list[int], token_ids: list[int]) -> list[float]:
    """log p(token_i | prompt, tokens before i) for each generated token: one forward pass."""
    if not token_ids:
        return []
    with session.lock, torch.inference_mode():
        ids = torch.tensor([prompt_ids + token_ids], dtype=torch.long, device=session.device)  # [1, n+m]
        logits = session.model(input_ids=ids, use_cache=False).logits[0].float()  # [n+m, V]
        log_probs = torch.log_softmax(logits[len(prompt_ids) - 1 : -1], dim=-1)  # [m, V] predicting each new token
        picked = log_probs.gather(1, ids[0, len(prompt_ids) :, None])[:, 0]  # [m]
        return picked.tolist()


def _decode_with_generation(session, prompt, chat, max_new_tokens, temperature, seed) -> list[int]:
    """Tokens from the app's own generation pipeline (inference.generation), EOS included."""
    from .generation import generate
    from .sampling import SamplingParams

    params = SamplingParams(temperature=temperature, top_k=0, top_p=1.0, seed=seed)
    trace = generate(session, prompt, params, max_new_tokens, chat=chat)
    return list(trace.token_ids)


def _decode_with_transformers(session, prompt_ids, max_new_tokens, sample, seed) -> list[int]:
    """Fallback when inference.generation is unavailable: model.generate, seeded in a forked RNG so the
    global random state of the process is left as it was."""
    with session.lock, torch.inference_mode(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        ids = torch.tensor([prompt_ids], dtype=torch.long, device=session.device)
        out = session.model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=sample,
            num_beams=1, top_k=0 if sample else None, top_p=1.0 if sample else None,
            temperature=1.0 if sample else None,
        )
    return out[0, len(prompt_ids):].tolist()


def _finish(session, method, detail, prompt_ids, token_ids, eos_ids, length_penalty) -> Decoded:
    if eos_ids:
        for i, tid in enumerate(token_ids):  # the hypothesis ends at its first EOS (padding may follow)
            if tid in eos_ids:
                token_ids = token_ids[: i + 1]
                break
    logprobs = sequence_logprobs(session, prompt_ids, token_ids)
    total = float(sum(logprobs))
    length = len(token_ids)
    return Decoded(
        method=method, token_ids=token_ids,
        text=session.tokenizer.decode(token_ids, skip_special_tokens=True),
        sum_logprob=total, length=length, score=total / (length**length_penalty) if length else 0.0,
        ends_with_eos=bool(token_ids) and token_ids[-1] in eos_ids, detail=detail,
    )


def compare_decoders(session, prompt: str, max_new_tokens: int, length_penalty: float = 1.0, chat: bool = False,
                     seed: int = 0) -> list[Decoded]:
    """Greedy and a seeded sample (temperature 1, no top-k/top-p) for the same prompt and budget. Cached."""
    prompt = clean_text(prompt, "prompt")
    _, max_new_tokens, length_penalty, _ = check_request(1, max_new_tokens, length_penalty, False)
    try:
        seed = int(seed)
    except (TypeError, ValueError):
        raise InputError(f"seed must be a whole number (got {str(seed)[:40]!r}).") from None
    key = (prompt, bool(chat), max_new_tokens, length_penalty, seed)
    return session.analysis(
        "beam_compare", key, lambda: _compare(session, prompt, bool(chat), max_new_tokens, length_penalty, seed)
    )


def _compare(session, prompt, chat, max_new_tokens, length_penalty, seed) -> list[Decoded]:
    view = tokenize(session, prompt, chat)
    prompt_ids = list(view.ids)
    eos_ids = eos_token_ids(session)
    try:
        greedy = _decode_with_generation(session, prompt, chat, max_new_tokens, 0.0, seed)
        sampled = _decode_with_generation(session, prompt, chat, max_new_tokens, 1.0, seed)
        how = "the app's generation pipeline (inference.generation)"
    except ImportError:
        greedy = _decode_with_transformers(session, prompt_ids, max_new_tokens, False, seed)
        sampled = _decode_with_transformers(session, prompt_ids, max_new_tokens, True, seed)
        how = "model.generate"
    return [
        _finish(session, "greedy", f"argmax every step, via {how}", prompt_ids, greedy, eos_ids, length_penalty),
        _finish(session, "sampled", f"temperature 1, no top-k/top-p, seed {seed}, via {how}", prompt_ids, sampled,
                eos_ids, length_penalty),
    ]
