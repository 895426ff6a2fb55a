"""The speculative decoding tab: layout (layout), event handlers (events), JSON endpoints (api), pure figure builders (figures)."""
