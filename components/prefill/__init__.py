"""The prefill tab: layout and endpoints (layout), event handlers (events), pure figure builders (figures)."""
