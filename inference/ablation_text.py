"""An ablation written as text, as a class says it: 'L17H4, L3H0, mlp L0' <-> interventions.Ablation.

The one parser lives in `interventions` (the Interventions tab reads the same form); this module keeps the
Sampling tab's names for it.
"""

from __future__ import annotations

from .interventions import Ablation, parse_ablation

__all__ = ["parse_ablation", "format_ablation"]


def format_ablation(ablation: Ablation | None) -> str:
    """The text form parse_ablation reads back ("" for no ablation)."""
    return "" if ablation is None else ablation.spec
