"""An ablation written as text, as a class says it: 'L17H4, L3H0, mlp L0' <-> interventions.Ablation.

    parse_ablation(session, "L17H4, mlp L0")      -> Ablation(heads=((17, 4),), blocks=(("mlp", 0),))
    format_ablation(ablation)                     -> "L17H4, mlp L0"

Heads are `L<layer>H<head>`; whole blocks are `attn L<layer>` or `mlp L<layer>` (also `mlp0`, `L0 mlp`);
items are separated by commas, semicolons or spaces; case does not matter; layers and heads count from 0.
Every layer and head is checked against the model by `interventions.check_ablation`.
"""

from __future__ import annotations

import re

from .errors import InputError
from .interventions import Ablation, check_ablation

MAX_ABLATION_CHARS = 500
_HEAD = re.compile(r"L(\d+)\s*\.?\s*H(\d+)", re.I)
_BLOCK = re.compile(r"(attn|mlp)\s*(?:block\s*)?L?\s*(\d+)|L(\d+)\s*(attn|mlp)", re.I)
_SEPARATORS = re.compile(r"[,;\s]+")


def parse_ablation(session, text: str | None, mode: str = "zero") -> Ablation:
    """The heads and blocks named in `text` (empty: no ablation), checked against the model."""
    text = (text or "").strip()
    if len(text) > MAX_ABLATION_CHARS:
        raise InputError(f"The ablation may have at most {MAX_ABLATION_CHARS} characters.")
    heads, blocks = [], []
    rest = text
    while rest:
        rest = rest.lstrip(", ;\t\n")
        if not rest:
            break
        head = _HEAD.match(rest)
        block = _BLOCK.match(rest)
        if head and (not block or head.end() >= block.end()):
            heads.append((int(head.group(1)), int(head.group(2))))
            rest = rest[head.end():]
        elif block:
            kind = (block.group(1) or block.group(4)).lower()
            layer = int(block.group(2) or block.group(3))
            blocks.append((kind, layer))
            rest = rest[block.end():]
        else:
            word = _SEPARATORS.split(rest, maxsplit=1)[0]
            raise InputError(f"Could not read {word!r} in the ablation: write heads as L17H4 and whole blocks as "
                             "mlp L0 or attn L3, separated by commas.")
        if rest and not rest[0] in ", ;\t\n":
            word = _SEPARATORS.split(rest, maxsplit=1)[0]
            raise InputError(f"Could not read {word!r} in the ablation: separate the items with commas.")
    return check_ablation(session, heads, blocks, mode)


def format_ablation(ablation: Ablation | None) -> str:
    """The text form parse_ablation reads back ("" for no ablation)."""
    if ablation is None:
        return ""
    return ", ".join([f"L{l}H{h}" for l, h in ablation.heads] + [f"{k} L{l}" for k, l in ablation.blocks])
