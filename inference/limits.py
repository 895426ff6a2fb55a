"""Every cap the app enforces, in one place, so the UI, the API and the README state the same numbers.

Each cap protects memory or time on a small shared machine (2 CPU cores, one model for everyone).
"""

from dataclasses import dataclass, field

# Text typed by a user (any tab), before tokenizing.
MAX_TEXT_CHARS = 20_000
# Tokens in one tokenized text; the tokenizer view renders one coloured span per token.
MAX_TOKENIZE_TOKENS = 4_096
# Tokens of a prompt that is run through the model (forward pass, generation).
MAX_PROMPT_TOKENS = 2_048
# Memory all cached analyses of one model may hold (attention maps are the big ones, <= 64 MB each).
ANALYSIS_CACHE_BYTES = 512 * 2**20
# Hub ids: `owner/name`, 96 characters each part at most, an optional `@revision`.
MAX_MODEL_ID_CHARS = 200
# Memory all loaded models may hold together (weights and cached analyses). Each visitor picks a model; beyond
# this the least recently used model nobody is running is unloaded (and loaded again when asked for).
# SmolLM2-135M in fp32 holds 0.54 GB, Gemma 3 270M 1.07 GB: both fit with room for their analyses.
MODEL_MEMORY_BUDGET = 3 * 2**30
# The host's default caps on a model a visitor may load from the hub (flags --max-model-params / -bytes):
# checked from the repository's metadata before anything is downloaded. 1B parameters in fp32 is 4 GB.
MAX_MODEL_PARAMS = 1_000_000_000
MAX_MODEL_BYTES = 4 * 2**30


# --- Beam search tab (issue 5) -------------------------------------------------------------------
# Beams searched in parallel: each one is a row of every decode forward pass.
MAX_NUM_BEAMS = 8
# New tokens a beam search may generate: the tree keeps 2*num_beams candidates per step, so 8 beams
# x 64 steps stay around 1,000 nodes, small enough to send and draw.
MAX_BEAM_NEW_TOKENS = 64
# Length penalty exponent range offered (transformers accepts any float; beyond this nothing new shows).
MIN_LENGTH_PENALTY = -3.0
MAX_LENGTH_PENALTY = 3.0

# --- Sampling tab (issue 4) ----------------------------------------------------------------------
# New tokens one generation may produce: every step keeps a small record (top candidates per stage),
# and a 2-core CPU decodes roughly 20-40 tokens a second with the default model.
MAX_NEW_TOKENS = 256
# Stop sequences per request, and characters in each (each is searched for in the text after every token).
MAX_STOP_SEQUENCES = 4
MAX_STOP_CHARS = 50
# Parameter ranges. Beyond these nothing new happens (temperature 10 is already near-uniform) and
# presence/frequency follow OpenAI's documented range.
MAX_TEMPERATURE = 10.0
MAX_TOP_K = 1_000_000  # larger than any vocabulary: values above the vocabulary size keep every token
MAX_REPETITION_PENALTY = 10.0
MAX_PRESENCE_PENALTY = 2.0
MAX_FREQUENCY_PENALTY = 2.0
MAX_SEED = 2**32 - 1  # fits a JSON number exactly and torch.Generator.manual_seed
# Constrained decoding: the characters of a regex or a JSON schema, and the choices of a list. A grammar is
# compiled against the whole vocabulary (a few ms to ~0.1 s for these sizes) and cached per model.
MAX_CONSTRAINT_CHARS = 2_000
MAX_CHOICES = 32
MAX_CHOICE_CHARS = 200
# Whitespace characters a JSON schema's grammar allows in a row (between tokens of the JSON): without a bound
# a model that likes newlines can fill a whole run with indentation.
MAX_JSON_WHITESPACE = 16
# Two runs side by side (the compare view): new tokens per run. Both runs are generated step by step together,
# and each position is one column of the aligned view.
MAX_COMPARE_NEW_TOKENS = 64


# --- Attention tab (issue 3) ----------------------------------------------------------------------
# Tokens of a prompt whose attention is captured (every layer and head, plus the logit lens).
MAX_ATTENTION_TOKENS = 512
# Bytes one prompt's attention analysis keeps (fp16, lower triangle only; 64 MB = 64,000,000 bytes). SmolLM2
# keeps every layer up to ~480 tokens; beyond, the least recently viewed layers are dropped and recomputed
# (one model pass) when viewed again.
ATTENTION_MEMORY_BUDGET = 64_000_000
# The logit lens runs the LM head (vocab x hidden) on every layer at each position it covers: the last
# LENS_MAX_POSITIONS positions of the prompt, keeping the top LENS_TOP_K guesses per layer and position.
LENS_MAX_POSITIONS = 16
LENS_TOP_K = 5

# --- Prefill & decode tab (issue 6) ---------------------------------------------------------------
# Without the KV cache every step re-runs the whole sequence: a run processes prompt x new + new^2/2
# tokens in all. This bounds that sum (a 30-token prompt with 64 new tokens is ~4,000).
MAX_RECOMPUTE_TOKENS = 16_384
# Context-length sweep: prompt lengths measured (one generation each), the longest allowed, and the
# decode steps timed after each prefill. A 2,048-token prefill takes seconds on a 2-core CPU.
SWEEP_LENGTHS = (16, 32, 64, 128, 256, 512, 1_024, 2_048)
MAX_SWEEP_TOKENS = 2_048
MAX_SWEEP_POINTS = 12
SWEEP_DECODE_STEPS = 8
# Working memory a sweep's longest prefill may need, estimated before running it: eager attention holds
# ~3 score matrices [heads, n, n] per layer at once, plus the KV cache and the MLP activations.
MAX_SWEEP_WORKING_BYTES = 1_500_000_000
# Batch throughput: prompts run together (left-padded), tokens each, and tokens per prompt.
MAX_BATCH_PROMPTS = 8
MAX_BATCH_NEW_TOKENS = 64
MAX_BATCH_PROMPT_TOKENS = 256

# --- Forward pass tab (issue 9) -------------------------------------------------------------------
# Tokens of a text run through one recorded forward pass (residual norms, surprisal, the diagram's shapes).
# Eager attention makes its cost grow faster than linearly: measured with SmolLM2 on the shared 2-core CPU under
# heavy load (load average 8), 1,024 tokens took 28 s and 512 tokens 8.6 s. What is kept is small (0.8 MB at the cap).
MAX_FORWARD_TOKENS = 1_024
# Tokens whose embedding vectors are drawn (heat strip, cosine similarity): more rows would not be readable.
FORWARD_EMBED_TOKENS = 32
# The surprisal of every token needs the logits of every position ([n, vocab]: 1 GB for 1,024 tokens of
# Gemma's 262k vocabulary); they are computed this many floats (positions x vocab) at a time instead.
FORWARD_LOGIT_CHUNK = 32 * 2**20
# Points of the RoPE distance curve beyond the first 64 distances (log-spaced up to the context length).
ROPE_CURVE_POINTS = 160
# Most surprising tokens listed, and candidates shown per prompt in the prompt comparison chart.
SURPRISAL_TOP = 10
COMPARE_TOP_K = 8


# --- Interventions: ablation and activation patching ----------------------------------------------------
# Tokens of a prompt that is ablated (one extra forward pass per ablation; a head sweep runs one pass per layer
# with one batch row per head).
MAX_INTERVENTION_TOKENS = 256
# Tokens of each prompt of a patching pair: the sweep runs one pass per position with one batch row per layer over
# the positions from there on, i.e. layers x n(n+1)/2 token-rows (30 x 55 = 1,650 for a 10-token prompt on SmolLM2;
# n = 32 is 15,840, about ten plain passes over a 1,600-token prompt).
MAX_PATCH_TOKENS = 32
# Characters of a list of heads and blocks to ablate ('L17H4, mlp L0': 2,000 characters name every head of SmolLM2).
MAX_ABLATION_SPEC_CHARS = 2_000


# --- Serving a class: generation requests decoded together (inference/serving.py) ----------------------
# Rows decoded in one forward pass: every visitor's generation that arrives while the model is busy joins the
# running batch between two steps. Also the number of generation requests the server runs at once.
MAX_BATCH_ROWS = 32
# Tokens one prefill pass may process, padding included (newcomers are left-padded to the longest of them);
# eager attention holds [rows, heads, n, n] scores, so this also bounds the pass's working memory.
MAX_PASS_TOKENS = 2_048
# KV-cache bytes of the whole batch: every row padded to the longest row's full length (prompt + max new tokens).
# SmolLM2 in fp32 keeps 46,080 bytes per token: 512 MB is ~11,600 token slots, e.g. 32 rows of 360 tokens.
MAX_BATCH_KV_BYTES = 512 * 2**20
# Keys and values of recent prompts kept per model, so a prompt that begins like an earlier one (the chat template's
# system prompt, the question a whole class types) prefills only the rest: ~700 tokens of SmolLM2.
PREFIX_CACHE_BYTES = 32 * 2**20
# The Serving view (transformers' continuous-batching engine): requests in one burst, tokens each, and the paged
# KV cache it may allocate (blocks of SERVING_PAGE_TOKENS tokens).
MAX_BURST_REQUESTS = 16
MAX_BURST_NEW_TOKENS = 48
MAX_BURST_PROMPT_TOKENS = 256
SERVING_PAGE_TOKENS = 16
MAX_SERVING_BLOCKS = 512
MAX_SERVING_BATCH_TOKENS = 1_024

# --- The queue (issue 7) ------------------------------------------------------------------------------
# Model calls run one at a time (see README: concurrency); requests beyond this many waiting are told at
# once that the queue is full instead of waiting without end.
QUEUE_SIZE = 64
# Model time one request may use. Generation, beam search and the context sweep check it between forward
# passes and stop there with what they computed ("time limit" as the stop reason); every other request is
# bounded by the caps above (measured worst case under load: 8 beams x 64 tokens took 20-75 s on 2 cores).
REQUEST_SECONDS = 90


# --- Memory tab: precision, KV-cache precision, bounded caches ------------------------------------
# Tokens of a text compared across weight precisions. Each precision is a copy of the model (one alive at a time:
# SmolLM2 in float32 is 0.54 GB, Gemma 3 270M 1.07 GB) that runs over the text once, then PRECISION_REPEATS
# timed greedy runs of PRECISION_NEW_TOKENS tokens, alternating with the float32 model (2 x 2 x 8 decode passes per
# precision: a request for three precisions stays well under REQUEST_SECONDS on a busy 2-core CPU).
MAX_PRECISION_TOKENS = 512
PRECISION_NEW_TOKENS = 8
PRECISION_REPEATS = 2
# Tokens of a text run through a KV cache one decode pass per token (the quantized cache, each eviction policy):
# ~30 ms a pass for SmolLM2 on an idle 2-core CPU, so 512 tokens take ~15 s per cache.
MAX_KV_EVAL_TOKENS = 512
# The quantized KV cache's first pass (its per-tensor scale is fixed on these tokens), then greedy tokens after
# the text, generated with each cache to find where their texts part.
KV_PREFILL_TOKENS = 32
KV_NEW_TOKENS = 24
# Eviction policies: tokens a cache may keep (the budget), sink tokens, the budgets of the perplexity sweep (the
# lesson's 300-token text takes ~2,400 decode passes over the three policies at these budgets).
MIN_POLICY_BUDGET = 4
MAX_POLICY_BUDGET = 512
MAX_SINKS = 16
POLICY_SWEEP_BUDGETS = (16, 32, 64)
# Bytes per kind of layer (sliding-window vs global) at long context: a prefill in chunks up to this length.
MAX_LAYER_KIND_TOKENS = 2_048
LAYER_KIND_CHUNK = 256


@dataclass(frozen=True)
class Limit:
    """One cap a user can run into: `label` and `value` in English, `value` a template filled from `fields` (the
    UI shows both in the visitor's language from the catalogue keys limits.<key> and limits.<key>.value)."""

    key: str
    label: str
    value: str
    fields: dict = field(default_factory=dict)

    def english(self) -> tuple[str, str]:
        return self.label, self.value.format(**self.fields)


def caps() -> list[Limit]:
    """Every cap a user can run into, for the UI's limits panel and the README."""
    return [
        Limit("text", "Text typed into any box", "{chars:,} characters", dict(chars=MAX_TEXT_CHARS)),
        Limit("tokenize", "Tokens shown by the tokenizer", "{tokens:,}", dict(tokens=MAX_TOKENIZE_TOKENS)),
        Limit("prompt", "Prompt tokens for generation and beam search", "{tokens:,}", dict(tokens=MAX_PROMPT_TOKENS)),
        Limit("new_tokens", "New tokens per generation", "{tokens:,}", dict(tokens=MAX_NEW_TOKENS)),
        Limit("stops", "Stop sequences", "{n} of up to {chars} characters",
              dict(n=MAX_STOP_SEQUENCES, chars=MAX_STOP_CHARS)),
        Limit("constraint", "Constraint (structured output)",
              "a regex or JSON schema of {chars:,} characters, or {choices} choices",
              dict(chars=MAX_CONSTRAINT_CHARS, choices=MAX_CHOICES)),
        Limit("compare", "Two runs compared", "{tokens} new tokens each", dict(tokens=MAX_COMPARE_NEW_TOKENS)),
        Limit("beams", "Beams", "1 to {beams}", dict(beams=MAX_NUM_BEAMS)),
        Limit("beam_tokens", "New tokens per beam search", "{tokens}", dict(tokens=MAX_BEAM_NEW_TOKENS)),
        Limit("attention", "Attention maps", "{tokens} tokens, {mb} MB kept per prompt",
              dict(tokens=MAX_ATTENTION_TOKENS, mb=ATTENTION_MEMORY_BUDGET // 10**6)),
        Limit("forward", "Forward-pass analysis", "{tokens:,} tokens", dict(tokens=MAX_FORWARD_TOKENS)),
        Limit("sweep", "Context-length sweep", "up to {tokens:,} prompt tokens, {points} lengths",
              dict(tokens=MAX_SWEEP_TOKENS, points=MAX_SWEEP_POINTS)),
        Limit("batch", "Batch throughput", "{prompts} prompts of up to {tokens} tokens",
              dict(prompts=MAX_BATCH_PROMPTS, tokens=MAX_BATCH_PROMPT_TOKENS)),
        Limit("ablation", "Ablation", "{tokens} tokens; patching: {patch} tokens per prompt",
              dict(tokens=MAX_INTERVENTION_TOKENS, patch=MAX_PATCH_TOKENS)),
        Limit("served", "Generations decoded together",
              "{rows} rows per pass, {tokens:,} prompt tokens per prefill pass, {kv_mb} MB of KV cache per batch, "
              "{prefix_mb} MB of shared prompt prefixes",
              dict(rows=MAX_BATCH_ROWS, tokens=MAX_PASS_TOKENS, kv_mb=MAX_BATCH_KV_BYTES // 2**20,
                   prefix_mb=PREFIX_CACHE_BYTES // 2**20)),
        Limit("burst", "Serving view burst",
              "{requests} requests of up to {prompt} prompt tokens and {new} new tokens; at most {blocks} KV blocks "
              "of {page} tokens",
              dict(requests=MAX_BURST_REQUESTS, prompt=MAX_BURST_PROMPT_TOKENS, new=MAX_BURST_NEW_TOKENS,
                   blocks=MAX_SERVING_BLOCKS, page=SERVING_PAGE_TOKENS)),
        Limit("speculative", "Speculative decoding",
              "1 to {k} draft tokens, {tokens} new tokens per run; k sweep and drafter comparison {sweep} tokens per "
              "run, {passes:,} forward passes in all",
              dict(k=MAX_DRAFT_TOKENS, tokens=MAX_SPEC_NEW_TOKENS, sweep=MAX_SPEC_SWEEP_NEW_TOKENS,
                   passes=MAX_SPEC_SWEEP_PASSES)),
        Limit("analyses", "Cached analyses per model", "{mb} MB", dict(mb=ANALYSIS_CACHE_BYTES // 2**20)),
        Limit("models", "Models held in memory", "{gb:g} GB in all; the least recently used is unloaded beyond",
              dict(gb=MODEL_MEMORY_BUDGET / 2**30)),
        Limit("queue", "Requests waiting in the queue", "{n}", dict(n=QUEUE_SIZE)),
        Limit("request_time", "Model time per request", "{s} s; a longer run stops there and shows what it computed",
              dict(s=REQUEST_SECONDS)),
        Limit("memory", "Memory tab",
              "precisions over {precision} tokens; KV caches and eviction policies over {kv} tokens, budgets {low} "
              "to {high}, up to {sinks} sinks",
              dict(precision=MAX_PRECISION_TOKENS, kv=MAX_KV_EVAL_TOKENS, low=MIN_POLICY_BUDGET, high=MAX_POLICY_BUDGET,
                   sinks=MAX_SINKS)),
    ]


def describe() -> list[tuple[str, str]]:
    """Every cap a user can run into, in English words (the README's table)."""
    return [cap.english() for cap in caps()]


# --- Speculative decoding tab -----------------------------------------------------------------------
# Draft tokens per step (num_draft_tokens): the verification pass scores k + 1 positions; beyond 8 a 2-core CPU
# only loses (the k sweep shows where the curve turns).
MAX_DRAFT_TOKENS = 8
# New tokens per speculative run. Each run is followed by plain decoding of the same tokens (the speedup's
# reference), so a run costs about twice this many target passes, plus the drafter's passes.
MAX_SPEC_NEW_TOKENS = 128
# New tokens per run of the k sweep and of the drafter comparison (8 runs of up to this many tokens, plus three
# plain runs), and all forward passes (target and drafter) one such request may run; it stops there with the
# runs it finished. 48 tokens x 11 runs is ~530 target passes; a model drafter adds k passes per step.
MAX_SPEC_SWEEP_NEW_TOKENS = 48
MAX_SPEC_SWEEP_PASSES = 2_000
MAX_SPEC_COMPARE_DRAFTERS = 6
# Tokens drawn in the sampling rule's figure (the most likely under p and under q, the draft and chosen tokens).
SPEC_RULE_TOKENS = 12
# A drafter with another tokenizer, when sampling, runs on a private copy of its weights (transformers prunes its
# LM head in place): one such copy is kept (SmolLM2-135M: ~0.5 GB).
SPEC_PRIVATE_DRAFTERS = 1
