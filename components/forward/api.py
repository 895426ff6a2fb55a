"""Forward pass tab, the JSON endpoints `forward_pass` and `surprisal` (gr.api; same names and parameters as the
other endpoints: `text`, `chat`). Each reads the one cached recorded pass of the text."""

from __future__ import annotations

from inference.errors import InputError
from inference.forward import forward_pass
from inference.limits import MAX_FORWARD_TOKENS

from ..common import session, user_errors
from ..i18n import t
from .exports import forward_data, surprisal_data


@user_errors
def forward_pass_api(text: str, chat: bool = False, model: str | None = None) -> dict:
    """One forward pass over a text (chat=True wraps it in the chat template), as data.

    Returns the tokens, the data-flow diagram (every box with its module, weight shapes, parameter count and the
    activation shapes of this pass; boxes sum to the model's parameter count), the positional scheme, per-layer
    norms of the residual stream and of each attention and MLP update (rows = layers, columns = tokens), the
    logit lens at the last token and the top next tokens."""
    s = session(model)
    return forward_data(s, forward_pass(s, text, chat))


@user_errors
def surprisal_api(text: str, chat: bool = False, model: str | None = None) -> dict:
    """Per-token surprisal of a text: -log2 p(token | the tokens before it), in bits, and the perplexity.

    The first token has no surprisal (null): nothing comes before it. Perplexity = 2 ** (mean bits) = exp(mean
    negative log-likelihood), as exp(loss) of model(ids, labels=ids). A one-token text has none: an error says so."""
    s = session(model)
    forward = forward_pass(s, text, chat)
    if forward.num_predicted == 0:
        raise InputError(t("forward.one_token_no_perplexity"))
    return {"model": s.model_id, **surprisal_data(s, forward), "max_tokens": MAX_FORWARD_TOKENS}
