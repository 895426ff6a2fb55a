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
(never the vocabulary) as tree nodes. `_search` is the loop; each step reads:

    candidates   steps 2 and 3: the K candidates from the log-softmax running sums, and the k that go on
    label        the K as tree nodes: finished, kept (a live beam's row next step) or pruned, and why
    keep_best    step 4: the finished list keeps the num_beams best scores
    stop_rule    step 5: why the search ends here ("" while it goes on)
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
from .generation import generate
from .model.run import last_logits_only, new_cache
from .model.vocab import eos_ids, pieces
from .sampling import SamplingParams
from .tokens import clean_text, tokenize

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
    raise InputError("beam.bad_early_stopping", "early_stopping must be true, false or \"never\" (got {value!r}).",
                     value=str(value)[:40])


def _whole_number(value, name: str, low: int, high: int) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError("beam.not_a_whole_number", "{name} must be a whole number between {low} and {high} (got "
                         "{value!r}).", name=name, low=low, high=high, value=str(value)[:40]) from None
    if not math.isfinite(number) or number != int(number) or not low <= number <= high:
        raise InputError("beam.whole_number_out_of_range",
                         "{name} must be a whole number between {low} and {high} (got {value:g}).",
                         name=name, low=low, high=high, value=number)
    return int(number)


def check_request(num_beams, max_new_tokens, length_penalty, early_stopping) -> tuple[int, int, float, bool | str]:
    """Validate the search settings against the caps; one clear sentence per problem."""
    num_beams = _whole_number(num_beams, "num_beams", 1, MAX_NUM_BEAMS)
    max_new_tokens = _whole_number(max_new_tokens, "max_new_tokens", 1, MAX_BEAM_NEW_TOKENS)
    try:
        length_penalty = float(length_penalty)
    except (TypeError, ValueError):
        raise InputError("beam.length_penalty_not_a_number", "length_penalty must be a number (got {value!r}).",
                         value=str(length_penalty)[:40]) from None
    if not (math.isfinite(length_penalty) and MIN_LENGTH_PENALTY <= length_penalty <= MAX_LENGTH_PENALTY):
        raise InputError("beam.length_penalty_out_of_range",
                         "length_penalty must be between {low:g} and {high:g} (got {value:g}).",
                         low=MIN_LENGTH_PENALTY, high=MAX_LENGTH_PENALTY, value=length_penalty)
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


def _search(session, prompt, chat, num_beams, max_new_tokens, length_penalty, early_stopping,
            deadline: Deadline | None = None) -> BeamTree:
    """transformers' `_beam_search` for one prompt, step by step, every candidate kept as a node."""
    deadline = deadline or Deadline()
    view = tokenize(session, prompt, chat)
    if view.num_tokens > MAX_PROMPT_TOKENS:
        raise InputError("beam.prompt_too_long",
                         "The prompt is {tokens:,} tokens; the limit is {limit:,}. Shorten it and try again.",
                         tokens=view.num_tokens, limit=MAX_PROMPT_TOKENS)
    model = session.model
    eos = eos_ids(session)
    k = num_beams
    num_candidates = max(2, 1 + len(eos)) * k  # K: enough that k live beams remain if k candidates end
    nodes: list[BeamNode] = [BeamNode(id=0, parent=-1, step=-1, token_id=-1, piece="(prompt)", logprob=0.0,
                                      cum_logprob=0.0, status=ROOT, rank=0, reason="the prompt")]
    live: list[int] = [0]  # node id of each live beam row
    finished: list[tuple[float, int]] = []  # (score, node id), best first, at most k
    started = time.perf_counter()
    forward_rows = 0

    with session.lock, torch.inference_mode():
        device = session.device
        eos_tensor = torch.tensor(eos, dtype=torch.long, device=device)
        input_ids = torch.tensor([view.ids], dtype=torch.long, device=device)  # [1, n]
        cache = new_cache(session)
        # Prefill one row, not k identical rows as generate() does: the other k-1 beams would start at -1e9
        # and never be picked at step 0; the cache is expanded to k rows by the first reorder.
        out = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), past_key_values=cache,
                    use_cache=True, **last_logits_only(model))
        logits = out.logits[:, -1, :].float()  # [1, V]
        del out
        running = torch.zeros(1, device=device)  # [rows] running log-prob sums
        attention = torch.ones(k, view.num_tokens + max_new_tokens, dtype=torch.long, device=device)

        for step in range(max_new_tokens):
            gen_len = step + 1
            # The request's time limit ends the search here, as if max_new_tokens had been this step.
            timed_out = gen_len < max_new_tokens and deadline.expired
            last = gen_len >= max_new_tokens or timed_out
            found = candidates(logits, running, k, num_candidates, eos_tensor, last)
            step_nodes = label(found, step, live, len(nodes), k, length_penalty, pieces(session, found.token_ids),
                               "stopped by the time limit" if timed_out else "reached max new tokens")
            nodes += step_nodes
            finished = keep_best(finished, [(n.score, n.id) for n in step_nodes if n.status == FINISHED], k, nodes)
            stop = stop_rule(step, max_new_tokens, k, found.running, finished, length_penalty, early_stopping,
                             timed_out, deadline)
            if stop:
                break
            # Decode: one row per live beam, each with its parent's keys and values.
            live = [n.id for n in sorted((n for n in step_nodes if n.status == KEPT), key=lambda n: n.beam)]
            running = found.running  # [k]
            cache.reorder_cache(found.rows[found.next_beams])  # [k] parent rows; expands the 1-row prefill cache
            next_tokens = found.tokens[found.next_beams][:, None]  # [k, 1]
            out = model(input_ids=next_tokens, attention_mask=attention[:, : view.num_tokens + gen_len],
                        past_key_values=cache, use_cache=True)
            logits = out.logits[:, -1, :].float()  # [k, V]
            del out
            forward_rows += k

    return BeamTree(
        prompt=prompt, prompt_text=view.text, prompt_ids=list(view.ids), chat=chat, num_beams=k,
        max_new_tokens=max_new_tokens, length_penalty=length_penalty, early_stopping=early_stopping,
        candidates_per_step=num_candidates, eos_ids=eos, nodes=nodes,
        finished=_hypotheses(session, nodes, finished), num_steps=step + 1, stop_reason=stop,
        forward_rows=forward_rows, seconds=time.perf_counter() - started, timed_out=timed_out,
    )


@dataclass
class Candidates:
    """One step's K best continuations over all live beams, best first (transformers'
    `_get_top_k_continuations`), and the k of them that go on (`_get_running_beams_for_next_iteration`)."""

    totals: torch.Tensor  # [K] running sum of log-probs: the parent's sum plus the step's log-prob
    logprobs: torch.Tensor  # [K] the step's own log-prob
    rows: torch.Tensor  # [K] the live-beam row each extends
    tokens: torch.Tensor  # [K]
    eos: torch.Tensor  # [K] ends on an EOS id
    stops: torch.Tensor  # [K] ends the hypothesis: EOS, or every candidate at the last step
    next_beams: torch.Tensor  # [k] ranks (into the K) of the next live beams, best first
    running: torch.Tensor  # [k] their running sums (minus 1e9 where a stopped one had to fill a row)

    @property
    def token_ids(self) -> list[int]:
        return self.tokens.tolist()


def candidates(logits: torch.Tensor, running: torch.Tensor, k: int, num_candidates: int, eos: torch.Tensor,
               last: bool) -> Candidates:
    """logits [rows, V] of the live beams and their running sums [rows] -> the step's K candidates."""
    log_probs = torch.log_softmax(logits, dim=-1)  # [rows, V]
    vocab = log_probs.shape[-1]
    totals, index = torch.topk((log_probs + running[:, None]).reshape(-1), num_candidates)  # [K] over rows * V
    tokens = index % vocab  # [K]
    ends_on_eos = torch.isin(tokens, eos)  # [K]
    stops = torch.ones_like(ends_on_eos) if last else ends_on_eos  # [K]
    masked = totals + stops.float() * NEG_INF_SCORE  # [K] a stopped candidate never goes on
    next_beams = torch.topk(masked, k).indices  # [k]
    return Candidates(totals=totals, logprobs=log_probs.reshape(-1)[index], rows=index // vocab, tokens=tokens,
                      eos=ends_on_eos, stops=stops, next_beams=next_beams, running=masked[next_beams])


def label(found: Candidates, step: int, live: list[int], first_id: int, k: int, length_penalty: float,
          token_pieces: list[str], stop_words: str) -> list[BeamNode]:
    """The K candidates as tree nodes, best first: finished (stopped and ranked in the top k), kept (one of the
    k next live beams, `beam` = its row next step) or pruned, each with the reason in words.

    `live`: node id of each row the candidates extend; `first_id`: the first node's id; `stop_words`: why a
    candidate that did not end on EOS stopped (the last step, or the time limit)."""
    totals, logprobs = found.totals.tolist(), found.logprobs.tolist()
    scores = (found.totals / ((step + 1) ** length_penalty)).tolist()  # length-normalized, as transformers divides
    rows, tokens, eos, stops = found.rows.tolist(), found.tokens.tolist(), found.eos.tolist(), found.stops.tolist()
    row_of = {rank: row for row, rank in enumerate(found.next_beams.tolist()) if not stops[rank]}
    nodes = []
    for r in range(len(totals)):
        node = BeamNode(id=first_id + r, parent=live[rows[r]], step=step, token_id=tokens[r], piece=token_pieces[r],
                        logprob=logprobs[r], cum_logprob=totals[r], status=PRUNED, rank=r, score=scores[r], eos=eos[r])
        if stops[r] and r < k:
            node.status = FINISHED
            node.reason = "ended on EOS in the top num_beams" if eos[r] else stop_words
        elif stops[r]:
            node.reason = ("ended on EOS but ranked outside the top num_beams" if eos[r]
                           else "reached max new tokens outside the top num_beams")
        elif r in row_of:
            node.status, node.beam = KEPT, row_of[r]
            node.reason = f"one of the {k} best continuations: live beam {row_of[r] + 1}"
        else:
            node.reason = f"not among the {k} best continuations"
        nodes.append(node)
    return nodes


def keep_best(finished: list[tuple[float, int]], new: list[tuple[float, int]], k: int,
              nodes: list[BeamNode]) -> list[tuple[float, int]]:
    """The finished list keeps the k best scores (`_update_finished_beams`); at a tie the earlier hypothesis
    stays. New ones enter only while improvement is possible; otherwise the search has already stopped."""
    merged = sorted(finished + new, key=lambda item: -item[0])  # stable
    for _, node_id in merged[k:]:
        nodes[node_id].reason += "; displaced by better finished hypotheses"
    return merged[:k]


def stop_rule(step: int, max_new_tokens: int, k: int, running: torch.Tensor, finished: list[tuple[float, int]],
              length_penalty: float, early_stopping: bool | str, timed_out: bool, deadline: Deadline) -> str:
    """Why the search ends after `step`, in words; "" while it goes on. `running` [k]: the next live beams'
    sums, best first. transformers' `_beam_search_has_unfinished_sequences` with `_check_early_stop_heuristic`."""
    gen_len = step + 1
    if timed_out:
        return (f"the server's time limit of {deadline.seconds:g} s per request: stopped after {gen_len} of "
                f"{max_new_tokens} tokens, the beams as they stood")
    if gen_len >= max_new_tokens:
        return f"reached max new tokens ({max_new_tokens})"
    if early_stopping is True and len(finished) == k:
        return f"{k} hypotheses finished (early_stopping=True stops as soon as num_beams are done)"
    # Can the best live beam still beat the worst finished hypothesis? Its score as if it ended now, or with
    # early_stopping="never" and a positive penalty (longer scores higher) at the longest it may grow.
    hypothetical_len = max_new_tokens if (early_stopping == "never" and length_penalty > 0.0) else gen_len
    best_possible = (running[:1] / (hypothetical_len**length_penalty)).item()
    worst_finished = finished[-1][0] if len(finished) == k else NEG_INF_SCORE
    if best_possible <= worst_finished:
        return ("the best live beam can no longer beat the worst finished hypothesis "
                f"(its score {best_possible:.3f} <= {worst_finished:.3f})")
    return ""


def _hypotheses(session, nodes: list[BeamNode], finished: list[tuple[float, int]]) -> list[Hypothesis]:
    """The finished (score, node id), best first, as hypotheses; their end nodes get their final rank."""
    hypotheses = []
    for rank, (score, node_id) in enumerate(finished):
        end = nodes[node_id]
        end.final_rank = rank
        token_ids = [n.token_id for n in _path(nodes, node_id)]
        hypotheses.append(Hypothesis(
            token_ids=token_ids, text=session.tokenizer.decode(token_ids, skip_special_tokens=True), score=score,
            sum_logprob=end.cum_logprob, length=len(token_ids), node=node_id, ends_with_eos=end.eos,
        ))
    return hypotheses


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
        m = len(token_ids)
        out = session.model(input_ids=ids, use_cache=False, **last_logits_only(session.model, m + 1))
        logits = out.logits[0, -(m + 1) : -1].float()  # [m, V]: the positions predicting each new token
        log_probs = torch.log_softmax(logits, dim=-1)  # [m, V]
        picked = log_probs.gather(1, ids[0, len(prompt_ids) :, None])[:, 0]  # [m]
        return picked.tolist()


def _decode(session, prompt, chat, max_new_tokens, temperature, seed) -> list[int]:
    """Tokens from the app's own generation pipeline (inference.generation), EOS included."""
    params = SamplingParams(temperature=temperature, top_k=0, top_p=1.0, seed=seed)
    return list(generate(session, prompt, params, max_new_tokens, chat=chat).token_ids)


def _finish(session, method, detail, prompt_ids, token_ids, eos, length_penalty) -> Decoded:
    if eos:
        for i, tid in enumerate(token_ids):  # the hypothesis ends at its first EOS (padding may follow)
            if tid in eos:
                token_ids = token_ids[: i + 1]
                break
    logprobs = sequence_logprobs(session, prompt_ids, token_ids)
    total = float(sum(logprobs))
    length = len(token_ids)
    return Decoded(
        method=method, token_ids=token_ids,
        text=session.tokenizer.decode(token_ids, skip_special_tokens=True),
        sum_logprob=total, length=length, score=total / (length**length_penalty) if length else 0.0,
        ends_with_eos=bool(token_ids) and token_ids[-1] in eos, detail=detail,
    )


def compare_decoders(session, prompt: str, max_new_tokens: int, length_penalty: float = 1.0, chat: bool = False,
                     seed: int = 0) -> list[Decoded]:
    """Greedy and a seeded sample (temperature 1, no top-k/top-p) for the same prompt and budget. Cached."""
    prompt = clean_text(prompt, "prompt")
    _, max_new_tokens, length_penalty, _ = check_request(1, max_new_tokens, length_penalty, False)
    try:
        seed = int(seed)
    except (TypeError, ValueError):
        raise InputError("beam.seed_not_a_whole_number", "seed must be a whole number (got {value!r}).",
                         value=str(seed)[:40]) from None
    key = (prompt, bool(chat), max_new_tokens, length_penalty, seed)
    return session.analysis(
        "beam_compare", key, lambda: _compare(session, prompt, bool(chat), max_new_tokens, length_penalty, seed)
    )


def _compare(session, prompt, chat, max_new_tokens, length_penalty, seed) -> list[Decoded]:
    prompt_ids = list(tokenize(session, prompt, chat).ids)
    eos = eos_ids(session)
    greedy = _decode(session, prompt, chat, max_new_tokens, 0.0, seed)
    sampled = _decode(session, prompt, chat, max_new_tokens, 1.0, seed)
    how = "the app's generation pipeline (inference.generation)"
    return [
        _finish(session, "greedy", f"argmax every step, via {how}", prompt_ids, greedy, eos, length_penalty),
        _finish(session, "sampled", f"temperature 1, no top-k/top-p, seed {seed}, via {how}", prompt_ids, sampled,
                eos, length_penalty),
    ]
