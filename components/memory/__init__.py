"""The Memory tab: layout and endpoints wiring (layout), event handlers (events), JSON endpoints (api), pure figure
builders (figures)."""
