"""Inside one forward pass: what the residual stream does on the way from token ids to logits.

The Forward pass tab's view of the recorded prefill (`recorded.shared_prefill`: one model run per text, shared
with the Attention tab): per-token norms of the stream and of each block's update (TransformerLens names:
`blocks.{l}.hook_resid_pre`, `hook_attn_out`, `hook_mlp_out`, `hook_resid_post`), the first tokens' embeddings,
the surprisal of every token (-log2 p of it given the ones before, from the previous position's logits), the
full next-token distribution at the last position, and the logit lens (the recording's, computed once).

The diagram of the pass lives in `diagram`, the positional scheme in `positions`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .lens import LogitLens
from .model.hooks import ModuleCall
from .recorded import RecordedPrefill, shared_prefill
from .tokens import TokenView

# Names that used to live here, re-exported for old imports: the model access is in inference.model, the diagram
# and the positions have modules of their own.
from .diagram import Box, Diagram, build_diagram, diagram, diagram_params  # noqa: F401
from .model.anatomy import anatomy, text_config  # noqa: F401
from .model.run import head_logits, last_logits_only, logits_from_normed  # noqa: F401
from .model.vocab import pieces  # noqa: F401
from .positions import PositionScheme, positional_scheme  # noqa: F401


@dataclass(eq=False)
class ForwardPass:
    """What one forward pass over a text shows: norms per layer, surprisal per token, the last position's
    next-token distribution, the first tokens' embeddings, the logit lens, and the module calls with their shapes."""

    tokens: TokenView
    num_layers: int
    hidden_norms: np.ndarray  # [L+1, n] float32: |resid_pre| of each layer, last row |resid_post| of layer L-1
    attn_update_norms: np.ndarray | None  # [L, n] float32: |hook_attn_out|; None for parallel blocks
    mlp_update_norms: np.ndarray | None  # [L, n] float32: |hook_mlp_out|
    layer_update_norms: np.ndarray  # [L, n] float32: |resid_post - resid_pre|
    embeddings: np.ndarray  # [min(n, FORWARD_EMBED_TOKENS), d] float32: the embedding lookup's output
    surprisal_bits: np.ndarray  # [n-1] float32: -log2 p(token i | tokens < i) for i = 1..n-1
    expected_ids: np.ndarray  # [n-1] int64: the model's top guess at each of those positions
    expected_probs: np.ndarray  # [n-1] float32: its probability
    entropy_bits: np.ndarray  # [n-1] float32: entropy of each of those distributions
    next_logprobs: np.ndarray = field(repr=False)  # [vocab] float32: log p of the token after the text
    lens: LogitLens = field(repr=False)  # the recording's lens; its last column is the last position
    calls: list[ModuleCall] = field(default_factory=list, repr=False)
    head_check: float = 0.0  # max |model logits - lm_head(final_norm(last layer output))| at the last position
    seconds: float = 0.0  # the prefill model call and the reduction of what it recorded into this object
    shared_pass: bool = False  # True: the recording also holds the Attention tab's maps (one prefill for both tabs)

    @property
    def n(self) -> int:
        return len(self.tokens.ids)

    @property
    def num_predicted(self) -> int:
        """Tokens the model predicts from earlier ones: all but the first."""
        return self.n - 1

    @property
    def stages(self) -> list[str]:
        """The residual stream's stages: the embeddings, then the stream after each layer (the lens's rows)."""
        return self.lens.layer_names

    @property
    def lens_top_ids(self) -> np.ndarray:
        """[L+1] int64: the lens's top guess at the last position after each layer (row 0: the embeddings)."""
        return self.lens.top_ids[:, -1, 0]

    @property
    def lens_answer_probs(self) -> np.ndarray:
        """[L+1] float32: the probability each layer's lens gives the model's final answer at the last position."""
        return self.lens.answer_probs[:, -1]

    @property
    def mean_bits(self) -> float | None:
        return float(self.surprisal_bits.mean()) if self.num_predicted else None

    @property
    def perplexity(self) -> float | None:
        """2 ** (mean surprisal in bits) = exp(mean negative log-likelihood in nats); None for one token."""
        return float(2.0 ** self.surprisal_bits.astype(np.float64).mean()) if self.num_predicted else None

    def most_surprising(self, k: int) -> list[int]:
        """Token positions (1..n-1) with the highest surprisal, highest first."""
        order = np.argsort(-self.surprisal_bits, kind="stable")[:k]
        return [int(i) + 1 for i in order]

    def top_next(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k most likely next tokens after the text: ids [k], probabilities [k]."""
        ids = np.argsort(-self.next_logprobs, kind="stable")[:k]
        return ids, np.exp(self.next_logprobs[ids].astype(np.float64)).astype(np.float32)

    def retained_bytes(self) -> int:
        arrays = [self.hidden_norms, self.attn_update_norms, self.mlp_update_norms, self.layer_update_norms,
                  self.embeddings, self.surprisal_bits, self.expected_ids, self.expected_probs, self.entropy_bits,
                  self.next_logprobs]
        return sum(a.nbytes for a in arrays if a is not None) + self.lens.nbytes()


def forward_of(recording: RecordedPrefill) -> ForwardPass:
    """The Forward pass tab's view of a recording (the same arrays, nothing copied)."""
    r = recording
    return ForwardPass(
        tokens=r.tokens, num_layers=r.num_layers, hidden_norms=r.hidden_norms, attn_update_norms=r.attn_update_norms,
        mlp_update_norms=r.mlp_update_norms, layer_update_norms=r.layer_update_norms, embeddings=r.embeddings,
        surprisal_bits=r.surprisal_bits, expected_ids=r.expected_ids, expected_probs=r.expected_probs,
        entropy_bits=r.entropy_bits, next_logprobs=r.next_logprobs, lens=r.lens, calls=r.calls,
        head_check=r.head_check, seconds=r.forward_seconds, shared_pass=r.attention is not None,
    )


def forward_pass(session, text: str, chat: bool = False) -> ForwardPass:
    """One forward pass over `text` (in the chat template when chat=True), recorded; cached per (model, text,
    chat) so every view of the tab and both JSON endpoints share it. Within the Attention tab's cap
    (MAX_ATTENTION_TOKENS) it is the same model run as the attention capture: one model run per text."""
    return shared_prefill(session, text, chat).view("forward", forward_of)


__all__ = ["Box", "Diagram", "ForwardPass", "PositionScheme", "anatomy", "build_diagram",
           "diagram", "diagram_params", "forward_of", "forward_pass", "head_logits", "last_logits_only",
           "logits_from_normed", "pieces", "positional_scheme", "text_config"]
