"""The Gradio UI: one module per tab (each has TITLE and build()), figure builders in figures/."""
