"""The instrumented model: plain Python + torch, no UI code (see DESIGN.md)."""
