"""Sampling downloads, pure: the rows of the two CSV files, from a step record and from the run."""

from __future__ import annotations

from inference.generation import StepRecord
from inference.sampling_run import SamplingRun

STAGE_CSV_HEADER = ["stage", "rank", "id", "token", "probability", "kept"]
TRACE_CSV_HEADER = ["step", "id", "token", "text", "probability", "model_probability", "rank", "u", "how",
                    "removed_by_constraint"]


def stage_rows(record: StepRecord) -> list[list]:
    """The stage table of one step, one row per (stage, candidate): what /next_token returns, flat."""
    return [
        [stage.name, "" if rank is None else rank, cand, piece, f"{prob:.8g}", int(kept)]
        for stage in record.stages
        for cand, piece, prob, rank, kept in zip(record.candidates, record.pieces, stage.probs, stage.ranks,
                                                 stage.kept)
    ]


def trace_rows(run: SamplingRun) -> list[list]:
    """The generated tokens, one row per step: what /generate's steps return, flat."""
    return [
        [i + 1, t.token_id, t.piece, t.text, f"{t.prob:.8g}", f"{t.raw_prob:.8g}", t.rank,
         "" if t.draw is None else f"{t.draw:.8g}", t.how,
         "" if t.removed_mass is None else f"{t.removed_mass:.8g}"]
        for i, t in enumerate(run.tokens)
    ]
