"""The public name of the shared sessions (`from inference.session import get_session`); they live in
`inference.model` with everything else that knows how a model is loaded and built."""

from .model.anatomy import ModelFacts, read_facts
from .model.loading import BUNDLED, DEFAULT_MODEL, GEMMA_MODEL, cache_dir, pick_device, validate_model_id
from .model.session import (AnalysisCache, ModelSession, current_session, get_session, get_tokenizer,
                            load_session, offline_models, switch_model)

__all__ = ["AnalysisCache", "BUNDLED", "DEFAULT_MODEL", "GEMMA_MODEL", "ModelFacts", "ModelSession", "cache_dir",
           "current_session", "get_session", "get_tokenizer", "load_session", "offline_models", "pick_device",
           "read_facts", "switch_model", "validate_model_id"]
