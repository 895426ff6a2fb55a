"""Memory tab, the JSON endpoints (`gr.api`): `precision`, `kv_precision` and `kv_policies`, plain dicts in the
names of the Python API (`inference.precision`, `inference.kv_policies`). The dicts are data (English keys and
values); only an error message reads in the caller's language (English for an API client that asks for none)."""

from __future__ import annotations

from inference.errors import InputError
from inference.kv_policies import POLICIES, compare_policies, sweep_budgets
from inference.limits import MAX_POLICY_BUDGET, MIN_POLICY_BUDGET
from inference.precision import compare_kv_precision, compare_precisions

from ..common import session, user_errors
from ..i18n import t


def _names(value: str | list[str] | None, default: tuple[str, ...]) -> list[str]:
    if value is None or value == "":
        return list(default)
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v).strip() for v in value]


@user_errors
def precision_api(text: str, dtypes: str = "float32,bfloat16,int8", model: str | None = None) -> dict:
    """The text under several precisions of the weights (comma-separated: float32, bfloat16, float16, int8, int4),
    the loaded model's own first. Per precision: weight_bytes (the parameter tensors), bits_per_parameter,
    ms_per_token (median decode pass) and reference_ms_per_token measured alternately with it, prefill_tokens_per_s,
    top1_agreement / mean_kl / max_abs_dprob against the reference at every position, perplexity, the greedy
    continuation and first_divergence (its first token that differs from the reference's); source_note says what the
    reference weights are (a bundled GGUF de-quantized to float32)."""
    return compare_precisions(session(model), text, _names(dtypes, ("float32", "bfloat16", "int8"))).to_dict()


@user_errors
def kv_precision_api(text: str, backends: str = "fp8", model: str | None = None) -> dict:
    """The text through the plain KV cache and transformers' QuantizedCache (fp8: pure torch; quanto, hqq where
    installed), side by side after a short prefill: bytes per token read from the cache tensors and the formula's,
    agreement with the plain cache's predictions (top-1, KL, max |Δp|), perplexity, ms per decode pass and the greedy
    continuation. Models with sliding-window layers (Gemma 3) are refused by QuantizedCache."""
    return compare_kv_precision(session(model), text, _names(backends, ("fp8",))).to_dict()


@user_errors
def kv_policies_api(text: str, budget: int = 64, sinks: int = 4, policies: str = "window,sinks,heavy_hitters",
                    budgets: str = "", model: str | None = None) -> dict:
    """The text under bounded KV caches (policies: window, sinks, heavy_hitters; full is always included): per policy
    the perplexity, its top-1 agreement with the full cache, the positions each layer kept at the end, the cache bytes
    read from the tensors and first_evicted_at; the full run also gives the attention every head puts on the first
    token. With `budgets` (comma-separated, e.g. "16,32,64") it returns a sweep: perplexity per policy and budget."""
    names = [p for p in _names(policies, POLICIES[1:]) if p != "full"]
    unknown = [p for p in names if p not in POLICIES]
    if unknown:
        raise InputError(t("memory.error_not_policy", name=unknown[0][:30], choices=", ".join(POLICIES[1:])))
    s = session(model)
    if budgets:
        return sweep_budgets(s, text, sinks, _budgets(budgets), names).to_dict()
    return compare_policies(s, text, budget, sinks, names).to_dict()


def _budgets(value: str) -> list[int]:
    """Comma-separated budgets, each a whole number of tokens in range."""
    try:
        numbers = [int(b) for b in _names(value, ())]
    except ValueError:
        raise InputError(t("memory.error_budgets_numbers")) from None
    if not numbers or len(numbers) > 8 or not all(MIN_POLICY_BUDGET <= b <= MAX_POLICY_BUDGET for b in numbers):
        raise InputError(t("memory.error_budgets_range", low=MIN_POLICY_BUDGET, high=MAX_POLICY_BUDGET))
    return numbers
