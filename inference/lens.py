"""The logit lens: the final norm and the LM head applied to the residual stream after each layer.

What the model would predict if it stopped after layer l, at a few positions (the last ones of the prompt).
Row 0 is the stream entering the first layer (the embeddings), row l+1 the output of layer l; the last row is
the model's own logits, so it is exactly the model's next-token distribution. Computed once per recorded
prefill (`inference.recorded`); the Forward pass and the Attention tabs both show it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .errors import InputError
from .limits import FORWARD_LOGIT_CHUNK, LENS_TOP_K
from .model.run import head_logits
from .model.vocab import pieces


@dataclass(frozen=True)
class LogitLens:
    """Each layer's top guesses for the next token, and the probability it gives the model's final answer."""

    layer_names: list[str]  # L+1 names: "embeddings", "layer 0", ..., "layer L-1"
    positions: list[int]  # prompt positions covered (the last P)
    top_ids: np.ndarray  # [L+1, P, k] int64, best first
    top_probs: np.ndarray  # [L+1, P, k] float32
    top_pieces: list[list[list[str]]]  # [L+1][P][k] readable pieces of top_ids
    answer_ids: np.ndarray  # [P] the model's own top next token at each covered position
    answer_pieces: list[str]  # [P]
    answer_probs: np.ndarray  # [L+1, P] float32: probability each layer's lens gives to that answer

    def column(self, position: int) -> int:
        """Index into `positions` of a prompt position; InputError when the lens does not cover it."""
        if position not in self.positions:
            raise InputError("lens.position_not_covered",
                             "The logit lens covers the last {count} positions ({first}–{last}); position {position} "
                             "is not one of them.", count=len(self.positions), first=self.positions[0],
                             last=self.positions[-1], position=position)
        return self.positions.index(position)

    def nbytes(self) -> int:
        return self.top_ids.nbytes + self.top_probs.nbytes + self.answer_probs.nbytes


def logit_lens(session, streams: torch.Tensor, final_logits: torch.Tensor, positions: list[int]) -> LogitLens:
    """streams [L, P, d]: the residual stream at `positions` entering layer 0 and after layers 0..L-2 (the last
    layer's output is read through the model's own logits); final_logits [P, V]: the model's logits there."""
    k = LENS_TOP_K
    num_layers, num_positions = streams.shape[0], streams.shape[1]
    final = final_logits.float()  # [P, V]: the model's own logits
    answer = final.argmax(-1)  # [P]
    top_ids, top_probs, answer_probs = [], [], []

    def read(logits: torch.Tensor) -> None:  # logits [c, P, V]: c layers' lens at the P positions
        logprobs = torch.log_softmax(logits.float(), -1)
        values, ids = logprobs.topk(k, -1)  # [c, P, k]
        top_ids.append(ids)
        top_probs.append(values.exp())
        answer_probs.append(logprobs.gather(-1, answer[None, :, None].expand(len(logits), -1, 1))[..., 0].exp())

    # Several layers through the LM head in one matrix product: the head's weights (vocab x d, 113 MB for SmolLM2)
    # are read once per product, not once per layer. At most FORWARD_LOGIT_CHUNK floats of logits at a time.
    per_product = max(1, FORWARD_LOGIT_CHUNK // (final.shape[-1] * num_positions))
    for start in range(0, num_layers, per_product):
        read(head_logits(session, streams[start:start + per_product]))  # [c, P, d] -> [c, P, V]
    read(final[None])  # the last layer's output: the model's own logits
    ids = torch.cat(top_ids).cpu().numpy()  # [L+1, P, k]
    flat = pieces(session, ids.reshape(-1).tolist())
    per_row = num_positions * k
    top_pieces = [[flat[r * per_row + p * k: r * per_row + (p + 1) * k] for p in range(num_positions)]
                  for r in range(num_layers + 1)]
    return LogitLens(
        layer_names=["embeddings"] + [f"layer {i}" for i in range(num_layers)],
        positions=list(positions),
        top_ids=ids.astype(np.int64),
        top_probs=torch.cat(top_probs).cpu().numpy().astype(np.float32),
        top_pieces=top_pieces,
        answer_ids=answer.cpu().numpy(),
        answer_pieces=pieces(session, answer.tolist()),
        answer_probs=torch.cat(answer_probs).cpu().numpy().astype(np.float32),
    )
